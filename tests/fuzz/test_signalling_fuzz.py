"""Fuzzing what a hostile client can send a live broker: signalling, and frame order.

The other fuzzers drive one handler in process. These attack real processes
(a coordinator and two comm servers, started once for the module, see
:mod:`tests.fuzz.live`) the way a client on the network can:

* :func:`test_hostile_signalling`: one client connection at the coordinator
  sends CONNECT, WEBRTC_OFFER, WEBRTC_ANSWER, WEBRTC_ICE_CANDIDATE,
  CONNECTION_REFUSED (and garbage) in any order, repeated or flooded,
  malformed (:mod:`tests.fuzz.mutations`, and edits of real SDP), aimed at
  either server, at another client, at itself, at nobody. It may wait for a
  server's offer first, answer it for real (a genuine aiortc answer, so the
  session really connects) or not, and start over on a new connection.
* :func:`test_hostile_session`: a client with a real session (:class:`RawPeer`)
  sends AUTH early, late, twice, as a server; SUBSCRIPTION, TOPIC, PING and
  BATCH frames on both channels in any order; mutated frames and text; and
  signalling about its own session (its answer again, candidates, a second
  CONNECT, a refusal).

The property, checked after every example: every process still runs; no
server counted an ``internal_error`` or ``signalling_internal_error``, nor
the coordinator an ``internal_error``; no process logged a traceback; both
servers kept their coordinator link (same alias, one coordinator connection
each); a fresh SDK client on each server connects within 10 s and exchanges
messages with the other; and a well-behaved pair of clients on different
servers, publishing 50 reliable messages a second each way through every
attack, has lost nothing and kept its sessions.

Bounded by default (``make test``); ``WEBRTC_BROKER_FUZZ_EXAMPLES=N`` runs N
examples per test instead. Examples are derandomized and there is no example
database: every run tries the same cases.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Iterator
from typing import NamedTuple

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

from tests.fuzz.live import SERVER_SECRET, World, report_line
from tests.fuzz.mutations import Mutation, fuzz_settings, mutate, mutations_strategy
from tests.rawpeer import RawPeer
from webrtc_broker.rtc import Session
from webrtc_broker.wire import FrameError, decode_as, frame_type
from webrtc_broker.wire import broker_pb2 as pb
from webrtc_broker.wire.codec import encode_batch
from webrtc_broker.wire.subscription import subscription_frame

EXAMPLES = int(os.environ.get("WEBRTC_BROKER_FUZZ_EXAMPLES", "0"))
SIGNALLING_EXAMPLES = EXAMPLES or 16
SESSION_EXAMPLES = EXAMPLES or 12
EXAMPLE_TIMEOUT = 90.0
OFFER_WAIT = 1.0
"""Seconds an attacker waits for a server's offer to a CONNECT it sent. Often none comes:
the coordinator drops CONNECTs past 4 unanswered ones per connection, and a server
answers only the last of several CONNECTs from one party (each replaces the previous
session), so the others stay unanswered and a party that sent several quickly has
fewer left in flight."""

pytestmark = [
    pytest.mark.timeout(120 + 4 * (SIGNALLING_EXAMPLES + SESSION_EXAMPLES)),
    # The broker's clients run on the world's loop thread while hypothesis draws
    # examples, and aiortc uses the global random module there: hypothesis sees
    # its state change under it and warns, though nothing here draws from it.
    pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning"),
]


# -- real descriptions and candidates to start from -------------------------


class Templates(NamedTuple):
    """A real offer, answer and candidate, made by aiortc once for the module."""

    offer: bytes
    answer: bytes
    candidate: bytes

    def __repr__(self) -> str:  # hypothesis prints the arguments of a failing example
        return "Templates(...)"


async def make_templates() -> Templates:
    offerer, answerer = Session(on_frame=_ignore), Session(on_frame=_ignore)
    try:
        offer = await offerer.create_offer()
        answer = await answerer.accept_offer(offer)
    finally:
        await offerer.close()
        await answerer.close()
    sdp = json.loads(answer)["sdp"]
    line = next(x for x in sdp.splitlines() if x.startswith("a=candidate:"))
    candidate = {"candidate": line.removeprefix("a="), "sdpMid": "0", "sdpMLineIndex": 0}
    return Templates(offer, answer, json.dumps(candidate).encode())


def _ignore(_data: bytes, _reliable: bool) -> None:
    pass


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    instance = World(tmp_path_factory.mktemp("signalling-fuzz"))
    try:
        with logs_on_failure(instance):
            instance.run(instance.start(), 60)
        yield instance
    finally:
        instance.run(instance.stop(), 60)
        instance.thread.close()


@pytest.fixture(scope="module")
def templates(world: World) -> Templates:
    return world.run(make_templates(), 30)


@contextlib.contextmanager
def logs_on_failure(world: World) -> Iterator[None]:
    try:
        yield
    except BaseException:
        print(world.logs())
        raise


async def verify(world: World) -> None:
    """The property: servers intact, the pair whole, fresh clients served."""
    assert world.pair is not None
    await world.check_servers()
    await world.pair.check()
    await world.check_fresh_clients()
    await world.check_servers()


def _json(value: object) -> bytes:
    return json.dumps(value).encode()


def edit_sdp(sdp: str, extra: bytes) -> str:
    """Drop, repeat or rewrite one line of ``sdp``, as ``extra`` says."""
    lines = sdp.split("\r\n")
    if len(extra) < 2:
        return sdp
    operation, index = extra[0] % 3, extra[1] % len(lines)
    if operation == 0:
        del lines[index]
    elif operation == 1:
        lines.insert(index, lines[index])
    else:
        key = lines[index].split(":", 1)[0] if ":" in lines[index] else lines[index][:2]
        lines[index] = key + ":" + extra[2:].decode("latin-1")
    return "\r\n".join(lines)


def candidate_payload(variant: str, real: bytes, extra: bytes) -> bytes:
    """A WEBRTC_ICE_CANDIDATE payload: real, end-of-candidates, or broken in some way."""
    base = json.loads(real)
    line: str = base["candidate"]
    parts = line.split()
    edits: dict[str, dict[str, object]] = {
        "real": {},
        "end": {"candidate": ""},
        "mdns": {"candidate": " ".join([*parts[:4], "0b5d9a1e-3c2f-4e6a.local", *parts[5:]])},
        "ipv6": {"candidate": " ".join([*parts[:4], "::1", *parts[5:]])},
        "tcp": {"candidate": line.replace(" udp ", " tcp ") + " tcptype active"},
        "port_0": {"candidate": " ".join([*parts[:5], "0", *parts[6:]])},
        "bad_line": {"candidate": "candidate:garbage"},
        "no_mid": {"sdpMid": None, "sdpMLineIndex": None},
        "mline_9": {"sdpMid": None, "sdpMLineIndex": 9},
        "mid_x": {"sdpMid": "x", "sdpMLineIndex": None},
        "typed_wrong": {"candidate": 7, "sdpMid": [], "sdpMLineIndex": "0"},
        "edit": {"candidate": "candidate:" + extra.decode("latin-1")},
        "huge": {"candidate": line + " x" * 600},
    }
    if variant == "not_json":
        return b"\xffnot json" + extra
    if variant == "list":
        return _json([base])
    return _json({**base, **edits[variant]})


# -- the signalling attacker --------------------------------------------------

TARGETS = ("server0", "server0", "server0", "server1", "server1", "self", "pair", "unknown", "zero")
DESCRIPTIONS = (
    "real",
    "genuine",
    "genuine_trickle",
    "swapped",
    "echo",
    "echo_as_answer",
    "edit",
    "no_sdp",
    "not_json",
    "empty",
    "pranswer",
    "huge",
    "oversize",
)
CANDIDATES = (
    "real",
    "end",
    "mdns",
    "ipv6",
    "tcp",
    "port_0",
    "bad_line",
    "no_mid",
    "mline_9",
    "mid_x",
    "typed_wrong",
    "edit",
    "huge",
    "not_json",
    "list",
)
REFUSALS = ("server_full", "auth_failed", "unknown", "out_of_range")


class Act(NamedTuple):
    """One step of a hostile client at the coordinator.

    ``kind`` is a frame type to send (``connect``, ``offer``, ``answer``,
    ``candidate``, ``refused``, ``ping``, ``raw``, ``text``) or a move
    (``await_offer``: wait for the target's offer to a CONNECT we sent;
    ``handshake``: CONNECT, then that;
    ``reconnect``: a new coordinator connection; ``flood``: ``repeat``
    frames of the kind ``variant`` names, from a second connection;
    ``sleep``). ``mutations`` are applied to the encoded frame; it is sent
    ``repeat`` times.
    """

    kind: str
    target: str = "server0"
    variant: str = "real"
    mutations: tuple[Mutation, ...] = ()
    repeat: int = 1
    extra: bytes = b""


class SignallingAttacker:
    """A client connection at the coordinator that speaks only signalling, as it likes."""

    def __init__(self, world: World, templates: Templates) -> None:
        self.world = world
        self.templates = templates
        self.ws: ClientConnection | None = None
        self.alias = 0
        self.offers: dict[int, list[bytes]] = {}
        """Offers received, by the sending server's alias."""
        self.awaited: dict[int, int] = {}
        """How many of each server's offers an ``await_offer`` has already seen."""
        self.connects: dict[int, int] = {}
        self.offer_arrived = asyncio.Event()
        self.sessions: list[Session] = []
        """Sessions made by genuine answers (they may really connect)."""
        self.sent = 0
        self._reader: asyncio.Task[None] | None = None

    async def open(self) -> None:
        await self.close_socket()
        self.ws = await connect(f"{self.world.url}/connect", max_size=1024 * 1024, proxy=None)
        self.alias = decode_as(await self.ws.recv(decode=False), pb.WelcomeMessage).alias
        self.offers, self.awaited, self.connects = {}, {}, {}
        self._reader = asyncio.create_task(self._read(self.ws))

    async def _read(self, ws: ClientConnection) -> None:
        with contextlib.suppress(WebSocketException):
            async for data in ws:
                if isinstance(data, bytes) and _is(data, pb.WEBRTC_OFFER):
                    offer = decode_as(data, pb.WebRtcMessage)
                    self.offers.setdefault(offer.from_alias, []).append(offer.data)
                    self.offer_arrived.set()

    async def close_socket(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self.ws is not None:
            await self.ws.close()

    async def close(self) -> None:
        await self.close_socket()
        for session in self.sessions:
            await session.close()

    def target(self, name: str) -> int:
        world = self.world
        assert world.pair is not None
        aliases = {
            "server0": world.server_aliases[0],
            "server1": world.server_aliases[1],
            "self": self.alias,
            "pair": world.pair.aliases[0],
            "unknown": 2**63 - 5,
            "zero": 0,
        }
        return aliases[name]

    async def perform(self, act: Act) -> None:
        to = self.target(act.target)
        if act.kind == "sleep":
            await asyncio.sleep(0.05)
        elif act.kind == "reconnect":
            await self.open()
        elif act.kind == "await_offer":
            await self.await_offer(to)
        elif act.kind == "handshake":
            await self.perform(act._replace(kind="connect", variant="plain", repeat=1))
            await self.await_offer(to)
        elif act.kind == "flood":
            plain = {"refused": "server_full", "connect": "plain"}.get(act.variant, "real")
            flood = act._replace(kind=act.variant, variant=plain, mutations=())
            await self.from_side(await self.frame(flood, to), act.repeat)
        elif act.variant == "oversize":  # closes its connection (1009): use a second one
            await self.from_side(await self.frame(act, to), 1)
        else:
            frame = await self.frame(act, to)
            if act.kind == "connect":
                self.connects[to] = self.connects.get(to, 0) + act.repeat
            for _ in range(act.repeat):
                await self.send(frame)

    async def from_side(self, frame: bytes | str, count: int) -> None:
        """Send ``frame`` ``count`` times from a second connection of ours, then close it.

        A flood spends a connection's signalling budget, and a message above the
        size limit closes it: from a side connection, the main one keeps both its
        budget and its sessions for the rest of the plan.
        """
        async with connect(f"{self.world.url}/connect", proxy=None) as ws:
            await ws.recv()  # WELCOME
            with contextlib.suppress(WebSocketException):
                for _ in range(count):
                    await ws.send(frame)
                    self.sent += 1

    async def send(self, frame: bytes | str) -> None:
        assert self.ws is not None
        with contextlib.suppress(WebSocketException):  # the coordinator may close us
            await self.ws.send(frame)
            self.sent += 1

    async def await_offer(self, server: int) -> None:
        """Wait for an offer from ``server`` not seen yet, if a CONNECT asked for one."""
        seen = self.awaited.get(server, 0)
        if self.connects.get(server, 0) <= seen:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(OFFER_WAIT):
                while len(self.offers.get(server, [])) <= seen:
                    self.offer_arrived.clear()
                    await self.offer_arrived.wait()
        self.awaited[server] = len(self.offers.get(server, []))

    async def frame(self, act: Act, to: int) -> bytes | str:
        kind = act.kind
        if kind == "raw":
            return act.extra
        if kind == "text":
            return act.extra.decode("utf-8", errors="replace")
        message: pb.ConnectMessage | pb.WebRtcMessage | pb.ConnectionRefusedMessage
        if kind == "connect":
            message = pb.ConnectMessage(type=pb.CONNECT, to_alias=to)
            if act.variant == "spoofed":  # the coordinator must overwrite both
                message.from_alias = self.target("server1")
                message.from_role = pb.COMMUNICATION_SERVER
        elif kind in ("offer", "answer"):
            wire = pb.WEBRTC_OFFER if kind == "offer" else pb.WEBRTC_ANSWER
            data = await self.description(kind, act.variant, to, act.extra)
            message = pb.WebRtcMessage(type=wire, to_alias=to, data=data)
        elif kind == "candidate":
            data = candidate_payload(act.variant, self.templates.candidate, act.extra)
            message = pb.WebRtcMessage(type=pb.WEBRTC_ICE_CANDIDATE, to_alias=to, data=data)
        elif kind == "refused":
            reasons = {"server_full": 1, "auth_failed": 2, "unknown": 0, "out_of_range": 77}
            message = pb.ConnectionRefusedMessage(
                type=pb.CONNECTION_REFUSED,
                to_alias=to,
                reason=reasons[act.variant],  # type: ignore[arg-type]
                data=act.extra,
            )
        else:
            return mutate(pb.PingMessage(type=pb.PING, time=1.0).SerializeToString(), act.mutations)
        frame = message.SerializeToString()
        return mutate(frame, act.mutations, self._bases(to)) if act.mutations else frame

    def _bases(self, to: int) -> list[bytes]:
        """Valid frames to splice from."""
        templates = self.templates
        return [
            pb.ConnectMessage(type=pb.CONNECT, to_alias=to).SerializeToString(),
            pb.WebRtcMessage(
                type=pb.WEBRTC_ANSWER, to_alias=to, data=templates.answer
            ).SerializeToString(),
            pb.WebRtcMessage(
                type=pb.WEBRTC_ICE_CANDIDATE, to_alias=to, data=templates.candidate
            ).SerializeToString(),
        ]

    async def description(self, kind: str, variant: str, to: int, extra: bytes) -> bytes:
        """An offer or answer payload: real, made for this server's offer, or broken."""
        templates = self.templates
        own = templates.offer if kind == "offer" else templates.answer
        other = "answer" if kind == "offer" else "offer"
        last = self.offers.get(to, [])
        if variant == "real":
            return own
        if variant.startswith("genuine") and last:
            session = Session(on_frame=_ignore)
            self.sessions.append(session)
            try:
                answer = await session.accept_offer(last[-1])
            except Exception:
                return own
            if variant == "genuine_trickle":  # as browsers answer: candidates will follow
                return _without_end_of_candidates(answer)
            return answer
        if variant.startswith("genuine"):
            return own
        if variant == "swapped":
            return _json({"type": other, "sdp": json.loads(own)["sdp"]})
        if variant == "echo":
            return last[-1] if last else own
        if variant == "echo_as_answer":
            sdp = json.loads(last[-1])["sdp"] if last else json.loads(own)["sdp"]
            return _json({"type": "answer", "sdp": sdp})
        if variant == "edit":
            return _json({"type": kind, "sdp": edit_sdp(json.loads(own)["sdp"], extra)})
        if variant == "no_sdp":
            return _json({"type": kind})
        if variant == "not_json":
            return b"{" + extra
        if variant == "empty":
            return b""
        if variant == "pranswer":
            return _json({"type": "pranswer", "sdp": json.loads(own)["sdp"]})
        size = 200 * 1024 if variant == "huge" else 300 * 1024  # oversize: above the WS limit
        return _json({"type": kind, "sdp": "v=0\r\n" + "a=x\r\n" * (size // 5)})


def _without_end_of_candidates(description: bytes) -> bytes:
    value = json.loads(description)
    lines = value["sdp"].split("\r\n")
    value["sdp"] = "\r\n".join(line for line in lines if line != "a=end-of-candidates")
    return _json(value)


def _is(data: bytes, kind: int) -> bool:
    try:
        return frame_type(data) == kind
    except FrameError:
        return False


_mutations = st.one_of(st.just(()), mutations_strategy.map(tuple))
_repeats = st.sampled_from((1, 1, 1, 1, 1, 2, 3, 10))


def _acts(kind: str, variants: tuple[str, ...]) -> st.SearchStrategy[Act]:
    return st.builds(
        Act,
        kind=st.just(kind),
        target=st.sampled_from(TARGETS),
        variant=st.sampled_from(variants),
        mutations=_mutations,
        repeat=_repeats,
        extra=st.binary(max_size=48),
    )


_servers = st.sampled_from(TARGETS[:5])
_await_offer = _servers.map(lambda target: Act("await_offer", target))
_handshake = _servers.map(lambda target: Act("handshake", target))
signalling_acts: st.SearchStrategy[Act] = st.one_of(
    # A session must be asked for and offered before most frames mean anything to it.
    _acts("connect", ("plain", "spoofed")),
    _handshake,
    _handshake,
    _await_offer,
    _acts("answer", DESCRIPTIONS),
    _acts("answer", DESCRIPTIONS),
    _acts("candidate", CANDIDATES),
    _acts("offer", DESCRIPTIONS),
    _acts("refused", REFUSALS),
    _acts("ping", ("real",)),
    _acts("raw", ("real",)),
    _acts("text", ("real",)),
    st.sampled_from((Act("sleep"), Act("reconnect"))),
    st.builds(
        Act,
        kind=st.just("flood"),
        target=st.sampled_from(TARGETS),
        variant=st.sampled_from(("offer", "connect", "candidate", "answer", "refused")),
        mutations=st.just(()),
        repeat=st.sampled_from((40, 150, 400)),
        extra=st.just(b""),
    ),
)


class Tally:
    """What a test did, for its summary line."""

    def __init__(self) -> None:
        self.cases = 0
        self.frames = 0
        self.started = time.monotonic()


async def signalling_case(world: World, templates: Templates, plan: list[Act]) -> int:
    attacker = SignallingAttacker(world, templates)
    await attacker.open()
    try:
        for act in plan:
            await attacker.perform(act)
        await verify(world)  # while the attacker is still connected
    except BaseException:
        await attacker.close()
        await world.recover()
        raise
    await attacker.close()
    return attacker.sent


CONNECTED = [Act("handshake")]


@settings(fuzz_settings, max_examples=SIGNALLING_EXAMPLES)
@given(plan=st.lists(signalling_acts, min_size=1, max_size=25))
# A genuine answer, then the same answer again and a broken one: the session is
# set up, so both are answers in the wrong state.
@example(plan=[*CONNECTED, Act("answer", variant="genuine"), Act("answer", variant="genuine")])
@example(plan=[*CONNECTED, Act("answer", variant="edit", extra=b"\x02\x05garbage")])
# Every turn of a session's set-up from a party that breaks it: an offer to a server
# that offered, a broken answer (which ends the session), frames for the ended session,
# a refusal, then a real session fed a candidate over the size budget and another.
@example(
    plan=[
        *CONNECTED,
        Act("offer"),
        Act("answer", variant="not_json"),
        Act("candidate"),
        Act("refused", variant="auth_failed"),
        Act("handshake"),
        Act("answer", variant="genuine"),
        Act("candidate", variant="huge"),
        Act("candidate", variant="mline_9"),
    ]
)
# An answer before any offer, to both servers.
@example(plan=[Act("answer"), Act("answer", target="server1", variant="not_json")])
# Candidates that need resolving or name no media section, after a real answer.
@example(
    plan=[
        *CONNECTED,
        Act("answer", variant="genuine"),
        Act("candidate", variant="mdns", repeat=5),
        Act("candidate", variant="mline_9"),
        Act("candidate", variant="end"),
        Act("candidate"),
    ]
)
# Found by this fuzzer: each .local (mDNS) candidate for a session whose answer did not
# end its candidates (browsers trickle theirs) makes aioice resolve the name, for up to
# 1 s. Applied inside the comm server's coordinator-link reader, 11 of them stalled all
# of that server's signalling for 11 s: fresh clients timed out (the SDK passes over a
# server that has not answered within 10 s). Candidates are now applied beside it.
@example(
    plan=[
        *CONNECTED,
        Act("answer", variant="genuine_trickle"),
        Act("candidate", variant="mdns", repeat=11),
    ]
)
# An offer flood at a server alias, then a message above the coordinator's limit.
@example(plan=[Act("offer", repeat=150), Act("offer", target="server1", variant="oversize")])
@example(plan=[Act("flood", variant="connect", repeat=400), *CONNECTED, Act("answer")])
def _signalling_examples(world: World, templates: Templates, tally: Tally, plan: list[Act]) -> None:
    tally.cases += 1
    tally.frames += world.run(signalling_case(world, templates, plan), EXAMPLE_TIMEOUT)


def test_hostile_signalling(
    world: World, templates: Templates, request: pytest.FixtureRequest
) -> None:
    tally = Tally()
    with logs_on_failure(world):
        _signalling_examples(world, templates, tally)
    summarize(request, world, "signalling", tally)


# -- the attacker with a session ---------------------------------------------


class Step(NamedTuple):
    """One thing a client with a real session sends: a data-channel frame, or signalling
    about its own session (``signal``), or a move (``barrier``: a reliable PING answered;
    ``sleep``)."""

    kind: str
    variant: str = ""
    reliable: bool = True
    mutations: tuple[Mutation, ...] = ()
    extra: bytes = b""


class SessionAttacker(RawPeer):
    """A :class:`RawPeer` that keeps its answer (to send it again) and never stops reading."""

    answers: list[bytes]

    async def send_coordinator(self, frame: bytes | str) -> None:
        if isinstance(frame, bytes) and _is(frame, pb.WEBRTC_ANSWER):
            if not hasattr(self, "answers"):
                self.answers = []
            self.answers.append(frame)
        await super().send_coordinator(frame)

    async def _on_coordinator_frame(self, data: bytes) -> None:
        # A second offer (after a second CONNECT) cannot be applied to this peer
        # connection; the attacker does not care, but must keep reading.
        with contextlib.suppress(Exception):
            await super()._on_coordinator_frame(data)

    def try_send(self, frame: bytes | str, reliable: bool) -> bool:
        """Send on a channel that may be closed already (the server may have ended us)."""
        try:
            self.send(frame, reliable=reliable)
        except Exception:
            return False
        return True


PAIR_TOPIC = "pair/to-b"
"""A topic the pair listens to: the attacker may publish into it (anyone may)."""


def session_frames(world: World, attacker: SessionAttacker) -> list[bytes]:
    """A valid frame of each kind a client sends a server, to mutate and splice."""
    return [
        pb.AuthMessage(type=pb.AUTH, role=pb.CLIENT, body=b"x", capabilities=3).SerializeToString(),
        subscription_frame(["room", PAIR_TOPIC]),
        subscription_frame(["room"], compress=True),
        pb.TopicMessage(type=pb.TOPIC, topic="room", body=b"hello").SerializeToString(),
        pb.TopicIdentityMessage(
            type=pb.TOPIC_IDENTITY, topic=PAIR_TOPIC, body=b"hi"
        ).SerializeToString(),
        pb.PingMessage(type=pb.PING, time=3.0).SerializeToString(),
        encode_batch([pb.PingMessage(type=pb.PING, time=4.0).SerializeToString()]),
        pb.TopicFWMessage(
            type=pb.TOPIC_FW, from_alias=attacker.alias, body=b"fw"
        ).SerializeToString(),
    ]


def auth_frame(variant: str, extra: bytes) -> bytes:
    server_body = _json({"id": "fuzz", "name": "fuzz", "secret": "guess"})
    right_body = _json({"id": "fuzz", "name": "fuzz", "secret": SERVER_SECRET})
    role, body, capabilities = {
        "client": (pb.CLIENT, b"attacker" + extra, 3),
        "client_caps": (pb.CLIENT, b"attacker", 0xFFFFFFFF),
        "server_guess": (pb.COMMUNICATION_SERVER, server_body, 3),
        # The right secret from a client's session: the coordinator said it is a client.
        "server_secret": (pb.COMMUNICATION_SERVER, right_body, 3),
        "hub": (pb.COMMUNICATION_SERVER_HUB, server_body, 0),
        "unknown_role": (77, b"attacker", 0),
        "empty": (pb.CLIENT, b"", 0),
    }[variant]
    return pb.AuthMessage(
        type=pb.AUTH,
        role=role,  # type: ignore[arg-type]
        body=body,
        capabilities=capabilities,
    ).SerializeToString()


def subscription(variant: str, extra: bytes) -> bytes:
    import gzip  # noqa: PLC0415

    if variant == "bomb":  # inflates far beyond the 64 KiB limit
        payload = gzip.compress(b"a" * (4 * 1024 * 1024))
        return pb.SubscriptionMessage(
            type=pb.SUBSCRIPTION, format=pb.GZIP, topics=payload
        ).SerializeToString()
    if variant == "bad_gzip":
        return pb.SubscriptionMessage(
            type=pb.SUBSCRIPTION, format=pb.GZIP, topics=b"\x1f\x8b" + extra
        ).SerializeToString()
    topics = {
        "pair": [PAIR_TOPIC, "pair/to-a"],
        "own": ["attacker/own"],
        "many": [f"t{i}" for i in range(1001)],
        "long": ["x" * 300],
        "gzip": [f"g{i}" for i in range(200)],
        "empty": [],
    }[variant]
    return subscription_frame(topics, compress=variant == "gzip")


def topic_frame(variant: str, extra: bytes) -> bytes:
    if variant == "identity":
        return pb.TopicIdentityMessage(
            type=pb.TOPIC_IDENTITY, topic=PAIR_TOPIC, body=extra, identity=b"admin"
        ).SerializeToString()
    if variant == "fw":
        return pb.TopicFWMessage(type=pb.TOPIC_FW, from_alias=1, body=extra).SerializeToString()
    topic, body = {
        "pair": (PAIR_TOPIC, extra),
        "own": ("attacker/own", extra),
        "long_topic": ("y" * 400, extra),
        "big": ("attacker/own", bytes(200 * 1024)),
    }[variant]
    return pb.TopicMessage(type=pb.TOPIC, topic=topic, body=body).SerializeToString()


def batch_frame(variant: str, extra: bytes) -> bytes:
    ping = pb.PingMessage(type=pb.PING, time=5.0).SerializeToString()
    if variant == "pings":
        return encode_batch([ping] * min(3000, 1 + 60 * len(extra)))
    if variant == "subs":
        return encode_batch([subscription("gzip", b"")] * min(40, 1 + len(extra)))
    if variant == "nested":
        return encode_batch([encode_batch([ping, encode_batch([ping])])])
    if variant == "empty":
        return encode_batch([])
    return encode_batch(  # mixed
        [
            topic_frame("pair", extra),
            subscription("own", b""),
            auth_frame("client", b""),
            ping,
            pb.WelcomeMessage(type=pb.WELCOME, alias=1).SerializeToString(),
        ]
    )


class SessionCase:
    """Runs one plan of :class:`Step` against a server through a real session."""

    def __init__(self, world: World, attacker: SessionAttacker, server: int) -> None:
        self.world = world
        self.attacker = attacker
        self.server = server
        self.frames = session_frames(world, attacker)
        self.sent = 0

    async def signal(self, variant: str, extra: bytes) -> None:
        attacker, to = self.attacker, self.server
        frame: bytes
        if variant == "answer_again":
            answers = getattr(attacker, "answers", [])
            if not answers:
                return
            frame = answers[-1]
        elif variant in CANDIDATES:
            real = _json(
                {"candidate": "candidate:1 1 udp 2130706431 127.0.0.1 9 typ host", "sdpMid": "0"}
            )
            frame = pb.WebRtcMessage(
                type=pb.WEBRTC_ICE_CANDIDATE,
                to_alias=to,
                data=candidate_payload(variant, real, extra),
            ).SerializeToString()
        elif variant == "connect_again":
            frame = pb.ConnectMessage(type=pb.CONNECT, to_alias=to).SerializeToString()
        elif variant == "connect_other":
            other = next(a for a in self.world.server_aliases if a != to)
            frame = pb.ConnectMessage(type=pb.CONNECT, to_alias=other).SerializeToString()
        elif variant == "refuse":
            frame = pb.ConnectionRefusedMessage(
                type=pb.CONNECTION_REFUSED, to_alias=to, reason=pb.AUTH_FAILED, data=extra
            ).SerializeToString()
        else:  # offer: the client may not offer; a server that takes it must not break
            offer = Session(on_frame=_ignore)
            try:
                data = await offer.create_offer()
            finally:
                await offer.close()
            frame = pb.WebRtcMessage(
                type=pb.WEBRTC_OFFER, to_alias=to, data=data
            ).SerializeToString()
        with contextlib.suppress(WebSocketException):
            await attacker.send_coordinator(frame)
            self.sent += 1

    async def perform(self, step: Step) -> None:
        attacker, kind, extra = self.attacker, step.kind, step.extra
        if kind == "sleep":
            await asyncio.sleep(0.05)
            return
        if kind == "barrier":
            with contextlib.suppress(Exception):
                await attacker.ping(timeout=2.0)
            return
        if kind == "signal":
            await self.signal(step.variant, extra)
            return
        frame: bytes | str
        if kind == "auth":
            frame = auth_frame(step.variant, extra)
        elif kind == "subscribe":
            frame = subscription(step.variant, extra)
        elif kind == "topic":
            frame = topic_frame(step.variant, extra)
        elif kind == "ping":
            frame = pb.PingMessage(type=pb.PING, time=7.0).SerializeToString()
        elif kind == "batch":
            frame = batch_frame(step.variant, extra)
        elif kind == "text":
            frame = extra.decode("utf-8", errors="replace") or " "
        else:  # raw: a valid frame, mutated
            base = self.frames[extra[0] % len(self.frames)] if extra else self.frames[0]
            frame = mutate(base, step.mutations, self.frames) or b"\x00"
        if kind != "raw" and step.mutations and isinstance(frame, bytes):
            frame = mutate(frame, step.mutations, self.frames) or b"\x00"
        if attacker.try_send(frame, step.reliable):
            self.sent += 1


def _steps(kind: str, variants: tuple[str, ...]) -> st.SearchStrategy[Step]:
    return st.builds(
        Step,
        kind=st.just(kind),
        variant=st.sampled_from(variants),
        reliable=st.booleans(),
        mutations=st.one_of(st.just(()), st.just(()), mutations_strategy.map(tuple)),
        extra=st.binary(max_size=40),
    )


AUTHS = ("client", "client_caps", "server_guess", "server_secret", "hub", "unknown_role", "empty")
SIGNALS = ("answer_again", "connect_again", "connect_other", "refuse", "offer", *CANDIDATES)

session_steps: st.SearchStrategy[Step] = st.one_of(
    _steps("auth", AUTHS),
    _steps("subscribe", ("pair", "own", "many", "long", "gzip", "empty", "bomb", "bad_gzip")),
    _steps("topic", ("pair", "own", "long_topic", "big", "identity", "fw")),
    _steps("ping", ("",)),
    _steps("batch", ("pings", "subs", "nested", "empty", "mixed")),
    _steps("raw", ("",)),
    _steps("text", ("",)),
    _steps("signal", SIGNALS),
    st.sampled_from((Step("barrier"), Step("sleep"))),
)

VALID_AUTH = Step("auth", "client")


async def session_case(world: World, server: int, steps: list[Step]) -> int:
    to = world.server_aliases[server]
    attacker = await SessionAttacker.connect(world.url, server=to)
    assert isinstance(attacker, SessionAttacker)
    case = SessionCase(world, attacker, to)
    try:
        for step in steps:
            await case.perform(step)
        await verify(world)
    except BaseException:
        await attacker.close()
        await world.recover()
        raise
    await attacker.close()
    return case.sent


@settings(fuzz_settings, max_examples=SESSION_EXAMPLES)
@given(
    server=st.integers(0, 1),
    auth_first=st.sampled_from((True, True, True, False)),
    steps=st.lists(session_steps, max_size=25),
)
# A working session, then its answer again (once enough to stop a server admitting anyone).
@example(server=0, auth_first=True, steps=[Step("barrier"), Step("signal", "answer_again")])
# AUTH twice, then AUTH as a server with the right secret (from a client's session).
@example(
    server=1,
    auth_first=True,
    steps=[Step("auth", "client"), Step("auth", "server_secret"), Step("barrier")],
)
# Frames before AUTH on the unreliable channel, then a late AUTH.
@example(
    server=0,
    auth_first=False,
    steps=[
        Step("ping", reliable=False),
        Step("batch", "pings", reliable=False, extra=b"x" * 40),
        Step("topic", "pair", reliable=False),
        Step("auth", "client"),
        Step("barrier"),
    ],
)
# CPU-heavy frames: gzip subscriptions and PINGs in BATCHes, on both channels.
@example(
    server=1,
    auth_first=True,
    steps=[
        Step("batch", "subs", extra=b"s" * 40),
        Step("batch", "pings", reliable=False, extra=b"p" * 40),
        Step("subscribe", "bomb"),
        Step("barrier"),
    ],
)
# A second CONNECT replaces the session; a refusal and candidates follow.
@example(
    server=0,
    auth_first=True,
    steps=[
        Step("signal", "connect_again"),
        Step("signal", "refuse"),
        Step("signal", "mdns"),
        Step("signal", "connect_other"),
    ],
)
def _session_examples(
    world: World, tally: Tally, server: int, auth_first: bool, steps: list[Step]
) -> None:
    tally.cases += 1
    plan = [VALID_AUTH, *steps] if auth_first else steps
    tally.frames += world.run(session_case(world, server, plan), EXAMPLE_TIMEOUT)


def test_hostile_session(world: World, request: pytest.FixtureRequest) -> None:
    tally = Tally()
    with logs_on_failure(world):
        _session_examples(world, tally)
    summarize(request, world, "session order", tally)


# -- reporting ----------------------------------------------------------------


def summarize(request: pytest.FixtureRequest, world: World, what: str, tally: Tally) -> None:
    assert world.pair is not None
    statuses = world.run(_drops(world), 30)
    coordinator = {k: v for k, v in world.run(world.coordinator_drops(), 30).items() if v}
    line = (
        f"{what} fuzz: {tally.cases} cases, {tally.frames} attacker frames, "
        f"{time.monotonic() - tally.started:.1f} s; {world.pair.summary()}; "
        f"slowest fresh-client check {world.fresh_slowest:.2f} s; "
        f"server drops {statuses}; coordinator drops {coordinator}"
    )
    print(f"\n{line}")
    report_line(request.config, line)


async def _drops(world: World) -> dict[str, int]:
    cluster = world.cluster
    assert cluster is not None
    total: dict[str, int] = {}
    for name in world.aliases:
        for reason, count in (await cluster.server_status(name))["stats"]["drops"].items():
            total[reason] = total.get(reason, 0) + int(count)
    return dict(sorted(total.items()))
