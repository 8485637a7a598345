"""Browser pages for the tests: the SDK driven from Python.

:class:`BrowserClient` runs the browser SDK in a real page. The page comes
from a small web server of the test's own (:class:`PageHost`), another origin
than the coordinator, as an application's page would: it imports the SDK
from the coordinator's ``/sdk/webrtc-broker.js`` across origins. Received
messages collect in ``window.inbox`` for the test to read.

(A page that Playwright itself fulfils will not do: Chromium's local network
access checks treat such a page as public and block its WebSocket to
127.0.0.1.)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from playwright.async_api import Browser, ConsoleMessage, Error, Page

from tests.support import Cluster

TIMEOUT_MS = 15_000
BLANK_PAGE = b"<!doctype html><html><head><title>SDK test page</title></head><body></body></html>"

_CONNECT = """
async ([sdkUrl, url, credentials, options]) => {
  const sdk = await import(sdkUrl);
  window.sdk = sdk;
  window.inbox = [];
  window.closeReason = null;
  window.reconnects = [];
  try {
    const client = await sdk.BrokerClient.connect(url, credentials, options);
    window.client = client;
    client.on("message", (m) => window.inbox.push({
      sender: m.sender,
      text: m.text,
      reliable: m.reliable,
      topic: m.topic ?? null,
      identity: m.identityText ?? null,
      role: m.role ?? null,
    }));
    client.on("close", (reason) => { window.closeReason = reason; });
    client.on("reconnecting", (reason) => { window.reconnects.push({ reason }); });
    client.on("reconnected", (c) => {
      window.reconnects.at(-1).server = c.serverAlias;
      window.reconnects.at(-1).alias = c.alias;
    });
    return {
      alias: client.alias,
      server: client.serverAlias,
      capabilities: client.serverCapabilities,
    };
  } catch (error) {
    return {
      error: `${error.name}: ${error.message}`,
      isBrokerError: error instanceof sdk.BrokerError,
    };
  }
}
"""


@dataclass
class ConsoleLog:
    """What every page printed to its console, for the report of a failed test."""

    lines: list[str] = field(default_factory=list)

    def attach(self, page: Page, name: str) -> None:
        def on_console(message: ConsoleMessage) -> None:
            self.lines.append(f"[{name}] {message.type}: {message.text}")

        def on_error(error: Error) -> None:
            self.lines.append(f"[{name}] page error: {error}")

        page.on("console", on_console)
        page.on("pageerror", on_error)

    def dump(self) -> str:
        return "==== browser console ====\n" + "\n".join(self.lines)


class PageHost:
    """Serves HTML pages on 127.0.0.1: the origin of the SDK test pages.

    ``/`` is a blank page; a test may add others to :attr:`pages`.
    """

    def __init__(self) -> None:
        self.pages: dict[str, bytes] = {"/": BLANK_PAGE}
        self.url = ""

    @classmethod
    @contextlib.asynccontextmanager
    async def running(cls) -> AsyncIterator[PageHost]:
        host = cls()
        server = await asyncio.start_server(host._answer, "127.0.0.1", 0)
        host.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
        try:
            yield host
        finally:
            server.close()
            await server.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, IndexError):
            request = await reader.readuntil(b"\r\n\r\n")
            body = self.pages.get(request.split(b" ", 2)[1].decode(errors="replace"))
            status = b"200 OK" if body is not None else b"404 Not Found"
            body = body if body is not None else b"not found"
            head = b"HTTP/1.1 %s\r\nContent-Type: text/html; charset=utf-8\r\n" % status
            head += b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
            writer.write(head + body)
            await writer.drain()
        writer.close()


async def open_page(browser: Browser, url: str, console: ConsoleLog, name: str) -> Page:
    """A new page, in a browser context of its own, showing ``url``."""
    page = await browser.new_page()
    console.attach(page, name)
    await page.goto(url)
    return page


async def load_sdk(page: Page, cluster: Cluster) -> None:
    """Import the SDK in ``page`` ahead of connecting (later imports reuse the module)."""
    await page.evaluate("(url) => import(url)", f"{cluster.http_url}/sdk/webrtc-broker.js")


class ConnectFailed(AssertionError):
    """The SDK's connect rejected; the message is the error's ``name: message``."""


class BrowserClient:
    """The browser SDK in a page, driven from the test."""

    def __init__(self, page: Page, info: dict[str, Any]) -> None:
        self.page = page
        self.alias = int(info["alias"])
        self.server = int(info["server"])
        self.server_capabilities = int(info["capabilities"])

    @classmethod
    async def connect(
        cls,
        browser: Browser,
        host: PageHost,
        cluster: Cluster,
        console: ConsoleLog,
        credentials: str,
        *,
        server: int | None = None,
        page: Page | None = None,
        **options: Any,
    ) -> BrowserClient:
        """Connect the SDK in ``page`` (default: a new page).

        Raises :class:`ConnectFailed` with the SDK's error. ``options`` are the
        SDK's ``ConnectOptions``.
        """
        if page is None:
            page = await open_page(browser, host.url, console, credentials)
        if server is not None:
            options["server"] = server
        sdk_url = f"{cluster.http_url}/sdk/webrtc-broker.js"
        info = await page.evaluate(_CONNECT, [sdk_url, cluster.url, credentials, options])
        if "error" in info:
            assert info["isBrokerError"], info
            raise ConnectFailed(info["error"])
        return cls(page, info)

    async def subscribe(self, topics: list[str], *, compress: bool = False) -> None:
        """Resolves once the server applied it (the SDK waits for a PING echo)."""
        await self.page.evaluate(
            "([topics, compress]) => window.client.subscribe(topics, { compress })",
            [topics, compress],
        )

    async def publish(
        self, topic: str, text: str, *, reliable: bool = True, identity: bool = False
    ) -> None:
        await self.page.evaluate(
            """([topic, text, reliable, identity]) => identity
                ? window.client.publishIdentity(topic, text, { reliable })
                : window.client.publish(topic, text, { reliable })""",
            [topic, text, reliable, identity],
        )

    async def publish_many(self, topic: str, texts: list[str], *, reliable: bool = True) -> None:
        """Publish all of ``texts`` in one JavaScript task (so the SDK may batch them)."""
        await self.page.evaluate(
            """([topic, texts, reliable]) => {
                for (const text of texts) window.client.publish(topic, text, { reliable });
            }""",
            [topic, texts, reliable],
        )

    async def ping(self) -> float:
        """Round-trip time in milliseconds."""
        return float(await self.page.evaluate("() => window.client.ping()"))

    async def receive(self, count: int = 1, timeout_ms: float = TIMEOUT_MS) -> list[dict[str, Any]]:
        """The next ``count`` messages, in arrival order."""
        await self.page.wait_for_function(
            "(count) => window.inbox.length >= count", arg=count, timeout=timeout_ms
        )
        messages: list[dict[str, Any]] = await self.page.evaluate(
            "(count) => window.inbox.splice(0, count)", count
        )
        return messages

    async def inbox_size(self) -> int:
        return int(await self.page.evaluate("() => window.inbox.length"))

    async def wait_closed(self, timeout_ms: float = TIMEOUT_MS) -> str:
        """Wait for the SDK's ``close`` event; returns its reason."""
        await self.page.wait_for_function("() => window.closeReason !== null", timeout=timeout_ms)
        return str(await self.page.evaluate("() => window.closeReason"))

    async def wait_reconnected(self, timeout_ms: float = TIMEOUT_MS) -> dict[str, Any]:
        """Wait until the SDK has moved to a new session; returns the last move."""
        await self.page.wait_for_function(
            "() => window.reconnects.length > 0 && window.reconnects.at(-1).server !== undefined",
            timeout=timeout_ms,
        )
        move: dict[str, Any] = await self.page.evaluate("() => window.reconnects.at(-1)")
        self.alias, self.server = int(move["alias"]), int(move["server"])
        return move

    async def close(self) -> None:
        await self.page.evaluate("() => window.client.close()")


async def assert_nothing_received(client: BrowserClient) -> None:
    """Nothing the server sent on the reliable channel before now reached ``client``."""
    await client.ping()  # reliable deliveries queued before the echo are in the inbox by now
    assert await client.inbox_size() == 0, await client.receive()
