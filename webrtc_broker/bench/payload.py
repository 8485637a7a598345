"""The bots' message body: send time and sequence up front, padding to the size asked.

The send time is ``time.time()``: bots and receivers share this machine's
clock, so a receiver's ``time.time()`` minus it is the one-way latency.
"""

from __future__ import annotations

import struct

_HEADER = struct.Struct("!dII")
HEADER_SIZE = _HEADER.size
"""Smallest body: send time (double), bot index and sequence (uint32 each)."""


def encode_body(sent_at: float, bot: int, sequence: int, size: int) -> bytes:
    """A body of exactly ``size`` bytes (``size`` >= :data:`HEADER_SIZE`)."""
    header = _HEADER.pack(sent_at, bot, sequence & 0xFFFFFFFF)
    return header + bytes(size - HEADER_SIZE)


def decode_body(body: bytes) -> tuple[float, int, int]:
    """``(sent_at, bot, sequence)``; raises ``struct.error`` on a short body."""
    sent_at, bot, sequence = _HEADER.unpack_from(body)
    return float(sent_at), int(bot), int(sequence)
