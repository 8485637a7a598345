/**
 * BrokerClient end to end against fakes of the browser's WebSocket and
 * RTCPeerConnection: the test plays the coordinator and the comm server,
 * frame by frame, as docs/protocol.md describes them.
 */

import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, type TestContext, test } from "node:test";

import { BrokerClient, CLIENT_CAPABILITIES, type ConnectOptions } from "../src/client.js";
import {
  AuthenticationError,
  BrokerError,
  ClosedError,
  ConnectTimeoutError,
  DisconnectedError,
  MessageTooLargeError,
  NoServerAvailableError,
  PingTimeoutError,
  ServerFullError,
} from "../src/errors.js";
import type { ReceivedMessage } from "../src/message.js";
import {
  AuthMessageSchema,
  aliasBigint,
  aliasNumber,
  BatchMessageSchema,
  Capability,
  ConnectionRefusedMessageSchema,
  ConnectionRefusedReason,
  ConnectMessageSchema,
  decodeAs,
  encode,
  Format,
  frameType,
  MessageType,
  PingMessageSchema,
  Role,
  SubscriptionMessageSchema,
  TopicFWMessageSchema,
  TopicIdentityFWMessageSchema,
  TopicMessageSchema,
  toBytes,
  WebRtcMessageSchema,
  WelcomeMessageSchema,
} from "../src/wire.js";
import { FakeChannel, FakePeerConnection, FakeWebSocket, installGlobal, settle } from "./fakes.js";

const CLIENT_ALIAS = 7;
const SERVER = 3;
const BOTH = Capability.CAPABILITY_BATCH | Capability.CAPABILITY_TOPIC_NAMES;

/** Wait until `probe` returns something truthy (the fakes answer within a few tasks). */
async function until<T>(probe: () => T | undefined | null | false, what: string): Promise<T> {
  for (let turn = 0; turn < 2000; turn += 1) {
    const value = probe();
    if (value) {
      return value;
    }
    await new Promise((resolve) => setImmediate(resolve));
  }
  throw new Error(`never happened: ${what}`);
}

/** Like {@link until}, for what comes after a timer (a backoff): polls for up to 10 s. */
async function eventually<T>(probe: () => T | undefined | null | false, what: string): Promise<T> {
  for (let turn = 0; turn < 2000; turn += 1) {
    const value = probe();
    if (value !== undefined && value !== null && value !== false) {
      return value;
    }
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  throw new Error(`never happened: ${what}`);
}

/** The frames in `sent` (BATCH frames unpacked). */
function unpacked(sent: readonly Uint8Array[]): Uint8Array[] {
  return sent.flatMap((frame) =>
    frameType(frame) === MessageType.BATCH ? decodeAs(BatchMessageSchema, frame).frames : [frame],
  );
}

function ofType(sent: readonly Uint8Array[], type: MessageType): Uint8Array[] {
  return unpacked(sent).filter((frame) => frameType(frame) === type);
}

/** The coordinator and the comm server behind one coordinator WebSocket. */
class Far {
  readonly reliable = new FakeChannel("reliable");
  readonly unreliable = new FakeChannel("unreliable");
  private echoed = 0;

  private constructor(readonly ws: FakeWebSocket) {}

  /** Wait for the `index`th coordinator socket to open and WELCOME it. */
  static async welcome(index: number, servers: number[] = [SERVER]): Promise<Far> {
    const ws = await until(
      () => FakeWebSocket.all[index]?.readyState === FakeWebSocket.OPEN && FakeWebSocket.all[index],
      `coordinator socket ${index} open`,
    );
    ws.receive(
      encode(WelcomeMessageSchema, {
        type: MessageType.WELCOME,
        alias: aliasBigint(CLIENT_ALIAS),
        availableServers: servers.map(aliasBigint),
      }),
    );
    return new Far(ws);
  }

  /** The CONNECT the client sent, once it has. */
  async connect(): Promise<{ from: number; to: number }> {
    const frame = await until(() => ofType(this.ws.sent, MessageType.CONNECT)[0], "CONNECT");
    const connect = decodeAs(ConnectMessageSchema, frame);
    return { from: aliasNumber(connect.fromAlias), to: aliasNumber(connect.toAlias) };
  }

  /** A signalling frame from a server, relayed by the coordinator. */
  signal(type: MessageType, data: string, from = SERVER): void {
    this.ws.receive(
      encode(WebRtcMessageSchema, {
        type,
        fromAlias: aliasBigint(from),
        toAlias: aliasBigint(CLIENT_ALIAS),
        data: toBytes(data),
      }),
    );
  }

  refuse(reason: ConnectionRefusedReason, detail = ""): void {
    this.ws.receive(
      encode(ConnectionRefusedMessageSchema, {
        type: MessageType.CONNECTION_REFUSED,
        fromAlias: aliasBigint(SERVER),
        toAlias: aliasBigint(CLIENT_ALIAS),
        reason,
        data: toBytes(detail),
      }),
    );
  }

  /** Offer, take the answer, open both channels, answer AUTH and echo the PING. */
  async accept(capabilities = BOTH): Promise<void> {
    await this.connect();
    this.signal(MessageType.WEBRTC_OFFER, JSON.stringify({ type: "offer", sdp: "v=0 offer" }));
    await until(() => ofType(this.ws.sent, MessageType.WEBRTC_ANSWER)[0], "the answer");
    const pc = await until(() => FakePeerConnection.all.at(-1), "a peer connection");
    pc.fire("datachannel", { channel: this.reliable });
    pc.fire("datachannel", { channel: this.unreliable });
    await until(() => ofType(this.reliable.sent, MessageType.AUTH)[0], "AUTH");
    this.deliver(encode(AuthMessageSchema, { type: MessageType.AUTH, capabilities }));
    await this.echoPings(1);
  }

  /** Echo PINGs the client sent until `count` more have been echoed. */
  async echoPings(count: number): Promise<void> {
    const target = this.echoed + count;
    while (this.echoed < target) {
      const pings = await until(() => {
        const sent = ofType(this.reliable.sent, MessageType.PING);
        return sent.length > this.echoed && sent;
      }, "a PING");
      for (const ping of pings.slice(this.echoed)) {
        this.deliver(ping);
        this.echoed += 1;
      }
    }
  }

  /** A frame from the comm server on one of the data channels. */
  deliver(frame: Uint8Array, reliable = true): void {
    const data = frame.buffer.slice(frame.byteOffset, frame.byteOffset + frame.byteLength);
    (reliable ? this.reliable : this.unreliable).fire("message", { data });
  }
}

const OPTIONS: ConnectOptions = { iceServers: [], keepalive: false, reconnect: false };

/** A connected client, closed when the test ends (passed or not). */
async function connected(
  t: TestContext,
  options: ConnectOptions = {},
): Promise<[BrokerClient, Far]> {
  const connecting = BrokerClient.connect("ws://c.test", "tok", { ...OPTIONS, ...options });
  const far = await Far.welcome(0);
  await far.accept();
  const client = await connecting;
  t.after(() => client.close());
  return [client, far];
}

function topicFw(topic: string, text: string, from = 11): Uint8Array {
  return encode(TopicFWMessageSchema, {
    type: MessageType.TOPIC_FW,
    fromAlias: aliasBigint(from),
    topic,
    body: toBytes(text),
  });
}

function quiet(t: TestContext): void {
  t.mock.method(console, "info", () => {});
  t.mock.method(console, "debug", () => {});
}

describe("BrokerClient against fake browser APIs", () => {
  let restore: (() => void)[] = [];

  beforeEach((t) => {
    quiet(t as TestContext);
    FakeWebSocket.all = [];
    FakeWebSocket.refused = new Set();
    FakePeerConnection.all = [];
    restore = [
      installGlobal("WebSocket", FakeWebSocket),
      installGlobal("RTCPeerConnection", FakePeerConnection),
    ];
  });
  afterEach(() => {
    for (const undo of restore) {
      undo();
    }
  });

  test("connects: WELCOME, CONNECT, answer, AUTH with the token, a confirmed PING", async (t) => {
    const [client, far] = await connected(t);
    assert.equal(far.ws.url, "ws://c.test/connect?token=tok");
    assert.deepEqual(await far.connect(), { from: CLIENT_ALIAS, to: SERVER });
    const [authFrame] = ofType(far.reliable.sent, MessageType.AUTH);
    assert.ok(authFrame !== undefined);
    const auth = decodeAs(AuthMessageSchema, authFrame);
    assert.equal(auth.role, Role.CLIENT);
    assert.equal(new TextDecoder().decode(auth.body), "tok");
    assert.equal(auth.capabilities, CLIENT_CAPABILITIES);
    assert.equal(client.alias, CLIENT_ALIAS);
    assert.equal(client.serverAlias, SERVER);
    assert.deepEqual(client.servers, [SERVER]);
    assert.equal(client.coordinatorUrl, "ws://c.test");
    assert.equal(client.serverCapabilities, BOTH);
    assert.equal(client.closed, false);
    client.close();
  });

  test("sends its ICE candidates to the server through the coordinator", async (t) => {
    const [client, far] = await connected(t);
    const pc = FakePeerConnection.all[0];
    const local = { candidate: "candidate:1", toJSON: () => ({ candidate: "candidate:1" }) };
    pc?.fire("icecandidate", { candidate: local });
    const [frame] = ofType(far.ws.sent, MessageType.WEBRTC_ICE_CANDIDATE);
    assert.ok(frame !== undefined);
    const message = decodeAs(WebRtcMessageSchema, frame);
    assert.equal(aliasNumber(message.toAlias), SERVER);
    assert.equal(new TextDecoder().decode(message.data), '{"candidate":"candidate:1"}');
    client.close();
  });

  test("delivers topic messages, those in BATCH frames in order; skips what it cannot read", async (t) => {
    const [client, far] = await connected(t);
    const got: ReceivedMessage[] = [];
    client.on("message", (message) => got.push(message));
    far.deliver(topicFw("room", "one"), false);
    far.deliver(
      encode(TopicIdentityFWMessageSchema, {
        type: MessageType.TOPIC_IDENTITY_FW,
        fromAlias: aliasBigint(12),
        identity: toBytes("alice"),
        role: Role.CLIENT,
        topic: "room",
        body: toBytes("two"),
      }),
    );
    const nested = encode(BatchMessageSchema, {
      type: MessageType.BATCH,
      frames: [topicFw("room", "never")],
    });
    far.deliver(
      encode(BatchMessageSchema, {
        type: MessageType.BATCH,
        frames: [
          topicFw("room", "three"),
          nested,
          new Uint8Array([0x0a, 0x7f]),
          topicFw("", "four"),
        ],
      }),
    );
    far.deliver(new Uint8Array([0x0a, 0x7f, 0x01])); // malformed: skipped
    assert.deepEqual(
      got.map((m) => [m.sender, m.text, m.reliable, m.topic, m.identityText]),
      [
        [11, "one", false, "room", undefined],
        [12, "two", true, "room", "alice"],
        [11, "three", true, "room", undefined],
        [11, "four", true, undefined, undefined],
      ],
    );
    assert.equal(client.received, 4);
    client.close();
  });

  test("publishes on the channel asked for, in BATCH frames once the server takes them", async (t) => {
    const [client, far] = await connected(t);
    client.publish("room", "a");
    client.publish("room", "b");
    client.publish("pos", "p", { reliable: false });
    await new Promise((resolve) => setImmediate(resolve));
    const reliable = ofType(far.reliable.sent, MessageType.TOPIC).map((frame) =>
      decodeAs(TopicMessageSchema, frame),
    );
    assert.deepEqual(
      reliable.map((m) => [m.topic, new TextDecoder().decode(m.body)]),
      [
        ["room", "a"],
        ["room", "b"],
      ],
    );
    assert.ok(
      far.reliable.sent.some((frame) => frameType(frame) === MessageType.BATCH),
      "the two reliable frames of one task left as one BATCH",
    );
    assert.equal(ofType(far.unreliable.sent, MessageType.TOPIC).length, 1);
    assert.equal(client.sent, 3);
    client.close();
  });

  test("without the server's BATCH capability, every frame leaves as itself", async (t) => {
    const connecting = BrokerClient.connect("ws://c.test", "tok", OPTIONS);
    const far = await Far.welcome(0);
    await far.accept(0);
    const client = await connecting;
    t.after(() => client.close());
    assert.equal(client.serverCapabilities, 0);
    client.publish("room", "a");
    client.publish("room", "b");
    await new Promise((resolve) => setImmediate(resolve));
    assert.ok(far.reliable.sent.every((frame) => frameType(frame) !== MessageType.BATCH));
    client.close();
  });

  test("refuses to publish a frame too large to relay, and sends nothing", async (t) => {
    const [client, far] = await connected(t);
    const before = far.reliable.sent.length;
    assert.throws(() => client.publish("room", new Uint8Array(256 * 1024)), MessageTooLargeError);
    assert.equal(far.reliable.sent.length, before);
    assert.equal(client.sent, 0);
    client.close();
  });

  test("subscribe sends the sorted topic set and resolves once the server has it", async (t) => {
    const [client, far] = await connected(t);
    let done = false;
    const subscribing = client.subscribe(["b", "a", "b"]).then(() => {
      done = true;
    });
    const frame = await until(
      () => ofType(far.reliable.sent, MessageType.SUBSCRIPTION)[0],
      "SUBSCRIPTION",
    );
    const message = decodeAs(SubscriptionMessageSchema, frame);
    assert.equal(message.format, Format.PLAIN);
    assert.equal(new TextDecoder().decode(message.topics), "a b");
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(done, false, "the change is applied only once the PING after it is echoed");
    await far.echoPings(1);
    await subscribing;
    assert.equal(done, true);
    client.close();
  });

  test("a topic list too large to relay is refused and not kept for reconnects", async (t) => {
    const connecting = BrokerClient.connect("ws://c.test", "tok", {
      ...OPTIONS,
      reconnect: { firstDelay: 1, maxDelay: 1, attemptTimeout: 5000 },
    });
    const first = await Far.welcome(0);
    await first.accept();
    const client = await connecting;
    t.after(() => client.close());
    const many = Array.from({ length: 30_000 }, (_, index) => `topic/${index}`);
    await assert.rejects(client.subscribe(many), MessageTooLargeError);
    assert.deepEqual(ofType(first.reliable.sent, MessageType.SUBSCRIPTION), []);

    const reconnected = new Promise((resolve) => client.on("reconnected", resolve));
    first.reliable.fire("close");
    const second = await Far.welcome(1, [SERVER, 4]);
    second.signal(MessageType.WEBRTC_OFFER, JSON.stringify({ type: "offer", sdp: "v=0" }), 4);
    const pc = await until(() => FakePeerConnection.all[1], "a second peer connection");
    pc.fire("datachannel", { channel: second.reliable });
    pc.fire("datachannel", { channel: second.unreliable });
    await second.echoPings(1);
    await reconnected;
    assert.deepEqual(ofType(second.reliable.sent, MessageType.SUBSCRIPTION), []);
    client.close();
  });

  test("ping rejects with PingTimeoutError when no echo comes", async (t) => {
    const [client] = await connected(t);
    await assert.rejects(client.ping({ timeout: 5 }), PingTimeoutError);
    client.close();
  });

  test("ping resolves with a round-trip time once echoed", async (t) => {
    const [client, far] = await connected(t);
    const pinging = client.ping();
    await far.echoPings(1);
    assert.ok((await pinging) >= 0);
    client.close();
  });

  test("close ends the client: a close event, waiting pings fail, publishing throws", async (t) => {
    const [client, far] = await connected(t);
    const reasons: string[] = [];
    client.on("close", (reason) => reasons.push(reason));
    const pinging = client.ping({ timeout: Number.POSITIVE_INFINITY });
    client.close();
    await assert.rejects(pinging, ClosedError);
    assert.deepEqual(reasons, ["closed by the client"]);
    assert.equal(client.closed, true);
    assert.throws(() => client.publish("room", "late"), ClosedError);
    assert.equal(far.reliable.readyState, "closed");
    assert.equal(far.ws.readyState, FakeWebSocket.CLOSED);
  });

  test("with reconnecting off, a lost session ends the client with its reason", async (t) => {
    const [client, far] = await connected(t);
    const ended = new Promise((resolve) => client.on("close", resolve));
    far.reliable.fire("close");
    assert.equal(await ended, "reliable channel closed");
    assert.equal(client.closeReason, "reliable channel closed");
    assert.throws(() => client.publish("room", "x"), ClosedError);
  });

  for (const [reason, detail, expected, message] of [
    [ConnectionRefusedReason.SERVER_FULL, "", ServerFullError, "server 3 is full"],
    [
      ConnectionRefusedReason.AUTH_FAILED,
      "bad token",
      AuthenticationError,
      "server 3 refused: bad token",
    ],
    [
      ConnectionRefusedReason.UNKNOWN_REASON,
      "busy",
      BrokerError,
      "server 3 refused the session: busy",
    ],
  ] as const) {
    test(`a server's refusal (${ConnectionRefusedReason[reason]}) maps to ${expected.name}`, async () => {
      const connecting = BrokerClient.connect("ws://c.test", "tok", OPTIONS);
      const far = await Far.welcome(0);
      await far.connect();
      far.refuse(reason, detail);
      await assert.rejects(connecting, (error: unknown) => {
        assert.equal((error as Error).constructor, expected);
        assert.equal((error as Error).message, message);
        return true;
      });
      assert.equal(far.ws.readyState, FakeWebSocket.CLOSED, "the attempt was released");
    });
  }

  test("a coordinator without comm servers: NoServerAvailableError", async () => {
    const connecting = BrokerClient.connect("ws://c.test", "tok", OPTIONS);
    await Far.welcome(0, []);
    await assert.rejects(connecting, NoServerAvailableError);
  });

  test("a full server is passed over for the next one the coordinator lists", async (t) => {
    const connecting = BrokerClient.connect("ws://c.test", "tok", OPTIONS);
    const first = await Far.welcome(0, [SERVER, 4]);
    assert.deepEqual(await first.connect(), { from: CLIENT_ALIAS, to: SERVER });
    first.refuse(ConnectionRefusedReason.SERVER_FULL);
    const second = await Far.welcome(1, [SERVER, 4]);
    assert.deepEqual(await second.connect(), { from: CLIENT_ALIAS, to: 4 });
    second.signal(MessageType.WEBRTC_OFFER, JSON.stringify({ type: "offer", sdp: "v=0" }), 4);
    const pc = await until(() => FakePeerConnection.all[1], "a second peer connection");
    pc.fire("datachannel", { channel: second.reliable });
    pc.fire("datachannel", { channel: second.unreliable });
    await second.echoPings(1);
    const client = await connecting;
    t.after(() => client.close());
    assert.equal(client.serverAlias, 4);
    client.close();
  });

  test("signalling frames it cannot use are counted and dropped; the set-up goes on", async (t) => {
    const connecting = BrokerClient.connect("ws://c.test", "tok", OPTIONS);
    const far = await Far.welcome(0);
    await far.connect();
    far.signal(MessageType.WEBRTC_OFFER, JSON.stringify({ type: "offer", sdp: "x" }), 99);
    far.ws.receive(new Uint8Array([0x0a, 0x7f, 0x01]));
    far.ws.receive(encode(PingMessageSchema, { type: MessageType.PING, time: 1 }));
    await far.accept();
    far.signal(MessageType.WEBRTC_OFFER, JSON.stringify({ type: "offer", sdp: "again" }));
    far.signal(MessageType.WEBRTC_ICE_CANDIDATE, "not json");
    const client = await connecting;
    t.after(() => client.close());
    await until(() => client.signallingDropped.rejected, "the bad candidate counted");
    assert.deepEqual(client.signallingDropped, {
      wrong_sender: 1,
      malformed: 1,
      unexpected_type: 1,
      repeated_offer: 1,
      rejected: 1,
    });
    client.close();
  });

  test("keepalive: a server quiet for the interval is asked for an echo, a silent one presumed dead", async (t) => {
    // Fake clocks: the keepalive's interval timer and performance.now(), moved together.
    let now = 0;
    t.mock.method(performance, "now", () => now);
    t.mock.timers.enable({ apis: ["setInterval"] });
    // The defaults: a PING after 3 s of silence, looked at every second.
    const [client, far] = await connected(t, { keepalive: { interval: 3000, timeout: 4000 } });
    const ended = new Promise((resolve) => client.on("close", resolve));
    const keepalives = (): number =>
      ofType(far.reliable.sent, MessageType.PING).filter(
        (frame) => decodeAs(PingMessageSchema, frame).time === -1,
      ).length;
    const second = async (): Promise<void> => {
      now += 1000;
      t.mock.timers.tick(1000);
      await new Promise((resolve) => setImmediate(resolve));
    };
    await second();
    await second();
    assert.equal(keepalives(), 0, "two quiet seconds: a live server probes before this");
    await second();
    assert.equal(keepalives(), 1, "three quiet seconds: a PING that only asks for an echo");
    for (let index = 0; index < 3; index += 1) {
      far.deliver(topicFw("room", "alive"), false); // any frame is a sign of life
      await second();
    }
    assert.equal(keepalives(), 1, "a server that talks is not asked");
    assert.equal(client.closed, false);
    for (let index = 0; index < 4; index += 1) {
      await second();
    }
    assert.equal(keepalives(), 3, "asked again at 3 s and 4 s of silence");
    assert.equal(client.closed, false, "4 s of silence is not more than the timeout");
    await second();
    assert.equal(await ended, "server silent; presumed dead");
  });

  test("a coordinator that closes once the session is up changes nothing", async (t) => {
    const [client, far] = await connected(t);
    const events: string[] = [];
    client.on("reconnecting", (reason) => events.push(`reconnecting: ${reason}`));
    client.on("close", (reason) => events.push(`close: ${reason}`));
    far.ws.close();
    await settle();
    assert.equal(client.closed, false);
    assert.equal(far.reliable.readyState, "open", "the data channels carry on");
    const pinging = client.ping();
    await far.echoPings(1);
    assert.ok((await pinging) >= 0);
    client.publish("room", "still here");
    await settle(); // frames published in one task leave together after it
    assert.equal(ofType(far.reliable.sent, MessageType.TOPIC).length, 1);
    assert.deepEqual(events, []);
    client.close();
  });

  test("reconnects after losing its server: another server, subscriptions restored", async (t) => {
    const connecting = BrokerClient.connect("ws://c.test", "tok", {
      ...OPTIONS,
      reconnect: { firstDelay: 1, maxDelay: 1, attemptTimeout: 5000 },
    });
    const first = await Far.welcome(0);
    await first.accept();
    const client = await connecting;
    t.after(() => client.close());
    const subscribing = client.subscribe(["room"]);
    await first.echoPings(1);
    await subscribing;
    const events: string[] = [];
    client.on("reconnecting", (reason) => events.push(`reconnecting: ${reason}`));
    const reconnected = new Promise((resolve) => client.on("reconnected", resolve));

    first.reliable.fire("close");
    assert.throws(() => client.publish("room", "x"), DisconnectedError);
    const second = await Far.welcome(1, [SERVER, 4]);
    assert.deepEqual(await second.connect(), { from: CLIENT_ALIAS, to: 4 }, "not the lost one");
    second.signal(MessageType.WEBRTC_OFFER, JSON.stringify({ type: "offer", sdp: "v=0" }), 4);
    const pc = await until(() => FakePeerConnection.all[1], "a second peer connection");
    pc.fire("datachannel", { channel: second.reliable });
    pc.fire("datachannel", { channel: second.unreliable });
    await second.echoPings(1);
    assert.equal(await reconnected, client);
    assert.deepEqual(events, ["reconnecting: reliable channel closed"]);
    assert.equal(client.alias, CLIENT_ALIAS);
    assert.equal(client.serverAlias, 4);
    assert.equal(client.reconnects, 1);
    const [restored] = ofType(second.reliable.sent, MessageType.SUBSCRIPTION);
    assert.ok(restored !== undefined, "the subscription was sent again");
    const topics = decodeAs(SubscriptionMessageSchema, restored).topics;
    assert.equal(new TextDecoder().decode(topics), "room");
    client.publish("room", "again");
    assert.equal(first.ws.readyState, FakeWebSocket.CLOSED);
  });

  describe("several coordinators", () => {
    const routes = new Map<string, number>();

    beforeEach((context) => {
      const t = context as TestContext; // a test's context: its mocks end with the test
      routes.clear();
      t.mock.method(Math, "random", () => 0); // the first connect starts at the first URL
      t.mock.method(globalThis, "fetch", async (input: string) => {
        const status = routes.get(String(input));
        if (status === undefined) {
          throw new TypeError("Failed to fetch");
        }
        return new Response("", { status });
      });
    });

    test("one that says 'not now' is passed over for the next", async (t) => {
      FakeWebSocket.refused.add("a.test");
      routes.set("http://a.test/connect?token=tok", 503);
      const connecting = BrokerClient.connect(["ws://a.test", "ws://b.test"], "tok", OPTIONS);
      const far = await Far.welcome(1);
      await far.accept();
      const client = await connecting;
      t.after(() => client.close());
      assert.deepEqual(
        FakeWebSocket.all.map((ws) => ws.url),
        ["ws://a.test/connect?token=tok", "ws://b.test/connect?token=tok"],
      );
      assert.equal(client.coordinatorUrl, "ws://b.test");
      assert.deepEqual(client.coordinatorUrls, ["ws://a.test", "ws://b.test"]);
      client.close();
    });

    test("refused credentials end the search: every coordinator checks them alike", async () => {
      FakeWebSocket.refused.add("a.test");
      routes.set("http://a.test/connect?token=tok", 403);
      const connecting = BrokerClient.connect(["ws://a.test", "ws://b.test"], "tok", OPTIONS);
      await assert.rejects(connecting, AuthenticationError);
      assert.equal(FakeWebSocket.all.length, 1);
    });

    // A set-up timeout that waiting out would fail the test by the runner's own
    // timeout: these set-ups must fail (or move on) when the coordinator goes.
    const LONG = { ...OPTIONS, timeout: 600_000 };

    test("one that closes during the set-up is left at once for the next", async (t) => {
      const connecting = BrokerClient.connect(["ws://a.test", "ws://b.test"], "tok", LONG);
      // Its other server is not tried through it: the coordinator failed, not the server.
      const first = await Far.welcome(0, [SERVER, 4]);
      await first.connect();
      first.signal(MessageType.WEBRTC_OFFER, JSON.stringify({ type: "offer", sdp: "v=0" }));
      await until(() => ofType(first.ws.sent, MessageType.WEBRTC_ANSWER)[0], "the answer");
      first.ws.close(); // the replica went away before the session was up
      const second = await Far.welcome(1);
      await second.accept();
      const client = await connecting;
      t.after(() => client.close());
      assert.deepEqual(
        FakeWebSocket.all.map((ws) => ws.url),
        ["ws://a.test/connect?token=tok", "ws://b.test/connect?token=tok"],
      );
      assert.equal(client.coordinatorUrl, "ws://b.test");
      assert.equal(FakePeerConnection.all[0]?.connectionState, "closed", "the first set-up let go");
      client.close();
    });

    test("the only one, closing before CONNECT and then during the set-up, is tried again", async (t) => {
      const connecting = BrokerClient.connect("ws://a.test", "tok", LONG);
      const first = await Far.welcome(0);
      first.ws.close(); // right after WELCOME
      // After a short backoff (a Service would route the next try to a live replica).
      const second = await Far.welcome(
        await eventually(() => FakeWebSocket.all[1] && 1, "a retry"),
      );
      await second.connect();
      second.ws.close();
      const third = await Far.welcome(await eventually(() => FakeWebSocket.all[2] && 2, "a retry"));
      await third.accept();
      const client = await connecting;
      t.after(() => client.close());
      assert.deepEqual(ofType(first.ws.sent, MessageType.CONNECT), [], "no CONNECT into it");
      assert.deepEqual(
        FakeWebSocket.all.map((ws) => ws.url),
        Array(3).fill("ws://a.test/connect?token=tok"),
      );
      assert.equal(client.coordinatorUrl, "ws://a.test");
      client.close();
    });

    test("coordinators that keep closing during the set-up end in ConnectTimeoutError", async () => {
      // Rounds after 80, 160, 320 ms ... (Math.random gives 0), until the 1 s timeout.
      const connecting = BrokerClient.connect("ws://a.test", "tok", { ...OPTIONS, timeout: 1000 });
      let closed = 0;
      let stopped = false;
      const closing = (async () => {
        for (;;) {
          const next = await eventually(
            () => (stopped ? -1 : FakeWebSocket.all[closed] && closed),
            "another try",
          );
          if (next < 0) {
            return;
          }
          const far = await Far.welcome(next);
          await far.connect();
          far.ws.close();
          closed += 1;
        }
      })();
      await assert.rejects(connecting, (error: unknown) => {
        assert.ok(error instanceof ConnectTimeoutError);
        // Cut short by the timeout before or during its last round.
        assert.match(error.message, /^no session within 1 s/);
        return true;
      });
      stopped = true;
      await closing.catch(() => {}); // a last try cut short leaves its CONNECT unsent
      assert.ok(closed >= 2, `went round again: ${closed} tries`);
    });

    test("a refusal relayed just before the close is what the connect reports", async () => {
      const connecting = BrokerClient.connect(["ws://a.test", "ws://b.test"], "tok", LONG);
      const far = await Far.welcome(0);
      await far.connect();
      far.refuse(ConnectionRefusedReason.AUTH_FAILED, "bad token");
      far.ws.close();
      await assert.rejects(connecting, AuthenticationError);
      assert.equal(FakeWebSocket.all.length, 1, "refused credentials are not tried elsewhere");
    });

    test("a reconnect also leaves one that closes during the set-up for the next", async (t) => {
      const connecting = BrokerClient.connect(["ws://a.test", "ws://b.test"], "tok", {
        ...LONG,
        reconnect: { firstDelay: 1, maxDelay: 1, attemptTimeout: 600_000 },
      });
      const first = await Far.welcome(0);
      await first.accept();
      const client = await connecting;
      t.after(() => client.close());
      const reconnected = new Promise((resolve) => client.on("reconnected", resolve));
      first.reliable.fire("close");
      const viaB = await Far.welcome(1); // the lost link's coordinator comes last
      await viaB.connect();
      viaB.ws.close();
      const viaA = await Far.welcome(2);
      await viaA.accept();
      assert.equal(await reconnected, client);
      assert.deepEqual(
        FakeWebSocket.all.map((ws) => new URL(ws.url).host),
        ["a.test", "b.test", "a.test"],
      );
      assert.equal(client.coordinatorUrl, "ws://a.test");
      client.close();
    });

    test("when every coordinator fails, the last error is thrown", async () => {
      FakeWebSocket.refused.add("a.test");
      FakeWebSocket.refused.add("b.test");
      routes.set("http://a.test/connect?token=tok", 503);
      const connecting = BrokerClient.connect(["ws://a.test", "ws://b.test"], "tok", OPTIONS);
      await assert.rejects(connecting, (error: unknown) => {
        assert.ok(error instanceof BrokerError);
        assert.equal(error.message, "cannot reach the coordinator at http://b.test");
        return true;
      });
    });
  });
});
