"""How the Python SDK reads a refused upgrade: only refused credentials are final."""

from __future__ import annotations

import pytest

from webrtc_broker.client import (
    AuthenticationError,
    BrokerError,
    CoordinatorUnavailableError,
)
from webrtc_broker.client.link import coordinator_refusal


@pytest.mark.parametrize("status", [401, 403])
def test_refused_credentials_are_final(status: int) -> None:
    error = coordinator_refusal(status, b"bad_client_credentials\n")
    assert isinstance(error, AuthenticationError)
    assert str(error) == (
        f"the coordinator refused the credentials (HTTP {status}: bad_client_credentials)"
    )


@pytest.mark.parametrize(
    ("status", "reason"), [(503, "shutting_down"), (429, "too_many_from_address")]
)
def test_not_now_is_retryable(status: int, reason: str) -> None:
    error = coordinator_refusal(status, f"{reason}\n".encode())
    assert isinstance(error, CoordinatorUnavailableError)
    assert not isinstance(error, AuthenticationError)
    assert error.status == status
    assert reason in str(error)


def test_a_proxys_page_is_not_echoed() -> None:
    """A proxy in front of the coordinator answers with a page of its own."""
    error = coordinator_refusal(503, b"<html><body>upstream unavailable</body></html>")
    assert isinstance(error, CoordinatorUnavailableError)
    assert str(error) == "the coordinator cannot take the connection now (HTTP 503)"
    other = coordinator_refusal(502, None)
    assert type(other) is BrokerError  # retried by the reconnect loop, like any failure
    assert str(other) == "the coordinator refused the connection (HTTP 502)"
