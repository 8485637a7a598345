"""Property tests of the wire codec: hostile bytes raise only FrameError, and every
message type survives an encode/decode round trip.

Messages are generated from the protobuf descriptors, so a field or message type
added to broker.proto is covered without touching this file.
"""

from __future__ import annotations

import contextlib
import gzip
import zlib

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from webrtc_broker.wire import FrameError, decode, decode_as, encode, frame_type
from webrtc_broker.wire import broker_pb2 as pb
from webrtc_broker.wire.codec import MESSAGE_CLASSES, AnyMessage
from webrtc_broker.wire.subscription import subscription_frame, subscription_topics

fast = settings(
    max_examples=150,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

_SCALARS: dict[int, st.SearchStrategy[object]] = {
    FieldDescriptor.TYPE_UINT64: st.integers(0, 2**64 - 1),
    FieldDescriptor.TYPE_UINT32: st.integers(0, 2**32 - 1),
    FieldDescriptor.TYPE_INT64: st.integers(-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_INT32: st.integers(-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_DOUBLE: st.floats(allow_nan=False),  # NaN != NaN
    FieldDescriptor.TYPE_BOOL: st.booleans(),
    FieldDescriptor.TYPE_STRING: st.text(max_size=40),
    FieldDescriptor.TYPE_BYTES: st.binary(max_size=200),
}


def _values(field: FieldDescriptor) -> st.SearchStrategy[object]:
    if field.type == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None
        return st.sampled_from([value.number for value in field.enum_type.values])
    if field.type not in _SCALARS:
        raise NotImplementedError(f"no strategy for {field.full_name} (type {field.type})")
    return _SCALARS[field.type]


@st.composite
def messages(draw: st.DrawFn, kind: pb.MessageType.ValueType) -> AnyMessage:
    """A message of type ``kind`` with arbitrary values in every other field."""
    cls = MESSAGE_CLASSES[kind]
    descriptor: Descriptor = cls.DESCRIPTOR
    message = cls(type=kind)
    for field in descriptor.fields:
        if field.number == 1:
            continue
        values = _values(field)
        if field.is_repeated:
            getattr(message, field.name).extend(draw(st.lists(values, max_size=5)))
        else:
            setattr(message, field.name, draw(values))
    return message


any_message = st.sampled_from(sorted(MESSAGE_CLASSES)).flatmap(messages)


def _mutations(frame: bytes) -> st.SearchStrategy[bytes]:
    """Near-valid frames: truncated, extended, or with one byte changed."""
    cut = st.integers(0, max(len(frame) - 1, 0)).map(lambda n: frame[:n])
    extended = st.binary(min_size=1, max_size=20).map(lambda tail: frame + tail)
    flipped = st.tuples(st.integers(0, max(len(frame) - 1, 0)), st.integers(0, 255)).map(
        lambda change: frame[: change[0]] + bytes([change[1]]) + frame[change[0] + 1 :]
    )
    return st.one_of(cut, extended, flipped)


hostile = st.one_of(
    st.binary(max_size=300),
    st.binary(max_size=300).map(lambda tail: b"\x08" + tail),  # starts like a type tag
    any_message.map(encode).flatmap(_mutations),
)


def _decodes_or_frame_error(data: bytes) -> None:
    try:
        message = decode(data)
    except FrameError:
        return
    assert isinstance(message, MESSAGE_CLASSES[frame_type(data)])


@fast
@given(hostile)
def test_decode_raises_only_frame_error(data: bytes) -> None:
    _decodes_or_frame_error(data)
    _decodes_or_frame_error(bytearray(data))  # type: ignore[arg-type]
    _decodes_or_frame_error(memoryview(data))  # type: ignore[arg-type]
    for cls in set(MESSAGE_CLASSES.values()):
        with contextlib.suppress(FrameError):
            decode_as(data, cls)


@pytest.mark.parametrize("kind", sorted(MESSAGE_CLASSES), ids=pb.MessageType.Name)
@fast
@given(data=st.data())
def test_round_trip(kind: pb.MessageType.ValueType, data: st.DataObject) -> None:
    message = data.draw(messages(kind))
    frame = encode(message)
    assert frame_type(frame) == kind
    decoded = decode(frame)
    assert type(decoded) is type(message)
    assert decoded == message
    assert encode(decoded) == frame


def test_non_bytes_and_empty_frames_are_frame_errors() -> None:
    for data in (b"", b"\x08", "text", None, 42):
        with pytest.raises(FrameError):
            decode(data)  # type: ignore[arg-type]


@fast
@given(st.lists(any_message.map(encode), max_size=8))
def test_encode_batch_matches_protobuf(frames: list[bytes]) -> None:
    from webrtc_broker.wire.codec import encode_batch  # noqa: PLC0415

    batch = encode_batch(frames)
    assert batch == pb.BatchMessage(type=pb.BATCH, frames=frames).SerializeToString()
    decoded = decode(batch)
    assert isinstance(decoded, pb.BatchMessage)
    assert list(decoded.frames) == frames


topic_names = st.text(
    st.characters(blacklist_categories=("Cs", "Zs", "Zl", "Zp", "Cc")), min_size=1, max_size=20
).filter(lambda name: not any(ch.isspace() for ch in name))


@fast
@given(st.sets(topic_names, max_size=20), st.booleans())
def test_subscription_round_trip(topics: set[str], compress: bool) -> None:
    message = decode_as(subscription_frame(topics, compress=compress), pb.SubscriptionMessage)
    assert message.format == (pb.GZIP if compress else pb.PLAIN)
    assert subscription_topics(message, max_bytes=64 * 1024) == topics


@fast
@given(st.binary(max_size=300), st.sampled_from([pb.PLAIN, pb.GZIP, pb.UNKNOWN_FORMAT, 7]))
def test_subscription_payload_raises_only_frame_error(payload: bytes, fmt: int) -> None:
    message = pb.SubscriptionMessage(type=pb.SUBSCRIPTION, topics=payload)
    message.format = fmt  # type: ignore[assignment]
    try:
        topics = subscription_topics(message, max_bytes=1024)
    except FrameError:
        return
    assert all(topic and not any(ch.isspace() for ch in topic) for topic in topics)


def test_gzip_bomb_is_refused_without_inflating_it() -> None:
    bomb = gzip.compress(b"a " * 5_000_000)  # 10 MB of topics in ~10 kB
    assert len(bomb) < 50_000
    message = pb.SubscriptionMessage(type=pb.SUBSCRIPTION, format=pb.GZIP, topics=bomb)
    with pytest.raises(FrameError, match="larger than"):
        subscription_topics(message, max_bytes=64 * 1024)
    broken = pb.SubscriptionMessage(
        type=pb.SUBSCRIPTION, format=pb.GZIP, topics=zlib.compress(b"not gzip")
    )
    with pytest.raises(FrameError):
        subscription_topics(broken, max_bytes=64 * 1024)
