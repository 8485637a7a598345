"""The broker's wire format: protobuf messages compatible with the original Go broker."""

from webrtc_broker.wire.codec import (
    AnyMessage,
    FrameError,
    MessageType,
    decode,
    decode_as,
    encode,
    frame_type,
)

__all__ = [
    "AnyMessage",
    "FrameError",
    "MessageType",
    "decode",
    "decode_as",
    "encode",
    "frame_type",
]
