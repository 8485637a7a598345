"""Prometheus export of a comm server, read from its plain counters at scrape time.

The relay only does ``counter[key] += 1`` on :class:`~commserver.stats.RelayStats`
and live state (peers, topic tables, writer queues) is already in memory, so
the collector below builds every family when Prometheus asks and the hot
path never touches the client library. Label values come from fixed sets
(roles, channels, message types, reasons written in the code); never a peer
alias or a topic, which are unbounded.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator

from prometheus_client.core import Metric
from prometheus_client.registry import CollectorRegistry

from commserver.lifecycle import CloseReason, PeerState
from commserver.limits import LIMIT_DROPS
from commserver.server import CommServer
from webrtc_broker.metrics import counter, gauge, histogram, reason_label, service_registry
from webrtc_broker.wire import broker_pb2 as pb

SERVICE = "commserver"

CHANNELS = {True: "reliable", False: "unreliable"}
PEER_ROLES = ("client", "server", "unauthenticated")
PEER_STATES = ("connecting", "established")
AUDIENCES = ("client", "server")
TYPE_LABELS: dict[int, str] = {value: name for name, value in pb.MessageType.items()}
"""Message types by wire value, with the protocol's names (as the coordinator labels them)."""

KNOWN_DROPS = (
    "malformed",
    "internal_error",
    "unexpected_type",
    "before_auth",
    "bad_signalling",
    "signalling_unknown_peer",
    "signalling_wrong_state",
    "signalling_internal_error",
    "candidates_over_budget",
    "connect_while_pending",
    "coordinator_unavailable",
    *LIMIT_DROPS,
)
"""Drop reasons exported from the start, so their series read 0 instead of missing."""

KNOWN_REFUSALS = ("server_full", "setup_rate", "auth_failed")
KNOWN_FAILURES = (
    CloseReason.ESTABLISH_TIMEOUT,
    CloseReason.EVICTED,
    CloseReason.BAD_SIGNALLING,
    CloseReason.AUTH_FAILED,
)
KNOWN_CLOSES = (CloseReason.PEER_SILENT, CloseReason.SLOW_PEER, CloseReason.CHANNEL_CLOSED)


def _seeded(keys: Iterable[str], counts: Iterable[tuple[str, int]]) -> list[tuple[tuple[str], int]]:
    """One-label samples: every key in ``keys`` (0 if unseen), then the counted ones."""
    merged: dict[str, int] = dict.fromkeys(keys, 0)
    for key, value in counts:
        merged[key] = merged.get(key, 0) + value
    return [((key,), value) for key, value in merged.items()]


class CommServerCollector:
    """Builds the comm server's metric families from a live :class:`CommServer`."""

    def __init__(self, server: CommServer) -> None:
        self._server = server

    def collect(self) -> Iterator[Metric]:
        yield from self._state()
        yield from self._peers()
        yield from self._sessions()
        yield from self._traffic()
        yield from self._writers()
        yield from self._topics()
        yield from self._udp_mux()

    # -- the server itself --------------------------------------------------

    def _state(self) -> Iterator[Metric]:
        server = self._server
        yield gauge(
            SERVICE,
            "info",
            "Always 1; the labels carry the server's configured name and mesh role.",
            [((server.config.name, server.config.role), 1)],
            ("name", "role"),
        )
        registered = server.link.connected.is_set() and server.alias != 0
        yield gauge(
            SERVICE,
            "registered",
            "1 while registered with the coordinator (the readiness condition), else 0.",
            int(registered and not server.draining),
        )
        yield gauge(
            SERVICE, "draining", "1 while the server drains for shutdown.", int(server.draining)
        )
        yield gauge(
            SERVICE,
            "max_peers",
            "Client sessions accepted before the server answers SERVER_FULL.",
            server.config.max_peers,
        )
        yield gauge(
            SERVICE,
            "max_pending",
            "Client sessions that may be in set-up at once; beyond it the oldest is evicted.",
            server.config.max_pending,
        )
        yield gauge(
            SERVICE,
            "coordinator_connected",
            "1 while the control WebSocket to the coordinator is open, else 0.",
            int(server.link.connected.is_set()),
        )
        yield counter(
            SERVICE,
            "task_restarts_total",
            "Restarts of a long-lived task (coordinator-link, keepalive) after it failed.",
            (((name,), count) for name, count in server.supervisor.restarts.items()),
            ("task",),
        )
        yield gauge(
            SERVICE,
            "healthy",
            "1 until a long-lived task failed for good (then /healthz answers 503 and the "
            "process exits non-zero).",
            int(server.healthy),
        )
        yield counter(
            SERVICE,
            "coordinator_registrations_total",
            "WELCOMEs received from the coordinator; every one after the first is a reconnect.",
            server.stats.coordinator_connects,
        )
        reclaimed = server.reclaimer.stats
        yield counter(
            SERVICE,
            "memory_reclaims_total",
            "Full garbage collections and malloc trims run after sessions closed.",
            reclaimed.runs,
        )
        yield counter(
            SERVICE,
            "memory_reclaim_seconds_total",
            "Time spent in those collections and trims (the event loop waits meanwhile).",
            reclaimed.seconds,
        )
        yield gauge(
            SERVICE,
            "closed_sessions_lingering",
            "Closed sessions still referenced after the last collection; above 0 for long, "
            "something keeps them (a leak).",
            reclaimed.lingering,
        )

    # -- peers and sessions -------------------------------------------------

    def _peers(self) -> Iterator[Metric]:
        counts: Counter[tuple[str, str]] = Counter(
            {(role, state): 0 for role in PEER_ROLES for state in PEER_STATES}
        )
        for peer in self._server.peers.values():
            state = "established" if peer.established else "connecting"
            counts[(peer.role_name, state)] += 1
        yield gauge(
            SERVICE,
            "peers",
            "Live WebRTC sessions by the peer's authenticated role and set-up state "
            "(role is 'unauthenticated' until the peer's AUTH is accepted).",
            counts.items(),
            ("role", "state"),
        )
        states: Counter[str] = Counter(dict.fromkeys(PeerState, 0))
        for peer in self._server.peers.values():
            states[peer.state] += 1
        yield gauge(
            SERVICE,
            "sessions",
            "Live sessions by lifecycle state (offering, awaiting_answer, awaiting_offer, "
            "answering, connecting, established); all but established count against "
            "max_pending (client sessions only).",
            (((state,), count) for state, count in states.items() if state != PeerState.CLOSED),
            ("state",),
        )
        yield counter(
            SERVICE,
            "signals_refused_total",
            "Offers, answers and candidates refused because the session was not in a state "
            "that takes them (a second answer, an answer to a session we did not offer).",
            (
                ((state, signal), count)
                for (state, signal), count in self._server.stats.refused_signals.items()
            ),
            ("state", "signal"),
        )
        yield gauge(
            SERVICE,
            "mesh_peers",
            "Comm servers this server has an authenticated session with.",
            len(self._server.relay.server_peers),
        )

    def _sessions(self) -> Iterator[Metric]:
        stats = self._server.stats
        outcomes: dict[str, list[tuple[str, int]]] = {
            "established": [],
            "failed": [],
            "refused": [],
            "closed": [],
        }
        for key, value in stats.sessions.items():
            outcome, _, reason = key.partition(":")
            if outcome in outcomes:
                outcomes[outcome].append((reason_label(reason), value))
        yield counter(
            SERVICE,
            "sessions_established_total",
            "Sessions that connected and authenticated, by the peer's role.",
            _seeded(("client", "server"), outcomes["established"]),
            ("role",),
        )
        yield counter(
            SERVICE,
            "sessions_failed_total",
            "Sessions that closed before they were established, by reason.",
            _seeded(KNOWN_FAILURES, outcomes["failed"]),
            ("reason",),
        )
        yield counter(
            SERVICE,
            "sessions_refused_total",
            "Session requests refused with CONNECTION_REFUSED, by reason.",
            _seeded(KNOWN_REFUSALS, outcomes["refused"]),
            ("reason",),
        )
        yield counter(
            SERVICE,
            "sessions_closed_total",
            "Established sessions that ended, by reason.",
            _seeded(KNOWN_CLOSES, outcomes["closed"]),
            ("reason",),
        )
        yield histogram(
            SERVICE,
            "session_setup_seconds",
            "Time from the server creating a session (CONNECT received or sent) to the "
            "peer being authenticated, by the peer's role.",
            {(role,): hist for role, hist in stats.setup_seconds.items()},
            ("role",),
        )

    # -- traffic ------------------------------------------------------------

    def _traffic(self) -> Iterator[Metric]:
        stats = self._server.stats
        labels = ("peer_role", "channel", "type")
        yield counter(
            SERVICE,
            "frames_received_total",
            "Broker frames received on data channels, by sender role, channel and message "
            "type; the frames inside a BATCH are counted too, and the BATCH itself once.",
            (
                ((role, CHANNELS[reliable], TYPE_LABELS.get(kind, "UNKNOWN")), value)
                for (role, kind, reliable), value in stats.frames_in.items()
            ),
            labels,
        )
        yield counter(
            SERVICE,
            "received_bytes_total",
            "Bytes of the broker frames received, by sender role, channel and message type "
            "(a BATCH's bytes are counted in the frames it carries, not as BATCH).",
            (
                ((role, CHANNELS[reliable], TYPE_LABELS.get(kind, "UNKNOWN")), value)
                for (role, kind, reliable), value in stats.frame_bytes_in.items()
                if kind != pb.BATCH
            ),
            labels,
        )
        yield counter(
            SERVICE,
            "datachannel_received_bytes_total",
            "Bytes of every data-channel message received (batch framing included).",
            stats.bytes_in,
        )
        yield counter(
            SERVICE,
            "frames_sent_total",
            "Broker frames the relay handed to writers (topic deliveries and PING echoes), "
            "by channel and message type.",
            (
                ((CHANNELS[reliable], TYPE_LABELS.get(kind, "UNKNOWN")), value)
                for (kind, reliable), value in stats.frames_sent.items()
            ),
            ("channel", "type"),
        )
        yield counter(
            SERVICE,
            "sent_bytes_total",
            "Bytes of the broker frames counted in frames_sent_total, by channel and type.",
            (
                ((CHANNELS[reliable], TYPE_LABELS.get(kind, "UNKNOWN")), value)
                for (kind, reliable), value in stats.frame_bytes_sent.items()
            ),
            ("channel", "type"),
        )
        yield counter(
            SERVICE,
            "deliveries_total",
            "Copies of topic messages handed to writers (fan-out), by the receiving peer's "
            "kind: local clients or subscribed comm servers.",
            _seeded(AUDIENCES, stats.deliveries.items()),
            ("audience",),
        )
        yield counter(
            SERVICE,
            "frames_dropped_total",
            "Frames received or addressed to the coordinator that were not handled, by reason.",
            _seeded(
                KNOWN_DROPS,
                [*stats.drops.items(), ("coordinator_unavailable", self._server.link.dropped)],
            ),
            ("reason",),
        )
        yield histogram(
            SERVICE,
            "relay_duration_seconds",
            "Time a topic frame spends in the relay, from being received to its last copy "
            "being handed to a writer (batching and queue waits are not included).",
            {(): stats.relay_seconds},
        )

    def _writers(self) -> Iterator[Metric]:
        stats = self._server.stats
        depth = dict.fromkeys(CHANNELS.values(), 0)
        deepest = dict.fromkeys(CHANNELS.values(), 0)
        sent = {CHANNELS[reliable]: value for reliable, value in stats.retired_sent.items()}
        dropped = {CHANNELS[reliable]: value for reliable, value in stats.retired_dropped.items()}
        for peer in self._server.peers.values():
            session = peer.session
            for writer in (session.reliable, session.unreliable):
                if writer is None:
                    continue
                channel = CHANNELS[writer.reliable]
                depth[channel] += writer.depth
                deepest[channel] = max(deepest[channel], writer.depth)
                sent[channel] = sent.get(channel, 0) + writer.sent
                dropped[channel] = dropped.get(channel, 0) + writer.dropped
        yield gauge(
            SERVICE,
            "writer_queue_messages",
            "Data-channel messages waiting in writer queues (aiortc's buffer is full), "
            "summed over peers, by channel.",
            _seeded((), depth.items()),
            ("channel",),
        )
        yield gauge(
            SERVICE,
            "writer_queue_max_messages",
            "The longest single peer's writer queue, by channel.",
            _seeded((), deepest.items()),
            ("channel",),
        )
        yield counter(
            SERVICE,
            "writer_messages_sent_total",
            "Data-channel messages handed to aiortc; a batch of frames counts once.",
            _seeded(CHANNELS.values(), sent.items()),
            ("channel",),
        )
        yield counter(
            SERVICE,
            "writer_messages_dropped_total",
            "Data-channel messages a writer dropped: the oldest of a full unreliable queue, "
            "anything sent after the channel closed, or a message larger than the peer accepts.",
            _seeded(CHANNELS.values(), dropped.items()),
            ("channel",),
        )

    # -- subscriptions --------------------------------------------------------

    def _topics(self) -> Iterator[Metric]:
        relay = self._server.relay
        tables = {"client": relay.clients.by_topic, "server": relay.servers.by_topic}
        yield gauge(
            SERVICE,
            "topics",
            "Topics with at least one subscriber: local clients, or connected comm servers.",
            [((audience,), len(table)) for audience, table in tables.items()],
            ("audience",),
        )
        yield gauge(
            SERVICE,
            "subscriptions",
            "(subscriber, topic) pairs: of local clients, or of connected comm servers.",
            [
                ((audience,), sum(len(peers) for peers in table.values()))
                for audience, table in tables.items()
            ],
            ("audience",),
        )

    # -- UDP mux ------------------------------------------------------------

    def _udp_mux(self) -> Iterator[Metric]:
        """Present only in single-port mode (the other modes have no shared socket)."""
        mux = self._server.candidates.mux
        if mux is None:
            return
        yield counter(
            SERVICE,
            "udp_mux_dropped_unknown_total",
            "Datagrams on the shared UDP port from a source bound to no connection, or STUN "
            "messages naming no connection (scans, stale peers, spoofing).",
            mux.stats.dropped_unknown,
        )
        yield counter(
            SERVICE,
            "udp_mux_refused_rebinds_total",
            "Authenticated checks from an address already confirmed for another connection; "
            "the address was not moved (a spoofed source, or two sessions on one 5-tuple).",
            mux.stats.refused_rebinds,
        )
        yield counter(
            SERVICE,
            "udp_mux_refused_bindings_total",
            "Addresses not bound because their connection held its limit of confirmed ones.",
            mux.stats.refused_bindings,
        )
        yield counter(
            SERVICE,
            "udp_mux_dropped_sends_total",
            "Datagrams not sent: the socket's queue was full or the peer's address unusable.",
            mux.stats.dropped_sends,
        )
        yield gauge(
            SERVICE,
            "udp_mux_bound_addresses",
            "Remote addresses bound to a connection on the shared UDP port.",
            mux.bound_addresses,
        )
        yield gauge(
            SERVICE,
            "udp_mux_connections",
            "Peer connections registered on the shared UDP port.",
            mux.endpoints,
        )


def commserver_registry(server: CommServer) -> CollectorRegistry:
    """The registry a comm server serves at ``/metrics``."""
    return service_registry(SERVICE, CommServerCollector(server))
