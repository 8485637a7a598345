"""Hostile frames for the fuzzers: valid frames mutated, random bytes, text.

A mutation is plain data (:data:`Mutation`), applied by :func:`mutate`, so
that the same mutations come from hypothesis (which shrinks them to a small
failing case) and from a seeded :class:`random.Random` (for long fixed runs
such as the memory check).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from webrtc_broker.wire.codec import _varint

fuzz_settings = settings(
    max_examples=150,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
"""Bounded and reproducible: the same examples on every run, whatever the machine."""

Mutation = tuple[str, int, int, bytes]
"""(operation, position, value, data); what position, value and data mean depends on it."""

OPERATIONS = ("flip", "truncate", "extend", "insert", "type", "splice", "replace")
TYPE_VALUES = (*range(16), 99, 127, 128, 300, 2**32 - 1)
"""Message types to swap in: every real one, and unknown ones (some as multi-byte varints)."""


def mutate(frame: bytes, mutations: Sequence[Mutation], others: Sequence[bytes] = ()) -> bytes:
    """Apply ``mutations`` in order; positions wrap around the current length."""
    data = bytearray(frame)
    for operation, position, value, extra in mutations:
        at = position % (len(data) + 1)
        if operation == "flip" and data:
            data[at % len(data)] ^= 1 << (value % 8)
        elif operation == "truncate":
            del data[at:]
        elif operation == "extend":
            data += extra
        elif operation == "insert":
            data[at:at] = extra
        elif operation == "type":
            # Rewrite the type field (field 1, a varint) of a frame that starts with it.
            kind = TYPE_VALUES[value % len(TYPE_VALUES)]
            if len(data) >= 2 and data[0] == 0x08 and data[1] < 0x80:
                data[1:2] = _varint(kind)
            else:
                data[0:0] = b"\x08" + _varint(kind)
        elif operation == "splice" and others:
            other = others[value % len(others)]
            data[at:] = other[position % (len(other) + 1) :]
        elif operation == "replace":
            data = bytearray(extra)
    return bytes(data)


mutations_strategy: st.SearchStrategy[list[Mutation]] = st.lists(
    st.tuples(
        st.sampled_from(OPERATIONS),
        st.integers(0, 2**16),
        st.integers(0, 2**16),
        st.binary(max_size=64),
    ),
    max_size=3,
)


@st.composite
def hostile_frames(draw: st.DrawFn, bases: Sequence[bytes]) -> bytes | str:
    """A frame derived from one of ``bases``: intact, mutated, random, or a text frame."""
    choice = draw(st.integers(0, 9))
    if choice == 0:
        return draw(st.binary(max_size=200))
    if choice == 1:
        return draw(st.text(max_size=50))
    frame = draw(st.sampled_from(list(bases)))
    if choice == 2:
        return frame
    return mutate(frame, draw(mutations_strategy), bases)


def random_mutations(rng: random.Random) -> list[Mutation]:
    """The same distribution as :data:`mutations_strategy`, from a seeded generator."""
    return [
        (
            rng.choice(OPERATIONS),
            rng.randrange(2**16),
            rng.randrange(2**16),
            rng.randbytes(rng.randrange(65)),
        )
        for _ in range(rng.randrange(4))
    ]
