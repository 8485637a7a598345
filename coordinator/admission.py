"""How many client WebSockets may be open at once, in total and per remote address.

Every open WebSocket costs the coordinator a file descriptor, buffers and two
tasks, so an unbounded number of them is a way to exhaust it. The caps are
checked before the upgrade is accepted: a refused client gets HTTP 503 (or
429 over the per-address cap), a "try again later", and costs nothing more.
Comm servers are not counted; they hold the server secret.

The address is what the ASGI server reports as the client: the TCP peer or,
when that peer is one of ``trusted_proxies``, the right-most address of
``X-Forwarded-For`` that is not a trusted proxy. Behind a proxy that is not trusted, or behind
SNAT (a Kubernetes Service with ``externalTrafficPolicy: Cluster``), many
clients share an address, which is why the per-address cap is a setting.
"""

from __future__ import annotations

from .counters import RefusalReason

UNKNOWN_ADDRESS = ""
"""The address of a connection whose peer the server could not name (a Unix socket)."""


class ConnectionCaps:
    """Counts open client connections; ``0`` for a cap means no cap."""

    def __init__(self, total: int, per_address: int) -> None:
        self._total_cap = total
        self._address_cap = per_address
        self._total = 0
        self._by_address: dict[str, int] = {}

    @property
    def total(self) -> int:
        return self._total

    def count(self, address: str) -> int:
        return self._by_address.get(address, 0)

    def refusal(self, address: str) -> RefusalReason | None:
        """Why a new connection from ``address`` would be refused now, if it would."""
        if self._total_cap and self._total >= self._total_cap:
            return RefusalReason.TOO_MANY_CONNECTIONS
        if self._address_cap and self._by_address.get(address, 0) >= self._address_cap:
            return RefusalReason.TOO_MANY_FROM_ADDRESS
        return None

    def admit(self, address: str) -> RefusalReason | None:
        """Count a new connection from ``address``, or say why it is refused.

        An admitted connection must be :meth:`release`\\ d exactly once.
        """
        refusal = self.refusal(address)
        if refusal is not None:
            return refusal
        self._total += 1
        self._by_address[address] = self._by_address.get(address, 0) + 1
        return None

    def release(self, address: str) -> None:
        current = self._by_address.get(address, 0)
        if current <= 0:
            return
        self._total -= 1
        if current == 1:
            del self._by_address[address]  # bounded by open connections, not by history
        else:
            self._by_address[address] = current - 1
