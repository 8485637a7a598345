"""Which comm server a client should use: pluggable orderings of the server list.

The coordinator picks for the client (a client takes the first alias of its
WELCOME), so the ordering is the load-balancing policy. It is a protocol so a
deployment can plug in its own (for example one fed by load reports) without
touching the coordinator.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Protocol

from webrtc_broker.config import SelectorName

from .registry import ServerInfo


class ServerSelector(Protocol):
    """Orders candidate servers, best first; must return each alias exactly once."""

    def order(self, servers: Sequence[ServerInfo]) -> list[int]: ...


class RandomSelector:
    """A uniformly random order: the original broker's strategy, stateless and fair on average."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def order(self, servers: Sequence[ServerInfo]) -> list[int]:
        aliases = [server.alias for server in servers]
        self._rng.shuffle(aliases)
        return aliases


class RoundRobinSelector:
    """Each client gets the next server first, in alias order.

    Alias order (not list position) keeps the rotation fair when servers come
    and go: a new server joins the cycle instead of shifting everyone.
    """

    def __init__(self) -> None:
        self._turn = 0

    def order(self, servers: Sequence[ServerInfo]) -> list[int]:
        aliases = sorted(server.alias for server in servers)
        if not aliases:
            return aliases
        start = self._turn % len(aliases)
        self._turn += 1
        return aliases[start:] + aliases[:start]


class LeastClientsSelector:
    """Fewest clients first; ties in random order.

    Counts move only when a client's CONNECT passes through, so a burst of
    clients sees the same counts; breaking ties randomly spreads that burst
    over equally loaded servers instead of piling it onto one.
    """

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def order(self, servers: Sequence[ServerInfo]) -> list[int]:
        shuffled = list(servers)
        self._rng.shuffle(shuffled)
        shuffled.sort(key=lambda server: server.clients)  # stable: ties keep the shuffle
        return [server.alias for server in shuffled]


def make_selector(name: SelectorName) -> ServerSelector:
    """The selector that ``CoordinatorConfig.selector`` names."""
    if name == "random":
        return RandomSelector()
    if name == "round-robin":
        return RoundRobinSelector()
    if name == "least-clients":
        return LeastClientsSelector()
    raise ValueError(f"unknown selector {name!r}")
