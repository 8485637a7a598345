"""The asyncio client.

:meth:`BrokerClient.connect` returns only for a session that works: it follows
AUTH with a PING on the same ordered channel, whose echo proves the server
accepted the AUTH (the protocol has no acknowledgement).

A client keeps working when its comm server goes away. A keepalive notices a
silent server within seconds (aiortc alone takes about half a minute); the
client then goes back to the coordinator, which points it to a live server,
and restores its subscriptions there. Its alias changes, since the
coordinator hands out a new one; messages published while it is
reconnecting raise :class:`DisconnectedError`.

Several coordinator replicas can be given (:func:`coordinator_order`): a
connect, and every reconnect, goes through whichever of them answers. Only
refused credentials end the search, since every replica checks them alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, overload

from webrtc_broker.backoff import Backoff
from webrtc_broker.client.errors import (
    AuthenticationError,
    BrokerError,
    ClosedError,
    ConnectTimeoutError,
    DisconnectedError,
    MessageTooLargeError,
    NoServerAvailableError,
    PingTimeoutError,
)
from webrtc_broker.client.link import CoordinatorLostError, IceTransportPolicy, Link
from webrtc_broker.config import IceServer
from webrtc_broker.limits import (
    BATCH_MAX_BYTES,
    CONNECT_TIMEOUT,
    KEEPALIVE_INTERVAL,
    KEEPALIVE_TIMEOUT,
    MAX_FRAME_BYTES,
    PING_TIMEOUT,
    RECONNECT_ATTEMPT_TIMEOUT,
    RECONNECT_FIRST_DELAY,
    RECONNECT_MAX_DELAY,
)
from webrtc_broker.rtc import FlushScheduler, Session
from webrtc_broker.rtc.liveness import KEEPALIVE_PING, SilenceClock
from webrtc_broker.wire import FrameError, decode_as, frame_type
from webrtc_broker.wire import broker_pb2 as pb
from webrtc_broker.wire.subscription import subscription_frame

log = logging.getLogger(__name__)

# MAX_FRAME_BYTES (what a client may send) and PING_TIMEOUT (what ping() waits by
# default) are re-exported from webrtc_broker.limits, the browser SDK's source too.
__all__ = [
    "ALL_CAPABILITIES",
    "BATCH_WINDOW",
    "CLIENT_CAPABILITIES",
    "MAX_FRAME_BYTES",
    "PING_TIMEOUT",
    "BrokerClient",
    "ClientEvent",
    "Keepalive",
    "ReceivedMessage",
    "Reconnect",
    "coordinator_order",
    "coordinator_urls",
]


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    """A topic message delivered to this client.

    Its fields come in the browser SDK's order: sender, body, reliable, topic,
    identity, role.
    """

    sender: int
    """Alias of the client that published it."""
    body: bytes
    reliable: bool
    """Whether it came on the reliable channel."""
    topic: str | None = None
    """The topic it was published to, when the server sends topic names (servers
    that announce CAPABILITY_TOPIC_NAMES, as this project's do)."""
    identity: bytes | None = None
    """The sender's authenticated identity, for messages published with identity."""
    role: int | None = None
    """The sender's role (a ``Role`` value), for messages published with identity."""

    @property
    def text(self) -> str:
        """The body decoded as UTF-8 (invalid bytes replaced)."""
        return self.body.decode(errors="replace")

    @property
    def identity_text(self) -> str | None:
        """The identity decoded as UTF-8 (``None`` for messages without identity)."""
        return None if self.identity is None else self.identity.decode(errors="replace")


@dataclass(frozen=True, slots=True)
class Keepalive:
    """How the client tells a live server from a dead one."""

    interval: float = KEEPALIVE_INTERVAL
    """Seconds of hearing nothing after which the client sends a PING."""
    timeout: float = KEEPALIVE_TIMEOUT
    """Seconds of hearing nothing after which the server is presumed dead."""

    @property
    def tick(self) -> float:
        """How often the silence is looked at: fine enough to PING on time and to give
        the server up within about a quarter of ``timeout`` after it."""
        return min(self.interval, self.timeout / 4)


@dataclass(frozen=True, slots=True)
class Reconnect:
    """Capped exponential backoff between attempts to get back to a server.

    The first attempt is immediate; the delays after failed ones carry +-20%
    jitter, so the clients of a dead server do not retry in lockstep.
    """

    first_delay: float = RECONNECT_FIRST_DELAY
    """Seconds before the second round of attempts; the delay doubles each round."""
    max_delay: float = RECONNECT_MAX_DELAY
    """The longest delay between rounds, in seconds."""
    attempt_timeout: float = RECONNECT_ATTEMPT_TIMEOUT
    """Seconds one attempt (coordinator, WebRTC set-up, AUTH) may take."""


_CLOSED = object()

CLIENT_CAPABILITIES = pb.CAPABILITY_BATCH | pb.CAPABILITY_TOPIC_NAMES
"""What this SDK announces by default: it accepts batches and wants topic names."""

ALL_CAPABILITIES = CLIENT_CAPABILITIES
"""The former name of :data:`CLIENT_CAPABILITIES`."""

BATCH_WINDOW = 0.005
"""Seconds the client's own frames may wait to share one data-channel message."""


ClientEvent = Literal["reconnecting", "reconnected", "close"]
"""What :meth:`BrokerClient.on` can listen to (the browser SDK's events but ``message``,
which Python reads with :meth:`BrokerClient.receive`)."""

_spread = random.Random()
"""Where a first connect starts in the coordinator list (not security-relevant)."""


def coordinator_urls(urls: str | Sequence[str]) -> tuple[str, ...]:
    """The coordinator URLs as a tuple: one URL as a string, or several (replicas)."""
    listed = (urls,) if isinstance(urls, str) else tuple(urls)
    if not listed or not all(isinstance(url, str) and url for url in listed):
        raise ValueError(f"coordinator URLs must be non-empty strings: {urls!r}")
    return listed


def websocket_url(url: str) -> str:
    """A coordinator URL as the WebSocket URL to dial: ``http(s)://`` becomes ``ws(s)://``
    (both SDKs take either, as a page knows its coordinator by its web origin)."""
    for web, socket in (("http://", "ws://"), ("https://", "wss://")):
        if url[: len(web)].lower() == web:
            return socket + url[len(web) :]
    return url


def check_size(frame: bytes) -> None:
    """Raise :class:`MessageTooLargeError` for a frame no server would relay."""
    if len(frame) > MAX_FRAME_BYTES:
        raise MessageTooLargeError(
            f"{len(frame)} bytes encoded; at most {MAX_FRAME_BYTES} can be relayed"
        )


def coordinator_order(urls: Sequence[str], *, after: str | None = None) -> list[str]:
    """The order in which a connect tries ``urls``: each once, rotating through the list.

    The first connect (``after=None``) starts at a random URL, so that clients
    given the same list spread over the replicas instead of all holding their
    coordinator connection on the first one (which would also send all of them
    back at once when it goes away). A reconnect starts after ``after``, the
    URL of the link that died, so that URL is tried last: its replica may be
    what failed.
    """
    start = urls.index(after) + 1 if after in urls else _spread.randrange(len(urls))
    return [urls[(start + i) % len(urls)] for i in range(len(urls))]


class BrokerClient:
    """A client of the broker: one session with one comm server at a time."""

    def __init__(
        self,
        urls: Sequence[str],
        credentials: bytes,
        *,
        inbox_size: int,
        capabilities: int,
        keepalive: Keepalive | None,
        reconnect: Reconnect | None,
        ice_servers: Sequence[IceServer] | None = None,
        ice_transport_policy: IceTransportPolicy = "all",
    ) -> None:
        self._urls = tuple(urls)
        self._url = self._urls[0]
        """The coordinator of the current (or last) link; see :attr:`coordinator_url`."""
        self._ice_transport_policy: IceTransportPolicy = ice_transport_policy
        self._ice_servers = None if ice_servers is None else list(ice_servers)
        self._credentials = credentials
        self._keepalive = keepalive
        self._reconnect = reconnect
        self._inbox: asyncio.Queue[ReceivedMessage | object] = asyncio.Queue(inbox_size)
        self._pings: dict[float, asyncio.Future[float]] = {}
        self._ping_ids = itertools.count(1)
        self._link: Link | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._subscription: bytes | None = None
        self._closed_reason = ""
        self._failed_attempt: tuple[int, list[int]] | None = None
        """The server of the last set-up that failed, and every server then listed."""
        self.capabilities = capabilities
        self.server_capabilities = 0
        """What the server announced in its AUTH reply (0 for servers that do not)."""
        self._batching = FlushScheduler(BATCH_WINDOW)
        self.dropped = 0
        """Messages dropped because the inbox was full (the oldest go first)."""
        self.reconnects = 0
        """Times the client moved to another server after losing one."""
        self.received = 0
        """Topic messages received (those inside BATCH frames included)."""
        self.sent = 0
        """Topic messages published."""
        self._listeners: dict[str, list[Callable[[Any], object]]] = {}
        self.signalling_dropped: Counter[str] = Counter()
        """Frames from the coordinator dropped by every link so far, by
        :class:`~webrtc_broker.client.link.SignallingDrop` reason."""

    # -- connecting -------------------------------------------------------

    @classmethod
    async def connect(
        cls,
        coordinator_url: str | Sequence[str],
        credentials: bytes | str = b"",
        *,
        server: int | None = None,
        timeout: float = CONNECT_TIMEOUT,
        inbox_size: int = 10_000,
        capabilities: int = CLIENT_CAPABILITIES,
        keepalive: Keepalive | None = Keepalive(),
        reconnect: Reconnect | None = Reconnect(),
        ice_servers: Sequence[IceServer] | None = None,
        ice_transport_policy: IceTransportPolicy = "all",
    ) -> BrokerClient:
        """Connect through the coordinator at ``coordinator_url`` (``ws://host:port``,
        ``wss://...``, or the ``http(s)://`` equivalent).

        ``coordinator_url`` may also be a sequence of URLs, one per coordinator
        replica: the client starts at a random one (so clients spread over the
        replicas) and moves on to the next when one cannot take it: a refusal
        that says "not now" (HTTP 503 or 429), a coordinator that cannot be
        reached or does not WELCOME within half of ``timeout``, one with no
        comm server, or one whose servers all fail the set-up. Refused
        credentials (HTTP 401/403, or a server's AUTH refusal) are final: every
        replica checks them alike. When every URL fails, the last error is
        raised. Reconnects go through the same list, the URL of the lost link
        last; :attr:`coordinator_url` is the one in use.

        ``credentials`` go to the coordinator (``token`` query parameter) and to
        the comm server (AUTH body). ``server`` picks a server alias from the
        coordinator's list instead of its first choice (for the first session
        only). Without it, a server that refuses (full), fails, or does not answer
        within half of ``timeout`` is passed over for the next one listed.
        ``capabilities`` is what the client announces in AUTH (protocol
        additions); 0 behaves exactly like a client of the original protocol.
        ``keepalive=None`` relies on WebRTC alone to notice a dead server;
        ``reconnect=None`` makes the client end (iteration stops, calls raise
        :class:`ClosedError`) when its session ends. ``ice_servers`` (STUN/TURN)
        replaces those the coordinator hands out at ``/ice-servers`` (none if it
        has no such endpoint); those are fetched again for every session, since
        their TURN credentials expire, with ``credentials`` as a bearer token.
        ``ice_transport_policy="relay"`` restricts sessions to TURN-relayed
        candidates (the WebRTC ``iceTransportPolicy``).
        """
        if ice_transport_policy not in ("all", "relay"):
            raise ValueError(
                f"ice_transport_policy must be 'all' or 'relay': {ice_transport_policy!r}"
            )
        if isinstance(credentials, str):
            credentials = credentials.encode()
        client = cls(
            coordinator_urls(coordinator_url),
            credentials,
            inbox_size=inbox_size,
            capabilities=capabilities,
            keepalive=keepalive,
            reconnect=reconnect,
            ice_servers=ice_servers,
            ice_transport_policy=ice_transport_policy,
        )
        try:
            async with asyncio.timeout(timeout):
                await client._first_link(server, answer_within=timeout / 2)
        except TimeoutError as exc:
            await client.close()
            raise ConnectTimeoutError(f"no session within {timeout} s") from exc
        except BaseException:
            await client.close()
            raise
        client._supervisor = asyncio.get_running_loop().create_task(
            client._supervise(), name="broker-client-supervisor"
        )
        return client

    async def _first_link(self, server: int | None, *, answer_within: float) -> None:
        """The first session, through the first coordinator (in :func:`coordinator_order`)
        that gives one; only refused credentials stop the search early.

        A round tries every URL once. When a round ends because a coordinator
        connection closed during the set-up (a replica restarting), another round
        follows after a short backoff, until the connect's own timeout: a single
        URL behind a Service then reaches a live replica on the next try."""
        backoff = Backoff(RECONNECT_FIRST_DELAY, RECONNECT_MAX_DELAY)
        while True:
            try:
                await self._first_link_round(server, answer_within=answer_within)
                return
            except CoordinatorLostError as exc:
                delay = backoff.next_delay()
                log.info("%s; the next round of coordinators in %.1f s", exc, delay)
                await asyncio.sleep(delay)

    async def _first_link_round(self, server: int | None, *, answer_within: float) -> None:
        """Each coordinator once, in :func:`coordinator_order`; the last error is raised."""
        order = coordinator_order(self._urls)
        for index, url in enumerate(order):
            last = index == len(order) - 1
            try:
                await self._first_link_via(url, server, answer_within=answer_within, last=last)
                return
            except AuthenticationError:
                raise  # every replica checks credentials alike
            except (BrokerError, OSError, TimeoutError) as exc:
                if last:
                    raise
                why = str(exc) or type(exc).__name__
                log.info("no session through the coordinator at %s (%s); trying the next", url, why)

    async def _first_link_via(
        self, url: str, server: int | None, *, answer_within: float, last: bool
    ) -> None:
        """The first session through the coordinator at ``url``: with ``server``, on that
        server only; otherwise on the coordinator's choice, or on the next server it lists
        when one refuses (full), fails, or does not answer CONNECT within ``answer_within``
        seconds. Unless this is the ``last`` coordinator to try, it too must WELCOME within
        ``answer_within``: an unreachable one must not eat the time the next one needs."""
        welcome_within = None if last else answer_within
        if server is not None:
            await self._open_link(url, server, welcome_within=welcome_within)
            return
        failed: list[int] = []
        while True:
            try:
                await self._open_link(
                    url,
                    None,
                    avoid=failed,
                    answer_within=answer_within,
                    welcome_within=welcome_within,
                )
                return
            except (AuthenticationError, NoServerAvailableError, CoordinatorLostError):
                raise  # the same on every server, or the coordinator's failure, not a server's
            except (BrokerError, TimeoutError) as exc:
                attempt = self._failed_attempt
                if attempt is None:
                    raise  # the coordinator, not a server, failed
                alias, listed = attempt
                failed.append(alias)
                if set(listed) <= set(failed):
                    raise
                why = str(exc) or "no session in time"
                log.info("server %d failed the set-up (%s); trying another", alias, why)

    async def _open_link(
        self,
        url: str,
        server: int | None,
        *,
        avoid: Collection[int] = (),
        answer_within: float | None = None,
        welcome_within: float | None = None,
    ) -> None:
        """A session through a new connection to the coordinator at ``url``.
        ``answer_within`` bounds the wait for the server's first answer, when another
        server could be tried; ``welcome_within`` the wait for the coordinator's WELCOME
        (``/ice-servers`` included), when another coordinator could be tried."""
        self._failed_attempt = None
        try:
            async with asyncio.timeout(welcome_within):
                link = await Link.open(
                    websocket_url(url),
                    self._credentials,
                    server=server,
                    on_frame=self._on_frame,
                    ice_servers=self._ice_servers,
                    avoid=avoid,
                    dropped=self.signalling_dropped,
                    ice_transport_policy=self._ice_transport_policy,
                )
        except TimeoutError:
            if welcome_within is None:
                raise  # the caller's own deadline
            raise TimeoutError(
                f"the coordinator at {url} did not WELCOME within {welcome_within:g} s"
            ) from None
        self._link = link
        self._url = url
        self.server_capabilities = 0
        auth = pb.AuthMessage(
            type=pb.AUTH, role=pb.CLIENT, body=self._credentials, capabilities=self.capabilities
        ).SerializeToString()
        alternatives = set(link.servers) - set(avoid) - {link.server_alias}
        try:
            # The confirming PING is bounded by the connect timeout, not by its own.
            await link.establish(
                auth,
                functools.partial(self.ping, timeout=None),
                answer_within=answer_within if alternatives else None,
            )
        except BaseException:
            self._link = None
            self._failed_attempt = (link.server_alias, link.servers)
            await link.close("set-up failed")
            raise
        link.session.on_close(lambda _s: self._fail_pings())
        if self._subscription is not None:
            link.session.send(self._subscription, reliable=True)

    @property
    def coordinator_url(self) -> str:
        """The URL of the coordinator the current session was made through (while
        reconnecting: the last one that gave a session)."""
        return self._url

    @property
    def coordinator_urls(self) -> tuple[str, ...]:
        """Every coordinator URL the client was given."""
        return self._urls

    @property
    def alias(self) -> int:
        """This client's alias (it changes when the client reconnects)."""
        return self._link.alias if self._link is not None else 0

    @property
    def ice_servers(self) -> list[IceServer]:
        """The STUN/TURN servers of the current session (empty when there is none)."""
        return list(self._link.ice_servers) if self._link is not None else []

    @property
    def server_alias(self) -> int:
        """The comm server of the current session (0 while reconnecting)."""
        return self._link.server_alias if self._link is not None else 0

    @property
    def servers(self) -> list[int]:
        """The coordinator's list of servers when the current session was made, best first."""
        return list(self._link.servers) if self._link is not None else []

    @property
    def session(self) -> Session | None:
        """The current WebRTC session (for diagnostics)."""
        return self._link.session if self._link is not None else None

    # -- staying connected -------------------------------------------------

    async def _supervise(self) -> None:
        """Keep the session alive; replace it when it dies, if reconnecting is on.

        Whatever ends this loop ends the client: an error nobody foresaw closes
        it (readers get :class:`ClosedError`) rather than leaving it neither
        connected nor closed.
        """
        try:
            await self._keep_alive()
        except Exception as exc:
            log.exception("the client's supervisor failed")
            self._end(f"internal error: {exc!r}")

    async def _keep_alive(self) -> None:
        while self._link is not None:
            link = self._link
            await self._watch(link)
            reason = link.session.close_reason
            await link.close(reason)
            if self._reconnect is None:
                self._end(reason)
                return
            log.info("session with server %d lost (%s); reconnecting", link.server_alias, reason)
            self._link = None
            self._emit("reconnecting", reason)
            if not await self._reestablish(self._reconnect, lost=link.server_alias, via=self._url):
                return
            self._emit("reconnected", self)

    async def _watch(self, link: Link) -> None:
        """Return when ``link``'s session has closed or its server went silent."""
        closed = link.session.closed
        if self._keepalive is None:
            await closed.wait()
            return
        keepalive = self._keepalive
        silence = SilenceClock(interval=keepalive.tick, timeout=keepalive.timeout)
        silence.tick(link.session.peer_progress, time.monotonic())
        while not closed.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(closed.wait(), keepalive.tick)
                return
            if silence.tick(link.session.peer_progress, time.monotonic()):
                await link.session.close("server silent; presumed dead")
                return
            if silence.silent_for >= keepalive.interval:
                # Quiet for a while (a publisher hears nothing, and the server did
                # not probe us): ask for an echo.
                self._send_ping_probe(link)

    def _send_ping_probe(self, link: Link) -> None:
        """An unawaited PING: its echo is something heard, which is all the keepalive needs."""
        link.session.send(KEEPALIVE_PING, reliable=True)

    async def _reestablish(self, policy: Reconnect, *, lost: int, via: str) -> bool:
        """Get a new session after losing the one with server ``lost``, made through the
        coordinator at ``via``. Each round tries every coordinator once, ``via`` last
        (its replica may be what failed), without waiting between them; rounds are
        spaced by backoff. Only refused credentials end the client."""
        backoff = Backoff(policy.first_delay, policy.max_delay)
        order = coordinator_order(self._urls, after=via)
        # A server alias means something only to the coordinator that gave it.
        avoid: dict[str, tuple[int, ...]] = {via: (lost,)}
        while True:
            for index, url in enumerate(order):
                last = index == len(order) - 1
                try:
                    async with asyncio.timeout(policy.attempt_timeout):
                        await self._open_link(
                            url,
                            None,
                            avoid=avoid.get(url, ()),
                            welcome_within=None if last else policy.attempt_timeout / 2,
                        )
                except AuthenticationError as exc:
                    self._end(f"credentials refused on reconnect: {exc}")
                    return False
                except (BrokerError, OSError, TimeoutError) as exc:
                    log.info("reconnect through %s failed (%s)", url, str(exc) or repr(exc))
                    continue
                self.reconnects += 1
                return True
            delay = backoff.next_delay()
            log.info("no coordinator gave a session; next round in %.1f s", delay)
            await asyncio.sleep(delay)

    # -- traffic ----------------------------------------------------------

    def _on_frame(self, data: bytes, reliable: bool, *, in_batch: bool = False) -> None:
        try:
            kind = frame_type(data)
            if kind == pb.TOPIC_FW:
                fw = decode_as(data, pb.TopicFWMessage)
                self._deliver(ReceivedMessage(fw.from_alias, fw.body, reliable, fw.topic or None))
            elif kind == pb.TOPIC_IDENTITY_FW:
                ifw = decode_as(data, pb.TopicIdentityFWMessage)
                self._deliver(
                    ReceivedMessage(
                        ifw.from_alias,
                        ifw.body,
                        reliable,
                        ifw.topic or None,
                        ifw.identity,
                        ifw.role,
                    )
                )
            elif kind == pb.BATCH and not in_batch:
                for frame in decode_as(data, pb.BatchMessage).frames:
                    self._on_frame(frame, reliable, in_batch=True)
            elif kind == pb.AUTH:
                self._server_announced(decode_as(data, pb.AuthMessage).capabilities)
            elif kind == pb.PING:
                sent = decode_as(data, pb.PingMessage).time
                waiter = self._pings.pop(sent, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(sent)
        except FrameError as exc:
            log.debug("ignoring a malformed frame: %s", exc)

    def _server_announced(self, capabilities: int) -> None:
        self.server_capabilities = capabilities
        both = capabilities & self.capabilities
        if both & pb.CAPABILITY_BATCH and self._link is not None:
            self._link.session.enable_batching(self._batching, BATCH_MAX_BYTES)

    def _deliver(self, message: ReceivedMessage) -> None:
        self.received += 1
        if self._inbox.full():
            self._inbox.get_nowait()
            self.dropped += 1
        self._inbox.put_nowait(message)

    def _send(self, frame: bytes, reliable: bool, *, immediate: bool = False) -> None:
        link = self._link
        if link is None or link.session.closed.is_set():
            if self._closed_reason:
                raise ClosedError(f"client closed: {self._closed_reason}")
            raise DisconnectedError("the client is reconnecting to another server")
        check_size(frame)
        link.session.send(frame, reliable=reliable, immediate=immediate)

    def _probe(self, reliable: bool) -> tuple[float, asyncio.Future[float]]:
        """Send a PING; its id and the future its echo resolves (or the session's end fails)."""
        # The echo comes back unchanged, so a unique value doubles as the probe's id.
        probe = float(next(self._ping_ids))
        waiter: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        frame = pb.PingMessage(type=pb.PING, time=probe).SerializeToString()
        self._send(frame, reliable, immediate=True)
        self._pings[probe] = waiter
        return probe, waiter

    def subscribe(self, topics: Iterable[str], *, compress: bool = False) -> asyncio.Future[None]:
        """Replace this client's subscriptions with ``topics`` (empty: unsubscribe all).

        ``await client.subscribe(...)`` returns once the server has applied them:
        the PING sent after them on the same ordered channel has come back, so
        messages published to ``topics`` from then on are delivered. The wait
        fails with :class:`DisconnectedError` if the session ends first (the
        subscriptions are restored on whatever server the client reconnects to
        all the same), or :class:`ClosedError` if the client is closed.
        Awaiting is optional: the subscriptions are sent at once either way, and
        a confirmation nobody awaits is not reported when it fails.

        Raises at once (:class:`MessageTooLargeError`, ``ValueError`` for a bad
        topic name) for a list no server would take, which is then not kept;
        while reconnecting it raises :class:`DisconnectedError`, but keeps the
        list for the next session.
        """
        frame = subscription_frame(topics, compress=compress)
        check_size(frame)  # before it is kept: a reconnect sends it again unchecked
        self._subscription = frame
        self._send(frame, True)
        probe, echoed = self._probe(True)
        confirmed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        echoed.add_done_callback(functools.partial(_settle, confirmed))
        confirmed.add_done_callback(functools.partial(self._unconfirmed, probe))
        return confirmed

    def _unconfirmed(self, probe: float, confirmed: asyncio.Future[None]) -> None:
        """A subscription's confirmation settled: stop waiting for its echo if it was
        cancelled, and mark a failure seen (awaiting it is optional)."""
        if confirmed.cancelled():
            self._pings.pop(probe, None)
        else:
            confirmed.exception()

    def publish(self, topic: str, body: bytes | str, *, reliable: bool = True) -> None:
        """Publish ``body`` to every other subscriber of ``topic``."""
        if isinstance(body, str):
            body = body.encode()
        frame = pb.TopicMessage(type=pb.TOPIC, topic=topic, body=body).SerializeToString()
        self._send(frame, reliable)
        self.sent += 1

    def publish_identity(self, topic: str, body: bytes | str, *, reliable: bool = True) -> None:
        """Publish ``body`` stamped by the server with this client's authenticated identity."""
        if isinstance(body, str):
            body = body.encode()
        frame = pb.TopicIdentityMessage(
            type=pb.TOPIC_IDENTITY, topic=topic, body=body
        ).SerializeToString()
        self._send(frame, reliable)
        self.sent += 1

    async def ping(self, *, reliable: bool = True, timeout: float | None = PING_TIMEOUT) -> float:
        """Round-trip time to the comm server, in seconds.

        Raises :class:`PingTimeoutError` when no echo comes within ``timeout``
        seconds (``None``: wait as long as the session lives), and
        :class:`DisconnectedError` when the session ends first. An unreliable
        PING that is lost is only ever answered by the timeout.
        """
        started = time.perf_counter()
        probe, waiter = self._probe(reliable)
        try:
            async with asyncio.timeout(timeout):
                await waiter
        except TimeoutError:
            raise PingTimeoutError(f"no echo of a PING within {timeout:g} s") from None
        finally:
            self._pings.pop(probe, None)
        return time.perf_counter() - started

    async def receive(self) -> ReceivedMessage:
        """The next message; raises :class:`ClosedError` once the client has ended."""
        item = await self._inbox.get()
        if item is _CLOSED:
            self._inbox.put_nowait(_CLOSED)  # let other readers see the end too
            raise ClosedError(f"client closed: {self._closed_reason}")
        assert isinstance(item, ReceivedMessage)
        return item

    async def __aiter__(self) -> AsyncIterator[ReceivedMessage]:
        while True:
            try:
                yield await self.receive()
            except ClosedError:
                return

    # -- closing ----------------------------------------------------------

    def _fail_pings(self, error: ClosedError | None = None) -> None:
        """Fail every PING (and subscription) waiting for an echo: with ``error``, or
        :class:`DisconnectedError` as the session ended."""
        error = error or DisconnectedError("the session with the server ended")
        for waiter in self._pings.values():
            if not waiter.done():
                waiter.set_exception(error)
        self._pings.clear()

    def _end(self, reason: str) -> None:
        """The client is over: wake readers and fail whatever waits."""
        if self._closed_reason:
            return
        self._closed_reason = reason or "closed"
        self._fail_pings(ClosedError(f"client closed: {self._closed_reason}"))
        self._emit("close", self._closed_reason)
        self._batching.close()
        if self._inbox.full():
            self._inbox.get_nowait()
        self._inbox.put_nowait(_CLOSED)

    # -- events -----------------------------------------------------------

    @overload
    def on(
        self, event: Literal["reconnecting", "close"], listener: Callable[[str], object]
    ) -> Callable[[], None]: ...
    @overload
    def on(
        self, event: Literal["reconnected"], listener: Callable[[BrokerClient], object]
    ) -> Callable[[], None]: ...
    def on(self, event: ClientEvent, listener: Callable[[Any], object]) -> Callable[[], None]:
        """Call ``listener`` on every ``event``; returns a function that stops it.

        ``"reconnecting"`` (with the reason): the session was lost and the client
        looks for another. ``"reconnected"`` (with the client): a new session works,
        subscriptions restored (new alias, maybe another server). ``"close"`` (with
        the reason): the client has ended. Listeners run in the event loop and must
        not block it; one that raises is logged and does not stop the others.
        """
        if event not in ("reconnecting", "reconnected", "close"):
            raise ValueError(f"no such event: {event!r}")
        self._listeners.setdefault(event, []).append(listener)
        return functools.partial(self.off, event, listener)

    def off(self, event: ClientEvent, listener: Callable[[Any], object]) -> None:
        """Stop calling ``listener`` on ``event`` (nothing if it was not listening)."""
        with contextlib.suppress(ValueError):
            self._listeners.get(event, []).remove(listener)

    def _emit(self, event: ClientEvent, value: object) -> None:
        for listener in list(self._listeners.get(event, ())):
            try:
                listener(value)
            except Exception:
                log.exception("a listener of %r failed", event)

    @property
    def closed(self) -> bool:
        """Whether the client has ended (it has not while it reconnects)."""
        return bool(self._closed_reason)

    @property
    def close_reason(self) -> str:
        """Why the client ended ("" while it has not)."""
        return self._closed_reason

    async def close(self) -> None:
        """Close the session and the coordinator connection; no reconnect follows."""
        self._batching.flush()  # what was published before close() still goes out
        self._end("closed by the client")
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        if self._link is not None:
            await self._link.close("closed by the client")

    async def __aenter__(self) -> BrokerClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()


def _settle(confirmed: asyncio.Future[None], echoed: asyncio.Future[float]) -> None:
    """Settle a subscription's ``confirmed`` as its PING's ``echoed`` settled."""
    if confirmed.done():
        return
    if echoed.cancelled():
        confirmed.cancel()
    elif (error := echoed.exception()) is not None:
        confirmed.set_exception(error)
    else:
        confirmed.set_result(None)
