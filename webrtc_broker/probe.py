"""``webrtc-broker probe``: prove that a cluster relays, from end to end, and exit 0 or 1.

A health check that only asks ``/readyz`` proves little: the coordinator can
be up while no comm server is registered, or servers can be registered while
WebRTC between clients and servers is blocked. The probe does what a user
does. Two SDK clients connect through the coordinator, on two different
comm servers when it lists more than one (read from its ``/status``), so the
server mesh is crossed too; the first publishes a request on a fresh topic,
the second answers on a reply topic, and the first waits for that answer.

Requests are repeated until the answer arrives: a subscription is applied on
the subscriber's server at once but reaches the other servers of the mesh a
moment later, and the protocol has no acknowledgement for that. Connection
failures are retried until the deadline too, so the probe can start before
the broker is ready (a Helm test right after ``helm install``).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sys
import time
from dataclasses import dataclass, replace

import httpx

from webrtc_broker.client.client import BrokerClient
from webrtc_broker.client.errors import BrokerError
from webrtc_broker.status import http_url

REPEAT_SECONDS = 0.5
"""How often an unanswered request is published again."""

RETRY_SECONDS = 2.0
"""Pause between attempts when the broker cannot be reached or does not answer."""


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One successful round trip."""

    requester: tuple[int, int]
    """``(client alias, server alias)`` of the client that asked."""
    responder: tuple[int, int]
    """``(client alias, server alias)`` of the client that answered."""
    round_trip: float
    """Seconds from the request that was answered to its answer."""
    attempts: int

    def describe(self) -> str:
        (client_a, server_a), (client_b, server_b) = self.requester, self.responder
        where = "the same server" if server_a == server_b else "two servers"
        return (
            f"ok: client {client_a} (server {server_a}) and client {client_b} "
            f"(server {server_b}) round-tripped a message across {where} in "
            f"{self.round_trip * 1000:.1f} ms (attempt {self.attempts})"
        )


async def _answer(responder: BrokerClient, request_topic: str, reply_topic: str) -> None:
    """Echo every request back on the reply topic, until cancelled."""
    async for message in responder:
        if message.topic in (None, request_topic):
            responder.publish(reply_topic, message.body)


async def _request(requester: BrokerClient, request_topic: str) -> float:
    """Publish requests until one is answered; the round trip of the answered one."""
    sent: dict[bytes, float] = {}

    async def repeat() -> None:
        while True:
            nonce = secrets.token_hex(8).encode()
            sent[nonce] = time.perf_counter()
            requester.publish(request_topic, nonce)
            await asyncio.sleep(REPEAT_SECONDS)

    repeater = asyncio.create_task(repeat())
    try:
        while True:
            answer = await requester.receive()
            if answer.body in sent:
                return time.perf_counter() - sent[answer.body]
    finally:
        repeater.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await repeater


async def client_servers(coordinator_url: str) -> list[int]:
    """Aliases of the comm servers that take clients (not hubs); [] if ``/status`` fails.

    Only a hint for spreading the two clients: without it the coordinator picks.
    """
    try:
        async with httpx.AsyncClient(timeout=5) as http:
            response = await http.get(f"{http_url(coordinator_url)}/status")
            response.raise_for_status()
            servers = response.json()["servers"]
            return [int(s["alias"]) for s in servers if s.get("role") == "server"]
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return []


async def round_trip_once(coordinator_url: str, credentials: str, timeout: float) -> ProbeResult:
    """Connect two clients and round-trip one message within ``timeout`` seconds."""
    topic = f"webrtc-broker-probe/{secrets.token_hex(8)}"
    request_topic, reply_topic = f"{topic}/request", f"{topic}/reply"
    async with contextlib.AsyncExitStack() as stack, asyncio.timeout(timeout):
        requester = await BrokerClient.connect(
            coordinator_url, credentials, timeout=timeout, reconnect=None
        )
        stack.push_async_callback(requester.close)
        others = [a for a in await client_servers(coordinator_url) if a != requester.server_alias]
        responder = await BrokerClient.connect(
            coordinator_url,
            credentials,
            server=others[0] if others else None,
            timeout=timeout,
            reconnect=None,
        )
        stack.push_async_callback(responder.close)
        requester.subscribe([reply_topic])
        responder.subscribe([request_topic])
        # The PING echo comes back after the server applied the subscription.
        await asyncio.gather(requester.ping(), responder.ping())
        answering = asyncio.create_task(_answer(responder, request_topic, reply_topic))
        stack.push_async_callback(_cancelled, answering)
        elapsed = await _request(requester, request_topic)
        return ProbeResult(
            requester=(requester.alias, requester.server_alias),
            responder=(responder.alias, responder.server_alias),
            round_trip=elapsed,
            attempts=1,
        )


async def _cancelled(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def probe(
    coordinator_url: str, *, credentials: str = "", deadline: float, attempt_timeout: float
) -> ProbeResult:
    """Try round trips until one works or ``deadline`` seconds have passed.

    Raises :class:`BrokerError` or :class:`TimeoutError` with the last failure.
    """
    give_up = time.monotonic() + deadline
    attempt = 0
    while True:
        attempt += 1
        left = give_up - time.monotonic()
        try:
            result = await round_trip_once(
                coordinator_url, credentials, max(0.1, min(attempt_timeout, left))
            )
        except (BrokerError, TimeoutError) as exc:
            reason = str(exc) or type(exc).__name__
            print(f"attempt {attempt} failed: {reason}", file=sys.stderr, flush=True)
            if time.monotonic() + RETRY_SECONDS >= give_up:
                raise
            await asyncio.sleep(RETRY_SECONDS)
            continue
        return replace(result, attempts=attempt)


async def run_probe(
    *, coordinator_url: str, credentials: str, timeout: float, attempt_timeout: float
) -> int:
    """The command: 0 after a round trip, 1 when none succeeded within ``timeout``."""
    try:
        result = await probe(
            coordinator_url,
            credentials=credentials,
            deadline=timeout,
            attempt_timeout=attempt_timeout,
        )
    except (BrokerError, TimeoutError) as exc:
        reason = str(exc) or "no answer in time"
        print(f"probe failed within {timeout:g} s: {reason}", file=sys.stderr, flush=True)
        return 1
    print(result.describe(), flush=True)
    return 0
