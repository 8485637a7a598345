import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  aliasBigint,
  aliasNumber,
  BatchMessageSchema,
  decodeAs,
  encode,
  FrameError,
  frameType,
  MessageType,
  PingMessageSchema,
  TopicFWMessageSchema,
  toBytes,
  WelcomeMessageSchema,
} from "../src/wire.js";

describe("frameType", () => {
  test("reads the type of every message type from an encoded frame", () => {
    for (const type of [
      MessageType.WELCOME,
      MessageType.PING,
      MessageType.TOPIC_FW,
      MessageType.BATCH,
    ]) {
      assert.equal(frameType(encode(PingMessageSchema, { type, time: 7 })), type);
    }
  });

  test("finds the type when field 1 is not the first field on the wire", () => {
    // Field 2 (varint 5) before field 1 (varint PING): a valid protobuf encoding.
    const frame = new Uint8Array([0x10, 0x05, 0x08, MessageType.PING]);
    assert.equal(frameType(frame), MessageType.PING);
  });

  test("an empty frame is the default type", () => {
    assert.equal(frameType(new Uint8Array()), MessageType.UNKNOWN_MESSAGE_TYPE);
  });

  test("a frame that is not protobuf raises FrameError", () => {
    // Tag of field 1 with wire type 2 (length-delimited) whose length runs past the end.
    assert.throws(() => frameType(new Uint8Array([0x0a, 0x7f, 0x01])), FrameError);
  });
});

describe("encode and decodeAs", () => {
  test("a forwarded topic message survives the round trip, uint64 alias included", () => {
    const frame = encode(TopicFWMessageSchema, {
      type: MessageType.TOPIC_FW,
      fromAlias: aliasBigint(2 ** 40 + 3),
      topic: "room/1",
      body: new Uint8Array([1, 2, 3]),
    });
    const decoded = decodeAs(TopicFWMessageSchema, frame);
    assert.equal(decoded.type, MessageType.TOPIC_FW);
    assert.equal(aliasNumber(decoded.fromAlias), 2 ** 40 + 3);
    assert.equal(decoded.topic, "room/1");
    assert.deepEqual([...decoded.body], [1, 2, 3]);
  });

  test("a WELCOME lists the available servers in order", () => {
    const frame = encode(WelcomeMessageSchema, {
      type: MessageType.WELCOME,
      alias: 9n,
      availableServers: [4n, 1n, 30n],
    });
    const welcome = decodeAs(WelcomeMessageSchema, frame);
    assert.deepEqual(welcome.availableServers.map(aliasNumber), [4, 1, 30]);
    assert.equal(aliasNumber(welcome.alias), 9);
  });

  test("a BATCH carries its frames unchanged and in order", () => {
    const inner = [toBytes("first"), toBytes(""), toBytes("third")];
    const batch = decodeAs(
      BatchMessageSchema,
      encode(BatchMessageSchema, { type: MessageType.BATCH, frames: inner }),
    );
    assert.deepEqual(
      batch.frames.map((frame) => new TextDecoder().decode(frame)),
      ["first", "", "third"],
    );
  });

  test("a truncated frame raises FrameError naming the message type", () => {
    const frame = encode(TopicFWMessageSchema, {
      type: MessageType.TOPIC_FW,
      topic: "a topic long enough to cut",
    });
    assert.throws(
      () => decodeAs(TopicFWMessageSchema, frame.subarray(0, frame.length - 3)),
      (error: unknown) =>
        error instanceof FrameError && error.message.includes("protocol.TopicFWMessage"),
    );
  });
});

describe("toBytes", () => {
  test("encodes strings as UTF-8", () => {
    assert.deepEqual([...toBytes("é€")], [0xc3, 0xa9, 0xe2, 0x82, 0xac]);
  });

  test("passes bytes through as the same object", () => {
    const bytes = new Uint8Array([5, 6]);
    assert.equal(toBytes(bytes), bytes);
  });
});
