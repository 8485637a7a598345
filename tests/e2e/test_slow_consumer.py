"""Load on the reliable channel: nothing lost, and a consumer that stops reading
costs nobody else anything.

The slow consumer is a real client process (``webrtc-broker client``) frozen
with SIGSTOP: its kernel still holds a socket, but nothing answers, acks or
reads. Its comm server must keep serving the others at full speed, bound the
memory it spends on it, and drop it once its reliable queue overflows.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

from tests.e2e.helpers import TIMEOUT, connected, counter, start_mesh, subscribe, wait_status
from tests.support import Cluster, eventually, spawn_cli_client
from webrtc_broker.client import BrokerClient

MB = 1024 * 1024
RSS_BOUND = 150 * MB
"""Growth of the comm server's resident memory allowed while the consumer is stopped."""
BODY = 2048
"""Larger than a batch (1160 bytes): each frame is a data-channel message of its own."""
CHUNK = 500
"""Messages each publisher sends before waiting for the healthy receivers to catch up."""
PROBE = b"probe"


def rss_bytes(pid: int) -> int:
    """VmRSS of ``pid`` from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


@contextlib.asynccontextmanager
async def client_process(cluster: Cluster, topic: str, output: Path) -> AsyncIterator[int]:
    """``webrtc-broker client --topic TOPIC --no-stdin``, printing to ``output``; its pid."""
    process = await spawn_cli_client(cluster.url, [topic], output)
    try:
        yield process.pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGCONT)
            process.kill()
        await process.wait()


async def collect(client: BrokerClient, count: int, into: list[bytes]) -> None:
    """Receive until ``count`` messages are in ``into`` (probes are skipped)."""
    while len(into) < count:
        body = (await client.receive()).body
        if body != PROBE:
            into.append(body)


@contextlib.asynccontextmanager
async def rss_peak(pid: int) -> AsyncIterator[list[int]]:
    """Sample the RSS of ``pid`` every 50 ms while in the block; ``[peak]`` so far."""
    peak = [rss_bytes(pid)]

    async def sample() -> None:
        while True:
            await asyncio.sleep(0.05)
            peak[0] = max(peak[0], rss_bytes(pid))

    sampler = asyncio.create_task(sample())
    try:
        yield peak
    finally:
        sampler.cancel()


def expected_bodies(name: str, count: int) -> list[bytes]:
    return [f"{name} {index:06d} ".encode().ljust(BODY, b".") for index in range(count)]


async def publish_in_windows(
    publishers: dict[str, BrokerClient],
    sent: dict[str, list[bytes]],
    receivers: dict[str, BrokerClient],
    got: dict[str, list[bytes]],
) -> None:
    """Publish ``CHUNK`` messages from each publisher, then wait until every live
    receiver has them all, and repeat.

    The window bounds what the healthy receivers have in flight (well under the
    server's 4096-message queue), so only a consumer that stops reading can
    overflow, however slow the machine running the test is. A receiver that
    lost its session fails the test at once instead of waiting for messages
    that went to its old session.
    """
    sessions = {name: client.session for name, client in receivers.items()}
    count = len(next(iter(sent.values())))

    def lost_sessions() -> list[str]:
        return [name for name, client in receivers.items() if client.session is not sessions[name]]

    for start in range(0, count, CHUNK):
        for name, publisher in publishers.items():
            for body in sent[name][start : start + CHUNK]:
                publisher.publish("room", body)
        due = len(publishers) * min(start + CHUNK, count)

        async def window_done(due: int = due) -> bool:
            return bool(lost_sessions()) or all(len(got[name]) >= due for name in receivers)

        try:
            await eventually(window_done, timeout=60, interval=0.01)
        except AssertionError:
            counts = {name: len(got[name]) for name in receivers}
            raise AssertionError(f"{due} messages due, received {counts}") from None
        assert not lost_sessions(), f"{lost_sessions()} lost their session"


async def test_stopped_consumer_is_dropped_and_costs_others_nothing(
    cluster: Cluster, tmp_path: Path
) -> None:
    await cluster.start_coordinator()
    # A stopped client also falls silent: on a busy machine the --client-timeout
    # (10 s) could close it before its queue overflows, which is what is tested here.
    await cluster.start_server("s1", "--client-timeout", "300")
    output = tmp_path / "slowpoke.out"
    # Started while s1 is the only server, so that it lands on s1.
    async with client_process(cluster, "room", output) as slowpoke:
        await wait_status(cluster, "s1", "clients", 1)
        await cluster.start_server("s2")
        await cluster.wait_mesh("s1", 1)
        async with (
            connected(cluster, "alice", "dave", "bob", server="s1") as (alice, dave, bob),
            connected(cluster, "carol", server="s2") as (carol,),
        ):
            await subscribe(bob, ["room"])
            await subscribe(carol, ["room"])
            await wait_status(cluster, "s1", "server_topics", 1)

            async def slowpoke_reads() -> bool:
                alice.publish("room", PROBE)
                return PROBE.decode() in output.read_text(errors="replace")

            await eventually(slowpoke_reads, timeout=TIMEOUT)

            s1 = cluster.servers["s1"]
            assert s1.process is not None
            rss_before = rss_bytes(s1.process.pid)
            os.kill(slowpoke, signal.SIGSTOP)

            # 2 x 4000 x 2 KiB: well past what the stopped consumer may hold (1 MiB in
            # aiortc's buffer, then 4096 messages in its queue).
            per_publisher = 4000
            sent = {name: expected_bodies(name, per_publisher) for name in ("alice", "dave")}
            got: dict[str, list[bytes]] = {"bob": [], "carol": []}
            receivers = {"bob": bob, "carol": carol}
            readers = [
                asyncio.create_task(collect(receiver, 2 * per_publisher, got[name]))
                for name, receiver in receivers.items()
            ]
            started = time.monotonic()
            async with rss_peak(s1.process.pid) as peak:
                try:
                    await publish_in_windows({"alice": alice, "dave": dave}, sent, receivers, got)
                    await asyncio.gather(*readers)
                finally:
                    for task in readers:
                        task.cancel()
                elapsed = time.monotonic() - started

                # Nothing lost, per-publisher order kept, for both receivers.
                for name, bodies in got.items():
                    for publisher, expected in sent.items():
                        mine = [body for body in bodies if body.startswith(publisher.encode())]
                        assert mine == expected, f"{name} lost or reordered {publisher}'s messages"

                # The stopped consumer's reliable queue overflowed: it was closed.
                status = await wait_status(cluster, "s1", "clients", 3, timeout=60)
                assert counter(status, "sessions", "closed:slow_peer") == 1, status["stats"]
                assert status["queue_depth"] < 100  # its queue went with it
                metrics = (await cluster.http.get(f"http://127.0.0.1:{s1.http_port}/metrics")).text
                assert 'sessions_closed_total{reason="slow_peer"} 1.0' in metrics
            rss_max, rss_after = peak[0], rss_bytes(s1.process.pid)
            assert rss_max - rss_before < RSS_BOUND
            assert alice.session is not None and not alice.session.closed.is_set()
            total = 2 * per_publisher * 2
            print(
                f"\nslow consumer: {total} deliveries of {BODY} B to the others in "
                f"{elapsed:.1f} s, none lost; comm server RSS {rss_before / MB:.0f} MB -> "
                f"{rss_max / MB:.0f} MB (peak) -> {rss_after / MB:.0f} MB after the "
                "stopped consumer was dropped"
            )


async def test_reliable_channel_loses_nothing_under_load(cluster: Cluster) -> None:
    await start_mesh(cluster, "s1", "s2")
    async with (
        connected(cluster, "alice", server="s1") as (alice,),
        connected(cluster, "bob", server="s2") as (bob,),
    ):
        await subscribe(bob, ["load"])
        await wait_status(cluster, "s1", "server_topics", 1)
        count = 4000
        bodies = [f"{index:06d}".encode().ljust(100, b"-") for index in range(count)]
        got: list[bytes] = []
        reader = asyncio.create_task(collect(bob, count, got))
        started = time.monotonic()
        for body in bodies:  # all at once: the SDK batches and queues them
            alice.publish("load", body)
        await asyncio.wait_for(reader, 60)
        elapsed = time.monotonic() - started
        assert got == bodies
        for name in ("s1", "s2"):
            status = await cluster.server_status(name)
            assert counter(status, "drops", "rate_limited") == 0
            assert counter(status, "drops", "internal_error") == 0
        print(
            f"\nreliable under load: {count} messages of 100 B across two servers in "
            f"{elapsed:.2f} s ({count / elapsed:.0f}/s), all in order"
        )
