"""A token bucket: what the services charge a party for each thing it makes them do."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class TokenBucket:
    """``rate`` tokens per second up to ``burst``; a rate of 0 means unlimited."""

    rate: float
    burst: int
    tokens: float = field(init=False)
    updated: float = field(default=0.0)

    def __post_init__(self) -> None:
        self.tokens = float(self.burst)

    @property
    def unlimited(self) -> bool:
        return self.rate <= 0

    def refill(self, now: float) -> None:
        elapsed = now - self.updated
        self.updated = now
        if elapsed > 0:
            self.tokens = min(float(self.burst), self.tokens + elapsed * self.rate)

    def take(self, now: float) -> bool:
        """Spend one token if there is one."""
        if self.unlimited:
            return True
        self.refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False
