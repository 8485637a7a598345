import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { gunzipSync } from "node:zlib";

import { compressedSubscriptionFrame, subscriptionFrame, topicList } from "../src/subscription.js";
import { decodeAs, Format, MessageType, SubscriptionMessageSchema } from "../src/wire.js";

describe("topicList", () => {
  test("sorts and removes duplicates", () => {
    assert.deepEqual(topicList(["b", "a/2", "b", "a/1"]), ["a/1", "a/2", "b"]);
  });

  test("takes any iterable, and nothing", () => {
    assert.deepEqual(topicList(new Set(["y", "x"])), ["x", "y"]);
    assert.deepEqual(topicList([]), []);
  });

  test("refuses empty names and names with whitespace", () => {
    for (const bad of ["", "two words", "tab\there", "line\nbreak"]) {
      assert.throws(() => topicList(["ok", bad]), TypeError, JSON.stringify(bad));
    }
  });
});

describe("SUBSCRIPTION frames", () => {
  test("a plain frame lists the sorted topics, space-separated", () => {
    const message = decodeAs(SubscriptionMessageSchema, subscriptionFrame(["z", "a", "z"]));
    assert.equal(message.type, MessageType.SUBSCRIPTION);
    assert.equal(message.format, Format.PLAIN);
    assert.equal(new TextDecoder().decode(message.topics), "a z");
  });

  test("no topics unsubscribes from everything: an empty list", () => {
    const message = decodeAs(SubscriptionMessageSchema, subscriptionFrame([]));
    assert.equal(message.topics.length, 0);
  });

  test("a compressed frame holds the same list gzipped", async () => {
    const topics = Array.from({ length: 2000 }, (_, index) => `room/${index}`);
    const plain = subscriptionFrame(topics);
    const compressed = await compressedSubscriptionFrame(topics);
    const message = decodeAs(SubscriptionMessageSchema, compressed);
    assert.equal(message.format, Format.GZIP);
    const list = gunzipSync(message.topics).toString("utf8");
    assert.equal(list, topicList(topics).join(" "));
    assert.ok(compressed.length < plain.length / 3, `${compressed.length} of ${plain.length}`);
  });

  test("a compressed frame checks the names too", async () => {
    await assert.rejects(compressedSubscriptionFrame(["a b"]), TypeError);
  });
});
