"""A real coordinator (uvicorn on 127.0.0.1, free port) and real WebSocket peers for tests."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx
from fastapi import FastAPI
from google.protobuf.message import Message
from websockets.asyncio.client import ClientConnection, connect

from coordinator import create_app
from coordinator.core import Coordinator
from coordinator.selector import ServerSelector
from coordinator.server import CoordinatorServer, build_server
from webrtc_broker.auth import ClientAuthenticator
from webrtc_broker.config import CoordinatorConfig
from webrtc_broker.wire import broker_pb2 as pb
from webrtc_broker.wire import codec

TIMEOUT = 5.0


def make_config(**overrides: Any) -> CoordinatorConfig:
    """A config for tests: free port, no environment influence."""
    values: dict[str, Any] = {"host": "127.0.0.1", "port": 0}
    values.update(overrides)
    return CoordinatorConfig.model_validate(values)


async def wait_until(predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Poll ``predicate`` until it holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met within timeout")
        await asyncio.sleep(0.005)


@dataclass
class TestPeer:
    """A connected WebSocket peer and the WELCOME it got."""

    __test__ = False  # not a pytest test class

    ws: ClientConnection
    welcome: pb.WelcomeMessage

    @property
    def alias(self) -> int:
        return self.welcome.alias

    @property
    def servers(self) -> list[int]:
        return list(self.welcome.available_servers)

    async def send(self, message: Message) -> None:
        await self.ws.send(codec.encode(message))

    async def send_raw(self, data: bytes | str) -> None:
        await self.ws.send(data)

    async def recv(self, timeout: float = TIMEOUT) -> codec.AnyMessage:
        data = await asyncio.wait_for(self.ws.recv(), timeout)
        assert isinstance(data, bytes), f"expected a binary frame, got {data!r}"
        return codec.decode(data)

    async def connect_to(self, alias: int) -> None:
        await self.send(pb.ConnectMessage(type=pb.CONNECT, to_alias=alias))


@dataclass
class RunningCoordinator:
    app: FastAPI
    server: CoordinatorServer
    port: int
    host: str = "127.0.0.1"
    _stack: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)

    @property
    def coordinator(self) -> Coordinator:
        coordinator: Coordinator = self.app.state.coordinator
        return coordinator

    def url(self, path: str, query: Mapping[str, str] | None = None, scheme: str = "ws") -> str:
        suffix = f"?{urlencode(query)}" if query else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}{path}{suffix}"

    async def open(
        self,
        path: str,
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> ClientConnection:
        """Open a WebSocket that is closed when the coordinator stops."""
        ws = await connect(
            self.url(path, query),
            additional_headers=dict(headers or {}),
            proxy=None,
            open_timeout=TIMEOUT,
            **kwargs,
        )
        self._stack.push_async_callback(ws.close)
        return ws

    async def _welcomed(self, ws: ClientConnection) -> TestPeer:
        data = await asyncio.wait_for(ws.recv(), TIMEOUT)
        assert isinstance(data, bytes)
        welcome = codec.decode(data)
        assert isinstance(welcome, pb.WelcomeMessage)
        return TestPeer(ws, welcome)

    async def client(
        self, token: str | None = None, headers: Mapping[str, str] | None = None
    ) -> TestPeer:
        query = {"token": token} if token is not None else None
        return await self._welcomed(await self.open("/connect", query, headers))

    async def comm_server(
        self,
        name: str = "s",
        role: str = "COMMUNICATION_SERVER",
        token: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> TestPeer:
        query = {"role": role, "name": name}
        if token is not None:
            query["token"] = token
        return await self._welcomed(await self.open("/discover", query, headers))

    async def hub(self, name: str = "hub") -> TestPeer:
        return await self.comm_server(name, role="COMMUNICATION_SERVER_HUB")

    async def get(self, path: str) -> httpx.Response:
        async with httpx.AsyncClient(trust_env=False, timeout=TIMEOUT) as http:
            return await http.get(self.url(path, scheme="http"))

    async def status(self) -> dict[str, Any]:
        response = await self.get("/status")
        assert response.status_code == 200
        body: dict[str, Any] = response.json()
        return body


@contextlib.asynccontextmanager
async def running_coordinator(
    config: CoordinatorConfig | None = None,
    *,
    authenticator: ClientAuthenticator | None = None,
    selector: ServerSelector | None = None,
) -> AsyncIterator[RunningCoordinator]:
    """Serve a fresh coordinator in this event loop; stop it (and its peers) on exit."""
    config = config or make_config()
    app = create_app(config, authenticator=authenticator, selector=selector)
    server = build_server(config, app=app)
    task = asyncio.create_task(server.serve())
    try:
        await wait_until(lambda: server.started or task.done())
        if task.done():
            task.result()  # surfaces the startup error
            raise AssertionError("coordinator exited during startup")
        running = RunningCoordinator(app=app, server=server, port=server.port, host=config.host)
        async with running._stack:
            yield running
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, TIMEOUT)
