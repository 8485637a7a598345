"""The Python SDK and the browser SDK see the same thing in the same scenario.

Two observers, one per SDK, run the same steps against one real cluster (the
browser SDK in Chromium, from the coordinator's ``/sdk/webrtc-broker.js``) while
a third client publishes. Each step's outcome is reduced to plain data, the same
shape for both (a duration in seconds, an error by its class name), and the two
must be equal, and equal to what the step should give: connecting, a refused
connect, a confirmed subscription, what a publisher's messages look like on
arrival (fields, order, topic, identity and role, channel), limits, unsubscribing,
pings and closing.

Everything runs on one comm server, so a confirmed subscription means that what
is published after the confirmation is delivered: the test publishes at once.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

from playwright.async_api import Browser, Page

from tests.browser.pages import TIMEOUT_MS, ConsoleLog, PageHost, open_page
from tests.e2e.helpers import TIMEOUT, inbox_size, receive, start_mesh
from tests.support import Cluster, eventually
from webrtc_broker.client import (
    CLIENT_CAPABILITIES,
    MAX_FRAME_BYTES,
    BrokerClient,
    BrokerError,
    ReceivedMessage,
)
from webrtc_broker.wire import broker_pb2 as pb

TOPIC = "parity"
BOTH_CAPABILITIES = pb.CAPABILITY_BATCH | pb.CAPABILITY_TOPIC_NAMES
NO_SUCH_SERVER = 987_654
TOO_MANY_TOPICS = 30_000
"""Topic names (``topic/<n>``) whose SUBSCRIPTION is larger than MAX_FRAME_BYTES."""


def largest_body(topic: str) -> int:
    """The longest body whose TOPIC frame to ``topic`` is exactly MAX_FRAME_BYTES long."""
    probe = MAX_FRAME_BYTES - 64  # the body's length takes as many bytes as the answer's

    def size(length: int) -> int:
        return pb.TopicMessage(type=pb.TOPIC, topic=topic, body=b"x" * length).ByteSize()

    length = probe + (MAX_FRAME_BYTES - size(probe))
    assert size(length) == MAX_FRAME_BYTES
    return length


class Side(Protocol):
    """One SDK, driven the same way whichever it is; outcomes are plain data."""

    name: str
    alias: int

    async def connect(self, url: str, credentials: str, **options: Any) -> dict[str, Any]: ...
    async def subscribe(self, topics: list[str]) -> str | None: ...
    async def subscribe_many(self, count: int) -> str | None: ...
    async def publish(self, topic: str, size: int) -> str | None: ...
    async def receive(self, count: int) -> list[dict[str, Any]]: ...
    async def pending(self) -> int: ...
    async def ping(self, *, reliable: bool) -> float: ...
    async def events(self) -> list[str]: ...
    async def server(self) -> int: ...
    async def close(self) -> str: ...


def _seen(message: ReceivedMessage) -> dict[str, Any]:
    return {
        "fields": [field.name for field in dataclasses.fields(message)],
        "sender": message.sender,
        "text": message.text,
        "reliable": message.reliable,
        "topic": message.topic,
        "identity": message.identity_text,
        "role": message.role,
    }


def _error(exc: BaseException) -> str:
    assert isinstance(exc, BrokerError), repr(exc)
    return type(exc).__name__


class PythonSide:
    name = "python"

    def __init__(self) -> None:
        self.client: BrokerClient | None = None
        self.alias = 0
        self.heard: list[str] = []

    @property
    def live(self) -> BrokerClient:
        assert self.client is not None
        return self.client

    async def connect(self, url: str, credentials: str, **options: Any) -> dict[str, Any]:
        try:
            client = await BrokerClient.connect(url, credentials, timeout=TIMEOUT, **options)
        except BrokerError as exc:
            return {"error": _error(exc)}
        self.client, self.alias = client, client.alias
        client.on("reconnecting", lambda _reason: self.heard.append("reconnecting"))
        client.on("reconnected", lambda _client: self.heard.append("reconnected"))
        client.on("close", lambda _reason: self.heard.append("close"))
        return {
            "server": client.server_alias,
            "servers": client.servers,
            "capabilities": client.server_capabilities,
        }

    async def subscribe(self, topics: list[str]) -> str | None:
        try:
            await self.live.subscribe(topics)
        except BrokerError as exc:
            return _error(exc)
        return None

    async def subscribe_many(self, count: int) -> str | None:
        return await self.subscribe([f"topic/{index}" for index in range(count)])

    async def publish(self, topic: str, size: int) -> str | None:
        try:
            self.live.publish(topic, b"x" * size)
        except BrokerError as exc:
            return _error(exc)
        return None

    async def receive(self, count: int) -> list[dict[str, Any]]:
        return [_seen(await receive(self.live)) for _ in range(count)]

    async def pending(self) -> int:
        await self.live.ping()  # reliable deliveries queued before the echo are in
        return inbox_size(self.live)

    async def ping(self, *, reliable: bool) -> float:
        return await self.live.ping(reliable=reliable)

    async def events(self) -> list[str]:
        return list(self.heard)

    async def server(self) -> int:
        return self.live.server_alias

    async def close(self) -> str:
        await self.live.close()
        return self.live.close_reason


_BROWSER_CONNECT = """
async ([sdkUrl, url, credentials, options]) => {
  const sdk = await import(sdkUrl);
  window.sdk = sdk;
  window.inbox = [];
  window.events = [];
  try {
    const client = await sdk.BrokerClient.connect(url, credentials, options);
    window.client = client;
    for (const event of ["reconnecting", "reconnected", "close"]) {
      client.on(event, () => window.events.push(event));
    }
    client.on("message", (m) => window.inbox.push({
      fields: Object.keys(m),
      sender: m.sender,
      text: m.text,
      reliable: m.reliable,
      topic: m.topic ?? null,
      identity: m.identityText ?? null,
      role: m.role ?? null,
    }));
    return {
      alias: client.alias,
      server: client.serverAlias,
      servers: [...client.servers],
      capabilities: client.serverCapabilities,
    };
  } catch (error) {
    return { error: error instanceof sdk.BrokerError ? error.name : `not a BrokerError: ${error}` };
  }
}
"""

# Each runs one call of the SDK and returns null, or the name of the BrokerError it threw.
_BROWSER_SUBSCRIBE = """
async (topics) => {
  try { await window.client.subscribe(topics); return null; }
  catch (e) { return e instanceof window.sdk.BrokerError ? e.name : `not a BrokerError: ${e}`; }
}
"""
_BROWSER_SUBSCRIBE_MANY = """
async (count) => {
  const topics = Array.from({ length: count }, (_, index) => `topic/${index}`);
  try { await window.client.subscribe(topics); return null; }
  catch (e) { return e instanceof window.sdk.BrokerError ? e.name : `not a BrokerError: ${e}`; }
}
"""
_BROWSER_PUBLISH = """
([topic, size]) => {
  try { window.client.publish(topic, new Uint8Array(size).fill(120)); return null; }
  catch (e) { return e instanceof window.sdk.BrokerError ? e.name : `not a BrokerError: ${e}`; }
}
"""


class BrowserSide:
    name = "browser"

    def __init__(self, page: Page, sdk_url: str) -> None:
        self.page = page
        self.sdk_url = sdk_url
        self.alias = 0

    async def connect(self, url: str, credentials: str, **options: Any) -> dict[str, Any]:
        options = {"timeout": TIMEOUT * 1000, **options}
        info: dict[str, Any] = await self.page.evaluate(
            _BROWSER_CONNECT, [self.sdk_url, url, credentials, options]
        )
        self.alias = int(info.pop("alias", 0))
        return info

    async def subscribe(self, topics: list[str]) -> str | None:
        result: str | None = await self.page.evaluate(_BROWSER_SUBSCRIBE, topics)
        return result

    async def subscribe_many(self, count: int) -> str | None:
        result: str | None = await self.page.evaluate(_BROWSER_SUBSCRIBE_MANY, count)
        return result

    async def publish(self, topic: str, size: int) -> str | None:
        result: str | None = await self.page.evaluate(_BROWSER_PUBLISH, [topic, size])
        return result

    async def receive(self, count: int) -> list[dict[str, Any]]:
        await self.page.wait_for_function(
            "(count) => window.inbox.length >= count", arg=count, timeout=TIMEOUT_MS
        )
        got: list[dict[str, Any]] = await self.page.evaluate(
            "(count) => window.inbox.splice(0, count)", count
        )
        return got

    async def pending(self) -> int:
        return int(
            await self.page.evaluate(
                "async () => (await window.client.ping(), window.inbox.length)"
            )
        )

    async def ping(self, *, reliable: bool) -> float:
        rtt_ms = await self.page.evaluate(
            "(reliable) => window.client.ping({ reliable })", reliable
        )
        return float(rtt_ms) / 1000

    async def events(self) -> list[str]:
        heard: list[str] = await self.page.evaluate("() => [...window.events]")
        return heard

    async def server(self) -> int:
        return int(await self.page.evaluate("() => window.client.serverAlias"))

    async def close(self) -> str:
        return str(
            await self.page.evaluate("() => (window.client.close(), window.client.closeReason)")
        )


async def each(sides: list[Side], step: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """``step`` (a method name) run on every side, one after the other; outcomes by side."""
    return {side.name: await getattr(side, step)(*args, **kwargs) for side in sides}


def same(outcomes: dict[str, Any], expected: Any) -> None:
    """Every side's outcome is ``expected`` (so the sides agree)."""
    assert outcomes == dict.fromkeys(outcomes, expected)


async def test_both_sdks_see_the_same_session(
    cluster: Cluster, browser: Browser, page_host: PageHost, console: ConsoleLog
) -> None:
    aliases = await start_mesh(cluster, "s1")
    server = aliases["s1"]
    page = await open_page(browser, page_host.url, console, "browser")
    sides: list[Side] = [
        PythonSide(),
        BrowserSide(page, f"{cluster.http_url}/sdk/webrtc-broker.js"),
    ]
    constants = await page.evaluate(
        "async (url) => { const sdk = await import(url);"
        " return [sdk.MAX_FRAME_BYTES, sdk.CLIENT_CAPABILITIES]; }",
        f"{cluster.http_url}/sdk/webrtc-broker.js",
    )
    assert constants == [MAX_FRAME_BYTES, CLIENT_CAPABILITIES]

    # A server the coordinator does not know: the same refusal, before any session.
    same(
        await each(sides, "connect", cluster.url, "x", server=NO_SUCH_SERVER),
        {"error": "NoServerAvailableError"},
    )
    # Both take the coordinator's web origin (http://) as well as its ws:// URL.
    connected = await each(sides, "connect", cluster.http_url, "observer")
    same(connected, {"server": server, "servers": [server], "capabilities": BOTH_CAPABILITIES})
    python, browser_side = sides
    assert 0 not in (python.alias, browser_side.alias) and python.alias != browser_side.alias

    async with await BrokerClient.connect(cluster.url, "carol", timeout=TIMEOUT) as carol:
        same(await each(sides, "subscribe", [TOPIC, "other"]), None)
        # Confirmed: published from now on means delivered.
        carol.publish(TOPIC, "one")
        carol.publish_identity(TOPIC, "two")
        carol.publish("other", "three")
        carol.publish("elsewhere", "never")
        carol.publish(TOPIC, "four")
        fields = ["sender", "body", "reliable", "topic", "identity", "role"]

        def plain(text: str, topic: str = TOPIC) -> dict[str, Any]:
            return {
                "fields": fields,
                "sender": carol.alias,
                "text": text,
                "reliable": True,
                "topic": topic,
                "identity": None,
                "role": None,
            }

        stamped = {**plain("two"), "identity": "carol", "role": pb.CLIENT}
        same(
            await each(sides, "receive", 4),
            [plain("one"), stamped, plain("three", "other"), plain("four")],
        )

        carol.publish_identity(TOPIC, "five", reliable=False)
        unreliable = {**plain("five"), "identity": "carol", "role": pb.CLIENT, "reliable": False}
        same(await each(sides, "receive", 1), [unreliable])

        # Limits: the same largest frame, the same error above it, for topic lists too.
        largest = largest_body(TOPIC)
        same(await each(sides, "publish", TOPIC, largest + 1), "MessageTooLargeError")
        same(await each(sides, "subscribe_many", TOO_MANY_TOPICS), "MessageTooLargeError")

        # Unsubscribing, confirmed the same way; the refused list above changed nothing.
        same(await each(sides, "subscribe", []), None)
        carol.publish(TOPIC, "after")
        carol.publish("other", "after")
        await carol.ping()  # the server has handled both before the echo
        same(await each(sides, "pending"), 0)
        same(await each(sides, "publish", TOPIC, largest), None)

    for reliable in (True, False):
        rtts = await each(sides, "ping", reliable=reliable)
        assert all(rtt > 0 for rtt in rtts.values()), rtts  # seconds, whichever SDK

    same(await each(sides, "close"), "closed by the client")
    same(await each(sides, "publish", TOPIC, 1), "ClosedError")
    same(await each(sides, "subscribe", [TOPIC]), "ClosedError")
    same(await each(sides, "events"), ["close"])


async def test_both_sdks_move_to_another_server_alike(
    cluster: Cluster, browser: Browser, page_host: PageHost, console: ConsoleLog
) -> None:
    """Their server stops: both say so, move to the other one and keep their topics."""
    aliases = await start_mesh(cluster, "s1", "s2")
    page = await open_page(browser, page_host.url, console, "browser")
    sides: list[Side] = [
        PythonSide(),
        BrowserSide(page, f"{cluster.http_url}/sdk/webrtc-broker.js"),
    ]
    for side, outcome in (
        await each(sides, "connect", cluster.url, "mover", server=aliases["s1"])
    ).items():
        assert outcome["server"] == aliases["s1"], (side, outcome)
    same(await each(sides, "subscribe", [TOPIC]), None)

    await cluster.stop(cluster.servers["s1"])

    async def moved() -> bool:
        heard = await each(sides, "events")
        return all(events[-1:] == ["reconnected"] for events in heard.values())

    await eventually(moved, timeout=30)
    same(await each(sides, "events"), ["reconnecting", "reconnected"])
    same(await each(sides, "server"), aliases["s2"])
    # The topics went to the new server before "reconnected", and a PING's echo follows them.
    await each(sides, "ping", reliable=True)
    async with await BrokerClient.connect(cluster.url, "carol", server=aliases["s2"]) as carol:
        carol.publish(TOPIC, "still subscribed")
        got = await each(sides, "receive", 1)
    same({side: [m["text"] for m in seen] for side, seen in got.items()}, ["still subscribed"])
    same(await each(sides, "close"), "closed by the client")
