"""The raw aiortc ceiling: one peer-connection pair, sending as fast as it can.

aiortc's cost is per data-channel message (docs/benchmarks.md). The bench
measures one plain connection again in the same run, with the same message
size and channel kind, so each broker result can be read as a multiple of
what one connection moves on this machine at this moment. Both peers live in
one subprocess, away from the cluster and the bots.

"As fast as it can" needs flow control that sees the receiver. Bounding
aiortc's ``bufferedAmount`` alone is not enough: the sender then outruns the
receiving socket, datagrams are lost in the kernel, and on an unreliable
channel aiortc abandons the lost chunks and collapses its congestion window
(measured here at 100 B: about 500 messages/s arrive when only the buffered
amount is bounded, about 8,500/s with the self-clocking below). So the
sender is self-clocked: at
most :func:`window` messages in flight, where the receiver, in the same
process, reports the highest sequence number it has seen (a lost message
counts as done once a later one arrives). That is the best a sender with
perfect flow control could do, which is what a ceiling should be.

Run as ``python -m webrtc_broker.bench.baseline --size 100``: it prints one
JSON object (:class:`~webrtc_broker.bench.results.Baseline`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import struct
import sys
import time
from dataclasses import asdict

from aiortc import RTCConfiguration, RTCDataChannel, RTCPeerConnection

from webrtc_broker.bench.results import Baseline

WARMUP = 0.5
SETUP_TIMEOUT = 20.0
STALL = 0.5
"""Seconds without progress after which everything in flight is written off as lost."""
_SEQUENCE = struct.Struct("!I")


def window(size: int) -> int:
    """Messages in flight: 16 kB worth, between 4 and 64 (64 measured best at 100 B)."""
    return max(4, min(64, 16384 // size))


async def measure(size: int, reliable: bool, seconds: float) -> Baseline:
    """Send ``size``-byte messages for ``WARMUP + seconds``; count what arrives in the window."""
    size = max(size, _SEQUENCE.size)
    # An empty server list: aiortc's default (None) queries a public STUN server.
    no_stun = RTCConfiguration(iceServers=[])
    sender_pc, receiver_pc = RTCPeerConnection(no_stun), RTCPeerConnection(no_stun)
    try:
        channel = sender_pc.createDataChannel(
            "bench", ordered=reliable, maxRetransmits=None if reliable else 0
        )
        window_start, window_end = float("inf"), float("inf")
        received = 0
        highest = -1
        progress = asyncio.Event()

        def on_message(data: bytes | str) -> None:
            nonlocal received, highest
            if isinstance(data, bytes):
                highest = max(highest, _SEQUENCE.unpack_from(data)[0])
            if window_start <= time.monotonic() < window_end:
                received += 1
            progress.set()

        def on_datachannel(remote: RTCDataChannel) -> None:
            remote.on("message", on_message)

        receiver_pc.on("datachannel", on_datachannel)
        opened = asyncio.Event()
        channel.on("open", opened.set)
        await sender_pc.setLocalDescription(await sender_pc.createOffer())
        await receiver_pc.setRemoteDescription(sender_pc.localDescription)
        await receiver_pc.setLocalDescription(await receiver_pc.createAnswer())
        await sender_pc.setRemoteDescription(receiver_pc.localDescription)
        await asyncio.wait_for(opened.wait(), SETUP_TIMEOUT)

        padding = bytes(size - _SEQUENCE.size)
        in_flight = window(size)
        start = time.monotonic()
        window_start, window_end = start + WARMUP, start + WARMUP + seconds
        sent = 0
        while time.monotonic() < window_end:
            while sent - (highest + 1) < in_flight:
                channel.send(_SEQUENCE.pack(sent & 0xFFFFFFFF) + padding)
                sent += 1
            progress.clear()
            try:
                await asyncio.wait_for(progress.wait(), STALL)
            except TimeoutError:
                highest = sent - 1  # nothing arrived: the rest of the flight was lost
        await asyncio.sleep(0.2)  # what was sent in the window may still be arriving
        return Baseline(
            size=size,
            reliable=reliable,
            seconds=seconds,
            sent=sent,
            received=received,
            messages_per_s=received / seconds,
            mb_per_s=received * size / seconds / 1e6,
        )
    finally:
        await sender_pc.close()
        await receiver_pc.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--reliable", action="store_true")
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    result = asyncio.run(measure(args.size, args.reliable, args.seconds))
    sys.stdout.write(json.dumps(asdict(result)) + "\n")


if __name__ == "__main__":
    main()
