"""The comm server: sessions with clients and servers, driven by coordinator signalling.

Lifecycle of a session, as docs/protocol.md describes it:

* someone sends us CONNECT through the coordinator: we refuse (SERVER_FULL)
  or create the peer connection with both channels and send the OFFER;
* the coordinator WELCOMEs us with the servers already registered: we send
  each a CONNECT, answer their OFFER and send AUTH once ``reliable`` opens;
* either way the session must be open and authenticated within the
  establish timeout, or it is closed.

Every step is a transition of :class:`~webrtc_broker.rtc.handshake.Handshake`, and
all the signalling arrives from other parties through the coordinator, so a
frame that does not fit the session's state is refused and counted, and one
the WebRTC stack cannot apply closes that session only. Sessions being set
up have their own budget (``max_pending``), apart from the established
clients ``max_peers`` counts: a flood of CONNECTs that are never answered
evicts itself, oldest first, instead of locking real clients out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Coroutine
from typing import Any

from commserver.coordinator_link import CoordinatorLink
from commserver.coordinators import CoordinatorLinks, LinkSlot
from commserver.lifecycle import CloseReason, PeerState
from commserver.limits import PeerLimits
from commserver.peer import SERVER_ROLES, Peer
from commserver.relay import Relay, ServerIdentity
from commserver.stats import RelayStats
from webrtc_broker.auth import ClientAuthenticator, ServerSecret, check_trust_anchor
from webrtc_broker.backoff import Backoff
from webrtc_broker.config import CommServerConfig
from webrtc_broker.rtc import (
    CandidateRefused,
    FlushScheduler,
    Session,
    SessionEnd,
    SignalingError,
    rtc_ice_servers,
)
from webrtc_broker.rtc.candidates import CandidatePolicy, PortRangeExhausted
from webrtc_broker.rtc.handshake import Handshake, Signal
from webrtc_broker.rtc.liveness import KEEPALIVE_PING, SilenceClock
from webrtc_broker.rtc.memory import MemoryReclaimer
from webrtc_broker.rtc.writer import MAX_QUEUE_BYTES
from webrtc_broker.supervise import Failure, Supervisor
from webrtc_broker.tokenbucket import TokenBucket
from webrtc_broker.tokens import client_authenticator
from webrtc_broker.wire import FrameError, decode_as, frame_type
from webrtc_broker.wire import broker_pb2 as pb
from webrtc_broker.wire.aliases import random_server_alias

log = logging.getLogger(__name__)

RELINK_ATTEMPTS = 5
RELINK_DELAY = 1.0
"""Seconds before relinking a closed server link, times the attempt number."""
DUPLICATE_LINK = "duplicate session with a connected server"

SERVER_QUEUE_FACTOR = 16
"""A server link carries many clients' traffic: its writer queue is this much larger."""

DRAIN_STEP = 0.05
"""Longest pause between two client sessions closed by a draining server (seconds)."""

ROLE_BY_NAME: dict[str, pb.Role.ValueType] = {
    "server": pb.COMMUNICATION_SERVER,
    "hub": pb.COMMUNICATION_SERVER_HUB,
}

SIGNALS: dict[int, Signal] = {
    pb.WEBRTC_OFFER: Signal.OFFER,
    pb.WEBRTC_ANSWER: Signal.ANSWER,
    pb.WEBRTC_ICE_CANDIDATE: Signal.CANDIDATE,
}

SESSION_ENDS: dict[SessionEnd, CloseReason] = {
    SessionEnd.CLOSED: CloseReason.SHUTDOWN,
    SessionEnd.CHANNEL_CLOSED: CloseReason.CHANNEL_CLOSED,
    SessionEnd.CONNECTION_FAILED: CloseReason.CONNECTION_FAILED,
    SessionEnd.SLOW_PEER: CloseReason.SLOW_PEER,
}
"""Close reasons of sessions that ended on their own (not through :meth:`Peer.end`)."""


class CommServer:
    def __init__(
        self,
        config: CommServerConfig,
        *,
        authenticator: ClientAuthenticator | None = None,
        candidates: CandidatePolicy | None = None,
    ) -> None:
        self.config = config
        self.role = ROLE_BY_NAME[config.role]
        self.ice_servers = rtc_ice_servers(config.ice_servers)
        self.candidates = candidates or CandidatePolicy.from_config(config)
        """Ports, advertised addresses and filters of every session's host candidates,
        clients' and server links' alike; the server opens and closes its UDP mux."""
        self.server_id = uuid.uuid4().hex
        self.own_alias = random_server_alias()
        """The alias this server proposes at every registration (see
        :mod:`webrtc_broker.wire.aliases`); the coordinator's WELCOME has the final say."""
        secret = ServerSecret(
            config.server_secret.get_secret_value() if config.server_secret else None
        )
        self.stats = RelayStats()
        self.batching = (
            FlushScheduler(config.batch_window, config.batch_mode)
            if config.batch_window > 0
            else None
        )
        self.reclaimer = MemoryReclaimer()
        """Collects closed sessions' aiortc objects and returns their memory (see its module)."""
        capabilities = (
            pb.CAPABILITY_TOPIC_NAMES
            | pb.CAPABILITY_TOPIC_DELTAS
            | (pb.CAPABILITY_BATCH if self.batching else 0)
        )
        jwt_secret = config.client_jwt_secret
        authenticator = authenticator or client_authenticator(
            config.client_auth, jwt_secret.get_secret_value() if jwt_secret else None
        )
        check_trust_anchor(authenticator, secret)
        self.relay = Relay(
            me=ServerIdentity(self.role, self.server_id, config.name, secret, capabilities),
            authenticator=authenticator,
            stats=self.stats,
            limits=PeerLimits.from_config(config),
            on_authenticated=self._on_authenticated,
            reject_peer=self._reject_auth,
            batching=self.batching,
            batch_max_bytes=config.batch_max_bytes,
        )
        self.alias = 0
        self.peers: dict[int, Peer] = {}
        """Every live session, by the alias the coordinator gave the remote side."""
        self.draining = False
        self._tasks: set[asyncio.Task[Any]] = set()
        """Short tasks of one session each (offers, answers, relinks)."""
        self.supervisor = Supervisor("commserver", on_fatal=self._fatal)
        """Owns the long-lived tasks: the coordinator links (and DNS), the keepalive and
        the load reports."""
        credentials = secret.credentials()

        def make_link(url: str, on_frame: Any, on_disconnect: Any) -> CoordinatorLink:
            return CoordinatorLink(
                base_url=url,
                role=pb.Role.Name(self.role),
                name=config.name,
                secret=credentials,
                on_frame=on_frame,
                on_disconnect=on_disconnect,
                backoff=Backoff(config.reconnect_min, config.reconnect_max),
                alias=lambda: self.own_alias,
                server_id=self.server_id,
                on_alias_taken=self._new_alias,
            )

        self.link = CoordinatorLinks(
            make_link=make_link,
            supervisor=self.supervisor,
            on_frame=self._on_coordinator_frame,
            on_lost=self._on_coordinator_lost,
            urls=config.coordinator_urls,
            dns=config.coordinator_dns,
            dns_port=config.coordinator_dns_port,
            dns_interval=config.coordinator_dns_interval,
        )
        """One link per coordinator replica, routed by alias (see its module)."""
        self._failed = asyncio.Event()
        self._setups = TokenBucket(config.setup_rate, config.setup_burst)
        """Client session set-ups this server may start (CONNECTs it answers with an offer)."""
        self._relink_attempts: dict[int, int] = {}
        self._relinks: dict[int, asyncio.Task[None]] = {}
        """Relinks waiting for their delay, by alias: a refusal from that server cancels them."""

    # -- bookkeeping ------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run a background task owned by this server (cancelled on shutdown)."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("task %s failed", task.get_name(), exc_info=task.exception())

    @property
    def client_count(self) -> int:
        """Sessions that count against ``max_peers``: established clients."""
        return sum(1 for p in self.peers.values() if p.role == pb.CLIENT and p.established)

    @staticmethod
    def _from_client(peer: Peer) -> bool:
        """Set up at a client's request (the coordinator says who sent CONNECT)."""
        return not peer.initiated_by_us and peer.expected_role not in SERVER_ROLES

    def _new_peer(
        self, alias: int, *, initiated_by_us: bool, expected_role: pb.Role.ValueType
    ) -> Peer:
        config = self.config
        holder: list[Peer] = []
        factor = SERVER_QUEUE_FACTOR if expected_role in SERVER_ROLES else 1
        session = Session(
            on_frame=lambda data, reliable: self.relay.handle(holder[0], data, reliable),
            ice_servers=self.ice_servers,
            reliable_queue_frames=config.reliable_queue_frames * factor,
            max_queue_bytes=MAX_QUEUE_BYTES * factor,
            unreliable_queue_frames=config.unreliable_queue_frames,
            buffered_high_bytes=config.buffered_high_bytes,
            unreliable_high_bytes=config.unreliable_buffered_high_bytes,
            max_candidates=config.max_candidates,
            candidate_policy=self.candidates,
        )
        start = PeerState.AWAITING_OFFER if initiated_by_us else PeerState.OFFERING
        peer = Peer(
            alias=alias,
            handshake=Handshake(session, start, self.stats.refused_signals),
            initiated_by_us=initiated_by_us,
            expected_role=expected_role,
        )
        holder.append(peer)
        previous = self.peers.get(alias)
        if previous is not None:
            previous.end(CloseReason.REPLACED)
        if self._from_client(peer):
            self._make_room_for_pending()
        self.peers[alias] = peer
        session.on_close(lambda _session: self._forget(peer))
        peer.expiry = asyncio.get_running_loop().call_later(
            config.establish_timeout, self._expire, peer
        )
        return peer

    def _make_room_for_pending(self) -> None:
        """Evict the oldest pending client session if ``max_pending`` are pending.

        Sessions whose peer never did its part of the signalling go first: a
        real client answers our offer within a round trip, while a party that
        floods CONNECTs and does no WebRTC never does. Evicting rather than
        refusing means a flood cannot keep a real client out: it only shortens
        how long an unanswered offer waits.
        """
        pending = [p for p in self.peers.values() if p.pending and self._from_client(p)]
        if len(pending) < self.config.max_pending:
            return
        unanswered = [p for p in pending if not p.state.answered]
        victim = min(unanswered or pending, key=lambda p: p.created)
        victim.end(CloseReason.EVICTED)

    def _expire(self, peer: Peer) -> None:
        peer.expiry = None
        if peer.pending:
            peer.end(CloseReason.ESTABLISH_TIMEOUT)

    def _forget(self, peer: Peer) -> None:
        if self.peers.get(peer.alias) is peer:
            del self.peers[peer.alias]
        if peer.state is not PeerState.CLOSED:  # the session ended on its own
            peer.end(SESSION_ENDS[peer.session.end])
        reason = peer.close_reason or CloseReason.SHUTDOWN
        outcome = "closed" if peer.established_at is not None else "failed"
        self.stats.sessions[f"{outcome}:{reason}"] += 1
        self.stats.retire(peer.session)
        self.relay.forget(peer)
        self.reclaimer.closed(peer.session)
        log.debug("session %s closed: %s", peer.alias, peer.session.close_reason)
        attempt = self._relink_attempts.pop(peer.alias, 0) + 1
        if (
            peer.initiated_by_us
            and not self.draining
            and attempt <= RELINK_ATTEMPTS
            and reason.relink
        ):
            self._relinks[peer.alias] = self._spawn(
                self._relink(peer.alias, attempt), f"relink-{peer.alias}"
            )

    def _close_peer(self, peer: Peer, reason: CloseReason, detail: str = "") -> None:
        log.info("closing session %s: %s%s", peer.alias, reason, f": {detail}" if detail else "")
        peer.end(reason, detail)

    def _reject_auth(self, peer: Peer, reason: str) -> None:
        """Refuse a session that failed AUTH, telling the peer why through the coordinator."""
        self.stats.sessions["refused:auth_failed"] += 1
        self._refuse(peer, pb.AUTH_FAILED, reason, CloseReason.AUTH_FAILED)

    def _refuse(
        self,
        peer: Peer,
        reason: pb.ConnectionRefusedReason.ValueType,
        why: str,
        close: CloseReason,
    ) -> None:
        """Close ``peer``'s session (reason ``close``) and send it CONNECTION_REFUSED
        saying ``why``.

        The refusal travels through the coordinator, so a peer whose data
        channels closed first still learns that it must not try again.
        """
        self._send_refusal(peer.alias, reason, why)
        self._close_peer(peer, close, why)

    def _send_refusal(
        self, to_alias: int, reason: pb.ConnectionRefusedReason.ValueType, why: str = ""
    ) -> None:
        """CONNECTION_REFUSED to ``to_alias``, through the coordinator."""
        self.link.send(
            pb.ConnectionRefusedMessage(
                type=pb.CONNECTION_REFUSED,
                from_alias=self.alias,
                to_alias=to_alias,
                reason=reason,
                data=why.encode(),
            ).SerializeToString()
        )

    def _on_authenticated(self, peer: Peer) -> bool:
        if peer.is_server:
            for other in self.relay.server_peers:
                if other.server_id == peer.server_id and other.state is not PeerState.CLOSED:
                    # A second link with a server we already have one with (a server of
                    # the original protocol re-registers under a new alias after a
                    # coordinator restart, and reconnects): the working one stays.
                    self._refuse(
                        peer, pb.UNKNOWN_REASON, DUPLICATE_LINK, CloseReason.DUPLICATE_LINK
                    )
                    return False
        elif self.client_count >= self.config.max_peers:
            # Pending sessions are not counted when they are accepted, so several
            # may finish together: the ones past the limit are refused here.
            self.stats.sessions["refused:server_full"] += 1
            self._refuse(peer, pb.SERVER_FULL, "server full", CloseReason.SERVER_FULL)
            return False
        peer.move(PeerState.ESTABLISHED)
        self._relink_attempts.pop(peer.alias, None)
        self.stats.sessions[f"established:{peer.role_name}"] += 1
        self.stats.setup_seconds[peer.role_name].observe(time.monotonic() - peer.created)
        return True

    # -- coordinator signalling -------------------------------------------

    async def _on_coordinator_frame(self, data: bytes, slot: LinkSlot | None = None) -> None:
        """Handle one frame from the coordinator reached through ``slot``; never raises.

        Most of what arrives was relayed from another party, so no frame may
        end the coordinator link: a bug surfaces as ``signalling_internal_error``.
        The sender of a relayed frame is answered through the same replica.
        """
        try:
            kind = frame_type(data)
            if kind == pb.WELCOME:
                self._welcome(decode_as(data, pb.WelcomeMessage), slot)
            elif kind == pb.CONNECT:
                connect = decode_as(data, pb.ConnectMessage)
                self._route(connect.from_alias, slot)
                self._connect_requested(connect)
            elif kind in (pb.WEBRTC_OFFER, pb.WEBRTC_ANSWER, pb.WEBRTC_ICE_CANDIDATE):
                signal = decode_as(data, pb.WebRtcMessage)
                self._route(signal.from_alias, slot)
                self._webrtc(kind, signal)
            elif kind == pb.CONNECTION_REFUSED:
                refusal = decode_as(data, pb.ConnectionRefusedMessage)
                self._route(refusal.from_alias, slot)
                await self._refused(refusal)
        except (FrameError, SignalingError) as exc:
            self.stats.drops["bad_signalling"] += 1
            log.debug("bad frame from coordinator: %s", exc)
        except Exception:
            self.stats.drops["signalling_internal_error"] += 1
            log.exception("error handling a coordinator frame")

    async def _refused(self, message: pb.ConnectionRefusedMessage) -> None:
        """A server we link to refused us: give the link up, and any relink to it."""
        alias = message.from_alias
        relink = self._relinks.pop(alias, None)
        if relink is not None:
            relink.cancel()
        peer = self.peers.get(alias)
        if relink is None and (peer is None or not peer.pending):
            return  # nothing of ours to give up: a stale or stray refusal
        # The text is the remote side's: shortened and printable, it cannot forge log lines.
        text = message.data[:200].decode(errors="replace")
        why = "".join(c if c.isprintable() else "?" for c in text) or f"reason {message.reason}"
        log.info("peer %d refused the session: %s", alias, why)
        if peer is not None and peer.pending:
            peer.end(CloseReason.REFUSED, why)

    def _new_alias(self) -> int:
        """Another peer holds our alias at the coordinator: pick another one."""
        self.own_alias = random_server_alias()
        log.warning("our alias is taken at the coordinator; proposing %d", self.own_alias)
        return self.own_alias

    def _route(self, alias: int, slot: LinkSlot | None) -> None:
        if slot is not None:
            self.link.note_route(alias, slot)

    def _welcome(self, message: pb.WelcomeMessage, slot: LinkSlot | None = None) -> None:
        self.alias = message.alias
        self.stats.coordinator_connects += 1
        log.info(
            "registered as alias %d at %s; %d servers to mesh with",
            self.alias,
            slot.url if slot else "the coordinator",
            len(message.available_servers),
        )
        servers = [alias for alias in message.available_servers if alias != self.alias]
        if slot is not None:
            # Routes first: a CONNECT to a listed server goes through the replica
            # that listed it, and this replica hears our client count at once.
            self.link.welcomed(slot, servers)
            if slot.link is not None:
                slot.link.send(self._load_report())
        for alias in servers:
            # One session per server, whichever replica listed it (each replica's
            # WELCOME lists it again), and after a reconnect under the same alias,
            # links that outlived the coordinator connection are kept, not made again.
            peer = self.peers.get(alias)
            if peer is None or peer.state is PeerState.CLOSED:
                self._connect_to_server(alias)

    def _connect_to_server(self, alias: int) -> None:
        self._new_peer(alias, initiated_by_us=True, expected_role=pb.COMMUNICATION_SERVER)
        self.link.send(
            pb.ConnectMessage(
                type=pb.CONNECT, from_alias=self.alias, to_alias=alias
            ).SerializeToString()
        )

    async def _relink(self, alias: int, attempt: int) -> None:
        """Reconnect a server link that closed while both ends may still be alive.

        Only the side that made the link remakes it; a server that really died
        re-registers under a new alias and links to us from its WELCOME, so the
        old alias is retried a few times only.
        """
        try:
            await asyncio.sleep(RELINK_DELAY * attempt)
        finally:
            if self._relinks.get(alias) is asyncio.current_task():
                del self._relinks[alias]
        if alias in self.peers or self.draining or not self.link.connected.is_set():
            return
        log.info("relinking to server %d (attempt %d)", alias, attempt)
        self._relink_attempts[alias] = attempt
        self._connect_to_server(alias)

    def _connect_requested(self, message: pb.ConnectMessage) -> None:
        """A session asked for. Setting one up (a certificate, candidates, a DTLS
        handshake) is the dearest thing a party can make a server do, so clients
        pay for it twice: one pending session per coordinator connection (a
        repeated CONNECT while one is pending is dropped: the SDKs never send
        one, they retry over a new connection), and a budget of set-ups per
        second for the whole server, beyond which clients are refused as if the
        server were full, so that a CONNECT flood costs new sessions, not the
        latency of the established ones."""
        alias = message.from_alias
        is_server = message.from_role in SERVER_ROLES
        if is_server:
            current = self.peers.get(alias)
            live = current is not None and current.state is not PeerState.CLOSED
            if live and current is not None and not self._yields_to(current):
                self.stats.drops["connect_crossed"] += 1
                return
        if not is_server:
            current = self.peers.get(alias)
            if current is not None and current.pending:
                self.stats.drops["connect_while_pending"] += 1
                return
        refusal = self._refusal(is_server)
        if refusal is not None:
            self.stats.sessions[f"refused:{refusal}"] += 1
            self._send_refusal(alias, pb.SERVER_FULL)
            return
        peer = self._new_peer(alias, initiated_by_us=False, expected_role=message.from_role)
        self._spawn(self._offer(peer), f"offer-{alias}")

    def _yields_to(self, current: Peer) -> bool:
        """Whether a server's CONNECT replaces ``current``, our session with it.

        Two replicas may each introduce the same pair of servers the other way
        round (their registration orders differ), so both ends send CONNECT.
        Whoever has the higher alias keeps the session it initiated and drops
        the other's CONNECT; the lower one takes the CONNECT and gives its own
        attempt up, so exactly one session is made. Any other session is
        replaced, as before: the other end is remaking a link it lost."""
        if current.initiated_by_us and current.pending:
            return self.alias < current.alias
        return True

    def _refusal(self, is_server: bool) -> str | None:
        """Why a CONNECT is answered SERVER_FULL (the counter's reason), or None."""
        if self.draining:
            return "server_full"
        if is_server:
            return None  # servers mesh whatever the clients' limits
        if self.client_count >= self.config.max_peers:
            return "server_full"
        if not self._setups.take(time.monotonic()):
            return "setup_rate"
        return None

    async def _offer(self, peer: Peer) -> None:
        try:
            offer = await peer.handshake.offer()
        except Exception as exc:
            self._close_peer(peer, CloseReason.CONNECTION_FAILED, f"cannot create an offer: {exc}")
            return
        if offer is not None:  # None: closed or replaced meanwhile
            self._signal(pb.WEBRTC_OFFER, peer.alias, offer)

    def _signal(self, kind: pb.MessageType.ValueType, to_alias: int, data: bytes) -> None:
        self.link.send(
            pb.WebRtcMessage(
                type=kind, from_alias=self.alias, to_alias=to_alias, data=data
            ).SerializeToString()
        )

    def _webrtc(self, kind: pb.MessageType.ValueType, message: pb.WebRtcMessage) -> None:
        """Apply an offer, answer or candidate if the session's state takes it.

        A signal the state does not take (a second answer, an answer to a
        session we did not offer) is refused and counted by state and signal.
        One the WebRTC stack rejects closes that session only; a candidate over
        the session's budget is dropped and counted.
        """
        peer = self.peers.get(message.from_alias)
        if peer is None or peer.state is PeerState.CLOSED:
            self.stats.drops["signalling_unknown_peer"] += 1
            return
        signal = SIGNALS[kind]
        if not peer.handshake.take(signal):  # counted in stats.refused_signals
            self.stats.drops["signalling_wrong_state"] += 1
            return
        # Applying a description or a candidate can wait (aiortc resolves a .local
        # candidate by mDNS, for up to a second): never in this reader, which every
        # session's signalling goes through. The waits cost their own session only.
        if signal is Signal.CANDIDATE:
            self._spawn(self._candidate(peer, message.data), f"candidate-{peer.alias}")
        elif signal is Signal.ANSWER:
            self._spawn(self._apply_answer(peer, message.data), f"apply-answer-{peer.alias}")
        else:
            self._spawn(self._answer(peer, message.data), f"answer-{peer.alias}")

    async def _apply_answer(self, peer: Peer, answer: bytes) -> None:
        try:
            await peer.handshake.accept_answer(answer)
        except Exception as exc:
            self.stats.drops["bad_signalling"] += 1
            self._close_peer(peer, CloseReason.BAD_SIGNALLING, f"answer: {exc!r}"[:200])

    async def _candidate(self, peer: Peer, data: bytes) -> None:
        try:
            await peer.handshake.add_candidate(data)
        except CandidateRefused as exc:
            self.stats.drops["candidates_over_budget"] += 1
            log.debug("candidate from %s refused: %s", peer.alias, exc)
        except Exception as exc:
            # A candidate that does not parse or apply is worth nothing, but the
            # session may do without it: only the candidate is lost.
            self.stats.drops["bad_signalling"] += 1
            log.debug("bad candidate from %s: %r", peer.alias, exc)

    async def _answer(self, peer: Peer, offer: bytes) -> None:
        try:
            answer = await peer.handshake.answer(offer)
        except PortRangeExhausted as exc:  # ours, not the offer's fault
            self._close_peer(peer, CloseReason.CONNECTION_FAILED, f"cannot answer: {exc}")
            return
        except Exception as exc:
            self.stats.drops["bad_signalling"] += 1
            self._close_peer(peer, CloseReason.BAD_SIGNALLING, f"offer: {exc!r}"[:200])
            return
        if answer is None:  # closed meanwhile
            return
        self._signal(pb.WEBRTC_ANSWER, peer.alias, answer)
        try:
            await peer.session.wait_open(self.config.establish_timeout)
        except Exception:
            return  # closed or timed out: the session's own close path counts it
        peer.send(self.relay.me.auth_frame())

    # -- liveness ----------------------------------------------------------

    async def _keepalive(self) -> None:
        """Detect dead peers within their timeout instead of ICE's ~30 s.

        Every interval each established session is checked for signs of life
        (a message, or an SCTP acknowledgement of ours). A server link that
        carried nothing from us gets a PING, so a live server is never silent
        for long; a client that has been silent for ``client_probe_after`` (or a
        quarter of ``client_timeout``) gets one too, which a live client's SCTP
        stack acknowledges even if its application ignores it. That probe comes
        before the SDK's own keepalive would PING (``KEEPALIVE_INTERVAL``), so an
        idle session's keepalive is one DATA packet and its SACK every few
        seconds, not a PING, its echo and two SACKs. A session silent for
        longer than its timeout is closed: its subscriptions go at once, and a
        client whose process died stops counting against ``max_peers``.
        """
        interval = self.config.keepalive_interval
        while True:
            await asyncio.sleep(interval)
            self._check_all_alive(time.monotonic())

    def _check_all_alive(self, now: float) -> None:
        # Not inlined in the loop above: a loop variable there would keep the last
        # peer checked (its whole session) alive in the sleeping coroutine.
        for peer in list(self.peers.values()):
            if peer.established:
                self._check_alive(peer, now)

    def _check_alive(self, peer: Peer, now: float) -> None:
        if not peer.is_server and not peer.capabilities:
            # A client of the original protocol is never probed (see below), so its
            # silence proves nothing: an idle one would be closed. ICE consent covers it.
            return
        config = self.config
        timeout = config.peer_timeout if peer.is_server else config.client_timeout
        if peer.silence is None:
            peer.silence = SilenceClock(interval=config.keepalive_interval, timeout=timeout)
        if peer.silence.tick(peer.session.peer_progress, now):
            self._close_peer(peer, CloseReason.PEER_SILENT, f"nothing heard for {timeout:g} s")
            return
        if peer.is_server:
            if peer.session.sent == peer.sent_at_check:
                peer.send(KEEPALIVE_PING)
            peer.sent_at_check = peer.session.sent
        elif peer.silence.silent_for >= min(config.client_probe_after, timeout / 4):
            # Only clients that announced capabilities (this broker's SDKs) are known
            # to ignore a PING from the server; a client of the original protocol might
            # echo it, and the server echoes every client PING: they would play ping-pong.
            peer.send(KEEPALIVE_PING, reliable=False)

    # -- load reports -------------------------------------------------------

    @property
    def client_load(self) -> int:
        """Clients as load reports count them: established ones and those being set up.

        A replica forgets the CONNECTs it relayed here when a report arrives, so
        a report must already count every client whose CONNECT reached this
        server: one counting only established clients, sent while a set-up was
        under way, would let the next client be sent here as if this server
        had none."""
        return sum(
            1
            for peer in self.peers.values()
            if (peer.role == pb.CLIENT and peer.established)
            or (peer.pending and self._from_client(peer))
        )

    def _load_report(self) -> bytes:
        """PING to the coordinator itself, ``time`` = :attr:`client_load` (docs/protocol.md,
        "Load reports"): each replica relays only its own clients' CONNECTs, so none
        could count this server's clients otherwise."""
        return pb.PingMessage(type=pb.PING, time=float(self.client_load)).SerializeToString()

    async def _report_load(self) -> None:
        """Tell every registered replica the client count, every ``load_report_interval``."""
        while True:
            await asyncio.sleep(self.config.load_report_interval)
            self.link.broadcast(self._load_report())

    # -- draining ----------------------------------------------------------

    async def drain(self, seconds: float) -> None:
        """Hand clients over to other servers before exiting (SIGTERM in Kubernetes).

        The server leaves the coordinator first, so no new client is sent here,
        then closes its client sessions spread over half the grace period (the
        SDKs reconnect through the coordinator; spreading avoids a stampede of
        DTLS handshakes on the other servers), and waits for them to be gone.
        """
        self.draining = True
        await self.link.stop()
        clients = [p for p in self.peers.values() if self._from_client(p)]
        log.info("draining: handing %d clients over within %.1f s", len(clients), seconds)
        if clients:
            # A few clients go at once; many are spread so that at most one
            # per DRAIN_STEP leaves, within half the grace period.
            pause = min(seconds / 2 / len(clients), DRAIN_STEP)
            for index, peer in enumerate(clients):
                if index:
                    await asyncio.sleep(pause)
                peer.end(CloseReason.DRAINING, "reconnect through the coordinator")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds / 2):
                await asyncio.gather(*(peer.session.closed.wait() for peer in clients))

    def _on_coordinator_lost(self, slot: LinkSlot | None = None) -> None:
        # Sessions still being set up through that replica depend on signalling
        # that is now gone; those going through another replica carry on.
        alone = not self.link.connected.is_set()
        for peer in list(self.peers.values()):
            if peer.pending and (slot is None or self._signalled_through(peer, slot, alone)):
                self._close_peer(peer, CloseReason.COORDINATOR_LOST)

    def _signalled_through(self, peer: Peer, slot: LinkSlot, alone: bool) -> bool:
        routed = self.link.routed(peer.alias)
        return routed is slot or (routed is None and alone)

    # -- running ----------------------------------------------------------

    def status(self) -> dict[str, Any]:
        peers = list(self.peers.values())
        return {
            "name": self.config.name,
            "alias": self.alias,
            "role": self.config.role,
            "server_id": self.server_id,
            "registered": self.link.connected.is_set(),
            "coordinators": self.link.status(),
            "draining": self.draining,
            "clients": sum(1 for p in peers if p.role == pb.CLIENT),
            "servers": sum(1 for p in peers if p.is_server),
            "pending": sum(1 for p in peers if p.pending),
            "topics": len(self.relay.clients.by_topic),
            "server_topics": len(self.relay.servers.by_topic),
            "queue_depth": sum(p.session.queue_depth for p in peers),
            "stats": self.stats.as_dict(),
            "ice": self.candidates.describe(),
        }

    @property
    def healthy(self) -> bool:
        """False once a part the server cannot work without is gone for good."""
        return self.supervisor.healthy

    def _fatal(self, failure: Failure) -> None:
        log.critical("comm server cannot go on: %s", failure)
        self._failed.set()

    async def run(self) -> None:
        """Serve until cancelled or until a long-lived task fails for good (then
        :attr:`healthy` is False and the caller exits non-zero); close every session."""
        await self.open()
        self.link.start()
        self.supervisor.start("keepalive", self._keepalive, restart=True)
        self.supervisor.start("load-report", self._report_load, restart=True)
        try:
            await self._failed.wait()
        finally:
            await self.close()

    async def open(self) -> None:
        """Bind the UDP mux (single-port mode) and resolve advertised names; a taken
        port raises an OSError naming it. :meth:`run` calls it; calling it first
        reports such errors before anything else starts."""
        await self.candidates.open()

    async def close(self) -> None:
        await self.supervisor.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        peers = list(self.peers.values())
        for peer in peers:
            peer.end(CloseReason.SHUTDOWN)
        await asyncio.gather(
            *(peer.session.wait_closed() for peer in peers), return_exceptions=True
        )
        if self.batching is not None:
            self.batching.close()
        self.candidates.close()
        self.reclaimer.close()
