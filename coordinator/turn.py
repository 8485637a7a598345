"""Short-lived TURN credentials: the TURN REST scheme that coturn checks with ``use-auth-secret``.

A TURN server relays anything for anyone holding valid credentials, so static
credentials handed to every browser make it an open relay. Instead the
coordinator signs a credential per request, and the TURN server checks it
with nothing but the shared secret (coturn's ``static-auth-secret``):

* username: ``"<unix expiry>:<subject>"``
* password: ``base64(HMAC-SHA1(secret, username))``

coturn refuses a username whose expiry is in the past when a relay is
allocated, so a leaked credential opens no relay after ``turn_ttl`` seconds
(one allocated before lives on: coturn does not check the expiry again when
it is refreshed, see docs/turn.md), and the subject in it names who it was
issued to (coturn logs the username of every session). The subject is escaped
so that it holds no ``:``, the separator: a token subject cannot make a
username whose expiry field is its own choosing.

:class:`IssueLimiter` bounds how many credentials one party (a remote address,
or a token subject) takes per second; the endpoint itself is in
:mod:`coordinator.app`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import quote

from webrtc_broker.tokenbucket import TokenBucket

SEPARATOR = ":"
"""coturn's ``rest-api-separator`` (its default)."""

MAX_SUBJECT_CHARS = 128
"""Longer (escaped) subjects are replaced by a digest: the STUN USERNAME attribute
is at most 513 bytes, and coturn logs usernames."""

ANONYMOUS_PREFIX = "anon-"


@dataclass(frozen=True, slots=True)
class TurnCredential:
    username: str
    password: str
    expires: int
    """Unix time after which the TURN server refuses it."""


def username_subject(subject: str) -> str:
    """``subject`` as it may appear in a TURN username: no separator, bounded length.

    Percent-escaping keeps distinct subjects distinct (``a:b`` and ``a%3Ab``
    differ after escaping too) and leaves common ones (``alice``, an e-mail)
    readable in the TURN server's log.
    """
    escaped = quote(subject, safe="@._-+")
    if len(escaped) > MAX_SUBJECT_CHARS:
        digest = hashlib.sha256(subject.encode()).hexdigest()[:32]
        return f"sha256-{digest}"
    return escaped


def anonymous_subject() -> str:
    """A fresh random subject for a client that proved no identity."""
    return ANONYMOUS_PREFIX + secrets.token_hex(8)


def turn_password(secret: str, username: str) -> str:
    """What coturn's ``use-auth-secret`` expects for ``username``: base64(HMAC-SHA1)."""
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def issue(secret: str, subject: str, ttl: float, *, now: float | None = None) -> TurnCredential:
    """A credential for ``subject`` valid ``ttl`` seconds from ``now``.

    ``ttl`` may be negative: tests forge expired credentials with it.
    """
    issued = time.time() if now is None else now
    expires = int(issued + ttl)
    username = f"{expires}{SEPARATOR}{username_subject(subject)}"
    return TurnCredential(username, turn_password(secret, username), expires)


def turn_entry(urls: Sequence[str], credential: TurnCredential) -> dict[str, object]:
    """The ``/ice-servers`` entry (a WebRTC ``RTCIceServer``) for ``credential``."""
    return {"urls": list(urls), "username": credential.username, "credential": credential.password}


class IssueLimiter:
    """A token bucket per key (a remote address or a token subject), bounded in memory.

    A bucket that has refilled completely is the same as a new one, so it is
    forgotten: the table holds only parties that asked within the last
    ``burst / rate`` seconds. Beyond ``max_keys`` such parties the least
    recently seen one is forgotten early (it gets a full bucket back), which
    bounds memory under a flood from many addresses at the cost of some
    precision for the flood itself.
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self._rate = rate
        self._burst = burst
        self._max_keys = max_keys
        self._clock = clock
        self._refill_seconds = burst / rate
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str) -> float | None:
        """Charge ``key`` one credential: None if granted, else seconds until one is."""
        now = self._clock()
        self._forget_refilled(now)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = TokenBucket(self._rate, self._burst, updated=now)
            self._buckets[key] = bucket
            while len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        if bucket.take(now):
            return None
        return (1.0 - bucket.tokens) / self._rate

    def _forget_refilled(self, now: float) -> None:
        # Ordered by last use, so the first one not yet refilled ends the sweep.
        while self._buckets:
            key, bucket = next(iter(self._buckets.items()))
            if now - bucket.updated < self._refill_seconds:
                return
            del self._buckets[key]


def retry_after(seconds: float) -> str:
    """A ``Retry-After`` value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))
