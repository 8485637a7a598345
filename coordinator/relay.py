"""Signalling relay: forward set-up frames between peers, with the sender's real alias.

Rules (docs/protocol.md, "Flow"): CONNECT, WEBRTC_OFFER/ANSWER/ICE_CANDIDATE
and CONNECTION_REFUSED go to ``to_alias`` with ``from_alias`` overwritten, so a
peer cannot impersonate another. Clients only ever talk to servers: a client
has no business signalling another client, and allowing it would turn the
coordinator into a free peer-to-peer rendezvous. Everything else is dropped and
counted; a bad frame never costs the sender its connection, because one buggy
message from a browser should not disconnect it from the broker.

Each CONNECT makes a comm server build a peer connection and gather ICE
candidates, so a client connection may have only a few CONNECTs that their
server has not answered yet (with an offer or a refusal); further ones are
dropped. An SDK sends one per connection, so only a flood is affected.

A frame from a client reaches the relay only within the client's signalling
budget (see :mod:`coordinator.session`), and may fill only a share of a comm
server's outbound queue (see :mod:`coordinator.outbox`): what a client sends is
charged to that client, never to the server it targets.
"""

from __future__ import annotations

import time

from webrtc_broker.wire import broker_pb2 as pb
from webrtc_broker.wire import codec

from .counters import RELAYED_TYPES, CoordinatorCounters, DropReason
from .registry import ClientPhase, Delivery, Origin, RegisteredPeer, Registry

SignallingMessage = pb.ConnectMessage | pb.WebRtcMessage | pb.ConnectionRefusedMessage

_CLASSES: dict[int, type[SignallingMessage]] = {
    codec.MessageType.CONNECT: pb.ConnectMessage,
    codec.MessageType.WEBRTC_OFFER: pb.WebRtcMessage,
    codec.MessageType.WEBRTC_ANSWER: pb.WebRtcMessage,
    codec.MessageType.WEBRTC_ICE_CANDIDATE: pb.WebRtcMessage,
    codec.MessageType.CONNECTION_REFUSED: pb.ConnectionRefusedMessage,
}

_WIRE_ROLES: dict[str, pb.Role.ValueType] = {
    "client": pb.CLIENT,
    "server": pb.COMMUNICATION_SERVER,
    "hub": pb.COMMUNICATION_SERVER_HUB,
}


def route_allowed(sender: RegisteredPeer, target: RegisteredPeer) -> bool:
    """client->server, server->client and server->server; never client->client or to self."""
    if sender is target:
        return False
    return sender.is_server or target.is_server


class SignalRelay:
    """Applies the relay rules to every binary frame a peer sends."""

    def __init__(
        self, registry: Registry, counters: CoordinatorCounters, *, max_pending_connects: int = 4
    ) -> None:
        self._registry = registry
        self._counters = counters
        self._max_pending = max_pending_connects

    def drop(self, reason: DropReason) -> None:
        self._counters.frames_dropped[reason] += 1

    def handle(self, sender: RegisteredPeer, frame: bytes) -> None:
        """Forward or drop one frame; never raises for anything the peer sent."""
        try:
            kind = codec.frame_type(frame)
        except codec.FrameError:
            self.drop(DropReason.MALFORMED)
            return
        if kind == codec.MessageType.PING and sender.is_server:
            self._load_report(sender, frame)
            return
        cls = _CLASSES.get(kind)
        if cls is None:
            self.drop(DropReason.UNEXPECTED_TYPE)
            return
        try:
            message: SignallingMessage = codec.decode_as(frame, cls)
        except codec.FrameError:
            self.drop(DropReason.MALFORMED)
            return

        target = self._registry.get(message.to_alias)
        if target is None:
            self.drop(DropReason.UNKNOWN_ALIAS)
            return
        if not route_allowed(sender, target):
            self.drop(DropReason.FORBIDDEN_ROUTE)
            return

        message.from_alias = sender.alias
        from_client = not sender.is_server
        if isinstance(message, pb.ConnectMessage):
            if from_client and not self._may_connect(sender):
                self.drop(DropReason.TOO_MANY_PENDING)
                return
            # Addition (docs/protocol.md): the target learns who is asking before
            # the session exists, so a full server can still accept other servers.
            message.from_role = _WIRE_ROLES[sender.role]
        delivery = target.sink.send(
            codec.encode(message), Origin.CLIENT if from_client else Origin.SERVER
        )
        if delivery is not Delivery.QUEUED:
            self.drop(_DROPS[delivery])
            return
        self._counters.frames_relayed[RELAYED_TYPES[kind]] += 1
        if from_client:
            sender.last_relayed = time.monotonic()
            if kind == codec.MessageType.CONNECT:
                # Counted only once queued: a dropped CONNECT is never answered.
                self._registry.note_connect(sender, target.alias)
                sender.pending[target.alias] = sender.pending.get(target.alias, 0) + 1
                if sender.phase is ClientPhase.WELCOMED:
                    sender.phase = ClientPhase.CONNECTING
        elif kind in _ANSWERS and not target.is_server:
            _answered(target, sender.alias)
            if kind == codec.MessageType.WEBRTC_OFFER:
                target.phase = ClientPhase.OFFERED

    def _load_report(self, server: RegisteredPeer, frame: bytes) -> None:
        """Addition (docs/protocol.md, "Load reports"): a comm server's PING to the
        coordinator itself carries its client count in ``time``."""
        try:
            report = codec.decode_as(frame, pb.PingMessage)
        except codec.FrameError:
            self.drop(DropReason.MALFORMED)
            return
        if self._registry.report_clients(server.alias, report.time):
            self._counters.load_reports += 1
        else:
            self.drop(DropReason.MALFORMED)

    def _may_connect(self, client: RegisteredPeer) -> bool:
        """Whether ``client`` is below its limit of unanswered CONNECTs.

        At the limit, CONNECTs to servers that have gone since are forgotten
        first: a dead server never answers, and must not hold the slot forever.
        """
        pending = client.pending
        if sum(pending.values()) < self._max_pending:
            return True
        for alias in [a for a in pending if self._registry.get(a) is None]:
            del pending[alias]
        return sum(pending.values()) < self._max_pending


_DROPS = {Delivery.TARGET_BUSY: DropReason.TARGET_BUSY, Delivery.QUEUE_FULL: DropReason.QUEUE_FULL}

_ANSWERS = frozenset({codec.MessageType.WEBRTC_OFFER, codec.MessageType.CONNECTION_REFUSED})
"""What a server sends a client in answer to its CONNECT, one per CONNECT."""


def _answered(client: RegisteredPeer, server_alias: int) -> None:
    count = client.pending.get(server_alias, 0)
    if count > 1:
        client.pending[server_alias] = count - 1
    elif count:
        del client.pending[server_alias]
