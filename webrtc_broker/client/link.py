"""One attempt at being connected: a coordinator WebSocket plus a session with one server.

A :class:`BrokerClient` owns one link at a time and replaces it when the
server goes away; everything here is about getting a single link up, as
docs/protocol.md describes: ``/connect``, WELCOME, CONNECT, answer the server's
offer, open channels, AUTH.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import ssl
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Sequence
from enum import StrEnum
from typing import Any, Literal
from urllib.parse import urlencode

import httpx
from pydantic import TypeAdapter
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus, WebSocketException

from webrtc_broker.client.errors import (
    AuthenticationError,
    BrokerError,
    ClosedError,
    CoordinatorUnavailableError,
    NoServerAvailableError,
    ServerFullError,
)
from webrtc_broker.config import IceServer
from webrtc_broker.limits import ICE_SERVERS_TIMEOUT, REFUSAL_GRACE
from webrtc_broker.rtc import FrameHandler, Session, SessionClosed, rtc_ice_servers
from webrtc_broker.rtc.handshake import Handshake, PeerState, Signal
from webrtc_broker.rtc.signaling import candidate_from_json
from webrtc_broker.wire import FrameError, decode_as, frame_type
from webrtc_broker.wire import broker_pb2 as pb

log = logging.getLogger(__name__)


class CoordinatorLostError(BrokerError):
    """The coordinator connection closed before the session was up.

    Neither the server nor the credentials failed: another connection, to
    another replica or to the same Service (which routes it to a live one),
    can carry the set-up. Not exported: callers see a :class:`BrokerError`.
    """


_ICE_SERVER_LIST = TypeAdapter(list[IceServer])

IceTransportPolicy = Literal["all", "relay"]
"""Which local candidates a session may use: ``"relay"`` only TURN-relayed ones
(the WebRTC ``iceTransportPolicy``), for networks that must not see the peers'
addresses, or to prove that TURN works."""


class SignallingDrop(StrEnum):
    """Why a frame from the coordinator was dropped (``BrokerClient.signalling_dropped``).

    Whatever the coordinator relays (a server's offer, candidates, refusals)
    is another party's input: a frame this link cannot use is counted and
    dropped, and costs at most this link's session, never its reader.
    """

    MALFORMED = "malformed"
    """Not a decodable broker frame."""
    UNEXPECTED_TYPE = "unexpected_type"
    """A valid frame a server never sends a client (an ANSWER, a CONNECT, ...)."""
    WRONG_SENDER = "wrong_sender"
    """From a server other than the one this link asked for a session."""
    REPEATED_OFFER = "repeated_offer"
    """An offer after the one this link already answered (or failed to): the
    handshake takes one."""
    REJECTED = "rejected"
    """The WebRTC stack refused it (a description or candidate it cannot use), or
    the handshake did (a candidate to a session that failed its offer)."""


def ice_servers_url(url: str) -> str:
    """The coordinator's ``/ice-servers`` URL, from its ``ws(s)://`` (or ``http(s)://``) URL."""
    base = url.rstrip("/")
    if base.startswith("ws"):
        base = "http" + base[2:]
    return f"{base}/ice-servers"


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """httpx's default TLS settings, built once: loading the CA bundle costs about
    30 ms of CPU, which a client making a connection per session would pay each time."""
    return httpx.create_ssl_context()


async def fetch_ice_servers(url: str, credentials: bytes = b"") -> list[IceServer]:
    """The coordinator's STUN/TURN servers, with TURN credentials fresh for this session.

    ``credentials`` (the client's token) go as ``Authorization: Bearer``: with
    client tokens on, the coordinator issues TURN credentials only against a
    valid one. Whatever goes wrong gives no servers (a refused token, a rate
    limit, an old coordinator without the endpoint): the session then tries
    without TURN, and a refused token is reported by ``/connect``, which checks
    it the same way and says why.
    """
    token = credentials.decode(errors="replace")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        async with httpx.AsyncClient(timeout=ICE_SERVERS_TIMEOUT, verify=_tls_context()) as http:
            response = await http.get(ice_servers_url(url), headers=headers)
            if response.status_code == 401:
                log.info("the coordinator refused the credentials for /ice-servers (HTTP 401)")
                return []
            if response.status_code == 429:
                log.warning(
                    "the coordinator rate-limits TURN credentials (retry after %s s): "
                    "this session gets no ICE servers",
                    response.headers.get("retry-after", "?")[:8],
                )
                return []
            response.raise_for_status()
            return _ICE_SERVER_LIST.validate_python(response.json())
    except (httpx.HTTPError, ValueError) as exc:  # ValueError: bad JSON, bad entries
        # Never log the body: it carries TURN credentials.
        log.debug("no ICE servers from the coordinator: %s", type(exc).__name__)
        return []


CREDENTIALS_REFUSED = frozenset({401, 403})
NOT_NOW = frozenset({429, 503})
"""Statuses of a coordinator that will take the connection later (see coordinator.refusals)."""


def coordinator_refusal(status: int, body: bytes | bytearray | None) -> BrokerError:
    """The error for a coordinator that answered the upgrade with HTTP ``status``.

    Only refused credentials are final; any other refusal may pass, and the
    reconnect loop retries everything but :class:`AuthenticationError`.
    """
    # The body names the coordinator's reason (shutting_down, ...); a proxy's may be a page.
    reason = bytes(body or b"")[:64].decode(errors="replace").strip()
    detail = f"HTTP {status}: {reason}" if reason.isidentifier() else f"HTTP {status}"
    if status in CREDENTIALS_REFUSED:
        return AuthenticationError(f"the coordinator refused the credentials ({detail})")
    if status in NOT_NOW:
        return CoordinatorUnavailableError(
            f"the coordinator cannot take the connection now ({detail})", status
        )
    return BrokerError(f"the coordinator refused the connection ({detail})")


class Link:
    """A coordinator WebSocket and the session with the server it pointed us to."""

    def __init__(
        self,
        ws: ClientConnection,
        alias: int,
        server_alias: int,
        on_frame: FrameHandler,
        ice_servers: Sequence[IceServer] = (),
        *,
        servers: Sequence[int],
        dropped: Counter[str] | None = None,
        ice_transport_policy: IceTransportPolicy = "all",
    ) -> None:
        self.ws = ws
        self.servers = list(servers)
        """Every server the coordinator listed in its WELCOME."""
        self.ice_servers = list(ice_servers)
        """The STUN/TURN servers of this link's session."""
        self.alias = alias
        self.server_alias = server_alias
        self.session = Session(
            on_frame=on_frame,
            ice_servers=rtc_ice_servers(self.ice_servers),
            relay_only=ice_transport_policy == "relay",
        )
        self.handshake = Handshake(self.session, PeerState.AWAITING_OFFER)
        """This link sends CONNECT: it answers the server's offer."""
        self.refusal: asyncio.Future[BrokerError] = asyncio.get_running_loop().create_future()
        self.answered = asyncio.Event()
        """Set when the server answers CONNECT, with an OFFER or a refusal."""
        self.dropped: Counter[str] = Counter() if dropped is None else dropped
        """Coordinator frames dropped, by :class:`SignallingDrop` (shared with the client)."""
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls,
        url: str,
        credentials: bytes,
        *,
        server: int | None,
        on_frame: FrameHandler,
        ice_servers: Sequence[IceServer] | None = None,
        avoid: Collection[int] = (),
        dropped: Counter[str] | None = None,
        ice_transport_policy: IceTransportPolicy = "all",
    ) -> Link:
        """Connect to the coordinator and create the session object (not yet connected).

        Without ``ice_servers`` the session uses those the coordinator hands out,
        fetched now: TURN credentials expire, so every link asks for its own.
        Without ``server`` the coordinator's first choice is taken, passing over
        the servers in ``avoid`` when another one is listed.
        """
        if ice_servers is None:
            ice_servers = await fetch_ice_servers(url, credentials)
        query = urlencode({"token": credentials.decode(errors="replace")}) if credentials else ""
        endpoint = f"{url.rstrip('/')}/connect" + (f"?{query}" if query else "")
        try:
            ws = await connect(endpoint, max_size=1024 * 1024)
        except InvalidStatus as exc:
            raise coordinator_refusal(exc.response.status_code, exc.response.body) from exc
        except (OSError, WebSocketException) as exc:
            raise BrokerError(f"cannot reach the coordinator at {url}: {exc}") from exc
        try:
            welcome = await _welcome(ws, url)
            servers = list(welcome.available_servers)
            if not servers:
                raise NoServerAvailableError("the coordinator has no comm server registered")
            if server is not None and server not in servers:
                raise NoServerAvailableError(f"server {server} is not registered: {servers}")
            chosen = server if server is not None else _pick(servers, avoid)
            return cls(
                ws,
                welcome.alias,
                chosen,
                on_frame,
                ice_servers,
                servers=servers,
                dropped=dropped,
                ice_transport_policy=ice_transport_policy,
            )
        except BaseException:
            await ws.close()
            raise

    async def establish(
        self,
        auth: bytes,
        confirm: Callable[[], Awaitable[Any]],
        *,
        answer_within: float | None = None,
    ) -> None:
        """CONNECT, set up WebRTC, send ``auth`` and wait for ``confirm()`` (a PING echo).

        The protocol has no AUTH acknowledgement; the PING that follows AUTH on
        the same ordered channel can only be echoed once the AUTH was accepted.
        With ``answer_within``, a server that neither offers nor refuses in that
        many seconds fails the set-up (:class:`TimeoutError`): it is frozen, or
        gone without the coordinator knowing yet. A slow set-up after the offer
        (ICE gathering against an unanswering STUN server) is not cut short.
        """
        self._reader = asyncio.get_running_loop().create_task(
            self._read_coordinator(), name=f"client-{self.alias}-coordinator"
        )
        connect = pb.ConnectMessage(
            type=pb.CONNECT, from_alias=self.alias, to_alias=self.server_alias
        )
        try:
            await self.ws.send(connect.SerializeToString())
        except WebSocketException as exc:
            raise CoordinatorLostError(
                f"the coordinator connection closed before CONNECT: {exc}"
            ) from exc
        if answer_within is not None:
            try:
                await asyncio.wait_for(self.answered.wait(), answer_within)
            except TimeoutError:
                raise TimeoutError(
                    f"server {self.server_alias} did not answer within {answer_within:g} s"
                ) from None
        try:
            await self._unless_refused(self.session.opened)
            self.session.send(auth, reliable=True)
            await self._unless_refused(asyncio.ensure_future(confirm()))
            self.handshake.move(PeerState.ESTABLISHED)
        except (SessionClosed, ClosedError) as exc:
            # The server closes a refused session; its reason travels via the coordinator.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(REFUSAL_GRACE):
                    raise await asyncio.shield(self.refusal) from exc
            raise BrokerError(f"session closed during set-up: {exc}") from exc

    async def _unless_refused(self, step: asyncio.Future[Any]) -> None:
        """Wait for ``step``, unless the server refuses first."""
        done, _ = await asyncio.wait({step, self.refusal}, return_when=asyncio.FIRST_COMPLETED)
        if self.refusal in done:
            if not step.done():
                step.cancel()
            raise self.refusal.result()
        step.result()

    async def _read_coordinator(self) -> None:
        with contextlib.suppress(WebSocketException):
            async for frame in self.ws:
                if isinstance(frame, bytes):
                    await self._on_coordinator_frame(frame)
        if self.handshake.state is not PeerState.ESTABLISHED and not self.refusal.done():
            # The server drops a set-up it can no longer signal through this coordinator,
            # and a client whose DTLS has not started would only hear of it at its
            # timeout: fail now, so that a connect moves on to another coordinator.
            self.answered.set()
            self.refusal.set_result(
                CoordinatorLostError("the coordinator connection closed during set-up")
            )

    async def _on_coordinator_frame(self, data: bytes) -> None:
        """Handle one frame; whatever it holds, the reader goes on to the next."""
        try:
            drop = await self._handle_coordinator_frame(data)
        except FrameError as exc:
            drop = SignallingDrop.MALFORMED
            log.debug("dropping a malformed coordinator frame: %s", exc)
        except WebSocketException:
            raise  # the coordinator connection is gone: the reader ends with it
        except Exception as exc:  # aiortc's errors are of many types
            drop = SignallingDrop.REJECTED
            log.debug("dropping a coordinator frame WebRTC refused: %r", exc)
        if drop is not None:
            self.dropped[drop] += 1

    async def _handle_coordinator_frame(self, data: bytes) -> SignallingDrop | None:
        """Act on one frame; why it was dropped, or None if it was used."""
        kind = frame_type(data)
        if kind == pb.CONNECTION_REFUSED:
            return self._refused(decode_as(data, pb.ConnectionRefusedMessage))
        if kind not in (pb.WEBRTC_OFFER, pb.WEBRTC_ICE_CANDIDATE):
            return SignallingDrop.UNEXPECTED_TYPE
        message = decode_as(data, pb.WebRtcMessage)
        if message.from_alias != self.server_alias:
            return SignallingDrop.WRONG_SENDER
        if kind == pb.WEBRTC_OFFER:
            self.answered.set()
            # A session takes one offer; another would renegotiate a live one.
            if not self.handshake.take(Signal.OFFER):
                return SignallingDrop.REPEATED_OFFER
            await self._answer(message.data)
            return None
        # Parsed now even when the session holds it for later: a bad candidate
        # held until the offer would otherwise fail the offer with it.
        candidate_from_json(message.data)
        if not self.handshake.take(Signal.CANDIDATE):
            return SignallingDrop.REJECTED
        await self.handshake.add_candidate(message.data)
        return None

    async def _answer(self, offer: bytes) -> None:
        try:
            answer = await self.handshake.answer(offer)
        except Exception as exc:
            # Without an answer there is no session: fail the set-up now, not at a timeout.
            self.handshake.close(f"cannot answer the server's offer: {exc!r}")
            await self.session.wait_closed()
            raise
        if answer is not None:  # None: the link closed meanwhile
            await self.ws.send(
                pb.WebRtcMessage(
                    type=pb.WEBRTC_ANSWER,
                    from_alias=self.alias,
                    to_alias=self.server_alias,
                    data=answer,
                ).SerializeToString()
            )

    def _refused(self, message: pb.ConnectionRefusedMessage) -> SignallingDrop | None:
        if message.from_alias != self.server_alias:
            return SignallingDrop.WRONG_SENDER
        self.answered.set()
        if self.refusal.done():
            return None
        detail = message.data.decode(errors="replace")
        error: BrokerError
        if message.reason == pb.SERVER_FULL:
            error = ServerFullError(f"server {self.server_alias} is full")
        elif message.reason == pb.AUTH_FAILED:
            error = AuthenticationError(f"server {self.server_alias} refused: {detail or 'auth'}")
        else:
            error = BrokerError(f"server {self.server_alias} refused the session: {detail}")
        self.refusal.set_result(error)
        return None

    async def close(self, reason: str) -> None:
        self.handshake.close(reason)
        await self.session.wait_closed()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self.ws.close()


def _pick(servers: list[int], avoid: Collection[int]) -> int:
    """The coordinator's first choice, unless that is a server that just failed us
    and there is another: a frozen server stays registered until the coordinator's
    own keepalive notices, and an attempt sent back to it would hang there."""
    return next((alias for alias in servers if alias not in avoid), servers[0])


async def _welcome(ws: ClientConnection, url: str) -> pb.WelcomeMessage:
    """The coordinator's first frame. A coordinator that dies (or answers garbage)
    between the upgrade and its WELCOME is a failed attempt like any other: a
    :class:`BrokerError`, which the reconnect loop retries."""
    try:
        return decode_as(await ws.recv(decode=False), pb.WelcomeMessage)
    except (WebSocketException, FrameError) as exc:
        raise BrokerError(f"the coordinator at {url} sent no WELCOME: {exc}") from exc
