"""Who wants which topic: local clients and remote comm servers."""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

P = TypeVar("P", bound=Hashable)


@dataclass(slots=True)
class TopicChange:
    """How a table's set of topics (those with at least one subscriber) changed."""

    added: set[str] = field(default_factory=set)
    """Topics that got their first subscriber."""
    removed: set[str] = field(default_factory=set)
    """Topics that lost their last subscriber."""

    def __bool__(self) -> bool:
        return bool(self.added or self.removed)


class TopicTable(Generic[P]):
    """Subscription sets of one kind of peer, indexed both ways.

    ``by_topic`` is what the relay reads for every message, so it holds only
    topics with at least one subscriber. Every update says how the table's
    topic set changed, so that what a server advertises to its peers can be
    updated by difference instead of being recomputed from every topic.
    """

    def __init__(self) -> None:
        self.by_topic: dict[str, set[P]] = {}
        self._by_peer: dict[P, set[str]] = {}

    def topics_of(self, peer: P) -> frozenset[str]:
        return frozenset(self._by_peer.get(peer, ()))

    def replace(self, peer: P, topics: Iterable[str]) -> TopicChange:
        """Set ``peer``'s full topic set."""
        new = set(topics)
        old = self._by_peer.get(peer, set())
        return self._apply(peer, new - old, old - new)

    def add(self, peer: P, topics: Iterable[str]) -> TopicChange:
        """Add topics to ``peer``'s set."""
        old = self._by_peer.get(peer, set())
        return self._apply(peer, {t for t in topics if t not in old}, set())

    def discard(self, peer: P, topics: Iterable[str]) -> TopicChange:
        """Take topics out of ``peer``'s set (unknown ones are ignored)."""
        old = self._by_peer.get(peer, set())
        return self._apply(peer, set(), {t for t in topics if t in old})

    def remove(self, peer: P) -> TopicChange:
        return self.replace(peer, ())

    def topics(self) -> frozenset[str]:
        return frozenset(self.by_topic)

    def _apply(self, peer: P, gained: set[str], lost: set[str]) -> TopicChange:
        change = TopicChange()
        mine = self._by_peer.setdefault(peer, set())
        for topic in lost:
            mine.discard(topic)
            subscribers = self.by_topic[topic]
            subscribers.discard(peer)
            if not subscribers:
                del self.by_topic[topic]
                change.removed.add(topic)
        for topic in gained:
            mine.add(topic)
            subscribers = self.by_topic.setdefault(topic, set())
            if not subscribers:
                change.added.add(topic)
            subscribers.add(peer)
        if not mine:
            del self._by_peer[peer]
        return change
