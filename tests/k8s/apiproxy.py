"""A fault-injecting HTTP proxy in front of the real API server.

A real API server cannot be made to fail on purpose, so tests that need a
refused write, a garbled answer or a broken watch put this proxy between the
operator and the server. It forwards every request to the server over TLS
(verified with the control plane's CA), passing the caller's
``Authorization`` header through, so the server still authenticates and
authorizes the caller's own identity (RBAC applies as without the proxy), and
streams every answer back as it comes: watches are long-lived chunked
streams, never buffered.

A test registers rules: a predicate on the request (:class:`Call`: method,
path, query, User-Agent) and the answer to give instead of the server's
(status and JSON body). :meth:`ApiProxy.cut_watches` breaks the watch streams
open at that moment, as a dropped connection would.

The proxy listens on plain HTTP on 127.0.0.1: it then needs no serving
certificate of its own, and the bearer token it receives crosses only the
loopback interface. The operator's TLS to a real API server is what every
other test in ``tests/k8s`` exercises; the tests behind this proxy are about
answers, not transport.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import aiohttp.web
import yaml
from yarl import URL

from tests.k8s.cluster import ControlPlane

# Headers that belong to one connection (RFC 9110, 7.6.1), or that aiohttp sets itself
# for the other side: the proxy decompresses what the server sends and re-chunks it.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "content-encoding",
        "accept-encoding",
    }
)


@dataclass(frozen=True)
class Call:
    """One request as a rule sees it."""

    method: str
    path: str
    query: Mapping[str, str]
    user_agent: str

    @property
    def watch(self) -> bool:
        return self.query.get("watch") in ("true", "1")

    @property
    def from_kopf(self) -> bool:
        """kopf's own requests (its watches, its patches of the resource) say so."""
        return self.user_agent.startswith("kopf/")


Predicate = Callable[[Call], bool]


def status_body(code: int, message: str = "injected by the test's API proxy") -> dict[str, Any]:
    """A ``Status`` object as the API server answers errors."""
    reasons = {403: "Forbidden", 404: "NotFound", 409: "Conflict", 429: "TooManyRequests"}
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reasons.get(code, "InternalError"),
        "code": code,
    }


@dataclass
class Rule:
    """Answer requests that ``matches`` with ``status`` and ``body``; ``hits`` counts them."""

    matches: Predicate
    status: int
    body: dict[str, Any]
    hits: int = 0


@dataclass(eq=False)
class _Stream:
    upstream: aiohttp.ClientResponse
    request: aiohttp.web.Request
    call: Call
    cut: bool = False


@dataclass
class ApiProxy:
    """The proxy of one test: ``async with ApiProxy(plane) as proxy:``, then :attr:`url`."""

    plane: ControlPlane
    calls: list[Call] = field(default_factory=list)
    """Every request received, in order."""
    _rules: list[Rule] = field(default_factory=list)
    _streams: set[_Stream] = field(default_factory=set)
    _session: aiohttp.ClientSession | None = None
    _runner: aiohttp.web.AppRunner | None = None
    _port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def answer(self, matches: Predicate, status: int, body: dict[str, Any] | None = None) -> Rule:
        """From now on, answer requests that ``matches`` with ``status`` and ``body``
        (a ``Status`` object by default); the earliest registered rule wins."""
        rule = Rule(matches, status, status_body(status) if body is None else body)
        self._rules.append(rule)
        return rule

    def remove(self, rule: Rule) -> None:
        """Forward what ``rule`` answered to the server again."""
        self._rules.remove(rule)

    def cut_watches(self, matches: Predicate = lambda call: True) -> int:
        """Break the open watch streams that ``matches``, as a dropped connection would
        (no final chunk); how many were cut."""
        cut = [s for s in self._streams if s.call.watch and matches(s.call)]
        for stream in cut:
            stream.cut = True
            stream.upstream.close()
        return len(cut)

    def kubeconfig(self, path: Path, token: str) -> Path:
        """A kubeconfig for this proxy authenticating with ``token`` (passed through)."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "proxy", "cluster": {"server": self.url}}],
            "users": [{"name": "token", "user": {"token": token}}],
            "contexts": [{"name": "proxy", "context": {"cluster": "proxy", "user": "token"}}],
            "current-context": "proxy",
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    async def __aenter__(self) -> ApiProxy:
        context = ssl.create_default_context(cafile=str(self.plane.pki / "ca.crt"))
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=context, limit=0),
            # No total timeout: a watch lasts as long as the server keeps it open.
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
        )
        app = aiohttp.web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = aiohttp.web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self._port = int(sock.getsockname()[1])
        await aiohttp.web.SockSite(self._runner, sock).start()
        return self

    async def __aexit__(self, *_: object) -> None:
        self.cut_watches()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _handle(self, request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        call = Call(
            request.method,
            request.path,
            dict(request.query),
            request.headers.get("User-Agent", ""),
        )
        self.calls.append(call)
        for rule in list(self._rules):
            if rule.matches(call):
                rule.hits += 1
                return aiohttp.web.json_response(rule.body, status=rule.status)
        return await self._forward(request, call)

    async def _forward(
        self, request: aiohttp.web.Request, call: Call
    ) -> aiohttp.web.StreamResponse:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        body = await request.read()
        url = URL(self.plane.server + request.raw_path, encoded=True)
        upstream = await self._session.request(
            request.method, url, headers=headers, data=body or None, allow_redirects=False
        )
        stream = _Stream(upstream, request, call)
        self._streams.add(stream)
        try:
            response = aiohttp.web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for name, value in upstream.headers.items():
                if name.lower() not in HOP_BY_HOP:
                    response.headers.add(name, value)
            await response.prepare(request)
            with contextlib.suppress(aiohttp.ClientError, ConnectionResetError):
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
            if stream.cut and request.transport is not None:
                # Without the last chunk: the client sees a stream broken mid-way.
                request.transport.abort()
                return response
            with contextlib.suppress(ConnectionResetError):
                await response.write_eof()
            return response
        finally:
            self._streams.discard(stream)
            upstream.release()
