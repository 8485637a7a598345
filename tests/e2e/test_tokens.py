"""Signed client tokens end to end, and secrets that never leave the processes.

The coordinator and the comm servers run with ``--client-auth jwt`` and a
server secret. A client's token is checked twice: by the coordinator on
``/connect`` and by the comm server in AUTH, so a client that passes the
coordinator with one token cannot present another (expired, forged) to the
server. The identity receivers see is the token's subject.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.e2e.helpers import (
    TIMEOUT,
    counter,
    receive,
    subscribe,
    wait_status,
)
from tests.rawpeer import RawPeer
from tests.support import Cluster, eventually, free_port
from webrtc_broker.client import AuthenticationError, BrokerClient
from webrtc_broker.tokens import issue_token
from webrtc_broker.wire import broker_pb2 as pb

JWT_SECRET = "e2e-jwt-signing-key-0123456789abcdef"
SERVER_SECRET = "e2e-server-secret-fedcba9876543210"
OTHER_KEY = "not-the-broker-key-0123456789abcdef"
AUTH_FLAGS = ("--client-auth", "jwt", "--client-jwt-secret", JWT_SECRET)
SECRET_FLAGS = ("--server-secret", SERVER_SECRET)


def token(subject: str, ttl: float = 300, **kwargs: float) -> str:
    return issue_token(JWT_SECRET, subject, ttl, **kwargs)


async def start_secured(cluster: Cluster, *names: str) -> dict[str, int]:
    await cluster.start_coordinator(*AUTH_FLAGS, *SECRET_FLAGS, "--log-level", "debug")
    for name in names:
        await cluster.start_server(name, *AUTH_FLAGS, *SECRET_FLAGS)
    for name in names:
        await cluster.wait_mesh(name, len(names) - 1)
    return {name: await cluster.alias_of(name) for name in names}


@contextlib.asynccontextmanager
async def client(cluster: Cluster, credentials: str, server: int) -> AsyncIterator[BrokerClient]:
    instance = await BrokerClient.connect(cluster.url, credentials, server=server)
    try:
        yield instance
    finally:
        await instance.close()


async def test_identity_is_the_token_subject_and_bad_tokens_are_refused(
    cluster: Cluster,
) -> None:
    aliases = await start_secured(cluster, "s1", "s2")
    async with (
        client(cluster, token("alice@example"), aliases["s1"]) as alice,
        client(cluster, token("bob"), aliases["s2"]) as bob,
    ):
        await subscribe(alice, ["room"])
        await subscribe(bob, ["room"])
        await wait_status(cluster, "s1", "server_topics", 1)
        await wait_status(cluster, "s2", "server_topics", 1)
        alice.publish_identity("room", "signed")
        got = await receive(bob)  # across the server hop
        assert (got.sender, got.body, got.identity) == (alice.alias, b"signed", b"alice@example")

        # The coordinator refuses tokens it cannot verify before any server sees them.
        for bad in (token("carol", now=0), issue_token(OTHER_KEY, "carol", 300), "", "garbage"):
            with pytest.raises(AuthenticationError):
                await BrokerClient.connect(cluster.url, bad, timeout=TIMEOUT)

        # A client that got past the coordinator still needs a valid token in AUTH.
        for presented, reason in (
            (token("mallory", now=0), b"token expired"),
            (issue_token(OTHER_KEY, "mallory", 300), b"bad token signature"),
        ):
            peer = await RawPeer.connect(cluster.url, server=aliases["s1"], token=token("mallory"))
            try:
                peer.send_auth(presented.encode())
                refusal = await peer.refusal()
                assert (refusal.reason, refusal.data) == (pb.AUTH_FAILED, reason)
                await peer.wait_closed()
            finally:
                await peer.close()

        # Nor can a client with a valid token authenticate as a comm server.
        peer = await RawPeer.connect(cluster.url, server=aliases["s1"], token=token("mallory"))
        try:
            peer.send_server_auth(token("mallory"))
            assert (await peer.refusal()).reason == pb.AUTH_FAILED
            await peer.wait_closed()
        finally:
            await peer.close()

        status = await wait_status(cluster, "s1", "pending", 0)
        assert counter(status, "sessions", "refused:auth_failed") == 3
        assert status["clients"] == 1 and status["servers"] == 1
        alice.publish("room", "still fine")
        assert (await receive(bob)).body == b"still fine"


@pytest.mark.parametrize("command", ["coordinator", "commserver"])
async def test_client_auth_without_a_server_secret_does_not_start(
    cluster: Cluster, command: str
) -> None:
    """Without a server secret anyone could register as a server and read the clients'
    tokens and topics: the process refuses to start and says which flag is missing."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "webrtc_broker",
        command,
        *AUTH_FLAGS,
        "--port" if command == "coordinator" else "--coordinator-url",
        str(free_port()) if command == "coordinator" else cluster.url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), TIMEOUT)
    assert process.returncode == 2, output
    assert b"--client-auth jwt needs --server-secret" in output
    assert JWT_SECRET.encode() not in output


async def test_a_rogue_server_without_the_secret_is_refused(cluster: Cluster) -> None:
    await start_secured(cluster, "s1")
    rogue_credentials: list[dict[str, str]] = [
        {},
        {"Authorization": "Bearer not-the-secret"},
        {"Authorization": f"Bearer {token('mallory')}"},  # a client's token is no server's
    ]
    for headers in rogue_credentials:
        with pytest.raises(InvalidStatus) as refused:
            await connect(
                f"{cluster.url}/discover?role=COMMUNICATION_SERVER&name=rogue",
                additional_headers=headers,
                open_timeout=TIMEOUT,
            )
        assert refused.value.response.status_code == 403
    # A rogue comm server process fares no better, and only the real server is listed.
    await cluster.start_server("rogue", wait=False)

    async def rogue_refused() -> bool:
        return "HTTP 403" in cluster.servers["rogue"].log()

    await eventually(rogue_refused, timeout=TIMEOUT)
    servers = (await cluster.coordinator_status())["servers"]
    assert [server["name"] for server in servers] == ["s1"]


def _secrets_in(text: str, secrets: list[str]) -> list[str]:
    return [secret for secret in secrets if secret in text]


async def test_no_secret_or_token_in_logs_status_or_metrics(cluster: Cluster) -> None:
    aliases = await start_secured(cluster, "s1", "s2")
    tokens = [token("alice"), token("bob"), token("late", now=0)]
    async with (
        client(cluster, tokens[0], aliases["s1"]) as alice,
        client(cluster, tokens[1], aliases["s2"]) as bob,
    ):
        await subscribe(alice, ["room"])
        await subscribe(bob, ["room"])
        await wait_status(cluster, "s2", "server_topics", 1)
        alice.publish_identity("room", "hello")
        assert (await receive(bob)).identity == b"alice"
        with pytest.raises(AuthenticationError):
            await BrokerClient.connect(cluster.url, tokens[2], timeout=TIMEOUT)
        # A token the coordinator accepts, then a forged one in AUTH: the server logs why.
        forged = issue_token(OTHER_KEY, "mallory", 300)
        tokens.append(forged)
        peer = await RawPeer.connect(cluster.url, server=aliases["s1"], token=tokens[0])
        try:
            peer.send_auth(forged.encode())
            await peer.refusal()
        finally:
            await peer.close()
        # A comm server with the wrong secret is refused by the coordinator.
        await cluster.start_server("intruder", *AUTH_FLAGS, "--server-secret", "x" * 40, wait=False)

        outputs = []
        servers = [f"http://127.0.0.1:{cluster.servers[name].http_port}" for name in ("s1", "s2")]
        for url in (cluster.http_url, *servers):
            for path in ("/status", "/metrics"):
                response = await cluster.http.get(f"{url}{path}")
                assert response.status_code == 200
                outputs.append(response.text)

        async def intruder_refused() -> bool:
            return "HTTP 403" in cluster.servers["intruder"].log()

        await eventually(intruder_refused, timeout=TIMEOUT)

    await cluster.close()  # every process exits and flushes its log
    logs = [proc.log() for proc in (cluster.coordinator, *cluster.servers.values()) if proc]
    assert "auth_failed: bad token signature" in "".join(logs)  # logs do say why
    secrets = [JWT_SECRET, SERVER_SECRET, *tokens]
    # Nor any signature alone: the last part of a token is what makes it valid.
    secrets += [t.rsplit(".", 1)[1] for t in tokens]
    for text in [*outputs, *logs]:
        assert not _secrets_in(text, secrets)
    assert re.search(r"eyJ[\w-]{10,}\.", "".join(logs)) is None  # no JWT at all
