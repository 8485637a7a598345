"""Authentication of peers: who may register as a server, who may be a client.

Two places check credentials: the coordinator (credentials in the WebSocket
URL or an ``Authorization: Bearer`` header) and the comm server (the body of
the first AUTH frame on a new session). Both go through the small interfaces
below so that deployments can plug in their own scheme.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Protocol


class AuthError(Exception):
    """Credentials were missing or wrong."""


@dataclass(frozen=True, slots=True)
class Identity:
    """What an authenticator learned about a peer; stamped on TOPIC_IDENTITY frames."""

    value: bytes


class ClientAuthenticator(Protocol):
    """Checks a client's credentials and returns the identity they prove."""

    def authenticate(self, credentials: bytes) -> Identity:
        """Return the client's identity or raise :class:`AuthError`."""
        ...


class OpenClientAuthenticator:
    """Accepts every client; the identity is whatever the client presented.

    This is the default, as in the original broker: without a configured
    scheme nothing is verified, so the identity is only a claim.
    """

    def authenticate(self, credentials: bytes) -> Identity:
        return Identity(credentials)


class ServerSecret:
    """The shared secret that comm servers present to the coordinator and to each other.

    ``None`` means no secret is configured and every server is accepted, which
    is the local-development default. Comparison is constant-time.
    """

    def __init__(self, secret: str | None) -> None:
        self._secret = secret.encode() if secret else None

    @property
    def required(self) -> bool:
        return self._secret is not None

    def credentials(self) -> bytes:
        """What this process presents when it authenticates as a server."""
        return self._secret or b""

    def verify(self, presented: bytes | str | None) -> None:
        """Raise :class:`AuthError` unless ``presented`` matches the secret."""
        if self._secret is None:
            return
        if presented is None:
            raise AuthError("server secret required")
        if isinstance(presented, str):
            presented = presented.encode()
        if not hmac.compare_digest(presented, self._secret):
            raise AuthError("wrong server secret")


def check_trust_anchor(authenticator: ClientAuthenticator, secret: ServerSecret) -> None:
    """Refuse to check clients when anyone may register as a comm server.

    Clients learn servers only from the coordinator, so the server secret is
    what makes a client's check worth anything: without it, a stranger
    registers as a server and receives clients, their tokens and every topic.
    """
    if not isinstance(authenticator, OpenClientAuthenticator) and not secret.required:
        raise ValueError(
            "a client authenticator needs a server secret (--server-secret): without it "
            "anyone can register as a comm server and receive the clients and every topic"
        )
