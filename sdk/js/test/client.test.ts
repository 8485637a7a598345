import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  BrokerClient,
  CLIENT_CAPABILITIES,
  coordinatorOrder,
  MAX_FRAME_BYTES,
} from "../src/client.js";
import { Emitter } from "../src/events.js";
import { coordinatorBase, fetchIceServers } from "../src/link.js";
import { ReceivedMessage } from "../src/message.js";
import { Capability, Role } from "../src/wire.js";
import { installGlobal } from "./fakes.js";

describe("coordinator URLs", () => {
  const urls = ["ws://c1", "ws://c2", "ws://c3"];

  test("a reconnect tries the URL it lost last, the others in list order", () => {
    assert.deepEqual(coordinatorOrder(urls, "ws://c1"), ["ws://c2", "ws://c3", "ws://c1"]);
    assert.deepEqual(coordinatorOrder(urls, "ws://c2"), ["ws://c3", "ws://c1", "ws://c2"]);
    assert.deepEqual(coordinatorOrder(urls, "ws://c3"), urls);
  });

  test("a first connect starts at a random URL and still tries each once", (t) => {
    const starts = new Map<number, string[]>();
    for (const random of [0, 0.34, 0.5, 0.99]) {
      t.mock.method(Math, "random", () => random);
      starts.set(random, coordinatorOrder(urls));
    }
    assert.deepEqual(starts.get(0), urls);
    assert.deepEqual(starts.get(0.34), ["ws://c2", "ws://c3", "ws://c1"]);
    assert.deepEqual(starts.get(0.5), ["ws://c2", "ws://c3", "ws://c1"]);
    assert.deepEqual(starts.get(0.99), ["ws://c3", "ws://c1", "ws://c2"]);
  });

  test("a URL not in the list counts as no previous one", (t) => {
    t.mock.method(Math, "random", () => 0.7);
    assert.deepEqual(coordinatorOrder(urls, "ws://elsewhere"), ["ws://c3", "ws://c1", "ws://c2"]);
  });

  test("one URL is the whole order", () => {
    assert.deepEqual(coordinatorOrder(["ws://only"]), ["ws://only"]);
    assert.deepEqual(coordinatorOrder(["ws://only"], "ws://only"), ["ws://only"]);
  });

  test("connect refuses an empty list or an empty URL before touching the network", async (t) => {
    const opened: string[] = [];
    const restore = installGlobal(
      "WebSocket",
      class {
        constructor(url: string) {
          opened.push(url);
        }
      },
    );
    t.after(restore);
    for (const bad of [[], "", ["ws://c1", ""]] as (string | string[])[]) {
      await assert.rejects(BrokerClient.connect(bad), TypeError, JSON.stringify(bad));
    }
    assert.deepEqual(opened, []);
  });

  test("the coordinator's base URL is a WebSocket URL without trailing slashes", () => {
    assert.equal(coordinatorBase("http://host:9090/"), "ws://host:9090");
    assert.equal(coordinatorBase("https://host//"), "wss://host");
    assert.equal(coordinatorBase("ws://host"), "ws://host");
    assert.equal(coordinatorBase("wss://host/prefix/"), "wss://host/prefix");
  });
});

describe("ICE servers from the coordinator (fetchIceServers)", () => {
  const servers = [{ urls: "turn:turn.test:3478", username: "u", credential: "c" }];

  test("asks the coordinator's http(s) origin with the token as a bearer", async (t) => {
    const asked: [string, HeadersInit | undefined][] = [];
    t.mock.method(globalThis, "fetch", async (url: string, init?: RequestInit) => {
      asked.push([url, init?.headers]);
      return Response.json(servers);
    });
    assert.deepEqual(
      await fetchIceServers("wss://c.test/", new TextEncoder().encode("tok")),
      servers,
    );
    assert.deepEqual(await fetchIceServers("ws://c.test"), servers);
    assert.deepEqual(asked, [
      ["https://c.test/ice-servers", { Authorization: "Bearer tok" }],
      ["http://c.test/ice-servers", {}],
    ]);
  });

  test("an error status, a body that is not a list, or a failure mean none", async (t) => {
    const answers = [
      () => new Response("[]", { status: 404 }),
      () => Response.json({ urls: "stun:x" }),
      () => new Response("not json"),
      () => {
        throw new TypeError("Failed to fetch");
      },
    ];
    for (const make of answers) {
      t.mock.method(globalThis, "fetch", async () => make());
      assert.deepEqual(await fetchIceServers("ws://c.test"), []);
    }
  });

  test("a coordinator that does not answer within 3 s means none", async (t) => {
    t.mock.timers.enable({ apis: ["setTimeout"] });
    t.mock.method(
      globalThis,
      "fetch",
      (_url: string, init?: RequestInit) =>
        new Promise((_, reject) => {
          init?.signal?.addEventListener("abort", () => reject(new Error("aborted")));
        }),
    );
    const servers = fetchIceServers("ws://c.test");
    t.mock.timers.tick(3000);
    assert.deepEqual(await servers, []);
  });
});

describe("Emitter", () => {
  interface Events extends Record<string, unknown> {
    a: number;
    b: string;
  }

  test("calls the listeners of a type with the value, until they are removed", () => {
    const events = new Emitter<Events>();
    const got: string[] = [];
    const stop = events.on("a", (value) => got.push(`first ${value}`));
    const second = (value: number): void => {
      got.push(`second ${value}`);
    };
    events.on("a", second);
    events.on("b", (value) => got.push(`b ${value}`));
    events.emit("a", 1);
    stop();
    events.emit("a", 2);
    events.off("a", second);
    events.emit("a", 3);
    events.emit("b", "x");
    assert.deepEqual(got, ["first 1", "second 1", "second 2", "b x"]);
  });

  test("a listener that throws is reported and the others still run", (t) => {
    const reported: unknown[] = [];
    t.after(installGlobal("reportError", (error: unknown) => reported.push(error)));
    const events = new Emitter<Events>();
    const got: number[] = [];
    const failure = new Error("listener failed");
    events.on("a", () => {
      throw failure;
    });
    events.on("a", (value) => got.push(value));
    events.emit("a", 7);
    assert.deepEqual(got, [7]);
    assert.deepEqual(reported, [failure]);
  });

  test("a listener added while emitting hears the next event, not the current one", () => {
    const events = new Emitter<Events>();
    const got: string[] = [];
    events.on("a", (value) => {
      got.push(`outer ${value}`);
      events.on("a", (inner) => got.push(`inner ${inner}`));
    });
    events.emit("a", 1);
    assert.deepEqual(got, ["outer 1"]);
  });
});

describe("ReceivedMessage", () => {
  test("decodes its body and identity as UTF-8", () => {
    const body = new TextEncoder().encode("héllo");
    const plain = new ReceivedMessage(5, body, true, "room");
    assert.equal(plain.text, "héllo");
    assert.equal(plain.identityText, undefined);
    assert.equal(plain.role, undefined);
    const stamped = new ReceivedMessage(
      5,
      body,
      false,
      undefined,
      new TextEncoder().encode("alice"),
      Role.CLIENT,
    );
    assert.equal(stamped.identityText, "alice");
    assert.equal(stamped.topic, undefined);
  });
});

test("the client announces batching and topic names; frames stay below 256 KiB", () => {
  assert.equal(
    CLIENT_CAPABILITIES,
    Capability.CAPABILITY_BATCH | Capability.CAPABILITY_TOPIC_NAMES,
  );
  assert.ok(MAX_FRAME_BYTES < 256 * 1024);
});
