"""The Python SDK's coordinator link survives whatever signalling reaches it.

A real coordinator (in this event loop) relays between an SDK client and a
comm server played by the test (``tests.fakeserver.FakeServer``: it offers, echoes PINGs,
forwards TOPICs back as TOPIC_FW), and, on demand, misbehaves: repeated and
fresh offers after the session is up, offers that are not SDP, answers (which
a server never sends a client), candidates that are not candidates, bytes
that are not frames. A second registered server sends its own offer and a
refusal to the same client. Each frame must be dropped and counted by reason,
never end the link's reader; the client then still pings and exchanges
messages, and a new client still connects.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.coordinator.harness import running_coordinator
from tests.fakeserver import fake_server, junk_frames, stranger_signals
from tests.support import eventually
from webrtc_broker.client import BrokerClient
from webrtc_broker.client.link import SignallingDrop
from webrtc_broker.rtc import Session
from webrtc_broker.wire import broker_pb2 as pb

pytestmark = pytest.mark.timeout(60)


async def exchange(client: BrokerClient, topic: str, body: bytes) -> None:
    """A ping and a message through the server and back."""
    await asyncio.wait_for(client.ping(), 5)
    client.publish(topic, body)
    received = await asyncio.wait_for(client.receive(), 5)
    assert (received.topic, received.body) == (topic, body)


def reader_alive(client: BrokerClient) -> bool:
    link = client._link
    return link is not None and link._reader is not None and not link._reader.done()


async def test_junk_after_set_up_costs_nothing_but_counted_drops() -> None:
    async with (
        running_coordinator() as coordinator,
        fake_server(coordinator.url(""), "good") as server,
        fake_server(coordinator.url(""), "other") as other,
    ):
        url = coordinator.url("")
        client = await BrokerClient.connect(url, server=server.alias, timeout=10)
        try:
            await exchange(client, "t", b"before")
            junk = junk_frames(server, client.alias)
            for frame, _ in junk:
                await server.peer.send_raw(frame)
            await stranger_signals(other, client.alias)
            expected: dict[str, int] = {}
            for _, reason in junk:
                if reason is not None:
                    expected[reason] = expected.get(reason, 0) + 1
            expected[SignallingDrop.WRONG_SENDER] = 2

            async def all_counted() -> bool:
                return dict(client.signalling_dropped) == expected

            await eventually(all_counted, timeout=10, interval=0.05)
            assert reader_alive(client), "the link's reader survived every frame"
            # What the coordinator never relays (not a broker frame), fed to the link directly.
            link = client._link
            assert link is not None
            for garbage in (b"\xff\xff\xff garbage", b"\x08"):
                await link._on_coordinator_frame(garbage)
            assert client.signalling_dropped[SignallingDrop.MALFORMED] == 2
            await exchange(client, "t", b"after")
            assert client.reconnects == 0, "the session itself was never lost"
            session = client.session
            assert session is not None and not session.closed.is_set()
        finally:
            await client.close()
        # And the next client connects as ever.
        fresh = await BrokerClient.connect(url, server=server.alias, timeout=10)
        try:
            await exchange(fresh, "u", b"fresh")
        finally:
            await fresh.close()


async def test_junk_before_the_offer_and_another_servers_offer_do_not_stop_the_set_up() -> None:
    async with (
        running_coordinator() as coordinator,
        fake_server(coordinator.url(""), "other") as other,
    ):
        rogue = Session(on_frame=lambda _d, _r: None)

        async def before_offer(client: int) -> None:
            # The other server offers first: the client must wait for its own server's.
            await other.signal(client, pb.WEBRTC_OFFER, await rogue.create_offer())
            await server.signal(client, pb.WEBRTC_ANSWER, b"{}")
            await server.signal(client, pb.WEBRTC_ICE_CANDIDATE, b"not json")

        async with fake_server(coordinator.url(""), "good", before_offer) as server:
            try:
                client = await BrokerClient.connect(
                    coordinator.url(""), server=server.alias, timeout=10
                )
            finally:
                await rogue.close()
            try:
                await exchange(client, "t", b"hello")
                assert client.signalling_dropped[SignallingDrop.WRONG_SENDER] == 1
                assert client.signalling_dropped[SignallingDrop.UNEXPECTED_TYPE] == 1
                assert reader_alive(client)
            finally:
                await client.close()


async def test_an_offer_the_client_cannot_answer_fails_only_that_attempt() -> None:
    """A first offer that is not SDP ends that set-up at once (not at the timeout)."""
    async with running_coordinator() as coordinator:
        broken = {"on": True}

        async def before_offer(client: int) -> None:
            if broken["on"]:
                broken["on"] = False
                await server.signal(client, pb.WEBRTC_OFFER, b'{"type": "answer", "sdp": ""}')

        async with fake_server(coordinator.url(""), "good", before_offer) as server:
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(Exception, match="session closed during set-up"):
                await BrokerClient.connect(coordinator.url(""), server=server.alias, timeout=10)
            assert loop.time() - started < 5
            client = await BrokerClient.connect(
                coordinator.url(""), server=server.alias, timeout=10
            )
            try:
                await exchange(client, "t", b"second attempt")
            finally:
                await client.close()
