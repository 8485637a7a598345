"""Which servers a newcomer is told about in its WELCOME.

Comm servers connect to every server in their WELCOME, so this list decides
the overlay's shape: a full mesh of plain servers, or a star as soon as a hub
exists. Clients are steered away from hubs, which are busy forwarding between
servers, unless hubs are all there is.
"""

from __future__ import annotations

from collections.abc import Sequence

from .registry import PeerRole, ServerInfo
from .selector import ServerSelector


def servers_for_client(servers: Sequence[ServerInfo], selector: ServerSelector) -> list[int]:
    """Plain servers ordered by the selector; hubs only when no plain server exists."""
    plain = [server for server in servers if server.role == "server"]
    return selector.order(plain or servers)


def servers_for_server(role: PeerRole, servers: Sequence[ServerInfo]) -> list[int]:
    """The servers a newly connected comm server must connect to.

    ``servers`` must not contain the newcomer (it registers after its WELCOME).
    A hub joins everyone; a plain server joins only the hubs if there are any
    (star), else every server (mesh).
    """
    if role == "hub":
        return [server.alias for server in servers]
    hubs = [server.alias for server in servers if server.role == "hub"]
    return hubs or [server.alias for server in servers]


def welcome_servers(
    role: PeerRole, servers: Sequence[ServerInfo], selector: ServerSelector
) -> list[int]:
    """The ``available_servers`` of the WELCOME for a peer of ``role``."""
    if role == "client":
        return servers_for_client(servers, selector)
    return servers_for_server(role, servers)
