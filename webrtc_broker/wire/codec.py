"""Typed encoding and decoding of broker frames.

Every frame is one protobuf message whose field 1 is its type. Receivers read
the type first (:func:`frame_type`, which peeks at the first bytes without
parsing the message) and then parse the full message once (:func:`decode`).
Anything that is not a valid frame raises :class:`FrameError` and nothing else,
so a read loop needs exactly one ``except`` to survive hostile input.
"""

from __future__ import annotations

from typing import TypeVar

from google.protobuf.message import DecodeError as _ProtobufDecodeError
from google.protobuf.message import Message

from webrtc_broker.wire import broker_pb2 as pb

MessageType = pb.MessageType
Role = pb.Role
Format = pb.Format
ConnectionRefusedReason = pb.ConnectionRefusedReason

AnyMessage = (
    pb.CoordinatorMessage
    | pb.WelcomeMessage
    | pb.ConnectMessage
    | pb.WebRtcMessage
    | pb.ConnectionRefusedMessage
    | pb.PingMessage
    | pb.SubscriptionMessage
    | pb.AuthMessage
    | pb.TopicMessage
    | pb.TopicFWMessage
    | pb.TopicIdentityMessage
    | pb.TopicIdentityFWMessage
    | pb.BatchMessage
)

M = TypeVar("M", bound=Message)

MESSAGE_CLASSES: dict[pb.MessageType.ValueType, type[AnyMessage]] = {
    pb.WELCOME: pb.WelcomeMessage,
    pb.CONNECT: pb.ConnectMessage,
    pb.WEBRTC_OFFER: pb.WebRtcMessage,
    pb.WEBRTC_ANSWER: pb.WebRtcMessage,
    pb.WEBRTC_ICE_CANDIDATE: pb.WebRtcMessage,
    pb.PING: pb.PingMessage,
    pb.SUBSCRIPTION: pb.SubscriptionMessage,
    pb.AUTH: pb.AuthMessage,
    pb.TOPIC: pb.TopicMessage,
    pb.TOPIC_FW: pb.TopicFWMessage,
    pb.TOPIC_IDENTITY: pb.TopicIdentityMessage,
    pb.TOPIC_IDENTITY_FW: pb.TopicIdentityFWMessage,
    pb.CONNECTION_REFUSED: pb.ConnectionRefusedMessage,
    pb.ERROR: pb.CoordinatorMessage,
    pb.BATCH: pb.BatchMessage,
}

_TYPE_TAG = 0x08  # field 1, varint
_VARINT_CONTINUES = 0x80


class FrameError(ValueError):
    """A frame that is not a valid broker message (truncated, garbage or unknown type)."""


def frame_type(data: bytes) -> pb.MessageType.ValueType:
    """Return the message type of ``data`` without parsing the whole frame.

    Serializers write fields in field-number order, so a well-formed frame
    starts with the type tag; the fast path reads it from the first two bytes.
    Frames that start otherwise fall back to a header parse.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise FrameError(f"frame must be bytes, not {type(data).__name__}")
    if len(data) >= 2 and data[0] == _TYPE_TAG and data[1] < _VARINT_CONTINUES:
        kind = pb.MessageType.ValueType(data[1])
    else:
        kind = decode_as(data, pb.MessageHeader).type
    if kind not in MESSAGE_CLASSES:
        raise FrameError(f"unknown message type {kind}")
    return kind


def decode_as(data: bytes, cls: type[M]) -> M:
    """Parse ``data`` as a message of class ``cls``."""
    message = cls()
    try:
        message.ParseFromString(bytes(data))
    except (_ProtobufDecodeError, ValueError, TypeError) as exc:
        raise FrameError(f"cannot decode {cls.__name__}: {exc}") from exc
    return message


def decode(data: bytes) -> AnyMessage:
    """Parse a frame into the message class its type names."""
    return decode_as(data, MESSAGE_CLASSES[frame_type(data)])


def encode(message: Message) -> bytes:
    """Serialize a message into one frame."""
    return message.SerializeToString()


_BATCH_HEADER = bytes([_TYPE_TAG, pb.BATCH])
_FRAMES_TAG = b"\x12"  # field 2, length-delimited


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= _VARINT_CONTINUES:
        out.append((value & 0x7F) | _VARINT_CONTINUES)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_batch(frames: list[bytes]) -> bytes:
    """Encode a BatchMessage; byte-identical to protobuf's, without building a message.

    This runs for every batch a busy server sends, so it only concatenates.
    """
    parts = [_BATCH_HEADER]
    for frame in frames:
        parts += (_FRAMES_TAG, _varint(len(frame)), frame)
    return b"".join(parts)
