"""One hostile client, run as its own process by ``webrtc-broker bench attack``.

``python -m webrtc_broker.bench.attacker MODE --url WS_URL [--target ALIAS] --seconds S``
runs one attack for at most ``S`` seconds. It prints a JSON line when it
starts, and one with what it sent and saw (:class:`Report`) when it is done.
It is a separate process (and niced) so that the latency the bench measures
is the broker's, not that of an event loop shared with the flood; it still
shares the machine's cores, as the report says.

Every attack is bounded in time and in count (the constants below), and each
is one the broker is built to refuse cheaply:

* ``offer-flood``: tiny WEBRTC_OFFER frames from client connections to a comm
  server's alias (aliases are public), as fast as the sockets take them;
* ``connect-flood``: many connections repeating CONNECT to a server and never
  answering its offers: half-open sessions;
* ``candidate-flood``: CONNECT, then ICE candidates for the pending session,
  within and above the per-session candidate budget;
* ``ping-batch``: a real session, then BATCH frames of PINGs on the
  unreliable channel (each PING would be echoed);
* ``gzip-subscriptions``: a real session, then BATCH frames of gzip
  SUBSCRIPTIONs that each inflate to nearly the 64 KiB limit;
* ``slowloris``: TCP connections that trickle an HTTP upgrade request (a
  header line every ``--trickle`` seconds), and WebSockets that never send
  anything (``--idle-connections``; 0 for the TCP connections alone).

Two more modes hold one kind of connection each, for the coordinator's
per-connection limits rather than for the bench:

* ``idle``: WebSockets that read their WELCOME and then send nothing;
* ``silent``: TCP connections that send nothing.

``--connections`` sets how many connections an attack opens (the session
attacks open one). The connections an attack holds are held until the
coordinator closes them or the time is up; the report says how many it
closed, with which WebSocket close codes, and the longest any stayed open,
so that a test can hold the attacker's view against the coordinator's
counters. The attacker can run inside a network namespace (``ip netns
exec``), so that limits per address see an address of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import json
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field, replace
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from webrtc_broker.rtc import Session
from webrtc_broker.wire import FrameError, decode_as, frame_type
from webrtc_broker.wire import broker_pb2 as pb
from webrtc_broker.wire.codec import encode_batch

ATTACKS = (
    "offer-flood",
    "connect-flood",
    "candidate-flood",
    "ping-batch",
    "gzip-subscriptions",
    "slowloris",
)
"""The attacks of ``bench attack``, one phase each."""
HOLDING = ("idle", "silent")
"""Modes that only hold connections (not bench phases: their cost is the limit that closes them)."""
MODES = (*ATTACKS, *HOLDING)

MAX_FRAMES = 500_000
"""No attack sends more frames than this, whatever its duration."""
FLOOD_SOCKETS = 4
"""Client connections of the OFFER and candidate floods."""
CONNECT_SOCKETS = 100
"""Connections of the CONNECT flood (each may have 4 CONNECTs pending at the coordinator)."""
SLOW_SOCKETS = 200
"""TCP connections of ``slowloris`` and ``silent``."""
IDLE_SOCKETS = 100
"""WebSockets of ``idle``, and those ``slowloris`` holds besides its TCP connections."""
TRICKLE = 1.0
"""Seconds between the header lines of a slowloris connection."""
CONNECTIONS = {
    "offer-flood": FLOOD_SOCKETS,
    "connect-flood": CONNECT_SOCKETS,
    "candidate-flood": FLOOD_SOCKETS,
    "slowloris": SLOW_SOCKETS,
    "idle": IDLE_SOCKETS,
    "silent": SLOW_SOCKETS,
}
"""Connections each attack opens by default; the attacks not listed open one session."""
UNTARGETED = ("slowloris", *HOLDING)
"""Modes aimed at the coordinator itself: they need no ``--target``."""
PINGS_PER_BATCH = 2000
SUBSCRIPTIONS_PER_BATCH = 20
OPEN_TIMEOUT = 10.0


@dataclass
class Report:
    attack: str
    connections: int = 0
    """WebSockets (or TCP connections) opened."""
    refused: int = 0
    """Connections the coordinator refused at the upgrade (403; 429 or 503 over a cap)."""
    closed_by_peer: int = 0
    """Connections the coordinator closed on us."""
    close_codes: dict[str, int] = field(default_factory=dict)
    """Close codes of the WebSockets it closed (``"none"``: closed without a Close frame)."""
    longest_open: float = 0.0
    """Seconds from opening to the coordinator's close, longest over the held connections."""
    frames: int = 0
    """Frames sent (WebSocket messages or data-channel messages)."""
    sessions: int = 0
    """Sessions with a comm server that opened (the real-session attacks)."""
    seconds: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, exc: BaseException) -> None:
        name = type(exc).__name__
        self.errors[name] = self.errors.get(name, 0) + 1

    def closed(self, exc: ConnectionClosed | None = None, opened_at: float | None = None) -> None:
        """A connection the coordinator closed: with ``exc``, a WebSocket and its close
        code; with ``opened_at`` (monotonic), one held, whose time open counts."""
        self.closed_by_peer += 1
        if exc is not None:
            code = str(exc.rcvd.code) if exc.rcvd is not None else "none"
            self.close_codes[code] = self.close_codes.get(code, 0) + 1
        if opened_at is not None:
            self.longest_open = max(self.longest_open, round(time.monotonic() - opened_at, 3))


@dataclass(frozen=True)
class Plan:
    """How many connections an attack opens, and how its slowloris connections behave."""

    connections: int
    idle_connections: int = IDLE_SOCKETS
    """Idle WebSockets ``slowloris`` holds besides its trickling TCP connections."""
    trickle: float = TRICKLE

    @classmethod
    def default(cls, attack: str) -> Plan:
        return cls(CONNECTIONS.get(attack, 1))


class Budget:
    """The attack's deadline and frame cap, shared by its tasks."""

    def __init__(self, seconds: float, report: Report) -> None:
        self.deadline = time.monotonic() + seconds
        self.report = report

    @property
    def left(self) -> float:
        return self.deadline - time.monotonic()

    @property
    def spent(self) -> bool:
        return self.left <= 0 or self.report.frames >= MAX_FRAMES


async def open_client(url: str, report: Report) -> tuple[ClientConnection, int] | None:
    """A ``/connect`` WebSocket and our alias, or None if the coordinator refused it."""
    try:
        ws = await connect(f"{url}/connect", open_timeout=OPEN_TIMEOUT, max_size=2**20, proxy=None)
    except InvalidStatus:
        report.refused += 1
        return None
    except (OSError, TimeoutError, WebSocketException) as exc:
        report.error(exc)
        return None
    try:
        welcome = decode_as(
            await asyncio.wait_for(ws.recv(decode=False), OPEN_TIMEOUT), pb.WelcomeMessage
        )
    except (ConnectionClosed, TimeoutError, FrameError) as exc:
        report.error(exc)
        await ws.close()
        return None
    report.connections += 1
    return ws, welcome.alias


async def drain(
    ws: ClientConnection, on_frame: Callable[[bytes], Awaitable[None]] | None = None
) -> None:
    """Read (and mostly ignore) what the coordinator sends, so our socket never backs up."""
    with contextlib.suppress(WebSocketException):
        async for data in ws:
            if on_frame is not None and isinstance(data, bytes):
                await on_frame(data)


async def send_until(ws: ClientConnection, frame: bytes, budget: Budget) -> None:
    """Send ``frame`` again and again until the budget is spent or the socket closes."""
    report = budget.report
    try:
        while not budget.spent:
            for _ in range(50):
                await ws.send(frame)
                report.frames += 1
            await asyncio.sleep(0)  # let the other sockets send too
    except ConnectionClosed as exc:
        report.closed(exc)


# -- signalling floods --------------------------------------------------------


async def offer_flood(url: str, target: int, budget: Budget, plan: Plan) -> None:
    frame = pb.WebRtcMessage(
        type=pb.WEBRTC_OFFER, to_alias=target, data=b'{"type":"offer","sdp":"v=0"}'
    ).SerializeToString()

    async def one() -> None:
        opened = await open_client(url, budget.report)
        if opened is None:
            return
        ws, _ = opened
        reader = asyncio.create_task(drain(ws))
        try:
            await send_until(ws, frame, budget)
        finally:
            reader.cancel()
            await ws.close()

    await asyncio.gather(*(one() for _ in range(plan.connections)))


async def connect_flood(url: str, target: int, budget: Budget, plan: Plan) -> None:
    """Half-open sessions: CONNECT, and never answer the offer that comes back."""
    frame = pb.ConnectMessage(type=pb.CONNECT, to_alias=target).SerializeToString()
    report = budget.report

    async def one() -> None:
        opened = await open_client(url, report)
        if opened is None:
            return
        ws, _ = opened
        reader = asyncio.create_task(drain(ws))
        try:
            while not budget.spent:
                await ws.send(frame)
                report.frames += 1
                await asyncio.sleep(0.05)
        except ConnectionClosed as exc:
            report.closed(exc)
        finally:
            reader.cancel()
            await ws.close()

    await asyncio.gather(*(one() for _ in range(plan.connections)))


def _candidate(index: int, padding: int) -> bytes:
    line = f"candidate:{index} 1 udp 2130706431 198.51.100.{index % 250 + 1} {9 + index} typ host"
    return json.dumps(
        {"candidate": line + " x" * padding, "sdpMid": "0", "sdpMLineIndex": 0}
    ).encode()


async def candidate_flood(url: str, target: int, budget: Budget, plan: Plan) -> None:
    """Pending sessions fed candidates: small ones up to the budget, then oversized ones."""
    report = budget.report
    connect_frame = pb.ConnectMessage(type=pb.CONNECT, to_alias=target).SerializeToString()
    # 100 small candidates (the session takes 64), then one above the 1 KiB a candidate may have.
    candidates = [
        pb.WebRtcMessage(
            type=pb.WEBRTC_ICE_CANDIDATE, to_alias=target, data=data
        ).SerializeToString()
        for data in [*(_candidate(i, 0) for i in range(100)), _candidate(0, 600)]
    ]

    async def one() -> None:
        opened = await open_client(url, report)
        if opened is None:
            return
        ws, _ = opened
        reader = asyncio.create_task(drain(ws))
        index = 0
        try:
            while not budget.spent:
                await ws.send(connect_frame)
                report.frames += 1
                for candidate in candidates:
                    await ws.send(candidate)
                    report.frames += 1
                    index += 1
                    if index % 50 == 0:
                        await asyncio.sleep(0)
                await asyncio.sleep(0.1)
        except ConnectionClosed as exc:
            report.closed(exc)
        finally:
            reader.cancel()
            await ws.close()

    await asyncio.gather(*(one() for _ in range(plan.connections)))


# -- attacks from inside a session --------------------------------------------


async def open_session(url: str, target: int, report: Report) -> tuple[ClientConnection, Session]:
    """A session with ``target`` as a client: what the SDK does, up to AUTH included."""
    opened = await open_client(url, report)
    if opened is None:
        raise ConnectionError("the coordinator refused the connection")
    ws, _ = opened
    session = Session(on_frame=lambda _data, _reliable: None)

    async def on_frame(data: bytes) -> None:
        if _kind(data) == pb.WEBRTC_OFFER:
            offer = decode_as(data, pb.WebRtcMessage)
            answer = await session.accept_offer(offer.data)
            await ws.send(
                pb.WebRtcMessage(
                    type=pb.WEBRTC_ANSWER, to_alias=offer.from_alias, data=answer
                ).SerializeToString()
            )

    reader = asyncio.create_task(drain(ws, on_frame))
    try:
        await ws.send(pb.ConnectMessage(type=pb.CONNECT, to_alias=target).SerializeToString())
        await session.wait_open(OPEN_TIMEOUT)
    except BaseException:
        reader.cancel()
        await session.close()
        await ws.close()
        raise
    auth = pb.AuthMessage(type=pb.AUTH, role=pb.CLIENT, body=b"attacker", capabilities=0)
    session.send(auth.SerializeToString(), reliable=True)
    report.sessions += 1
    return ws, session


def _kind(data: bytes) -> int | None:
    try:
        return frame_type(data)
    except FrameError:
        return None


async def flood_session(
    url: str, target: int, budget: Budget, frame: bytes, *, reliable: bool
) -> None:
    """Send ``frame`` on a real session, as fast as the channel drains."""
    report = budget.report
    ws, session = await open_session(url, target, report)
    try:
        while not budget.spent and not session.closed.is_set():
            if session.queue_depth < 8:
                session.send(frame, reliable=reliable)
                report.frames += 1
            await asyncio.sleep(0.001 if session.queue_depth < 8 else 0.01)
        if session.closed.is_set():
            report.closed()
    finally:
        await session.close()
        await ws.close()


async def ping_batch(url: str, target: int, budget: Budget, _plan: Plan) -> None:
    ping = pb.PingMessage(type=pb.PING, time=1.0).SerializeToString()
    batch = encode_batch([ping] * PINGS_PER_BATCH)
    await flood_session(url, target, budget, batch, reliable=False)


def gzip_subscription() -> bytes:
    """A SUBSCRIPTION of distinct topics that inflates to just under 64 KiB."""
    names, size, index = [], 0, 0
    while size < 63 * 1024:
        name = f"topic/{index:06d}"
        names.append(name)
        size += len(name) + 1
        index += 1
    return pb.SubscriptionMessage(
        type=pb.SUBSCRIPTION, format=pb.GZIP, topics=gzip.compress(" ".join(names).encode())
    ).SerializeToString()


async def gzip_subscriptions(url: str, target: int, budget: Budget, _plan: Plan) -> None:
    batch = encode_batch([gzip_subscription()] * SUBSCRIPTIONS_PER_BATCH)
    await flood_session(url, target, budget, batch, reliable=True)


# -- holding connections ------------------------------------------------------


async def hold_tcp(host: str, port: int, budget: Budget, trickle: float | None) -> None:
    """A TCP connection held until the coordinator closes it or the time is up.

    With ``trickle``, half a WebSocket upgrade request and then a header line
    every ``trickle`` seconds, so that the request never ends; without, nothing.
    """
    report = budget.report
    started = time.monotonic()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), OPEN_TIMEOUT)
    except (OSError, TimeoutError) as exc:
        report.error(exc)
        return
    report.connections += 1
    try:
        if trickle is not None:
            writer.write(
                f"GET /connect HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n".encode()
            )
            report.frames += 1
        line = 0
        while not budget.spent:
            reading = asyncio.ensure_future(reader.read(1))
            wait = min(trickle or TRICKLE, max(budget.left, 0.01))
            done, _ = await asyncio.wait({reading}, timeout=wait)
            if done:
                if not reading.result():  # the coordinator closed it
                    report.closed(opened_at=started)
                    return
            else:
                reading.cancel()
            if trickle is not None:
                writer.write(f"X-Slow-{line}: {time.monotonic():.0f}\r\n".encode())
                report.frames += 1
                line += 1
    except OSError:  # reset by the coordinator: closed too
        report.closed(opened_at=started)
    finally:
        writer.close()


async def hold_idle(url: str, budget: Budget) -> None:
    """A WebSocket that reads its WELCOME and sends nothing, held until closed or the time is up."""
    report = budget.report
    started = time.monotonic()
    opened = await open_client(url, report)
    if opened is None:
        return
    ws, _ = opened
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(drain(ws), max(budget.left, 0.01))
        if budget.left > 0:
            report.closed(ws.close_exc, started)
    finally:
        await ws.close()


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 80


async def slowloris(url: str, _target: int, budget: Budget, plan: Plan) -> None:
    """Half-sent upgrade requests and silent WebSockets, held until the deadline."""
    host, port = _host_port(url)
    await asyncio.gather(
        *(hold_tcp(host, port, budget, plan.trickle) for _ in range(plan.connections)),
        *(hold_idle(url, budget) for _ in range(plan.idle_connections)),
    )


async def idle(url: str, _target: int, budget: Budget, plan: Plan) -> None:
    """WebSockets that never send a frame: the coordinator's idle timeout and per-address cap."""
    await asyncio.gather(*(hold_idle(url, budget) for _ in range(plan.connections)))


async def silent(url: str, _target: int, budget: Budget, plan: Plan) -> None:
    """TCP connections that never send a byte: the coordinator's handshake timeout."""
    host, port = _host_port(url)
    await asyncio.gather(*(hold_tcp(host, port, budget, None) for _ in range(plan.connections)))


RUNNERS: dict[str, Callable[[str, int, Budget, Plan], Awaitable[None]]] = {
    "offer-flood": offer_flood,
    "connect-flood": connect_flood,
    "candidate-flood": candidate_flood,
    "ping-batch": ping_batch,
    "gzip-subscriptions": gzip_subscriptions,
    "slowloris": slowloris,
    "idle": idle,
    "silent": silent,
}


async def run_attack(
    attack: str, url: str, target: int, seconds: float, plan: Plan | None = None
) -> Report:
    """Run ``attack`` for ``seconds`` (plus the time its connections take to close)."""
    plan = plan or Plan.default(attack)
    report = Report(attack)
    budget = Budget(seconds, report)
    started = time.monotonic()
    try:
        async with asyncio.timeout(seconds + OPEN_TIMEOUT):
            await RUNNERS[attack](url, target, budget, plan)
    except (TimeoutError, ConnectionError, OSError, WebSocketException) as exc:
        report.error(exc)
    report.seconds = round(time.monotonic() - started, 3)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("attack", choices=MODES)
    parser.add_argument("--url", required=True, help="Coordinator WebSocket URL")
    parser.add_argument(
        "--target", type=int, help="Alias of the attacked server (all but slowloris, idle, silent)"
    )
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument(
        "--connections", type=int, help="Connections to open [per attack; the session attacks: 1]"
    )
    parser.add_argument(
        "--idle-connections",
        type=int,
        default=IDLE_SOCKETS,
        help=f"slowloris: idle WebSockets besides the TCP connections [{IDLE_SOCKETS}]",
    )
    parser.add_argument(
        "--trickle",
        type=float,
        default=TRICKLE,
        help=f"slowloris: seconds between header lines [{TRICKLE:g}]",
    )
    parser.add_argument("--nice", type=int, default=10, help="Niceness of this process")
    args = parser.parse_args()
    if args.target is None and args.attack not in UNTARGETED:
        parser.error(f"{args.attack} needs --target")
    if args.connections is not None and args.attack not in CONNECTIONS:
        parser.error(f"{args.attack} opens one session: --connections does not apply")
    if args.trickle <= 0:
        parser.error("--trickle must be positive")
    plan = replace(
        Plan.default(args.attack), idle_connections=args.idle_connections, trickle=args.trickle
    )
    if args.connections is not None:
        plan = replace(plan, connections=args.connections)
    if args.nice:
        os.nice(args.nice)
    print(json.dumps({"event": "started"}), flush=True)  # the bench's window opens now
    report = asyncio.run(run_attack(args.attack, args.url, args.target or 0, args.seconds, plan))
    print(json.dumps(asdict(report)), flush=True)


if __name__ == "__main__":
    main()
