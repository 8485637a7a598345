"""Exceptions raised by the Python client SDK."""

from __future__ import annotations


class BrokerError(Exception):
    """Base class of every error the SDK raises."""


class NoServerAvailableError(BrokerError):
    """The coordinator knows no comm server (or not the one asked for)."""


class ServerFullError(BrokerError):
    """The comm server refused the session: it has reached its peer limit."""


class AuthenticationError(BrokerError):
    """The coordinator or the comm server refused the credentials."""


class CoordinatorUnavailableError(BrokerError):
    """The coordinator said "not now": it is shutting down or at a connection cap.

    Unlike :class:`AuthenticationError` this passes: try again later (a
    reconnecting client does, with backoff). ``status`` is the HTTP status of
    the refusal (503, or 429 over the per-address cap).
    """

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class ConnectTimeoutError(BrokerError):
    """The session was not established in time."""


class PingTimeoutError(BrokerError, TimeoutError):
    """No echo of a PING within its timeout: the server is slow or the path to it is stalled.

    The session is left as it is (the keepalive decides whether the server is
    dead); a :class:`TimeoutError` too, so ``except TimeoutError`` catches it.
    """


class ClosedError(BrokerError):
    """The client is closed (by :meth:`BrokerClient.close` or by the server)."""


class DisconnectedError(ClosedError):
    """The session ended and the client is reconnecting to another server; try again."""


class MessageTooLargeError(BrokerError, ValueError):
    """A frame is larger than data channels carry once the server has relayed it."""
