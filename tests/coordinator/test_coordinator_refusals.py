"""A refused upgrade says why: 403 only for credentials, 503/429 for "not now".

Also what browsers read across origins: ``/readyz`` and the admission check
``GET /connect`` carry CORS headers, since a browser never sees the status
of a refused WebSocket upgrade.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from http import HTTPStatus

import httpx
import pytest
from websockets.exceptions import InvalidStatus

from coordinator import create_app
from coordinator.counters import RefusalReason
from coordinator.refusals import REFUSAL_STATUS
from tests.coordinator.harness import (
    RunningCoordinator,
    make_config,
    running_coordinator,
    wait_until,
)
from webrtc_broker.auth import AuthError, Identity

CREDENTIALS = {RefusalReason.BAD_CLIENT_CREDENTIALS, RefusalReason.BAD_SERVER_SECRET}
NOT_NOW = {
    RefusalReason.SHUTTING_DOWN,
    RefusalReason.TOO_MANY_CONNECTIONS,
    RefusalReason.TOO_MANY_FROM_ADDRESS,
}


class Letmein:
    def authenticate(self, credentials: bytes) -> Identity:
        if credentials != b"letmein":
            raise AuthError("bad token")
        return Identity(b"user")


def test_an_authenticator_without_a_server_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="needs a server secret"):
        create_app(make_config(), authenticator=Letmein())


def test_every_reason_has_a_status_and_only_credentials_get_403() -> None:
    assert set(REFUSAL_STATUS) == set(RefusalReason)
    forbidden = {r for r, status in REFUSAL_STATUS.items() if status == HTTPStatus.FORBIDDEN}
    assert forbidden == CREDENTIALS
    for reason in NOT_NOW:
        assert REFUSAL_STATUS[reason] in (HTTPStatus.SERVICE_UNAVAILABLE, 429), reason


async def _refusal(
    coord: RunningCoordinator, path: str, query: Mapping[str, str] | None = None
) -> tuple[int, bytes]:
    with pytest.raises(InvalidStatus) as refused:
        await coord.open(path, query)
    return refused.value.response.status_code, bytes(refused.value.response.body)


async def _check(coord: RunningCoordinator, token: str | None = None) -> httpx.Response:
    """The browser SDK's question after a failed upgrade: ``GET /connect?token=...``."""
    query = {"token": token} if token is not None else None
    async with httpx.AsyncClient(trust_env=False) as http:
        return await http.get(coord.url("/connect", query, scheme="http"))


async def test_upgrades_are_refused_with_a_status_that_says_why() -> None:
    config = make_config(server_secret="s3cret", max_clients=2, max_clients_per_address=1)
    async with running_coordinator(config, authenticator=Letmein()) as coord:
        assert await _refusal(coord, "/connect", {"token": "wrong"}) == (
            403,
            b"bad_client_credentials\n",
        )
        server_query = {"role": "COMMUNICATION_SERVER", "token": "nope"}
        assert await _refusal(coord, "/discover", server_query) == (403, b"bad_server_secret\n")
        assert await _refusal(coord, "/discover", {"token": "s3cret"}) == (400, b"bad_role\n")

        await coord.client(token="letmein")  # the only one this address may have
        assert await _refusal(coord, "/connect", {"token": "letmein"}) == (
            429,
            b"too_many_from_address\n",
        )
        counts = coord.coordinator.counters.connections_refused
        assert counts[RefusalReason.TOO_MANY_FROM_ADDRESS] == 1

        coord.coordinator.begin_shutdown()
        assert await _refusal(coord, "/discover", {**server_query, "token": "s3cret"}) == (
            503,
            b"shutting_down\n",
        )
        assert counts[RefusalReason.SHUTTING_DOWN] == 1


async def test_the_total_cap_is_a_503() -> None:
    async with running_coordinator(make_config(max_clients=1)) as coord:
        await coord.client()
        assert await _refusal(coord, "/connect") == (503, b"too_many_connections\n")


async def test_the_admission_check_answers_what_the_upgrade_would_get() -> None:
    config = make_config(server_secret="s3cret", max_clients_per_address=1)
    async with running_coordinator(config, authenticator=Letmein()) as coord:
        ok = await _check(coord, "letmein")
        assert ok.status_code == 204
        refused = await _check(coord, "wrong")
        assert (refused.status_code, refused.text) == (403, "bad_client_credentials\n")
        await coord.client(token="letmein")
        assert (await _check(coord, "letmein")).status_code == 429
        coord.coordinator.begin_shutdown()
        assert (await _check(coord, "wrong")).status_code == 429  # the caps come first
        for response in (ok, refused):
            # Read by pages on other origins; never kept by a cache.
            assert response.headers["access-control-allow-origin"] == "*"
            assert response.headers["cache-control"] == "no-store"
        # A question is not a connection: nothing was refused or counted.
        counts = coord.coordinator.counters.connections_refused
        assert sum(counts.values()) == 0
        assert coord.coordinator.caps.total == 1


async def test_the_admission_check_sees_a_draining_coordinator() -> None:
    async with running_coordinator() as coord:
        assert (await _check(coord)).status_code == 204
        coord.coordinator.begin_shutdown()
        draining = await _check(coord)
        assert (draining.status_code, draining.text) == (503, "shutting_down\n")
        assert draining.headers["access-control-allow-origin"] == "*"


async def test_readyz_is_readable_from_any_origin() -> None:
    async with running_coordinator() as coord:
        ready = await coord.get("/readyz")
        assert ready.status_code == 200
        assert ready.headers["access-control-allow-origin"] == "*"
        coord.coordinator.begin_shutdown()
        draining = await coord.get("/readyz")
        assert draining.status_code == 503
        assert draining.headers["access-control-allow-origin"] == "*"


async def test_tokens_of_refused_peers_stay_out_of_logs(caplog: pytest.LogCaptureFixture) -> None:
    config = make_config(server_secret="s3cret")
    # INFO, as the CLI sets it (uvicorn's handshake debug lines are never on).
    with caplog.at_level(logging.INFO):
        async with running_coordinator(config, authenticator=Letmein()) as coord:
            assert (await _check(coord, "checked-token")).status_code == 403
            assert (await _refusal(coord, "/connect", {"token": "upgrade-token"}))[0] == 403
    # What the coordinator's side logged (the test's own HTTP client logs its URLs).
    served = "\n".join(
        record.getMessage()
        for record in caplog.records
        if record.name.startswith(("coordinator", "uvicorn"))
    )
    assert "refused /connect connection: bad_client_credentials" in served
    for token in ("checked-token", "upgrade-token"):
        assert token not in served


async def test_refusals_log_no_errors(caplog: pytest.LogCaptureFixture) -> None:
    """A flood of refused upgrades must not become a flood of ERROR lines."""
    with caplog.at_level(logging.WARNING):
        async with running_coordinator(make_config(max_clients=1)) as coord:
            await coord.client()
            for _ in range(20):
                assert (await _refusal(coord, "/connect"))[0] == 503
            await wait_until(
                lambda: (
                    coord.coordinator.counters.connections_refused[
                        RefusalReason.TOO_MANY_CONNECTIONS
                    ]
                    == 20
                )
            )
            await asyncio.sleep(0.1)  # uvicorn logs once the app has returned
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
