"""Who wants which topic: local clients and remote comm servers."""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Generic, TypeVar

P = TypeVar("P", bound=Hashable)


class TopicTable(Generic[P]):
    """Subscription sets of one kind of peer, indexed both ways.

    ``by_topic`` is what the relay reads for every message, so it holds only
    topics with at least one subscriber.
    """

    def __init__(self) -> None:
        self.by_topic: dict[str, set[P]] = {}
        self._by_peer: dict[P, frozenset[str]] = {}

    def topics_of(self, peer: P) -> frozenset[str]:
        return self._by_peer.get(peer, frozenset())

    def replace(self, peer: P, topics: Iterable[str]) -> bool:
        """Set ``peer``'s full topic set; returns whether the table's topic set changed."""
        new = frozenset(topics)
        old = self._by_peer.get(peer, frozenset())
        if new:
            self._by_peer[peer] = new
        else:
            self._by_peer.pop(peer, None)
        changed = False
        for topic in old - new:
            subscribers = self.by_topic[topic]
            subscribers.discard(peer)
            if not subscribers:
                del self.by_topic[topic]
                changed = True
        for topic in new - old:
            subscribers = self.by_topic.setdefault(topic, set())
            changed |= not subscribers
            subscribers.add(peer)
        return changed

    def remove(self, peer: P) -> bool:
        return self.replace(peer, ())

    def topics(self) -> frozenset[str]:
        return frozenset(self.by_topic)
