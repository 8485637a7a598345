"""What the Python SDK shares with the browser SDK: one source of limits, the same batch
cut, the same received-message shape, and a subscription the server confirms.

(The browser SDK takes the same limits from the module through its build; `make
sdk-check` and sdk/js/test hold that side.)
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import inspect
import logging
from typing import Any

import pytest

from tests.unit.test_writer import FakeChannel
from webrtc_broker import config, limits
from webrtc_broker.client import ClosedError, DisconnectedError, MessageTooLargeError
from webrtc_broker.client import client as client_module
from webrtc_broker.client.client import BrokerClient, ReceivedMessage, websocket_url
from webrtc_broker.rtc import session as session_module
from webrtc_broker.rtc.writer import ChannelWriter, FlushScheduler
from webrtc_broker.wire import broker_pb2 as pb
from webrtc_broker.wire import decode_as, frame_type


def test_every_python_user_of_a_shared_limit_takes_it_from_the_one_module() -> None:
    assert config.MAX_FRAME_BYTES == client_module.MAX_FRAME_BYTES == limits.MAX_FRAME_BYTES
    assert config.CommServerConfig.model_validate({}).max_frame_bytes == limits.MAX_FRAME_BYTES
    assert client_module.PING_TIMEOUT == limits.PING_TIMEOUT
    assert client_module.Keepalive() == client_module.Keepalive(
        limits.KEEPALIVE_INTERVAL, limits.KEEPALIVE_TIMEOUT
    )
    assert client_module.Reconnect() == client_module.Reconnect(
        limits.RECONNECT_FIRST_DELAY, limits.RECONNECT_MAX_DELAY, limits.RECONNECT_ATTEMPT_TIMEOUT
    )
    assert (
        inspect.signature(session_module.Session).parameters["max_candidates"].default
        == limits.MAX_CANDIDATES
    )


def test_the_limits_module_exports_only_numbers_the_browser_build_can_take() -> None:
    for name in limits.__all__:
        assert type(getattr(limits, name)) in (int, float), name


async def _messages(sizes: list[int]) -> list[bytes]:
    """What a batching writer with the shared limit sends for frames of ``sizes``."""
    channel = FakeChannel()
    writer = ChannelWriter(channel, reliable=True, max_frames=10_000, high_bytes=1 << 30)
    scheduler = FlushScheduler(60.0, "window")
    writer.enable_batching(scheduler)
    for index, size in enumerate(sizes):
        writer.send(bytes([index % 256]) * size)
    scheduler.flush()
    return channel.sent


def _batched(message: bytes) -> int:
    """Frames in ``message`` (the test's frames are raw bytes, not protobuf)."""
    if message[:2] != bytes([0x08, pb.BATCH]):
        return 1
    return len(decode_as(message, pb.BatchMessage).frames)


async def test_small_frames_fill_a_batch_as_the_browser_sdk_counts_it() -> None:
    # 40-byte frames take 42 bytes encoded but count 44: 26 fit (sdk/js/test/channel.test.ts).
    sent = await _messages([40] * 30)
    assert [_batched(message) for message in sent] == [26, 4]
    assert len(sent[0]) == 2 + 26 * 42


@pytest.mark.parametrize("size", [128, 300, 577, 578, 1000, 1156])
async def test_no_batch_passes_one_sctp_packet(size: int) -> None:
    # Two 577-byte frames (3 bytes of tag and length each) would make a 1162-byte batch.
    sent = await _messages([size] * 5)
    assert all(len(message) <= limits.BATCH_MAX_BYTES for message in sent)
    assert sum(_batched(message) for message in sent) == 5


def test_a_received_message_has_the_browser_sdks_field_order() -> None:
    names = [field.name for field in dataclasses.fields(ReceivedMessage)]
    assert names == ["sender", "body", "reliable", "topic", "identity", "role"]
    stamped = ReceivedMessage(5, "héllo".encode(), False, "room", b"alice", pb.CLIENT)
    assert (stamped.text, stamped.identity_text, stamped.topic) == ("héllo", "alice", "room")
    assert ReceivedMessage(5, b"x", True).identity_text is None


def test_web_origins_are_dialled_as_websockets() -> None:
    assert websocket_url("http://c.test:9090") == "ws://c.test:9090"
    assert websocket_url("HTTPS://c.test/") == "wss://c.test/"
    assert websocket_url("ws://c.test") == "ws://c.test"


# -- subscribe, against a fake session -----------------------------------------


class _FakeSession:
    """What BrokerClient asks of a live session when it sends."""

    def __init__(self) -> None:
        self.closed = asyncio.Event()
        self.sent: list[bytes] = []

    def send(self, frame: bytes, *, reliable: bool, immediate: bool = False) -> None:
        self.sent.append(frame)


class _FakeLink:
    def __init__(self) -> None:
        self.session = _FakeSession()


def _client() -> tuple[BrokerClient, _FakeSession]:
    client = BrokerClient(
        ("ws://c.test",),
        b"",
        inbox_size=10,
        capabilities=client_module.CLIENT_CAPABILITIES,
        keepalive=None,
        reconnect=None,
    )
    link: Any = _FakeLink()
    client._link = link
    return client, link.session


def _echo(client: BrokerClient, session: _FakeSession) -> None:
    """The server's echo of every PING sent so far."""
    for frame in session.sent:
        if frame_type(frame) == pb.PING:
            client._on_frame(frame, True)


async def test_subscribe_is_confirmed_by_the_echo_of_the_ping_after_it() -> None:
    client, session = _client()
    confirmed = client.subscribe(["b", "a"])
    kinds = [frame_type(frame) for frame in session.sent]
    assert kinds == [pb.SUBSCRIPTION, pb.PING]  # the PING follows on the same channel
    await asyncio.sleep(0)
    assert not confirmed.done()
    _echo(client, session)
    await asyncio.wait_for(confirmed, 1)
    assert confirmed.result() is None


async def test_a_lost_session_fails_the_confirmation_and_closing_the_client_too() -> None:
    client, _ = _client()
    lost = client.subscribe(["a"])
    client._fail_pings()  # what the session's end does
    with pytest.raises(DisconnectedError):
        await lost
    closing = client.subscribe(["a"])
    client._end("closed by the client")
    with pytest.raises(ClosedError) as raised:
        await closing
    assert type(raised.value) is ClosedError
    assert client.close_reason == "closed by the client"


async def test_an_unawaited_confirmation_that_fails_is_not_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client, _ = _client()
    client.subscribe(["a"])  # the pre-confirmation way: fire and forget
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        client._fail_pings()
        for _ in range(3):  # the echo's callbacks, then the confirmation's
            await asyncio.sleep(0)
        gc.collect()
    assert "never retrieved" not in caplog.text


async def test_a_topic_list_too_large_to_relay_is_refused_and_not_kept() -> None:
    client, session = _client()
    many = [f"topic/{index}" for index in range(30_000)]
    with pytest.raises(MessageTooLargeError):
        client.subscribe(many)
    assert session.sent == []
    assert client._subscription is None


async def test_a_cancelled_confirmation_stops_waiting_for_its_echo() -> None:
    client, _ = _client()
    confirmed = client.subscribe(["a"])
    confirmed.cancel()
    await asyncio.sleep(0)
    assert client._pings == {}


async def test_lifecycle_events_reach_their_listeners_until_they_stop() -> None:
    client, _ = _client()
    heard: list[str] = []

    def failing(_reason: str) -> None:
        raise RuntimeError("a listener's own bug")

    client.on("close", failing)
    stop = client.on("close", lambda reason: heard.append(f"first: {reason}"))
    client.on("close", lambda reason: heard.append(f"second: {reason}"))
    stop()
    with pytest.raises(ValueError, match="no such event"):
        client.on("message", heard.append)  # type: ignore[call-overload]
    client._end("closed by the client")
    client._end("again")  # the client ends once
    assert heard == ["second: closed by the client"]
