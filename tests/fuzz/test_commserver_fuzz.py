"""Fuzzing the comm server's data-channel handler: :meth:`commserver.relay.Relay.handle`.

The real relay with fake sessions (:mod:`tests.relayharness`): two clients,
another comm server and a peer that has not authenticated yet receive random
and mutated frames (valid TOPIC, TOPIC_IDENTITY, SUBSCRIPTION, BATCH, AUTH
and PING frames, bit-flipped, truncated, extended, type-swapped, spliced) on
either channel. Properties:

* ``handle`` never raises and never counts an ``internal_error``;
* the topic tables stay consistent (both indexes agree, nothing empty, the
  advertised set is what clients want), and nobody became a server without
  the secret;
* afterwards a fresh subscriber still gets what a fresh publisher sends;
* over tens of thousands of frames the relay's memory stays flat.
"""

from __future__ import annotations

import gc
import json
import random
import tracemalloc
from collections.abc import Sequence

from hypothesis import given
from hypothesis import strategies as st

from commserver.peer import Peer
from tests.fuzz.mutations import fuzz_settings, hostile_frames, mutate, random_mutations
from tests.relayharness import (
    RelayHarness,
    assert_tables_consistent,
    make_harness,
    session_of,
)
from webrtc_broker.wire import broker_pb2 as pb
from webrtc_broker.wire import decode_as
from webrtc_broker.wire.codec import encode_batch
from webrtc_broker.wire.subscription import subscription_frame

TOPICS = ("room", "lobby", "a/b", "x" * 300)


def valid_frames(alias: int) -> list[bytes]:
    """A valid frame of each kind a peer sends a comm server, for mutating."""
    topic = pb.TopicMessage(type=pb.TOPIC, topic="room", body=b"hello").SerializeToString()
    identity = pb.TopicIdentityMessage(
        type=pb.TOPIC_IDENTITY, from_alias=alias, topic="lobby", identity=b"admin", body=b"hi"
    ).SerializeToString()
    server_auth = json.dumps({"id": "fuzz", "name": "fuzz", "secret": "guess"}).encode()
    return [
        topic,
        identity,
        subscription_frame(["room", "lobby"]),
        subscription_frame(TOPICS, compress=True),
        subscription_frame([]),
        encode_batch([topic, identity, subscription_frame(["a/b"])]),
        pb.AuthMessage(
            type=pb.AUTH, role=pb.CLIENT, body=b"me", capabilities=3
        ).SerializeToString(),
        pb.AuthMessage(
            type=pb.AUTH, role=pb.COMMUNICATION_SERVER, body=server_auth
        ).SerializeToString(),
        pb.PingMessage(type=pb.PING, time=2.5).SerializeToString(),
        pb.TopicFWMessage(type=pb.TOPIC_FW, from_alias=alias, body=b"fw").SerializeToString(),
    ]


class Scene:
    """The relay under fuzzing and the peers that talk to it."""

    def __init__(self) -> None:
        self.harness: RelayHarness = make_harness()
        harness = self.harness
        self.alice = harness.client(b"alice", capabilities=pb.CAPABILITY_TOPIC_NAMES)
        self.bob = harness.client(b"bob")
        self.server = harness.server("other-server")
        self.stranger = harness.peer()  # connected, AUTH not sent yet
        self.peers: list[Peer] = [self.alice, self.bob, self.server, self.stranger]
        harness.subscribe(self.alice, ["room"])
        harness.subscribe(self.server, ["lobby"])
        self.frames = valid_frames(self.alice.alias)

    def feed(self, peer: Peer, frame: bytes | str, reliable: bool) -> None:
        data = frame.encode() if isinstance(frame, str) else frame  # a text message's bytes
        self.harness.relay.handle(peer, data, reliable)

    def check(self) -> None:
        harness = self.harness
        relay = harness.relay
        assert harness.stats.drops["internal_error"] == 0
        assert_tables_consistent(relay)
        assert relay.server_peers == {self.server}, "someone became a server without the secret"
        assert not self.stranger.is_server

    def still_relays(self) -> None:
        harness = self.harness
        listener, talker = harness.client(b"listener"), harness.client(b"talker")
        harness.subscribe(listener, ["probe"])
        harness.publish(talker, "probe", b"still here")
        frame, reliable = session_of(listener).last[-1]
        got = decode_as(frame, pb.TopicFWMessage)
        assert (got.from_alias, got.body, reliable) == (talker.alias, b"still here", True)


@fuzz_settings
@given(st.data())
def test_hostile_data_channel_frames(data: st.DataObject) -> None:
    scene = Scene()
    count = data.draw(st.integers(1, 60), label="frames")
    for _ in range(count):
        peer = data.draw(st.sampled_from(scene.peers), label="peer")
        reliable = data.draw(st.booleans(), label="reliable")
        scene.feed(peer, data.draw(hostile_frames(scene.frames), label="frame"), reliable)
        scene.check()
    scene.still_relays()
    scene.check()


def _run(scene: Scene, rng: random.Random, count: int, bases: Sequence[bytes]) -> None:
    for _ in range(count):
        peer = rng.choice(scene.peers)
        frame = mutate(rng.choice(bases), random_mutations(rng), bases)
        scene.feed(peer, frame, rng.random() < 0.5)


def test_memory_stays_flat_under_hostile_frames() -> None:
    """Topic tables, counters and per-peer state are bounded: after a warm-up that
    fills every bounded structure, 30,000 more hostile frames add almost nothing."""
    scene = Scene()
    rng = random.Random(20240607)
    bases = scene.frames
    _run(scene, rng, 5_000, bases)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        _run(scene, rng, 30_000, bases)
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    growth = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    scene.check()
    scene.still_relays()
    assert growth < 256 * 1024, after.compare_to(before, "lineno")[:10]
    print(f"\nrelay memory after 30,000 hostile frames: {growth / 1024:+.1f} KiB")
