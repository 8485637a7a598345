"""Hostile parties at the coordinator: budgets, queue shares, timeouts and connection caps.

Each test runs a real uvicorn with real WebSockets (or raw TCP sockets, for
the handshake) and short limits, and checks both the outcome (who stays
connected) and the counter that says what was refused.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner
from websockets.exceptions import ConnectionClosed, InvalidStatus

from coordinator.admission import ConnectionCaps
from coordinator.budget import SignalBudget, SubjectBudgets, TokenBucket
from coordinator.counters import DropReason, RefusalReason, TimeoutPhase
from tests.coordinator.harness import (
    TIMEOUT,
    RunningCoordinator,
    TestPeer,
    make_config,
    running_coordinator,
    wait_until,
)
from tests.support import ROOT
from webrtc_broker import logs
from webrtc_broker.cli import main
from webrtc_broker.config import CoordinatorConfig
from webrtc_broker.tokens import issue_token
from webrtc_broker.wire import broker_pb2 as pb
from webrtc_broker.wire import codec

SECRET = "coordinator-test-key-of-32-bytes!"


def candidate(to_alias: int, data: bytes = b"{}") -> pb.WebRtcMessage:
    return pb.WebRtcMessage(type=pb.WEBRTC_ICE_CANDIDATE, to_alias=to_alias, data=data)


async def drain(peer: TestPeer, quiet: float = 0.3) -> list[codec.AnyMessage]:
    """Everything ``peer`` receives until it has been quiet for ``quiet`` seconds."""
    got = []
    while True:
        try:
            got.append(await peer.recv(timeout=quiet))
        except TimeoutError:
            return got


async def assert_closed(peer: TestPeer, code: int, within: float) -> float:
    """Wait for the coordinator to close ``peer`` with ``code``; return how long it took."""
    start = time.monotonic()
    with pytest.raises(ConnectionClosed) as closed:
        async with asyncio.timeout(within):
            while True:
                await peer.ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == code
    return time.monotonic() - start


# --- the pieces on their own -------------------------------------------------------


def test_token_bucket_refills_at_its_rate_up_to_its_burst() -> None:
    bucket = TokenBucket(rate=10, burst=3)
    bucket.updated = 0.0
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(0.1)  # one token back after 0.1 s at 10/s
    assert not bucket.take(0.1)
    assert [bucket.take(100.0) for _ in range(4)] == [True, True, True, False]  # capped
    assert all(TokenBucket(rate=0, burst=1).take(0.0) for _ in range(100))  # 0: unlimited


def test_signal_budget_charges_both_buckets_or_neither() -> None:
    now = [0.0]
    subjects = SubjectBudgets(rate=1, burst=3, clock=lambda: now[0])
    shared = subjects.acquire(b"alice")
    assert subjects.acquire(b"alice") is shared and len(subjects) == 1
    first = SignalBudget(TokenBucket(1, 2), shared, clock=lambda: now[0])
    second = SignalBudget(TokenBucket(1, 2), shared, clock=lambda: now[0])
    assert [first.allow(), first.allow(), first.allow()] == [True, True, False]  # its own 2
    assert [second.allow(), second.allow()] == [True, False]  # the subject's third
    now[0] = 1.0
    assert first.allow()  # both buckets refilled by one
    assert not second.allow()  # the subject's token went to first; second's own is unspent
    subjects.release(b"alice")
    subjects.release(b"alice")
    assert len(subjects) == 0  # gone with its last connection


def test_connection_caps_count_per_address_and_in_total() -> None:
    caps = ConnectionCaps(total=3, per_address=2)
    assert [caps.admit("a"), caps.admit("a"), caps.admit("a")] == [
        None,
        None,
        RefusalReason.TOO_MANY_FROM_ADDRESS,
    ]
    assert caps.admit("b") is None
    assert caps.admit("c") is RefusalReason.TOO_MANY_CONNECTIONS
    caps.release("a")
    assert caps.admit("c") is None
    for address in ("a", "b", "c"):
        caps.release(address)
    caps.release("nobody")  # never admitted: no effect
    assert (caps.total, caps.count("a")) == (0, 0)
    unlimited = ConnectionCaps(total=0, per_address=0)
    assert all(unlimited.admit("a") is None for _ in range(1000))


# --- signalling budgets ------------------------------------------------------------


async def test_a_client_connection_is_held_to_its_signalling_budget() -> None:
    # A rate so low it does not refill during the test: only the burst passes.
    config = make_config(signal_rate=0.001, signal_burst=5)
    async with running_coordinator(config) as coord:
        server = await coord.comm_server()
        flooder = await coord.client()
        for _ in range(20):
            await flooder.send(candidate(server.alias))
        await flooder.send_raw("text frames are charged too")
        dropped = coord.coordinator.counters.frames_dropped
        await wait_until(lambda: dropped[DropReason.RATE_LIMITED] == 16)
        assert len(await drain(server)) == 5

        # Another client has a budget of its own; servers have none.
        other = await coord.client()
        await other.send(candidate(server.alias, b"other"))
        forwarded = await server.recv()
        assert isinstance(forwarded, pb.WebRtcMessage) and forwarded.data == b"other"
        for _ in range(20):
            await server.send(candidate(other.alias))
        assert len(await drain(other)) == 20
        assert dropped[DropReason.RATE_LIMITED] == 16
        metrics = (await coord.get("/metrics")).text
        assert 'coordinator_frames_dropped_total{reason="rate_limited"} 16.0' in metrics


async def test_connections_of_one_token_subject_share_a_budget() -> None:
    config = make_config(
        client_auth="jwt",
        client_jwt_secret=SECRET,
        server_secret="s" * 40,
        signal_rate=0.001,
        signal_burst=100,
        subject_signal_rate=0.001,
        subject_signal_burst=6,
    )
    async with running_coordinator(config) as coord:
        server = await coord.comm_server(token="s" * 40)
        token = issue_token(SECRET, "mallory", 60)
        mallory = [await coord.client(token) for _ in range(3)]
        for connection in mallory:
            for _ in range(4):
                await connection.send(candidate(server.alias))
        dropped = coord.coordinator.counters.frames_dropped
        await wait_until(lambda: dropped[DropReason.RATE_LIMITED] == 6)
        assert len(await drain(server)) == 6  # 12 sent over 3 connections, 6 for the subject

        alice = await coord.client(issue_token(SECRET, "alice", 60))
        for _ in range(4):
            await alice.send(candidate(server.alias))
        assert len(await drain(server)) == 4
        for connection in mallory:
            await connection.ws.close()
        await wait_until(lambda: len(coord.coordinator.subjects) == 1)  # alice's only


# --- a server's queue is not the clients' to fill ----------------------------------


async def stalled_server(coord: RunningCoordinator, name: str) -> TestPeer:
    """A comm server that reads its WELCOME and then nothing (until the test reads)."""
    ws = await coord.open("/discover", {"role": "COMMUNICATION_SERVER", "name": name}, max_queue=1)
    data = await asyncio.wait_for(ws.recv(), TIMEOUT)
    assert isinstance(data, bytes)
    welcome = codec.decode(data)
    assert isinstance(welcome, pb.WelcomeMessage)
    return TestPeer(ws, welcome)


async def test_client_frames_never_close_a_server() -> None:
    # No rate limit here: this is the second line of defence, for many senders.
    config = make_config(send_queue_frames=8, signal_rate=0, client_queue_share=0.5)
    async with running_coordinator(config) as coord:
        server = await stalled_server(coord, "target")
        other_server = await coord.comm_server("other")
        clients = [await coord.client() for _ in range(4)]
        big = b"x" * 200_000  # fills the socket buffers quickly
        counters = coord.coordinator.counters
        dropped = counters.frames_dropped
        for _ in range(40):
            for client in clients:
                await client.send(candidate(server.alias, big))
        await wait_until(lambda: dropped[DropReason.TARGET_BUSY] > 0)
        outbox_len = len(coord.coordinator.registry.get(server.alias).sink)  # type: ignore[union-attr, arg-type]
        assert outbox_len <= 4  # the clients' half of 8

        # Other servers may still fill the rest; a full queue drops, never closes.
        for _ in range(10):
            await other_server.send(candidate(server.alias, b"from-other"))
        await wait_until(lambda: dropped[DropReason.QUEUE_FULL] > 0)
        assert counters.slow_connections_closed == 0
        assert coord.coordinator.registry.get(server.alias) is not None
        status = await coord.status()
        assert [s["alias"] for s in status["servers"]] == [server.alias, other_server.alias]

        # Once the server reads again it gets what was queued, then new frames.
        got = 0
        async with asyncio.timeout(30):
            while True:
                message = await server.recv(timeout=30)
                assert isinstance(message, pb.WebRtcMessage)
                got += 1
                if message.data == b"from-other":
                    break
        await clients[0].send(candidate(server.alias, b"after"))
        while (message := await server.recv()).data != b"after":  # type: ignore[union-attr]
            pass
        assert dropped[DropReason.INTERNAL_ERROR] == 0


async def test_a_slow_client_is_still_closed() -> None:
    config = make_config(send_queue_frames=4)
    async with running_coordinator(config) as coord:
        server = await coord.comm_server()
        ws = await coord.open("/connect", max_queue=1)
        data = await asyncio.wait_for(ws.recv(), TIMEOUT)
        assert isinstance(data, bytes)
        big = b"y" * 200_000
        client_alias = codec.decode(data).alias  # type: ignore[union-attr]
        counters = coord.coordinator.counters
        for _ in range(200):
            await server.send(candidate(client_alias, big))
            if counters.slow_connections_closed:
                break
        await wait_until(lambda: counters.slow_connections_closed == 1)
        assert coord.coordinator.registry.get(client_alias) is None
        assert coord.coordinator.registry.get(server.alias) is not None


# --- idle clients ------------------------------------------------------------------


async def test_clients_that_do_not_signal_are_closed_until_offered_a_session() -> None:
    config = make_config(client_idle_timeout=0.5)
    async with running_coordinator(config) as coord:
        server = await coord.comm_server()
        silent = await coord.client()
        chatty = await coord.client()  # garbage is not signalling
        connecting = await coord.client()  # CONNECT, but no server answers
        served = await coord.client()  # CONNECT and an OFFER: may stay silent from then on
        await connecting.connect_to(server.alias)
        await served.connect_to(server.alias)
        await server.recv()
        await server.recv()
        await server.send(pb.WebRtcMessage(type=pb.WEBRTC_OFFER, to_alias=served.alias))
        assert (await served.recv()).type == pb.WEBRTC_OFFER

        async def chatter() -> None:
            while True:
                await chatty.send_raw(b"\xff\x00garbage")
                await asyncio.sleep(0.1)

        chatter_task = asyncio.create_task(chatter())
        try:
            took = await asyncio.gather(
                assert_closed(silent, 1008, within=3),
                assert_closed(connecting, 1008, within=3),
            )
            with pytest.raises(ConnectionClosed):
                async with asyncio.timeout(3):
                    while True:
                        await chatty.ws.recv()
        finally:
            chatter_task.cancel()
            await asyncio.gather(chatter_task, return_exceptions=True)
        assert all(elapsed < 2.0 for elapsed in took), took
        timeouts = coord.coordinator.counters.connections_timed_out
        assert timeouts[TimeoutPhase.IDLE] == 3

        await asyncio.sleep(1.0)  # twice the timeout: the served client and the server stay
        await served.send(pb.WebRtcMessage(type=pb.WEBRTC_ANSWER, to_alias=server.alias))
        assert (await server.recv()).type == pb.WEBRTC_ANSWER
        assert coord.coordinator.registry.client_count == 1
        metrics = (await coord.get("/metrics")).text
        assert 'coordinator_connections_timed_out_total{phase="idle"} 3.0' in metrics


# --- handshake deadline --------------------------------------------------------------


async def raw_connection(
    coord: RunningCoordinator,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", coord.port)


async def closed_after(reader: asyncio.StreamReader, within: float) -> float:
    """Seconds until the server closes the connection (reading and discarding what it sends)."""
    start = time.monotonic()
    async with asyncio.timeout(within):
        while await reader.read(4096):
            pass
    return time.monotonic() - start


async def test_requests_that_never_complete_are_closed() -> None:
    config = make_config(handshake_timeout=0.5)
    async with running_coordinator(config) as coord:
        # A connection that says nothing, and one that trickles an upgrade request.
        silent_reader, silent = await raw_connection(coord)
        slow_reader, slow = await raw_connection(coord)
        slow.write(b"GET /connect HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")

        async def trickle() -> None:
            for i in range(100):
                slow.write(f"X-{i}: y\r\n".encode())
                await asyncio.sleep(0.1)

        trickler = asyncio.create_task(trickle())
        try:
            took = await asyncio.gather(
                closed_after(silent_reader, 3), closed_after(slow_reader, 3)
            )
        finally:
            trickler.cancel()
            await asyncio.gather(trickler, return_exceptions=True)
        assert all(0.4 < elapsed < 2.0 for elapsed in took), took

        # A kept-alive connection: the first request is served, a second one that
        # never completes is cut off like the first would have been.
        reader, writer = await raw_connection(coord)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"200 OK" in await asyncio.wait_for(reader.read(4096), TIMEOUT)
        writer.write(b"GET /healthz HTTP/1.1\r\n")
        assert await closed_after(reader, 3) < 2.0
        for stream in (silent, slow, writer):
            stream.close()

        timeouts = coord.coordinator.counters.connections_timed_out
        assert timeouts[TimeoutPhase.HANDSHAKE] == 3
        assert coord.coordinator.registry.client_count == 0

        # A WebSocket is past the handshake: it outlives the deadline.
        server = await coord.comm_server()
        client = await coord.client()
        await asyncio.sleep(1.0)
        await client.connect_to(server.alias)
        assert (await server.recv()).type == pb.CONNECT
        assert timeouts[TimeoutPhase.HANDSHAKE] == 3


# --- connection caps -----------------------------------------------------------------


async def test_client_connections_are_capped_per_address_and_in_total() -> None:
    config = make_config(max_clients=3, max_clients_per_address=2)
    async with running_coordinator(config) as coord:
        first = await coord.client()
        await coord.client()
        with pytest.raises(InvalidStatus) as refused:
            await coord.client()
        assert refused.value.response.status_code == 429  # "not now", not "bad credentials"
        refusals = coord.coordinator.counters.connections_refused
        assert refusals[RefusalReason.TOO_MANY_FROM_ADDRESS] == 1

        # Servers are not counted.
        servers = [await coord.comm_server(f"s{i}") for i in range(3)]
        assert len(servers) == 3

        # X-Forwarded-For is not believed from an untrusted peer.
        with pytest.raises(InvalidStatus):
            await coord.client(headers={"X-Forwarded-For": "203.0.113.9"})
        assert refusals[RefusalReason.TOO_MANY_FROM_ADDRESS] == 2

        await first.ws.close()
        await wait_until(lambda: coord.coordinator.caps.total == 1)
        await coord.client()  # a slot is free again
        metrics = (await coord.get("/metrics")).text
        assert 'connections_refused_total{reason="too_many_from_address"} 2.0' in metrics


async def test_a_trusted_proxy_names_the_client_address() -> None:
    config = make_config(max_clients=4, max_clients_per_address=1, trusted_proxies=["127.0.0.1"])
    async with running_coordinator(config) as coord:
        for address in ("203.0.113.1", "203.0.113.2", "203.0.113.3"):
            await coord.client(headers={"X-Forwarded-For": address})
        refusals = coord.coordinator.counters.connections_refused
        with pytest.raises(InvalidStatus):
            await coord.client(headers={"X-Forwarded-For": "203.0.113.1"})
        assert refusals[RefusalReason.TOO_MANY_FROM_ADDRESS] == 1
        await coord.client(headers={"X-Forwarded-For": "203.0.113.4"})
        with pytest.raises(InvalidStatus):
            await coord.client(headers={"X-Forwarded-For": "203.0.113.5"})
        assert refusals[RefusalReason.TOO_MANY_CONNECTIONS] == 1
        assert coord.coordinator.caps.count("203.0.113.1") == 1
        assert coord.coordinator.caps.count("127.0.0.1") == 0


def test_trusted_proxies_must_be_addresses() -> None:
    with pytest.raises(ValueError, match="not an IP address"):
        make_config(trusted_proxies=["proxy.example"])
    assert make_config(trusted_proxies=["10.0.0.0/8", "::1"]).trusted_proxies == [
        "10.0.0.0/8",
        "::1",
    ]


def test_every_limit_has_a_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    """The limits are reachable from the command line, and map onto the settings."""
    import coordinator  # noqa: PLC0415 - patched below, as the CLI looks it up at run time

    seen: list[CoordinatorConfig] = []

    async def capture(config: CoordinatorConfig) -> None:
        seen.append(config)

    monkeypatch.setattr(coordinator, "serve", capture)
    monkeypatch.setattr(logs, "configure", lambda level: None)  # leave the test's logging alone
    flags = [
        "--signal-rate", "5", "--signal-burst", "7",
        "--subject-signal-rate", "9", "--subject-signal-burst", "11",
        "--client-queue-share", "0.25", "--handshake-timeout", "3",
        "--client-idle-timeout", "4", "--max-clients", "12", "--max-clients-per-address", "6",
        "--trusted-proxy", "10.0.0.0/8", "--trusted-proxy", "192.0.2.1",
    ]  # fmt: skip
    result = CliRunner().invoke(main, ["coordinator", *flags])
    assert result.exit_code == 0, result.output
    config = seen[0]
    assert (config.signal_rate, config.signal_burst) == (5, 7)
    assert (config.subject_signal_rate, config.subject_signal_burst) == (9, 11)
    assert (config.client_queue_share, config.handshake_timeout) == (0.25, 3)
    assert (config.client_idle_timeout, config.max_clients) == (4, 12)
    assert config.max_clients_per_address == 6
    assert config.trusted_proxies == ["10.0.0.0/8", "192.0.2.1"]

    # Without the repeatable flag the environment still applies.
    monkeypatch.setenv("WEBRTC_BROKER_COORDINATOR_TRUSTED_PROXIES", '["172.16.0.0/12"]')
    assert CliRunner().invoke(main, ["coordinator"]).exit_code == 0
    assert seen[1].trusted_proxies == ["172.16.0.0/12"]
    refused = CliRunner().invoke(main, ["coordinator", "--trusted-proxy", "proxy.local"])
    assert refused.exit_code != 0 and "not an IP address" in refused.output


def test_the_open_files_limit_is_raised_for_max_clients() -> None:
    """A soft limit of 256 (as containers often start with 1024) is raised to fit the cap."""
    script = (
        "import resource\n"
        "from coordinator.server import raise_open_files_limit\n"
        "from tests.coordinator.harness import make_config\n"
        "hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))\n"
        "print(raise_open_files_limit(make_config(max_clients=2000)), hard)\n"
        "print(raise_open_files_limit(make_config(max_clients=0)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=ROOT,
    )
    first, second = result.stdout.splitlines()
    raised, hard = map(int, first.split())
    assert raised == min(2000 + 1024, hard) > 256
    assert int(second) == raised  # no cap: left as it is
