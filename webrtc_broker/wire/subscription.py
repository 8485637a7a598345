"""SUBSCRIPTION payloads: a peer's complete topic set, space-separated, maybe gzipped."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterable

from webrtc_broker.wire import broker_pb2 as pb
from webrtc_broker.wire.codec import FrameError

_GZIP_WBITS = 16 + zlib.MAX_WBITS


def subscription_frame(topics: Iterable[str], *, compress: bool = False) -> bytes:
    """Encode a SUBSCRIPTION frame announcing exactly ``topics``."""
    names = sorted(set(topics))
    for name in names:
        if not name or any(ch.isspace() for ch in name):
            raise ValueError(f"topic names are non-empty and contain no whitespace: {name!r}")
    payload = " ".join(names).encode()
    if compress:
        payload = gzip.compress(payload)
    return pb.SubscriptionMessage(
        type=pb.SUBSCRIPTION, format=pb.GZIP if compress else pb.PLAIN, topics=payload
    ).SerializeToString()


def subscription_topics(message: pb.SubscriptionMessage, *, max_bytes: int) -> frozenset[str]:
    """Decode the topic set of a SUBSCRIPTION, refusing lists larger than ``max_bytes``."""
    return topic_set(subscription_payload(message, max_bytes=max_bytes))


def subscription_payload(message: pb.SubscriptionMessage, *, max_bytes: int) -> bytes:
    """The SUBSCRIPTION's topic list as sent, decompressed, at most ``max_bytes`` long.

    The size check happens while decompressing, so a small gzip bomb costs at
    most ``max_bytes`` of memory. The length of the result is what decoding
    the list costs, whatever the size of the set it names.
    """
    payload = message.topics
    if message.format == pb.GZIP:
        inflater = zlib.decompressobj(_GZIP_WBITS)
        try:
            payload = inflater.decompress(payload, max_bytes + 1)
        except zlib.error as exc:
            raise FrameError(f"bad gzip topic list: {exc}") from exc
    elif message.format not in (pb.PLAIN, pb.UNKNOWN_FORMAT):
        raise FrameError(f"unknown subscription format {message.format}")
    if len(payload) > max_bytes:
        raise FrameError(f"topic list larger than {max_bytes} bytes")
    return payload


def topic_set(payload: bytes) -> frozenset[str]:
    """The topics a decompressed topic list names."""
    try:
        text = payload.decode()
    except UnicodeDecodeError as exc:
        raise FrameError("topic list is not UTF-8") from exc
    return frozenset(text.split())


CHUNK_BYTES = 64 * 1024
"""Topic names per SUBSCRIPTION change between servers, before compression: whatever
the number of topics, every message stays far below a data channel's 256 KiB."""


def subscription_changes(
    topics: Iterable[str], change: pb.SubscriptionChange.ValueType
) -> list[bytes]:
    """``topics`` as gzip SUBSCRIPTION frames of ``change`` (for peers that take changes).

    A large set is cut into chunks of at most :data:`CHUNK_BYTES`; a REPLACE
    becomes one REPLACE (an empty one if there are no topics) followed by ADDs.
    """
    frames: list[bytes] = []
    chunk: list[str] = []
    size = 0

    def emit() -> None:
        kind = change if change != pb.REPLACE or not frames else pb.ADD
        payload = gzip.compress(" ".join(chunk).encode(), 6)
        message = pb.SubscriptionMessage(
            type=pb.SUBSCRIPTION, format=pb.GZIP, topics=payload, change=kind
        )
        frames.append(message.SerializeToString())

    for name in sorted(set(topics)):
        if chunk and size + len(name.encode()) + 1 > CHUNK_BYTES:
            emit()
            chunk, size = [], 0
        chunk.append(name)
        size += len(name.encode()) + 1
    if chunk or (change == pb.REPLACE and not frames):
        emit()
    return frames
