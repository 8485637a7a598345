"""TURN end to end: the coordinator's credentials, checked by a real coturn, carry sessions.

A coturn (tests/turn/coturn.py) shares its ``static-auth-secret`` with the
coordinator. Proves:

* Python SDK clients restricted to relayed candidates (``ice_transport_policy
  ="relay"``) exchange messages through a comm server over TURN/UDP, TURN/TCP
  and TURNS (TLS, the certificate checked against the test's CA: without it,
  no relay), with client
  tokens on: coturn logs the allocation under ``expiry:subject`` of the token;
  and with tokens off, under a random ``anon-`` subject;
* the relay-only policy really restricts: without a TURN server such a client
  gets no session at all;
* coturn refuses credentials that expired, or that were signed with another
  secret, and accepts the issuer's own;
* what happens to an allocation that outlives its credentials (coturn 4.6
  checks the expiry when the allocation is made, not on later refreshes or
  permissions: the relay stays up; docs/turn.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aioice import stun, turn

from coordinator.turn import issue
from tests.e2e.helpers import receive, subscribe
from tests.support import Cluster, eventually
from tests.turn.coturn import DEFAULT_ALLOWED_PEERS, Coturn, run_coturn
from webrtc_broker.client import BrokerClient, ConnectTimeoutError
from webrtc_broker.tokens import issue_token

JWT_SECRET = "coturn-e2e-jwt-signing-key-0123456789abc"
SERVER_SECRET = "coturn-e2e-server-secret-0123456789"
AUTH_FLAGS = ("--client-auth", "jwt", "--client-jwt-secret", JWT_SECRET)
SECRET_FLAGS = ("--server-secret", SERVER_SECRET)
TIMEOUT = 20.0


def local_addresses() -> list[str]:
    """This host's IPv4 addresses: where the comm server's host candidates are."""
    result = subprocess.run(
        ["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, check=True
    )
    return [f"{line.split()[3].split('/')[0]}/32" for line in result.stdout.splitlines()]


@contextlib.contextmanager
def local_coturn(**kwargs: Any) -> Any:
    """A loopback coturn that may relay to this host's own addresses only."""
    peers = [*DEFAULT_ALLOWED_PEERS, *local_addresses()]
    with run_coturn(allowed_peers=peers, **kwargs) as server:
        yield server


@pytest.fixture
def coturn() -> Any:
    with local_coturn() as server:
        yield server


def token(subject: str) -> str:
    return issue_token(JWT_SECRET, subject, 300)


async def start_broker(cluster: Cluster, turn_url: str | None, secret: str, *, tokens: bool) -> int:
    flags = (*AUTH_FLAGS, *SECRET_FLAGS) if tokens else ()
    env = {}
    if turn_url is not None:
        env = {
            "WEBRTC_BROKER_COORDINATOR_TURN_URLS": json.dumps([turn_url]),
            "WEBRTC_BROKER_COORDINATOR_TURN_SECRET": secret,
        }
    await cluster.start_coordinator(*flags, env=env)
    await cluster.start_server("s1", *flags)
    return await cluster.alias_of("s1")


def nominated_local_types(client: BrokerClient) -> set[str]:
    """Types of the local candidates ICE nominated for the client's session."""
    session = client.session
    assert session is not None and session.pc.sctp is not None
    connection = session.pc.sctp.transport.transport._connection
    return {pair.local_candidate.type for pair in connection._nominated.values()}


@contextlib.asynccontextmanager
async def relay_clients(cluster: Cluster, *credentials: str) -> AsyncIterator[list[BrokerClient]]:
    async with contextlib.AsyncExitStack() as stack:
        clients = []
        for credential in credentials:
            client = await BrokerClient.connect(
                cluster.url, credential, ice_transport_policy="relay", timeout=TIMEOUT
            )
            stack.push_async_callback(client.close)
            clients.append(client)
        yield clients


async def exchange(alice: BrokerClient, bob: BrokerClient, body: bytes) -> None:
    await subscribe(bob, ["room"])
    alice.publish("room", body, reliable=True)
    got = await receive(bob)
    assert (got.sender, got.body) == (alice.alias, body)


def allocated_usernames(server: Coturn) -> list[str]:
    """Usernames of allocations coturn created (from its log)."""
    names = []
    for line in server.log().splitlines():
        if ": new, realm=" in line and "username=<" in line:
            names.append(line.split("username=<", 1)[1].split(">", 1)[0])
    return names


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
async def test_relayed_session_with_token_bound_credentials(
    cluster: Cluster, coturn: Coturn, transport: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = {"udp": coturn.udp_url, "tcp": coturn.tcp_url, "tls": coturn.tls_url}[transport]
    if transport == "tls":
        # aioice opens TURNS with Python's default context, which honours
        # SSL_CERT_FILE: the test CA, and certificate checks stay on.
        monkeypatch.setenv("SSL_CERT_FILE", str(coturn.ca_file))
    await start_broker(cluster, url, coturn.secret, tokens=True)
    async with relay_clients(cluster, token("alice"), token("bob")) as (alice, bob):
        assert [server.urls for server in alice.ice_servers] == [[url]]
        await exchange(alice, bob, f"relayed over TURN/{transport}".encode())
        assert nominated_local_types(alice) == {"relay"}
        assert nominated_local_types(bob) == {"relay"}
    subjects = {name.split(":", 1)[1] for name in allocated_usernames(coturn)}
    assert {"alice", "bob"} <= subjects, coturn.log()[-3000:]


async def test_turns_checks_the_certificate(
    cluster: Cluster, coturn: Coturn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the test CA in its trust store the client does not use the relay."""
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    await start_broker(cluster, coturn.tls_url, coturn.secret, tokens=False)
    with pytest.raises(ConnectTimeoutError):
        await BrokerClient.connect(cluster.url, "alice", ice_transport_policy="relay", timeout=6)
    assert "ALLOCATE processed, success" not in coturn.log()


async def test_anonymous_credentials_without_tokens(cluster: Cluster, coturn: Coturn) -> None:
    await start_broker(cluster, coturn.udp_url, coturn.secret, tokens=False)
    async with relay_clients(cluster, "alice", "bob") as (alice, bob):
        await exchange(alice, bob, b"relayed for anonymous clients")
        assert nominated_local_types(alice) == {"relay"}
    subjects = [name.split(":", 1)[1] for name in allocated_usernames(coturn)]
    assert len(subjects) >= 2 and all(s.startswith("anon-") for s in subjects), subjects


async def test_a_reconnect_fetches_fresh_credentials(cluster: Cluster, coturn: Coturn) -> None:
    alias = await start_broker(cluster, coturn.udp_url, coturn.secret, tokens=False)
    await cluster.start_server("s2")
    async with relay_clients(cluster, "alice") as (alice,):
        first = alice.ice_servers[0].username
        # Kill whichever server it is on: it moves to the other one.
        victim = cluster.servers["s1" if alice.server_alias == alias else "s2"]
        await cluster.stop(victim, kill=True)

        async def moved() -> bool:
            return alice.reconnects == 1

        await eventually(moved, timeout=3 * TIMEOUT)
        await asyncio.wait_for(alice.ping(), TIMEOUT)
        second = alice.ice_servers[0].username
        assert first is not None and second is not None and first != second
        assert nominated_local_types(alice) == {"relay"}
    assert {first, second} <= set(allocated_usernames(coturn))


async def test_relay_policy_without_turn_gets_no_session(cluster: Cluster) -> None:
    await start_broker(cluster, None, "", tokens=False)
    with pytest.raises(ConnectTimeoutError):
        await BrokerClient.connect(cluster.url, "alice", ice_transport_policy="relay", timeout=6)
    # The same client with every candidate allowed connects: the policy made the difference.
    client = await BrokerClient.connect(cluster.url, "alice", timeout=TIMEOUT)
    await client.close()


class _Sink(asyncio.DatagramProtocol):
    pass


async def allocate(server: Coturn, username: str, password: str) -> Any:
    transport, _ = await turn.create_turn_endpoint(
        _Sink, (server.address, server.port), username, password
    )
    return transport


async def test_coturn_accepts_issued_and_refuses_expired_or_foreign(coturn: Coturn) -> None:
    valid = issue(coturn.secret, "alice", 60)
    transport = await allocate(coturn, valid.username, valid.password)
    transport.close()
    expired = issue(coturn.secret, "alice", -5)
    foreign = issue("some-other-secret", "alice", 60)
    tampered = issue(coturn.secret, "alice", 60)
    for username, password in (
        (expired.username, expired.password),
        (foreign.username, foreign.password),
        (f"{tampered.expires + 86400}:alice", tampered.password),  # a later expiry, old HMAC
    ):
        with pytest.raises(stun.TransactionFailed) as refused:
            await allocate(coturn, username, password)
        assert refused.value.response.error_code == 401


async def test_an_allocation_outlives_its_credentials() -> None:
    """coturn checks the expiry when the allocation is made, and not after: a relay
    made just before expiry is refreshed (and given permissions) after it."""
    # Short allocation and nonce lifetimes, so the refresh (aioice sends it at
    # 5/6 of the lifetime) and a nonce renewal both happen after expiry.
    with local_coturn(extra=["max-allocate-lifetime=6", "stale-nonce=2"]) as server:
        credential = issue(server.secret, "short", 3)
        transport = await allocate(server, credential.username, credential.password)
        try:
            inner = transport._TurnTransport__inner_protocol
            async with asyncio.timeout(TIMEOUT):
                while "REFRESH processed" not in server.log():
                    assert not inner.transport.is_closing(), server.log()[-2000:]
                    await asyncio.sleep(0.2)
            assert time.time() > credential.expires  # the refresh came after expiry
            assert "REFRESH processed, success" in server.log(), server.log()[-2000:]
            permission = stun.Message(
                message_method=stun.Method.CREATE_PERMISSION, message_class=stun.Class.REQUEST
            )
            permission.attributes["XOR-PEER-ADDRESS"] = ("127.0.0.1", 9)
            await inner.request_with_retry(permission)  # no 401: still authorised
            assert not inner.transport.is_closing()
        finally:
            transport.close()
        # A new allocation with the same credentials is refused: only that is gated.
        with pytest.raises(stun.TransactionFailed):
            await allocate(server, credential.username, credential.password)
