"""Signalling relay: forward set-up frames between peers, with the sender's real alias.

Rules (PROTOCOL.md, "Coordinator"): CONNECT, WEBRTC_OFFER/ANSWER/ICE_CANDIDATE
and CONNECTION_REFUSED go to ``to_alias`` with ``from_alias`` overwritten, so a
peer cannot impersonate another. Clients only ever talk to servers: a client
has no business signalling another client, and allowing it would turn the
coordinator into a free peer-to-peer rendezvous. Everything else is dropped and
counted; a bad frame never costs the sender its connection, because one buggy
message from a browser should not disconnect it from the broker.
"""

from __future__ import annotations

from webrtc_broker.wire import broker_pb2 as pb
from webrtc_broker.wire import codec

from .counters import RELAYED_TYPES, CoordinatorCounters, DropReason
from .registry import Peer, Registry

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


def route_allowed(sender: Peer, target: Peer) -> bool:
    """client->server, server->client and server->server; never client->client or to self."""
    if sender is target:
        return False
    return sender.is_server or target.is_server


class Relay:
    """Applies the relay rules to every binary frame a peer sends."""

    def __init__(self, registry: Registry, counters: CoordinatorCounters) -> None:
        self._registry = registry
        self._counters = counters

    def drop(self, reason: DropReason) -> None:
        self._counters.frames_dropped[reason] += 1

    def handle(self, sender: Peer, frame: bytes) -> None:
        """Forward or drop one frame; never raises for anything the peer sent."""
        try:
            kind = codec.frame_type(frame)
        except codec.FrameError:
            self.drop(DropReason.MALFORMED)
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
        if isinstance(message, pb.ConnectMessage):
            # Addition (docs/protocol.md): the target learns who is asking before
            # the session exists, so a full server can still accept other servers.
            message.from_role = _WIRE_ROLES[sender.role]
            if not sender.is_server:
                self._registry.note_connect(sender, target.alias)
        if target.sink.send(codec.encode(message)):
            self._counters.frames_relayed[RELAYED_TYPES[kind]] += 1
        else:
            self.drop(DropReason.QUEUE_FULL)
