"""Client tokens: what a JWT authenticator accepts, what it refuses and why."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from webrtc_broker.auth import AuthError, OpenClientAuthenticator
from webrtc_broker.cli import main
from webrtc_broker.config import CommServerConfig, CoordinatorConfig
from webrtc_broker.tokens import JwtClientAuthenticator, client_authenticator, issue_token

SECRET = "a-test-key-that-is-32-bytes-long!"
OTHER = "another-key-that-is-also-32-bytes"
LATER = 30 * 86400
"""Seconds ahead for times that must still be ahead when the test runs: these tokens are
made when the tests are collected, which may be an hour before (a whole suite's run)."""


def test_valid_token_proves_its_subject() -> None:
    token = issue_token(SECRET, "alice@example", 60)
    assert JwtClientAuthenticator(SECRET).authenticate(token.encode()).value == b"alice@example"


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (issue_token(SECRET, "alice", 60, now=time.time() - 3600), "token expired"),
        (issue_token(OTHER, "alice", LATER), "bad token signature"),
        (jwt.encode({"sub": "alice"}, SECRET, algorithm="HS256"), "'exp' claim"),
        (jwt.encode({"exp": time.time() + LATER}, SECRET, algorithm="HS256"), "'sub' claim"),
        (jwt.encode({"sub": "", "exp": time.time() + LATER}, SECRET, algorithm="HS256"), "subject"),
        (
            jwt.encode(
                {"sub": "a", "exp": time.time() + 2 * LATER, "nbf": time.time() + LATER}, SECRET
            ),
            "not valid yet",
        ),
        ("not-a-jwt", "malformed token"),
        ("", "a token is required"),
    ],
)
def test_refused_tokens_say_why(token: str, reason: str) -> None:
    with pytest.raises(AuthError, match=reason) as refused:
        JwtClientAuthenticator(SECRET).authenticate(token.encode())
    assert token == "" or token not in str(refused.value)  # the reason never echoes it


def _unsigned(claims: dict[str, object], alg: str) -> str:
    def part(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': alg, 'typ': 'JWT'})}.{part(claims)}."


def test_only_hs256_is_accepted() -> None:
    claims = {"sub": "mallory", "exp": int(time.time()) + 60}
    authenticator = JwtClientAuthenticator(SECRET)
    with pytest.raises(AuthError):
        authenticator.authenticate(_unsigned(claims, "none").encode())
    hs512 = jwt.encode(claims, SECRET + SECRET, algorithm="HS512")
    with pytest.raises(AuthError, match="HS256"):
        JwtClientAuthenticator(SECRET + SECRET).authenticate(hs512.encode())
    with pytest.raises(AuthError, match="ASCII"):
        authenticator.authenticate("é".encode())


def test_short_keys_are_refused_everywhere() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        JwtClientAuthenticator("short")
    with pytest.raises(ValueError, match="32 bytes"):
        issue_token("short", "alice", 60)
    for model in (CoordinatorConfig, CommServerConfig):
        with pytest.raises(ValidationError, match="needs client_jwt_secret"):
            model.model_validate({"client_auth": "jwt"})
        with pytest.raises(ValidationError, match="32 bytes"):
            model.model_validate({"client_auth": "jwt", "client_jwt_secret": "short"})
        config = model.model_validate(
            {"client_auth": "jwt", "client_jwt_secret": SECRET, "server_secret": OTHER}
        )
        assert SECRET not in repr(config) and SECRET not in str(config.model_dump())


def test_config_picks_the_authenticator(monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(client_authenticator("none", None), OpenClientAuthenticator)
    assert isinstance(client_authenticator("jwt", SECRET), JwtClientAuthenticator)
    with pytest.raises(ValueError, match="unknown"):
        client_authenticator("ldap", None)
    monkeypatch.setenv("WEBRTC_BROKER_COMMSERVER_CLIENT_AUTH", "jwt")
    monkeypatch.setenv("WEBRTC_BROKER_COMMSERVER_CLIENT_JWT_SECRET", SECRET)
    monkeypatch.setenv("WEBRTC_BROKER_COMMSERVER_SERVER_SECRET", OTHER)
    config = CommServerConfig.model_validate({})
    assert config.client_auth == "jwt"
    assert config.client_jwt_secret is not None
    assert config.client_jwt_secret.get_secret_value() == SECRET


def test_token_command_prints_a_token_the_broker_accepts() -> None:
    result = CliRunner().invoke(
        main, ["token", "--secret", SECRET, "--subject", "bob", "--ttl", "120"]
    )
    assert result.exit_code == 0, result.output
    token = result.output.strip()
    assert JwtClientAuthenticator(SECRET).authenticate(token.encode()).value == b"bob"
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert 115 <= claims["exp"] - time.time() <= 121

    refused = CliRunner().invoke(main, ["token", "--secret", "short", "--subject", "bob"])
    assert refused.exit_code != 0 and "32 bytes" in refused.output


def test_cli_config_errors_do_not_echo_secrets() -> None:
    secret = "too-short-but-secret"
    result = CliRunner().invoke(
        main, ["coordinator", "--client-auth", "jwt", "--client-jwt-secret", secret]
    )
    assert result.exit_code != 0
    assert "32 bytes" in result.output
    assert secret not in result.output
