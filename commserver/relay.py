"""What a comm server does with each frame that arrives on a data channel.

The first reliable frame of every session is AUTH; after it, SUBSCRIPTION
frames set what a peer wants and TOPIC frames fan out. Work per message is
kept to one decode and one encode per audience: a TOPIC becomes one TOPIC_FW
frame shared by all local subscribers and one TOPIC frame shared by all
subscribed servers. The per-client limits of :mod:`commserver.limits` cost an
integer comparison per frame and a few float operations per publish.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from time import perf_counter

from commserver.lifecycle import PeerState
from commserver.limits import FRAME_TOO_LARGE, RATE_LIMITED, TOPIC_TOO_LONG, PeerLimits
from commserver.peer import SERVER_ROLES, Peer
from commserver.stats import RelayStats
from commserver.topics import TopicChange, TopicTable
from webrtc_broker.auth import AuthError, ClientAuthenticator, ServerSecret
from webrtc_broker.rtc.writer import SCTP_PACKET_PAYLOAD, FlushScheduler
from webrtc_broker.wire import FrameError, decode_as, frame_type
from webrtc_broker.wire import broker_pb2 as pb
from webrtc_broker.wire.subscription import (
    subscription_changes,
    subscription_frame,
    subscription_payload,
    topic_set,
)

log = logging.getLogger(__name__)

SERVER_TOPICS_BYTES = 16 * 1024 * 1024
"""Largest topic list accepted from an authenticated comm server."""
CLIENT_CAPABILITIES = pb.CAPABILITY_BATCH | pb.CAPABILITY_TOPIC_NAMES
"""Capabilities that mean something to a client (the others are between servers)."""
LEGACY_PLAIN_TOPICS = 1000
"""Above this many topics, a whole set for a server of the original protocol is gzipped."""
SUBSCRIPTION_BYTES_PER_TOKEN = 1024
"""A client's SUBSCRIPTION costs one frame of its rate budget, plus one per this many
bytes of its (decompressed) topic list."""


@dataclass(frozen=True, slots=True)
class ServerIdentity:
    """How this comm server introduces itself to other servers."""

    role: pb.Role.ValueType
    server_id: str
    name: str
    secret: ServerSecret
    capabilities: int

    def client_auth_reply(self) -> bytes:
        """The AUTH a client that announced capabilities gets back: ours that concern
        clients, no secrets."""
        return pb.AuthMessage(
            type=pb.AUTH, role=self.role, capabilities=self.capabilities & CLIENT_CAPABILITIES
        ).SerializeToString()

    def auth_frame(self) -> bytes:
        body = {
            "id": self.server_id,
            "name": self.name,
            "secret": self.secret.credentials().decode(),
        }
        return pb.AuthMessage(
            type=pb.AUTH,
            role=self.role,
            body=json.dumps(body).encode(),
            capabilities=self.capabilities,
        ).SerializeToString()


class Relay:
    """Frame dispatch, subscriptions and fan-out for one comm server."""

    def __init__(
        self,
        *,
        me: ServerIdentity,
        authenticator: ClientAuthenticator,
        stats: RelayStats,
        limits: PeerLimits,
        on_authenticated: Callable[[Peer], bool],
        reject_peer: Callable[[Peer, str], None],
        batching: FlushScheduler | None = None,
        batch_max_bytes: int = SCTP_PACKET_PAYLOAD,
    ) -> None:
        self.me = me
        self.is_hub = me.role == pb.COMMUNICATION_SERVER_HUB
        self._authenticator = authenticator
        self.stats = stats
        self.limits = limits
        # Read on every frame: plain attributes, not lookups through ``limits``.
        self._max_frame_bytes = limits.max_frame_bytes
        self._max_topic_bytes = limits.max_topic_bytes
        self._burst = float(limits.publish_burst)
        self._on_authenticated = on_authenticated
        self._reject_peer = reject_peer
        self._batching = batching
        self._batch_max_bytes = batch_max_bytes
        self.clients: TopicTable[Peer] = TopicTable()
        self.servers: TopicTable[Peer] = TopicTable()
        self.server_peers: set[Peer] = set()
        self.hub_peers: set[Peer] = set()
        self._advertised: set[str] = set()
        """The topics our servers were last told we want."""

    # -- entry point ------------------------------------------------------

    def handle(self, peer: Peer, data: bytes, reliable: bool) -> None:
        """Handle one data-channel message from ``peer``; never raises."""
        size = len(data)
        self.stats.bytes_in += size
        if size > self._max_frame_bytes and not peer.is_server:
            self.stats.drops[FRAME_TOO_LARGE] += 1
            log.debug("dropped a %d-byte frame from %s: above max_frame_bytes", size, peer.alias)
            return
        self._frame(peer, data, reliable, in_batch=False)

    def _frame(
        self, peer: Peer, data: bytes, reliable: bool, *, in_batch: bool, paid: bool = False
    ) -> None:
        """Handle one frame; ``paid`` when a BATCH already took its token."""
        stats = self.stats
        try:
            kind = frame_type(data)
            key = (peer.role_name, kind, reliable)
            stats.frames_in[key] += 1
            stats.frame_bytes_in[key] += len(data)
            if not peer.established:
                self._before_auth(peer, kind, data, reliable)
                return
            start = perf_counter()  # one clock reading: the bucket and the histogram
            if peer.publish_rate and not paid and kind != pb.BATCH and not self._grant(peer, start):
                stats.drops[RATE_LIMITED] += 1
                return
            if kind in (pb.TOPIC, pb.TOPIC_IDENTITY):
                if kind == pb.TOPIC:
                    self._topic(peer, decode_as(data, pb.TopicMessage), reliable)
                else:
                    self._topic_identity(peer, decode_as(data, pb.TopicIdentityMessage), reliable)
                stats.relay_seconds.observe(perf_counter() - start)
            elif kind == pb.BATCH and not in_batch:
                self._batch(peer, decode_as(data, pb.BatchMessage).frames, reliable)
            elif kind == pb.PING:
                # Servers ping each other as a keepalive that is heard, not echoed:
                # echoing would bounce a probe between two servers forever.
                if not peer.is_server:
                    peer.send(data, reliable=reliable, immediate=True)
                    stats.sent(kind, reliable, 1, len(data))
            elif kind == pb.SUBSCRIPTION:
                self._subscription(peer, decode_as(data, pb.SubscriptionMessage))
            else:
                stats.drops["unexpected_type"] += 1
        except FrameError as exc:
            stats.drops["malformed"] += 1
            log.debug("malformed frame from %s: %s", peer.alias, exc)
        except Exception:
            stats.drops["internal_error"] += 1
            log.exception("error handling a frame from %s", peer.alias)

    def _batch(self, peer: Peer, frames: Sequence[bytes], reliable: bool) -> None:
        """Handle a BATCH's frames, each paid for as if it came alone.

        Once the sender's budget runs out the rest are dropped in one step: a
        BATCH of tens of thousands of tiny frames costs one decode and a count,
        not a loop that refuses them one by one.
        """
        limited = bool(peer.publish_rate)
        now = perf_counter()
        if limited and not frames and not self._grant(peer, now):  # even an empty one is a frame
            self.stats.drops[RATE_LIMITED] += 1
        for index, frame in enumerate(frames):
            if limited and not self._grant(peer, now):
                self.stats.drops[RATE_LIMITED] += len(frames) - index
                return
            self._frame(peer, frame, reliable, in_batch=True, paid=True)

    def _grant(self, peer: Peer, now: float) -> bool:
        """Take a token from the peer's bucket at ``now`` (``perf_counter``), if it has one.

        A token bucket refilled at ``publish_rate`` per second up to the burst.
        The bucket can be in debt (see :meth:`_charge`): then nothing is granted
        until the refill pays it back.
        """
        tokens = min(self._burst, peer.tokens + (now - peer.refilled) * peer.publish_rate)
        peer.refilled = now
        if tokens < 1.0:
            peer.tokens = tokens
            return False
        peer.tokens = tokens - 1.0
        return True

    def _charge(self, peer: Peer, tokens: float) -> None:
        """Charge the extra cost of an expensive frame already admitted (debt allowed,
        down to one burst, so a client always recovers within burst/rate seconds)."""
        if peer.publish_rate:
            peer.tokens = max(-self._burst, peer.tokens - tokens)

    # -- authentication ---------------------------------------------------

    def _before_auth(
        self, peer: Peer, kind: pb.MessageType.ValueType, data: bytes, reliable: bool
    ) -> None:
        if not reliable or peer.state is PeerState.CLOSED:
            self.stats.drops["before_auth"] += 1
            return
        if kind != pb.AUTH:
            self.stats.drops["before_auth"] += 1
            self._reject_peer(peer, "the first reliable frame must be AUTH")
            return
        message = decode_as(data, pb.AuthMessage)
        try:
            self._authenticate(peer, message)
        except AuthError as exc:
            self._reject_peer(peer, str(exc))
            return
        if not peer.is_server and self.limits.publish_rate:
            peer.publish_rate = self.limits.publish_rate
            peer.tokens = self._burst
            peer.refilled = perf_counter()
        if not self._on_authenticated(peer):
            return
        # Our AUTH goes out before batching starts: the peer expects it as a frame of its own.
        if peer.is_server:
            self.server_peers.add(peer)
            if peer.role == pb.COMMUNICATION_SERVER_HUB:
                self.hub_peers.add(peer)
            if not peer.initiated_by_us:  # we answered its offer: we sent ours already
                peer.send(self.me.auth_frame())
        elif peer.capabilities:
            peer.send(self.me.client_auth_reply())
        if self._batching is not None and peer.capabilities & pb.CAPABILITY_BATCH:
            peer.session.enable_batching(self._batching, self._batch_max_bytes)
        if peer.is_server:
            self._send_topics(peer, self._advertised, pb.REPLACE)

    def _authenticate(self, peer: Peer, message: pb.AuthMessage) -> None:
        if message.role == pb.CLIENT:
            if peer.initiated_by_us or peer.expected_role in SERVER_ROLES:
                raise AuthError("a server session cannot authenticate as a client")
            peer.identity = self._authenticator.authenticate(message.body).value
        elif message.role in SERVER_ROLES:
            if peer.expected_role == pb.CLIENT:
                raise AuthError("a client cannot authenticate as a server")
            try:
                body = json.loads(message.body)
                secret, server_id = body["secret"], body["id"]
            except (ValueError, KeyError, TypeError) as exc:
                raise AuthError("malformed server credentials") from exc
            self.me.secret.verify(str(secret))
            peer.server_id = str(server_id)
            if peer.server_id == self.me.server_id:
                raise AuthError("a server cannot connect to itself")
        else:
            raise AuthError(f"unknown role {message.role}")
        peer.role = message.role
        peer.capabilities = message.capabilities

    # -- subscriptions ----------------------------------------------------

    def _subscription(self, peer: Peer, message: pb.SubscriptionMessage) -> None:
        # A server announces the union of its clients' topics: far more than one client.
        limit = SERVER_TOPICS_BYTES if peer.is_server else self.limits.max_topics_bytes
        try:
            payload = subscription_payload(message, max_bytes=limit)
        except FrameError:
            # Refused part-way through inflating: that much was inflated all the same.
            # (Servers have no rate budget: charging them is a no-op.)
            self._charge(peer, limit / SUBSCRIPTION_BYTES_PER_TOKEN)
            raise
        # Inflating, splitting and hashing a topic list costs by its size, however few
        # distinct topics it names: pay for every byte.
        self._charge(peer, len(payload) / SUBSCRIPTION_BYTES_PER_TOKEN)
        topics = topic_set(payload)
        if not peer.is_server:
            problem = self.limits.subscription_problem(topics)
            if problem is not None:
                self.stats.drops[problem] += 1
                log.debug("refused a subscription of %d topics from %s", len(topics), peer.alias)
                return
        if peer.is_server:
            change = self._server_subscription(peer, message.change, topics)
            if self.is_hub:
                self._advertise(change)
        elif message.change != pb.REPLACE:
            self.stats.drops["unexpected_type"] += 1  # changes are for servers only
        else:
            self._advertise(self.clients.replace(peer, topics))

    def _server_subscription(
        self, peer: Peer, kind: pb.SubscriptionChange.ValueType, topics: frozenset[str]
    ) -> TopicChange:
        if kind == pb.ADD:
            return self.servers.add(peer, topics)
        if kind == pb.REMOVE:
            return self.servers.discard(peer, topics)
        return self.servers.replace(peer, topics)

    def forget(self, peer: Peer) -> None:
        """Drop a closed peer from every table."""
        self.server_peers.discard(peer)
        self.hub_peers.discard(peer)
        change = self.clients.remove(peer)
        if self.is_hub:
            from_servers = self.servers.remove(peer)
            change.added |= from_servers.added
            change.removed |= from_servers.removed
        else:
            self.servers.remove(peer)
        self._advertise(change)

    def _advertise(self, change: TopicChange) -> None:
        """Tell every server how the topics we want changed, if they did.

        We want what our clients want; a hub also wants what any of its servers
        want, since it forwards. Only the difference travels, in chunks, to
        servers that take changes: a server with 100,000 topics sends a few
        names when one client subscribes, not a 2.5 MB list that no data channel
        carries. Servers that do not take changes get the whole set again.
        """
        advertised = self._advertised
        added = {t for t in change.added if t not in advertised}
        removed = {t for t in change.removed if t in advertised and not self._wanted(t)}
        if not added and not removed:
            return
        advertised |= added
        advertised -= removed
        for server in self.server_peers:
            if server.capabilities & pb.CAPABILITY_TOPIC_DELTAS:
                self._send_topics(server, added, pb.ADD)
                self._send_topics(server, removed, pb.REMOVE)
            else:
                self._send_topics(server, advertised, pb.REPLACE)

    def _wanted(self, topic: str) -> bool:
        return topic in self.clients.by_topic or (self.is_hub and topic in self.servers.by_topic)

    def _send_topics(
        self, server: Peer, topics: Collection[str], kind: pb.SubscriptionChange.ValueType
    ) -> None:
        if server.capabilities & pb.CAPABILITY_TOPIC_DELTAS:
            if topics or kind == pb.REPLACE:
                for frame in subscription_changes(topics, kind):
                    server.send(frame)
            return
        # A server of the original protocol takes a whole set in one message. Compressed,
        # it carries about ten times more than plain; beyond that its writer drops it.
        server.send(subscription_frame(topics, compress=len(topics) > LEGACY_PLAIN_TOPICS))

    # -- fan-out ----------------------------------------------------------

    def _topic(self, peer: Peer, message: pb.TopicMessage, reliable: bool) -> None:
        topic = message.topic
        if len(topic) > self._max_topic_bytes and not peer.is_server:
            # At least that many bytes. A name longer in bytes only can match no
            # subscription (they are checked in bytes), so it goes nowhere anyway.
            self.stats.drops[TOPIC_TOO_LONG] += 1
            return
        if peer.is_server:
            sender = message.from_alias
        else:
            sender = peer.alias
            message.from_alias = sender
        local = self.clients.by_topic.get(topic)
        if local:
            fw = pb.TopicFWMessage(type=pb.TOPIC_FW, from_alias=sender, body=message.body)
            self._deliver_to_clients(local, peer, fw, reliable, topic)
        self._forward(peer, topic, message, reliable)

    def _topic_identity(self, peer: Peer, message: pb.TopicIdentityMessage, reliable: bool) -> None:
        topic = message.topic
        if len(topic) > self._max_topic_bytes and not peer.is_server:
            self.stats.drops[TOPIC_TOO_LONG] += 1
            return
        if not peer.is_server:  # stamp what the session proved, whatever the client claims
            message.from_alias = peer.alias
            message.identity = peer.identity
            message.role = peer.role
        local = self.clients.by_topic.get(topic)
        if local:
            fw = pb.TopicIdentityFWMessage(
                type=pb.TOPIC_IDENTITY_FW,
                from_alias=message.from_alias,
                identity=message.identity,
                role=message.role,
                body=message.body,
            )
            self._deliver_to_clients(local, peer, fw, reliable, topic)
        self._forward(peer, topic, message, reliable)

    def _forward(
        self,
        peer: Peer,
        topic: str,
        message: pb.TopicMessage | pb.TopicIdentityMessage,
        reliable: bool,
    ) -> None:
        """Send a topic message to the servers that must see it, each exactly once.

        In a mesh a message crosses at most one server-to-server hop: the
        origin server sends it to every subscribed server and they deliver
        locally. With hubs (a star) the origin sends it to one hub only, and
        the hub forwards it to every other subscribed server, hubs included;
        what a hub gets from a hub is delivered locally and goes no further.
        """
        remote = self.servers.by_topic.get(topic)
        if not remote:
            return
        if peer.is_server:
            if not self.is_hub or peer.role == pb.COMMUNICATION_SERVER_HUB:
                return
            targets = remote
        elif not self.is_hub and self.hub_peers:
            # A hub wants every topic its servers want. Until its subscription
            # arrives, servers linked to us directly get the message directly.
            hub = min(self.hub_peers, key=lambda h: h.server_id)
            targets = {hub} if hub in remote else remote
        else:
            targets = remote
        self._deliver_to_servers(targets, peer, message.type, message.SerializeToString(), reliable)

    def _deliver_to_clients(
        self,
        peers: set[Peer],
        source: Peer,
        message: pb.TopicFWMessage | pb.TopicIdentityFWMessage,
        reliable: bool,
        topic: str,
    ) -> None:
        """Deliver a TOPIC_FW-like message, encoded at most twice: as the original
        protocol has it, and with the topic for peers that asked for topic names."""
        encoded: dict[bool, bytes] = {}
        count = size = 0
        for target in peers:
            if target is source:
                continue
            named = target.wants_topic
            frame = encoded.get(named)
            if frame is None:
                message.topic = topic if named else ""
                frame = encoded[named] = message.SerializeToString()
            target.session.send(frame, reliable=reliable)
            count += 1
            size += len(frame)
        self.stats.deliveries["client"] += count
        self.stats.sent(message.type, reliable, count, size)

    def _deliver_to_servers(
        self,
        peers: set[Peer],
        source: Peer,
        kind: pb.MessageType.ValueType,
        frame: bytes,
        reliable: bool,
    ) -> None:
        count = 0
        for target in peers:
            if target is not source:
                target.session.send(frame, reliable=reliable)
                count += 1
        self.stats.deliveries["server"] += count
        self.stats.sent(kind, reliable, count, count * len(frame))
