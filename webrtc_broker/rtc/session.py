"""One WebRTC peer connection carrying the broker's two data channels.

docs/protocol.md fixes the roles: the side that receives CONNECT creates the
channels and the offer (:meth:`Session.create_offer`); the side that sent
CONNECT answers (:meth:`Session.accept_offer`). aiortc gathers every
candidate before it returns a local description, so this side never trickles;
candidates trickled by the remote side (browsers do) are held until the remote
description is set.

Given a :class:`~webrtc_broker.rtc.candidates.CandidatePolicy` (a comm server's
ports, advertised addresses and interface filters), a session gathers its host
candidates by it; without one, aioice gathers as it always does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from enum import StrEnum

from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCIceCandidate,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
)

from webrtc_broker.limits import MAX_CANDIDATE_BYTES, MAX_CANDIDATES
from webrtc_broker.rtc.aiortc_internals import acknowledged_tsn, install_gathering
from webrtc_broker.rtc.candidates import CandidatePolicy
from webrtc_broker.rtc.signaling import (
    SignalingError,
    candidate_from_json,
    description_from_json,
    description_to_json,
)
from webrtc_broker.rtc.writer import MAX_QUEUE_BYTES, ChannelWriter, FlushScheduler, QueueOverflow

log = logging.getLogger(__name__)

RELIABLE = "reliable"
UNRELIABLE = "unreliable"

FrameHandler = Callable[[bytes, bool], None]
"""Called with each received frame and whether it came on the reliable channel."""


class SessionClosed(Exception):
    """The session closed before it was established."""


class CandidateRefused(SignalingError):
    """A trickled candidate above the session's budget (count or size)."""


class SessionEnd(StrEnum):
    """What ended a session, when the session itself noticed."""

    CLOSED = "closed"
    """Its owner closed it (the owner knows why)."""
    CHANNEL_CLOSED = "channel_closed"
    """The peer closed a data channel."""
    CONNECTION_FAILED = "connection_failed"
    """ICE or DTLS failed, or the peer connection closed."""
    SLOW_PEER = "slow_peer"
    """The reliable writer queue overflowed."""


class Session:
    """A peer connection, its two channel writers and its lifecycle."""

    def __init__(
        self,
        *,
        on_frame: FrameHandler,
        ice_servers: Sequence[RTCIceServer] = (),
        reliable_queue_frames: int = 4096,
        unreliable_queue_frames: int = 256,
        buffered_high_bytes: int = 1024 * 1024,
        unreliable_high_bytes: int = 64 * 1024,
        max_queue_bytes: int = MAX_QUEUE_BYTES,
        max_candidates: int = MAX_CANDIDATES,
        candidate_policy: CandidatePolicy | None = None,
        relay_only: bool = False,
    ) -> None:
        self._on_frame = on_frame
        self._candidate_policy = candidate_policy
        self._release_gathering: Callable[[], None] | None = None
        self._queue_limits = (
            reliable_queue_frames,
            unreliable_queue_frames,
            buffered_high_bytes,
            unreliable_high_bytes,
            max_queue_bytes,
        )
        # An explicit list, even empty: given None, aiortc falls back to a public
        # STUN server, which a broker must never contact unasked.
        # relay_only: TURN-relayed candidates only (the WebRTC iceTransportPolicy "relay").
        policy = RTCIceTransportPolicy.RELAY if relay_only else RTCIceTransportPolicy.ALL
        self.pc = RTCPeerConnection(
            RTCConfiguration(iceServers=list(ice_servers), iceTransportPolicy=policy)
        )
        self.reliable: ChannelWriter | None = None
        self.unreliable: ChannelWriter | None = None
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.closed = asyncio.Event()
        self.close_reason = ""
        self.end = SessionEnd.CLOSED
        self._close_callbacks: list[Callable[[Session], None]] = []
        self._remote_set = False
        self._held_candidates: list[bytes] = []
        self._candidates_left = max_candidates
        self.candidates_refused = 0
        """Held candidates that did not parse or apply once the description was set."""
        self._close_task: asyncio.Task[None] | None = None
        self.received = 0
        """Data-channel messages received on both channels."""
        self.pc.on("connectionstatechange", self._on_connection_state)
        self.pc.on("datachannel", self._adopt_channel)

    # -- set-up -----------------------------------------------------------

    async def create_offer(self) -> bytes:
        """Create both channels and return the offer's JSON (the CONNECT target's part)."""
        self._adopt_channel(self.pc.createDataChannel(RELIABLE, ordered=True))
        self._adopt_channel(self.pc.createDataChannel(UNRELIABLE, ordered=False, maxRetransmits=0))
        self._prepare_gathering()
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return description_to_json(self.pc.localDescription)

    async def accept_offer(self, offer: bytes) -> bytes:
        """Apply the remote offer and return the answer's JSON (the CONNECT sender's part)."""
        await self.pc.setRemoteDescription(description_from_json(offer, "offer"))
        await self._remote_description_set()
        self._prepare_gathering()
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        return description_to_json(self.pc.localDescription)

    async def accept_answer(self, answer: bytes) -> None:
        await self.pc.setRemoteDescription(description_from_json(answer, "answer"))
        await self._remote_description_set()

    def _prepare_gathering(self) -> None:
        """Hand host-candidate gathering to the policy, before the description that
        carries the ufrag and the candidates is created."""
        policy = self._candidate_policy
        if policy is None or policy.is_default or self._release_gathering is not None:
            return
        if self.closed.is_set():
            return  # closed while the offer was applied: nothing may outlive close()
        self._release_gathering = install_gathering(self.pc, policy)

    async def add_candidate(self, candidate: bytes) -> None:
        """Add a trickled remote candidate, holding it until the remote description is set.

        The candidates come from another party, so they have a budget: at most
        ``max_candidates`` per session and :data:`MAX_CANDIDATE_BYTES` each, which
        bounds what a session that is never answered can make us hold.
        """
        if len(candidate) > MAX_CANDIDATE_BYTES:
            raise CandidateRefused(f"candidate of {len(candidate)} bytes")
        if self._candidates_left <= 0:
            raise CandidateRefused("too many candidates")
        self._candidates_left -= 1
        if not self._remote_set:
            self._held_candidates.append(candidate)
            return
        await self._apply_candidate(candidate_from_json(candidate))

    async def _apply_candidate(self, candidate: RTCIceCandidate | None) -> None:
        """Give a parsed candidate to ICE, unless it names an mDNS host.

        Browsers hide their host addresses behind ``<uuid>.local`` names. Resolving
        one means multicast queries from a socket on port 5353 (a second socket
        beside a single UDP port, and queries leaking onto the host's LAN), and
        cannot succeed across a NAT anyway. The browser's checks reach this side
        from its real address, which ICE then learns as peer-reflexive, so the
        name is worth nothing here.
        """
        if candidate is not None and candidate.ip.endswith(".local"):
            self.candidates_refused += 1
            return
        await self.pc.addIceCandidate(candidate)

    async def _remote_description_set(self) -> None:
        self._remote_set = True
        held, self._held_candidates = self._held_candidates, []
        for candidate in held:
            # One bad candidate held from before the description must not fail the
            # offer or answer with it: it is worth nothing, the others may work.
            try:
                await self._apply_candidate(candidate_from_json(candidate))
            except Exception as exc:
                self.candidates_refused += 1
                log.debug("dropped a held candidate: %r", exc)

    async def wait_open(self, timeout: float) -> None:
        """Wait until both channels are open; raises on timeout or close."""
        await asyncio.wait_for(asyncio.shield(self.opened), timeout)

    def _adopt_channel(self, channel: RTCDataChannel) -> None:
        reliable_frames, unreliable_frames, high, unreliable_high, queue_bytes = self._queue_limits
        if channel.label == RELIABLE and self.reliable is None:
            self.reliable = ChannelWriter(
                channel,
                reliable=True,
                max_frames=reliable_frames,
                high_bytes=high,
                max_queue_bytes=queue_bytes,
                on_overflow=self._overflowed,
            )
            kind = True
        elif channel.label == UNRELIABLE and self.unreliable is None:
            self.unreliable = ChannelWriter(
                channel, reliable=False, max_frames=unreliable_frames, high_bytes=unreliable_high
            )
            kind = False
        else:
            log.debug("ignoring unexpected data channel %r", channel.label)
            channel.close()
            return

        on_frame = self._on_frame

        def on_message(data: bytes | str) -> None:
            self.received += 1
            if isinstance(data, bytes):
                on_frame(data, kind)
            else:
                on_frame(data.encode(), kind)

        channel.on("message", on_message)
        channel.on("open", self._check_open)
        channel.on(
            "close",
            lambda: self.close_soon(f"{channel.label} channel closed", SessionEnd.CHANNEL_CLOSED),
        )
        self._check_open()

    def _check_open(self) -> None:
        if self.opened.done():
            return
        if self.reliable and self.unreliable and self.reliable.is_open and self.unreliable.is_open:
            self.opened.set_result(None)

    def _on_connection_state(self) -> None:
        if self.pc.connectionState in ("failed", "closed"):
            self.close_soon(f"connection {self.pc.connectionState}", SessionEnd.CONNECTION_FAILED)

    # -- traffic ----------------------------------------------------------

    def send(self, frame: bytes, *, reliable: bool, immediate: bool = False) -> None:
        """Send a frame; a reliable queue overflow closes the session.

        ``immediate`` skips the batch window: an RTT probe must not wait in it.
        """
        writer = self.reliable if reliable else self.unreliable
        if writer is None:
            return
        try:
            if immediate:
                writer.send_now(frame)
            else:
                writer.send(frame)
        except QueueOverflow as exc:
            self._overflowed(exc)

    def _overflowed(self, exc: QueueOverflow) -> None:
        self.close_soon(f"slow peer: {exc}", SessionEnd.SLOW_PEER)

    def enable_batching(self, scheduler: FlushScheduler, max_bytes: int) -> None:
        """Batch outgoing frames on both channels (the peer accepts BATCH frames)."""
        for writer in (self.reliable, self.unreliable):
            if writer is not None:
                writer.enable_batching(scheduler, max_bytes)

    @property
    def sent(self) -> int:
        """Data-channel messages handed to aiortc on both channels."""
        return sum(w.sent for w in (self.reliable, self.unreliable) if w is not None)

    @property
    def peer_progress(self) -> tuple[int, int]:
        """Changes whenever the peer shows life: a message from it, or its SCTP
        acknowledgement of more of ours (see :mod:`webrtc_broker.rtc.liveness`)."""
        return self.received, acknowledged_tsn(self.pc)

    @property
    def queue_depth(self) -> int:
        return sum(w.depth for w in (self.reliable, self.unreliable) if w is not None)

    @property
    def dropped(self) -> int:
        return sum(w.dropped for w in (self.reliable, self.unreliable) if w is not None)

    # -- teardown ---------------------------------------------------------

    def on_close(self, callback: Callable[[Session], None]) -> None:
        """Register ``callback(session)``, called once when the session closes."""
        self._close_callbacks.append(callback)

    def close_soon(self, reason: str, end: SessionEnd = SessionEnd.CLOSED) -> None:
        """Close from synchronous code (event handlers); the session owns the task."""
        if self._close_task is None and not self.closed.is_set():
            self._close_task = asyncio.get_running_loop().create_task(self.close(reason, end))

    async def wait_closed(self) -> None:
        """Wait for a close started by :meth:`close_soon` to finish."""
        if self._close_task is not None:
            await asyncio.shield(self._close_task)

    async def close(self, reason: str = "closed", end: SessionEnd = SessionEnd.CLOSED) -> None:
        if self.closed.is_set():
            return
        self.close_reason = reason
        self.end = end
        self.closed.set()
        if not self.opened.done():
            self.opened.set_exception(SessionClosed(reason))
            self.opened.exception()  # mark retrieved: nobody may be waiting
        for callback in self._close_callbacks:
            try:
                callback(self)
            except Exception:
                log.exception("session close callback failed")
        self._close_callbacks.clear()
        try:
            with contextlib.suppress(Exception):
                await self.pc.close()
        finally:
            # The mux forgets the ufrag and the addresses even if aiortc's close failed.
            if self._release_gathering is not None:
                self._release_gathering()
