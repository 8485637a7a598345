"""What a connecting peer claims: its credential, its role and its display name.

Parsing is kept apart from the endpoints so the rules are plain functions.
Browsers cannot set headers on a WebSocket, hence the ``token`` query
parameter; non-browser peers should prefer ``Authorization: Bearer`` because
headers stay out of URLs, and URLs end up in logs.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum

from webrtc_broker.wire.aliases import SERVER_ALIASES

from .registry import PeerRole, ServerClaim

SERVER_ROLE_NAMES: dict[str, PeerRole] = {
    "COMMUNICATION_SERVER": "server",
    "COMMUNICATION_SERVER_HUB": "hub",
}

MAX_NAME_CHARS = 128


def presented_token(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
    """The bearer token from the Authorization header, else the ``token`` query parameter."""
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer":
            return value.strip()
    return query.get("token")


def server_role(value: str | None) -> PeerRole | None:
    """The registry role for a ``role`` query value, or None if it is not a server role."""
    if value is None:
        return None
    return SERVER_ROLE_NAMES.get(value)


def display_name(value: str | None) -> str:
    """A server's name for /status, bounded so a peer cannot make us store megabytes."""
    return (value or "")[:MAX_NAME_CHARS]


class ClaimProblem(Enum):
    MALFORMED = "malformed"
    """An ``alias`` that is not an integer in ``SERVER_ALIASES``, or no ``id`` with it."""


MAX_SERVER_ID_CHARS = 64


def server_claim(query: Mapping[str, str]) -> ServerClaim | ClaimProblem | None:
    """The alias a comm server proposes for itself (``alias`` and ``id`` query parameters).

    None when it proposes none (servers of the original protocol): the coordinator
    then allocates one, as it does for clients.
    """
    alias, server_id = query.get("alias"), query.get("id")
    if alias is None:
        return None
    if not alias.isdigit() or int(alias) not in SERVER_ALIASES:
        return ClaimProblem.MALFORMED
    if not server_id or len(server_id) > MAX_SERVER_ID_CHARS:
        return ClaimProblem.MALFORMED
    return ServerClaim(int(alias), server_id)
