"""Comm servers propose their own alias; the coordinator honours it, or says why not."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from commserver.server import CommServer
from coordinator.counters import RefusalReason
from tests.coordinator.harness import RunningCoordinator, TestPeer, running_coordinator, wait_until
from webrtc_broker.config import CommServerConfig
from webrtc_broker.wire import broker_pb2 as pb
from webrtc_broker.wire.aliases import SERVER_ALIASES, random_server_alias


async def server(coord: RunningCoordinator, alias: int | str, server_id: str) -> TestPeer:
    query = {"role": "COMMUNICATION_SERVER", "name": "s", "alias": str(alias), "id": server_id}
    return await coord._welcomed(await coord.open("/discover", query))


async def test_a_proposed_alias_is_honoured_and_kept_across_reconnects() -> None:
    async with running_coordinator() as coord:
        alias = random_server_alias()
        first = await server(coord, alias, "one")
        assert first.alias == alias
        # The same server again, before the coordinator saw the first connection drop:
        # the new connection takes the alias and the old one is closed.
        second = await server(coord, alias, "one")
        assert second.alias == alias
        with pytest.raises(ConnectionClosed):
            await first.recv(timeout=5)
        await wait_until(lambda: coord.coordinator.registry.get(alias) is not None)
        assert [s.alias for s in coord.coordinator.registry.servers()] == [alias]
        # The old connection's cleanup did not take the new registration with it.
        client = await coord.client()
        assert client.servers == [alias]
        await client.connect_to(alias)
        assert (await second.recv()).type == pb.CONNECT


async def test_another_servers_alias_is_refused() -> None:
    async with running_coordinator() as coord:
        alias = random_server_alias()
        await server(coord, alias, "one")
        with pytest.raises(InvalidStatus):
            await server(coord, alias, "two")
        refused = coord.coordinator.counters.connections_refused
        assert refused[RefusalReason.ALIAS_TAKEN] == 1


@pytest.mark.parametrize(
    ("alias", "server_id"),
    [
        (SERVER_ALIASES.start - 1, "one"),  # the coordinator's own range
        (SERVER_ALIASES.stop, "one"),  # beyond what JavaScript holds exactly
        ("12x", "one"),
        (SERVER_ALIASES.start, ""),  # an alias without the id that proves it
        (SERVER_ALIASES.stop - 1, "x" * 65),
    ],
    ids=["below-the-range", "above-the-range", "not-a-number", "no-id", "id-too-long"],
)
async def test_a_malformed_proposal_is_refused(alias: int | str, server_id: str) -> None:
    async with running_coordinator() as coord:
        with pytest.raises(InvalidStatus):
            await server(coord, alias, server_id)
        assert coord.coordinator.counters.connections_refused[RefusalReason.BAD_ALIAS] == 1


async def test_servers_that_propose_nothing_get_an_alias_as_before() -> None:
    async with running_coordinator() as coord:
        plain = await coord.comm_server()
        assert plain.alias not in SERVER_ALIASES and plain.alias > 0


async def test_a_comm_server_whose_alias_is_taken_proposes_another() -> None:
    async with running_coordinator() as coord:
        taken = random_server_alias()
        await server(coord, taken, "somebody-else")
        cs = CommServer(CommServerConfig(name="s1", coordinator_url=f"ws://127.0.0.1:{coord.port}"))
        cs.own_alias = taken  # every link proposes it at its next connect
        task = asyncio.create_task(cs.run())
        try:
            await wait_until(lambda: cs.alias != 0)
            assert cs.alias != taken and cs.alias == cs.own_alias
            assert cs.alias in SERVER_ALIASES
            refused = coord.coordinator.counters.connections_refused
            assert refused[RefusalReason.ALIAS_TAKEN] == 1
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
