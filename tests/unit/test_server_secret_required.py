"""Client authentication without a server secret is refused at start-up.

Without a server secret anyone may register on ``/discover`` as a comm
server and be handed clients, their tokens and every topic, so checking
clients would protect nothing. The end-to-end side (real processes, a rogue
server refused) is in ``tests/e2e/test_tokens.py``.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from commserver.server import CommServer
from coordinator.app import create_app
from webrtc_broker.cli import main
from webrtc_broker.config import CommServerConfig, CoordinatorConfig
from webrtc_broker.tokens import JwtClientAuthenticator

JWT_KEY = "a-client-token-key-of-32-bytes-or-more"
SERVER_SECRET = "a-server-secret"
MODELS = [
    (CoordinatorConfig, "WEBRTC_BROKER_COORDINATOR_"),
    (CommServerConfig, "WEBRTC_BROKER_COMMSERVER_"),
]


@pytest.mark.parametrize(("model", "prefix"), MODELS)
@pytest.mark.parametrize("server_secret", [None, ""])
def test_jwt_without_a_server_secret_is_refused(
    model: type[CoordinatorConfig | CommServerConfig], prefix: str, server_secret: str | None
) -> None:
    values = {"client_auth": "jwt", "client_jwt_secret": JWT_KEY}
    if server_secret is not None:
        values["server_secret"] = server_secret
    with pytest.raises(ValidationError) as refused:
        model.model_validate(values)
    message = str(refused.value)
    assert "--client-auth jwt needs --server-secret" in message
    assert f"{prefix}SERVER_SECRET" in message


@pytest.mark.parametrize(("model", "prefix"), MODELS)
def test_the_environment_cannot_make_the_combination_either(
    model: type[CoordinatorConfig | CommServerConfig],
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(f"{prefix}CLIENT_AUTH", "jwt")
    monkeypatch.setenv(f"{prefix}CLIENT_JWT_SECRET", JWT_KEY)
    with pytest.raises(ValidationError, match="needs --server-secret"):
        model.model_validate({})
    monkeypatch.setenv(f"{prefix}SERVER_SECRET", SERVER_SECRET)
    config = model.model_validate({})
    assert config.client_auth == "jwt"
    assert config.server_secret is not None


@pytest.mark.parametrize(("model", "_prefix"), MODELS)
def test_open_clients_still_need_no_secret(
    model: type[CoordinatorConfig | CommServerConfig], _prefix: str
) -> None:
    """The out-of-the-box set-up (nothing authenticated, as the original broker) starts."""
    config = model.model_validate({})
    assert (config.client_auth, config.server_secret) == ("none", None)


@pytest.mark.parametrize("command", ["coordinator", "commserver"])
def test_the_cli_says_which_flag_is_missing_without_echoing_secrets(command: str) -> None:
    result = CliRunner().invoke(
        main, [command, "--client-auth", "jwt", "--client-jwt-secret", JWT_KEY]
    )
    assert result.exit_code == 2, result.output  # a usage error: nothing started
    assert "--client-auth jwt needs --server-secret" in result.output
    assert "Value error" not in result.output
    assert JWT_KEY not in result.output


async def test_an_authenticator_given_in_code_needs_a_server_secret_too() -> None:
    """The services' constructors check what the configuration cannot see."""
    checker = JwtClientAuthenticator("k" * 32)
    with pytest.raises(ValueError, match="--server-secret"):
        CommServer(CommServerConfig(name="s1"), authenticator=checker)
    with pytest.raises(ValueError, match="--server-secret"):
        create_app(CoordinatorConfig(), authenticator=checker)
    secured = CommServer(CommServerConfig(name="s1", server_secret="s"), authenticator=checker)
    await secured.close()
