"""The coordinator's limits and client tokens, against a real uvicorn and real WebSockets."""

from __future__ import annotations

import os

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from coordinator.counters import DropReason, RefusalReason
from tests.coordinator.harness import make_config, running_coordinator, wait_until
from webrtc_broker.tokens import issue_token
from webrtc_broker.wire import broker_pb2 as pb

SECRET = "coordinator-test-key-of-32-bytes!"


async def test_unanswered_connects_per_client_connection_are_bounded() -> None:
    async with running_coordinator(make_config(max_pending_connects=2)) as coord:
        server = await coord.comm_server()
        other = await coord.comm_server("other")
        client = await coord.client()
        dropped = coord.coordinator.counters.frames_dropped
        for _ in range(5):
            await client.connect_to(server.alias)
        await wait_until(lambda: dropped[DropReason.TOO_MANY_PENDING] == 3)
        for _ in range(2):
            assert isinstance(await server.recv(), pb.ConnectMessage)

        # An answer (an offer, or a refusal) frees a slot for the next CONNECT.
        await server.send(pb.WebRtcMessage(type=pb.WEBRTC_OFFER, to_alias=client.alias))
        assert (await client.recv()).type == pb.WEBRTC_OFFER
        await client.connect_to(other.alias)
        got = await other.recv()
        assert isinstance(got, pb.ConnectMessage) and got.from_alias == client.alias
        await client.connect_to(other.alias)
        await wait_until(lambda: dropped[DropReason.TOO_MANY_PENDING] == 4)
        await other.send(
            pb.ConnectionRefusedMessage(type=pb.CONNECTION_REFUSED, to_alias=client.alias)
        )
        assert (await client.recv()).type == pb.CONNECTION_REFUSED
        await client.connect_to(other.alias)
        assert (await other.recv()).type == pb.CONNECT

        # A server that leaves without answering does not hold its slots forever.
        await server.ws.close()
        await wait_until(lambda: coord.coordinator.registry.get(server.alias) is None)
        third = await coord.comm_server("third")
        await client.connect_to(third.alias)
        assert (await third.recv()).type == pb.CONNECT

        # Other clients have their own budget; servers have none.
        newcomer = await coord.client()
        await newcomer.connect_to(other.alias)
        assert (await other.recv()).type == pb.CONNECT
        for _ in range(5):
            await other.connect_to(third.alias)
        for _ in range(5):
            assert (await third.recv()).type == pb.CONNECT
        assert dropped[DropReason.TOO_MANY_PENDING] == 4
        assert dropped[DropReason.INTERNAL_ERROR] == 0


async def test_oversized_websocket_message_is_counted() -> None:
    async with running_coordinator(make_config(max_message_bytes=1024)) as coord:
        big = await coord.client()
        await big.send_raw(os.urandom(2048))
        with pytest.raises(ConnectionClosed) as closed:
            await big.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        dropped = coord.coordinator.counters.frames_dropped
        await wait_until(lambda: dropped[DropReason.TOO_LARGE] == 1)
        metrics = (await coord.get("/metrics")).text
        assert 'webrtc_broker_coordinator_frames_dropped_total{reason="too_large"} 1.0' in metrics
        assert 'frames_dropped_total{reason="too_many_pending"} 0.0' in metrics


async def test_connect_checks_client_tokens() -> None:
    config = make_config(client_auth="jwt", client_jwt_secret=SECRET, server_secret="s" * 40)
    async with running_coordinator(config) as coord:
        refused = []
        for token in (
            None,
            "garbage",
            issue_token(SECRET, "alice", 60, now=0),  # expired long ago
            issue_token("x" * 32, "alice", 60),  # signed with another key
        ):
            with pytest.raises(InvalidStatus) as error:
                await coord.client(token)
            refused.append(error.value.response.status_code)
        assert refused == [403] * 4
        counts = coord.coordinator.counters.connections_refused
        assert counts[RefusalReason.BAD_CLIENT_CREDENTIALS] == 4

        alice = await coord.client(issue_token(SECRET, "alice", 60))
        assert alice.alias > 0
        bearer = {"Authorization": f"Bearer {issue_token(SECRET, 'bob', 60)}"}
        assert (await coord.client(headers=bearer)).alias > alice.alias

        # A valid client token is no server credential: /discover wants the server secret.
        with pytest.raises(InvalidStatus) as error:
            await coord.comm_server(token=issue_token(SECRET, "alice", 60))
        assert error.value.response.status_code == 403
        assert counts[RefusalReason.BAD_SERVER_SECRET] == 1
        assert coord.coordinator.registry.server_count == 0
