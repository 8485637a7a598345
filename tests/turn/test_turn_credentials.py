"""``GET /ice-servers`` issues short-lived TURN credentials, and only to whom it should.

Proves, against a real coordinator (uvicorn on loopback): the TURN REST scheme
(``expiry:subject``, base64 HMAC-SHA1 of it under the shared secret); that with
client tokens on, no token or a bad one gets 401 and nothing, and a good one
gets a username carrying its (escaped) subject; that without tokens each
request gets its own random subject; the per-address and per-subject rate
limits (429 with Retry-After); that static ``ice_servers`` entries pass
through unchanged and are warned about; the CORS preflight the browser SDK
needs; the metrics; that the secret is never in a response; that the Python
SDK sends its token; and that the issue limiter's memory stays bounded.
Whether coturn accepts these credentials is tests/turn/test_coturn_e2e.py.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import time
from typing import Any

import httpx
import pytest

from coordinator.turn import (
    IssueLimiter,
    issue,
    turn_password,
    username_subject,
)
from tests.coordinator.harness import RunningCoordinator, make_config, running_coordinator
from webrtc_broker.client.link import fetch_ice_servers
from webrtc_broker.tokens import issue_token

TURN_SECRET = "turn-shared-secret-do-not-leak-0123"
JWT_SECRET = "turn-test-jwt-signing-key-0123456789abcdef"
SERVER_SECRET = "turn-test-server-secret-0123456789"
TURN_URLS = ["turn:127.0.0.1:3478", "turns:127.0.0.1:5349?transport=tcp"]


def turn_config(**overrides: Any) -> Any:
    values: dict[str, Any] = {"turn_urls": TURN_URLS, "turn_secret": TURN_SECRET}
    values.update(overrides)
    return make_config(**values)


def jwt_config(**overrides: Any) -> Any:
    return turn_config(
        client_auth="jwt",
        client_jwt_secret=JWT_SECRET,
        server_secret=SERVER_SECRET,
        **overrides,
    )


def token(subject: str) -> str:
    return issue_token(JWT_SECRET, subject, 300)


async def get(
    coord: RunningCoordinator,
    *,
    bearer: str | None = None,
    query: dict[str, str] | None = None,
    method: str = "GET",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    all_headers = dict(headers or {})
    if bearer is not None:
        all_headers["Authorization"] = f"Bearer {bearer}"
    async with httpx.AsyncClient(trust_env=False, timeout=5) as http:
        return await http.request(
            method, coord.url("/ice-servers", query, scheme="http"), headers=all_headers
        )


def turn_entries(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    body: list[dict[str, Any]] = response.json()
    return [entry for entry in body if entry["urls"] == TURN_URLS]


def only_turn_entry(response: httpx.Response) -> dict[str, Any]:
    entries = turn_entries(response)
    assert len(entries) == 1, response.text
    return entries[0]


def expected_password(username: str) -> str:
    digest = hmac.new(TURN_SECRET.encode(), username.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


# -- the scheme ---------------------------------------------------------------


def test_scheme_is_expiry_subject_and_base64_hmac_sha1() -> None:
    credential = issue(TURN_SECRET, "alice", 600, now=1_700_000_000.7)
    assert credential.username == "1700000600:alice"
    assert credential.expires == 1_700_000_600
    assert credential.password == expected_password("1700000600:alice")
    assert turn_password(TURN_SECRET, "x") != turn_password("other", "x")


def test_subject_cannot_forge_the_expiry_field() -> None:
    # A subject with the separator in it: the username must still have exactly
    # one ':' so that nothing but the issuer's expiry sits before it.
    forged = issue(TURN_SECRET, "9999999999:mallory", 60, now=1_700_000_000)
    expiry, _, subject = forged.username.partition(":")
    assert expiry == "1700000060"
    assert ":" not in subject
    assert username_subject("a:b") != username_subject("a%3Ab")  # still one-to-one
    assert username_subject("alice@example.org") == "alice@example.org"  # readable
    long = username_subject("x" * 1000)
    assert len(long) <= 128 and ":" not in long
    assert username_subject("x" * 1000) != username_subject("x" * 999 + "y")


# -- who gets credentials -------------------------------------------------------


async def test_tokens_on_refuse_a_missing_or_bad_token_with_401() -> None:
    async with running_coordinator(jwt_config()) as coord:
        missing = await get(coord)
        assert missing.status_code == 401
        assert missing.json()["error"] == "no_token"
        assert missing.headers["www-authenticate"] == "Bearer"
        assert missing.headers["access-control-allow-origin"] == "*"
        bad = await get(coord, bearer=issue_token("not-the-key-0123456789abcdef0123", "a", 60))
        assert bad.status_code == 401
        assert bad.json()["error"] == "bad_token"
        for response in (missing, bad):
            assert "username" not in response.text and "credential" not in response.text
        counters = coord.coordinator.counters
        assert counters.turn_credentials_issued == 0
        assert counters.turn_credentials_refused["no_token"] == 1
        assert counters.turn_credentials_refused["bad_token"] == 1


async def test_token_subject_is_in_the_username_header_or_query() -> None:
    async with running_coordinator(jwt_config()) as coord:
        before = time.time()
        entry = only_turn_entry(await get(coord, bearer=token("alice")))
        expiry, _, subject = entry["username"].partition(":")
        assert subject == "alice"
        assert before + 600 - 2 <= int(expiry) <= time.time() + 600
        assert entry["credential"] == expected_password(entry["username"])
        by_query = only_turn_entry(await get(coord, query={"token": token("bob")}))
        assert by_query["username"].endswith(":bob")
        colon = only_turn_entry(await get(coord, bearer=token("eve:1")))
        assert colon["username"].count(":") == 1
        assert coord.coordinator.counters.turn_credentials_issued == 3


async def test_without_tokens_each_request_gets_its_own_subject() -> None:
    async with running_coordinator(turn_config()) as coord:
        first = only_turn_entry(await get(coord))
        second = only_turn_entry(await get(coord))
        assert first["username"] != second["username"]
        for entry in (first, second):
            assert entry["username"].split(":", 1)[1].startswith("anon-")
            assert entry["credential"] == expected_password(entry["username"])


async def test_rate_limit_per_address_answers_429_with_retry_after() -> None:
    config = turn_config(turn_issue_rate=0.01, turn_issue_burst=3)
    async with running_coordinator(config) as coord:
        for _ in range(3):
            only_turn_entry(await get(coord))
        refused = await get(coord)
        assert refused.status_code == 429
        assert refused.json()["error"] == "rate_limited"
        assert int(refused.headers["retry-after"]) >= 1
        assert "retry-after" in refused.headers["access-control-expose-headers"].lower()
        counters = coord.coordinator.counters
        assert (counters.turn_credentials_issued, counters.turn_credentials_refused) == (
            3,
            {"no_token": 0, "bad_token": 0, "rate_limited": 1},
        )
        metrics = (await coord.get("/metrics")).text
        assert "webrtc_broker_coordinator_turn_credentials_issued_total 3.0" in metrics
        assert (
            'webrtc_broker_coordinator_turn_credentials_refused_total{reason="rate_limited"} 1.0'
            in metrics
        )


async def test_rate_limit_with_tokens_is_per_subject() -> None:
    config = jwt_config(turn_issue_rate=0.01, turn_issue_burst=2)
    async with running_coordinator(config) as coord:
        for _ in range(2):
            only_turn_entry(await get(coord, bearer=token("alice")))
        assert (await get(coord, bearer=token("alice"))).status_code == 429
        # A fresh token for the same subject buys nothing; another subject is unaffected.
        assert (await get(coord, bearer=token("alice"))).status_code == 429
        only_turn_entry(await get(coord, bearer=token("bob")))


async def test_static_entries_pass_through_and_are_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    static = [
        {"urls": ["stun:127.0.0.1:3478"]},
        {"urls": ["turn:turn.example.org:3478"], "username": "u", "credential": "static-pw"},
    ]
    caplog.set_level(logging.INFO)
    async with running_coordinator(turn_config(ice_servers=static)) as coord:
        body = (await get(coord)).json()
        assert body[:2] == static
        assert len(body) == 3 and body[2]["urls"] == TURN_URLS
    warnings = [r for r in caplog.records if "static TURN credentials" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert "static-pw" not in caplog.text


async def test_no_turn_configured_issues_nothing() -> None:
    async with running_coordinator(make_config()) as coord:
        response = await get(coord)
        assert response.status_code == 200 and response.json() == []
        assert coord.coordinator.counters.turn_credentials_issued == 0


async def test_the_secret_never_leaves(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with running_coordinator(jwt_config()) as coord:
        responses = [
            await get(coord, bearer=token("alice")),
            await get(coord),
            await get(coord, bearer="garbage"),
            await get(coord, method="OPTIONS"),
            await coord.get("/status"),
            await coord.get("/metrics"),
        ]
        for response in responses:
            assert TURN_SECRET not in response.text
            assert TURN_SECRET not in str(response.headers)
    assert TURN_SECRET not in caplog.text


async def test_cors_preflight_allows_the_authorization_header() -> None:
    async with running_coordinator(jwt_config()) as coord:
        preflight = await get(
            coord,
            method="OPTIONS",
            headers={
                "Origin": "http://page.example",
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == "*"
        assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
        assert "GET" in preflight.headers["access-control-allow-methods"]
        assert coord.coordinator.counters.turn_credentials_issued == 0


# -- the Python SDK ----------------------------------------------------------------


async def test_python_sdk_sends_its_token_as_bearer() -> None:
    async with running_coordinator(jwt_config()) as coord:
        servers = await fetch_ice_servers(coord.url(""), token("carol").encode())
        assert len(servers) == 1
        assert servers[0].username is not None and servers[0].username.endswith(":carol")
        again = await fetch_ice_servers(coord.url(""), token("carol").encode())
        assert again[0].username is not None  # fresh each time: a new expiry or the same second
        # A refused token gets no servers; /connect then says why.
        assert await fetch_ice_servers(coord.url(""), b"not-a-token") == []
        assert await fetch_ice_servers(coord.url("")) == []
        refused = coord.coordinator.counters.turn_credentials_refused
        assert (refused["bad_token"], refused["no_token"]) == (1, 1)


async def test_python_sdk_takes_a_rate_limit_as_no_servers() -> None:
    config = turn_config(turn_issue_rate=0.01, turn_issue_burst=1)
    async with running_coordinator(config) as coord:
        assert len(await fetch_ice_servers(coord.url(""))) == 1
        assert await fetch_ice_servers(coord.url("")) == []


# -- the limiter's memory ------------------------------------------------------------


def test_limiter_forgets_refilled_parties_and_caps_the_table() -> None:
    now = [0.0]
    limiter = IssueLimiter(1.0, 2, max_keys=3, clock=lambda: now[0])
    assert limiter.take("a") is None
    assert limiter.take("a") is None
    wait = limiter.take("a")
    assert wait is not None and 0 < wait <= 1.0
    for key in ("b", "c", "d"):
        limiter.take(key)
    assert len(limiter) == 3  # "a" was evicted first to stay at the cap
    now[0] = 10.0  # every bucket has refilled: they are all the same as new ones
    limiter.take("e")
    assert len(limiter) == 1
