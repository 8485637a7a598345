"""A hostile party at the coordinator, run as a process of its own (maybe in a namespace).

``python -m tests.e2e.coordinator_attacker MODE --host H --port P [options]``
runs one attack and prints one JSON line with what it saw, so the test can
compare the attacker's view with the coordinator's counters:

* ``offers``: ``--connections`` client WebSockets each send WEBRTC_OFFER frames
  to ``--target`` as fast as they can for ``--seconds``.
* ``slowloris``: ``--connections`` TCP connections send half a WebSocket
  upgrade request, then one more header line every ``--trickle`` seconds.
* ``silent``: ``--connections`` TCP connections that send nothing.
* ``idle``: ``--connections`` client WebSockets that read their WELCOME and
  then send nothing.

The TCP and idle modes wait up to ``--seconds`` for the coordinator to close
each connection and report how many it closed, how many it refused, and the
longest time a connection stayed open.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from webrtc_broker.wire import broker_pb2 as pb


@dataclass
class Report:
    mode: str
    opened: int = 0
    refused: int = 0
    """WebSocket upgrades answered with an HTTP error (403; 429 or 503 over a cap)."""
    failed: int = 0
    """Connections that could not even be opened."""
    closed_by_server: int = 0
    still_open: int = 0
    frames_sent: int = 0
    close_codes: dict[str, int] = field(default_factory=dict)
    longest_open: float = 0.0
    """Seconds from opening to the server's close, over the connections it closed."""


async def open_client(url: str, report: Report) -> ClientConnection | None:
    try:
        ws = await connect(f"{url}/connect", open_timeout=10, proxy=None)
    except InvalidStatus:
        report.refused += 1
        return None
    except (OSError, WebSocketException, TimeoutError):
        report.failed += 1
        return None
    try:
        await asyncio.wait_for(ws.recv(), 10)  # the WELCOME
    except (ConnectionClosed, TimeoutError):
        report.failed += 1
        await ws.close()
        return None
    report.opened += 1
    return ws


async def flood_offers(url: str, target: int, seconds: float, report: Report) -> None:
    ws = await open_client(url, report)
    if ws is None:
        return
    frame = pb.WebRtcMessage(
        type=pb.WEBRTC_OFFER, to_alias=target, data=b'{"type":"offer","sdp":"v=0"}'
    ).SerializeToString()
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            for _ in range(50):
                await ws.send(frame)
                report.frames_sent += 1
            await asyncio.sleep(0)  # let the other connections send too
    except ConnectionClosed as exc:
        note_close(report, exc)
        return
    finally:
        await ws.close()
    report.still_open += 1


def note_close(report: Report, exc: ConnectionClosed) -> None:
    report.closed_by_server += 1
    code = str(exc.rcvd.code) if exc.rcvd is not None else "none"
    report.close_codes[code] = report.close_codes.get(code, 0) + 1


async def hold_idle(url: str, seconds: float, report: Report) -> None:
    start = time.monotonic()
    ws = await open_client(url, report)
    if ws is None:
        return
    try:
        async with asyncio.timeout(seconds):
            while True:
                await ws.recv()
    except ConnectionClosed as exc:
        note_close(report, exc)
        report.longest_open = max(report.longest_open, time.monotonic() - start)
    except TimeoutError:
        report.still_open += 1
    finally:
        await ws.close()


async def hold_tcp(host: str, port: int, seconds: float, trickle: float, report: Report) -> None:
    start = time.monotonic()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
    except (OSError, TimeoutError):
        report.failed += 1
        return
    report.opened += 1

    async def dribble() -> None:
        writer.write(b"GET /connect HTTP/1.1\r\nHost: coordinator\r\nUpgrade: websocket\r\n")
        for line in range(10_000):
            await asyncio.sleep(trickle)
            writer.write(f"X-Slow-{line}: 1\r\n".encode())

    dribbler = asyncio.create_task(dribble()) if trickle > 0 else None
    try:
        async with asyncio.timeout(seconds):
            while await reader.read(4096):
                pass
        report.closed_by_server += 1
        report.longest_open = max(report.longest_open, time.monotonic() - start)
    except TimeoutError:
        report.still_open += 1
    except OSError:  # reset by the server: closed too
        report.closed_by_server += 1
        report.longest_open = max(report.longest_open, time.monotonic() - start)
    finally:
        if dribbler is not None:
            dribbler.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await dribbler
        writer.close()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    url = f"ws://{args.host}:{args.port}"
    report = Report(args.mode)
    jobs: list[Any]
    if args.mode == "offers":
        jobs = [
            flood_offers(url, args.target, args.seconds, report) for _ in range(args.connections)
        ]
    elif args.mode == "idle":
        jobs = [hold_idle(url, args.seconds, report) for _ in range(args.connections)]
    else:
        trickle = args.trickle if args.mode == "slowloris" else 0.0
        jobs = [
            hold_tcp(args.host, args.port, args.seconds, trickle, report)
            for _ in range(args.connections)
        ]
    await asyncio.gather(*jobs)
    return asdict(report)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=["offers", "slowloris", "silent", "idle"])
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--target", type=int, default=0)
    parser.add_argument("--trickle", type=float, default=0.5)
    print(json.dumps(asyncio.run(run(parser.parse_args()))), flush=True)


if __name__ == "__main__":
    main()
