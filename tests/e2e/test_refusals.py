"""A coordinator that says "not now" is not one that says "bad credentials".

The coordinator runs in this process (so that the test can hold it in its
drain, when it still listens but refuses everyone); comm servers and the
Python SDK are the real thing. A draining or full coordinator refuses with
HTTP 503 (429 over the per-address cap): the SDK raises
:class:`CoordinatorUnavailableError` and a reconnecting client keeps trying,
where it used to take the refusal for bad credentials and give up for good.
"""

from __future__ import annotations

import pytest

from coordinator.counters import RefusalReason
from tests.coordinator.harness import make_config, running_coordinator, wait_until
from tests.e2e.helpers import TIMEOUT
from tests.support import Cluster
from webrtc_broker.client import (
    AuthenticationError,
    BrokerClient,
    CoordinatorUnavailableError,
    Reconnect,
)

FAST_RECONNECT = Reconnect(first_delay=0.05, max_delay=0.25, attempt_timeout=TIMEOUT)
# Comm servers find the restarted coordinator quickly too.
SERVER_ENV = {"WEBRTC_BROKER_COMMSERVER_RECONNECT_MAX": "0.5"}


async def test_a_full_or_draining_coordinator_is_not_a_credentials_problem(
    cluster: Cluster,
) -> None:
    config = make_config(port=cluster.coordinator_port, max_clients=2, max_clients_per_address=1)
    async with running_coordinator(config) as coord:
        held = await coord.client()  # the one connection 127.0.0.1 may have
        with pytest.raises(CoordinatorUnavailableError) as crowded:
            await BrokerClient.connect(cluster.url, "alice", timeout=TIMEOUT)
        assert crowded.value.status == 429
        assert "too_many_from_address" in str(crowded.value)
        assert not isinstance(crowded.value, AuthenticationError)

        await held.ws.close()
        await wait_until(lambda: coord.coordinator.caps.total == 0)
        coord.coordinator.begin_shutdown()
        with pytest.raises(CoordinatorUnavailableError) as draining:
            await BrokerClient.connect(cluster.url, "alice", timeout=TIMEOUT)
        assert draining.value.status == 503
        assert "shutting_down" in str(draining.value)


async def test_a_reconnecting_client_outlives_a_coordinator_restart(cluster: Cluster) -> None:
    """The client's server goes away while the coordinator drains for a restart: the
    client is refused (503) until the new coordinator is up, then lands on a server."""
    config = make_config(port=cluster.coordinator_port)
    async with running_coordinator(config) as old:
        await cluster.start_server("s1", env=SERVER_ENV)
        await cluster.start_server("s2", env=SERVER_ENV)
        s1 = await cluster.alias_of("s1")
        alice = await BrokerClient.connect(
            cluster.url, "alice", server=s1, reconnect=FAST_RECONNECT, timeout=TIMEOUT
        )
        try:
            old.coordinator.begin_shutdown()  # from here on, every upgrade is refused
            await cluster.stop(cluster.servers["s1"])
            refused = old.coordinator.counters.connections_refused
            # Several attempts, each refused as "not now", and the client keeps going.
            await wait_until(lambda: refused[RefusalReason.SHUTTING_DOWN] >= 3, timeout=TIMEOUT)
            assert not alice.closed
            assert refused[RefusalReason.BAD_CLIENT_CREDENTIALS] == 0
        except BaseException:
            await alice.close()
            raise
    try:
        assert not alice.closed
        async with running_coordinator(config):
            await wait_until(lambda: alice.reconnects == 1 or alice.closed, timeout=30)
            assert not alice.closed
            assert alice.server_alias == await cluster.alias_of("s2")
            assert 0 < await alice.ping(timeout=TIMEOUT) < TIMEOUT
    finally:
        await alice.close()
