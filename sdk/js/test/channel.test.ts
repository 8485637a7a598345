import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { ChannelWriter, type WriterLimits } from "../src/channel.js";
import { BATCH_ENTRY_OVERHEAD, BATCH_MAX_BYTES } from "../src/gen/limits.js";
import { BatchMessageSchema, decodeAs, MessageType } from "../src/wire.js";
import { FakeChannel } from "./fakes.js";

const LIMITS: WriterLimits = { highBytes: 1000, maxQueuedFrames: 3 };

function writer(label: string, limits = LIMITS): [ChannelWriter, FakeChannel, string[]] {
  const channel = new FakeChannel(label);
  const stuck: string[] = [];
  return [
    new ChannelWriter(channel.asChannel, limits, (reason) => stuck.push(reason)),
    channel,
    stuck,
  ];
}

function frame(size: number, fill = 1): Uint8Array {
  return new Uint8Array(size).fill(fill);
}

/** Whether a sent message is a BATCH (the test's own frames are raw bytes, not protobuf). */
function isBatch(message: Uint8Array): boolean {
  return message[0] === 0x08 && message[1] === MessageType.BATCH;
}

/** What arrives at the peer: each data-channel message, BATCH frames unpacked. */
function unpacked(sent: readonly Uint8Array[]): Uint8Array[] {
  return sent.flatMap((message) =>
    isBatch(message) ? decodeAs(BatchMessageSchema, message).frames : [message],
  );
}

/** Let the writer's microtask flush run. */
const nextTask = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

describe("ChannelWriter without batching", () => {
  test("writes each frame at once, as itself", () => {
    const [out, channel] = writer("reliable");
    const frames = [frame(3, 1), frame(4, 2)];
    for (const f of frames) {
      out.send(f);
    }
    assert.deepEqual(channel.sent, frames);
    assert.equal(out.reliable, true);
  });

  test("asks for bufferedamountlow at half the high-water mark", () => {
    const [, channel] = writer("reliable");
    assert.equal(channel.bufferedAmountLowThreshold, 500);
  });

  test("sends nothing on a channel that is not open", () => {
    const [out, channel] = writer("reliable");
    channel.readyState = "closing";
    out.send(frame(10));
    assert.equal(channel.sent.length, 0);
    assert.equal(out.depth, 0);
  });
});

describe("ChannelWriter with batching", () => {
  test("frames sent in one task leave as one BATCH, in order", async () => {
    const [out, channel] = writer("reliable");
    out.enableBatching();
    const frames = [frame(10, 1), frame(20, 2), frame(30, 3)];
    for (const f of frames) {
      out.send(f);
    }
    assert.equal(channel.sent.length, 0, "nothing leaves before the task ends");
    await nextTask();
    assert.equal(channel.sent.length, 1);
    assert.deepEqual(unpacked(channel.sent), frames);
  });

  test("a lone frame in a task leaves as itself, not as a BATCH of one", async () => {
    const [out, channel] = writer("unreliable");
    out.enableBatching();
    const only = frame(40, 7);
    out.send(only);
    await nextTask();
    assert.deepEqual(channel.sent, [only]);
  });

  test("a batch is cut where the next frame would pass the size limit", async () => {
    const [out, channel] = writer("reliable");
    out.enableBatching();
    // Each 500-byte frame counts 504 bytes (tag, 2-byte length, a share of the header):
    // two fit in 1160, a third would not.
    const frames = [frame(500, 1), frame(500, 2), frame(500, 3)];
    for (const f of frames) {
      out.send(f);
    }
    assert.equal(channel.sent.length, 1, "the full batch leaves when the third frame comes");
    const [batch] = channel.sent;
    assert.ok(batch !== undefined);
    assert.ok(isBatch(batch));
    assert.equal(batch.length, 2 + 503 + 503, "header, then tag, length and frame for each");
    await nextTask();
    assert.equal(channel.sent.length, 2);
    assert.deepEqual(channel.sent[1], frames[2]);
    assert.deepEqual(unpacked(channel.sent), frames);
  });

  test("batches never pass BATCH_MAX_BYTES, whatever the frame sizes", async () => {
    const [out, channel] = writer("reliable", { highBytes: 1 << 30, maxQueuedFrames: 10 });
    out.enableBatching();
    const frames = Array.from({ length: 200 }, (_, index) => frame((index * 37) % 300, index));
    for (const f of frames) {
      out.send(f);
    }
    await nextTask();
    for (const message of channel.sent) {
      assert.ok(message.length <= BATCH_MAX_BYTES, `${message.length} bytes`);
    }
    assert.deepEqual(unpacked(channel.sent), frames);
    assert.ok(channel.sent.length < frames.length / 4, `${channel.sent.length} messages`);
  });

  test("small frames fill a batch as the Python SDK and the servers count it", async () => {
    const [out, channel] = writer("reliable", { highBytes: 1 << 30, maxQueuedFrames: 10 });
    out.enableBatching();
    // 40-byte frames take 42 bytes encoded but count 44: 26 fit, not the 27 that would.
    const frames = Array.from({ length: 30 }, (_, index) => frame(40, index));
    for (const f of frames) {
      out.send(f);
    }
    await nextTask();
    const perBatch = Math.floor(BATCH_MAX_BYTES / (40 + BATCH_ENTRY_OVERHEAD));
    assert.equal(perBatch, 26);
    const [first, second] = channel.sent;
    assert.ok(first !== undefined && second !== undefined && channel.sent.length === 2);
    assert.equal(decodeAs(BatchMessageSchema, first).frames.length, perBatch);
    assert.equal(first.length, 2 + perBatch * 42);
    assert.deepEqual(unpacked(channel.sent), frames);
  });

  test("a frame too large for any batch goes alone, after what was pending", async () => {
    const [out, channel] = writer("reliable", { highBytes: 1 << 30, maxQueuedFrames: 10 });
    out.enableBatching();
    const small = [frame(10, 1), frame(10, 2)];
    const large = frame(BATCH_MAX_BYTES, 3);
    out.send(small[0] as Uint8Array);
    out.send(small[1] as Uint8Array);
    out.send(large);
    assert.equal(channel.sent.length, 2);
    assert.equal(channel.sent[1], large);
    await nextTask();
    assert.deepEqual(unpacked(channel.sent), [...small, large]);
  });

  test("flush sends the pending batch at once", () => {
    const [out, channel] = writer("reliable");
    out.enableBatching();
    out.send(frame(5, 1));
    out.send(frame(5, 2));
    out.flush();
    assert.equal(channel.sent.length, 1);
    assert.equal(unpacked(channel.sent).length, 2);
  });
});

describe("ChannelWriter under back-pressure", () => {
  test("the unreliable channel drops (and counts) frames while its buffer is full", () => {
    const [out, channel] = writer("unreliable");
    channel.bufferedAmount = 1000;
    out.send(frame(1, 1));
    out.send(frame(1, 2));
    assert.equal(out.dropped, 2);
    assert.equal(channel.sent.length, 0);
    channel.bufferedAmount = 999;
    out.send(frame(1, 3));
    assert.equal(out.dropped, 2);
    assert.deepEqual(channel.sent, [frame(1, 3)]);
  });

  test("the reliable channel queues while full and drains in order on bufferedamountlow", () => {
    const [out, channel] = writer("reliable");
    channel.bufferedAmount = 1000;
    const frames = [frame(1, 1), frame(1, 2)];
    out.send(frames[0] as Uint8Array);
    out.send(frames[1] as Uint8Array);
    assert.equal(out.depth, 2);
    assert.equal(channel.sent.length, 0);
    // Room again, but the queue is not empty: a new frame waits behind it.
    channel.bufferedAmount = 0;
    const later = frame(1, 3);
    out.send(later);
    assert.equal(out.depth, 3);
    assert.equal(channel.sent.length, 0);
    channel.fire("bufferedamountlow");
    assert.deepEqual(channel.sent, [...frames, later]);
    assert.equal(out.depth, 0);
    assert.equal(out.drains, 1);
    assert.equal(out.dropped, 0);
  });

  test("a drain stops when the buffer fills again", () => {
    const [out, channel] = writer("reliable");
    channel.bufferedAmount = 1000;
    for (let index = 0; index < 3; index += 1) {
      out.send(frame(600, index));
    }
    channel.bufferedAmount = 0;
    const realSend = channel.send.bind(channel);
    channel.send = (data: Uint8Array): void => {
      realSend(data);
      channel.bufferedAmount += data.length;
    };
    channel.fire("bufferedamountlow");
    assert.equal(channel.sent.length, 2, "600 buffered is below 1000, 1200 is not");
    assert.equal(out.depth, 1);
    channel.bufferedAmount = 0;
    channel.fire("bufferedamountlow");
    assert.deepEqual(
      channel.sent.map((sent) => sent[0]),
      [0, 1, 2],
    );
    assert.equal(out.drains, 2);
  });

  test("a full reliable queue reports the session stuck instead of losing frames", () => {
    const [out, channel, stuck] = writer("reliable");
    channel.bufferedAmount = 1000;
    for (let index = 0; index < 3; index += 1) {
      out.send(frame(1, index));
    }
    assert.deepEqual(stuck, []);
    out.send(frame(1, 9));
    assert.deepEqual(stuck, ["3 frames waiting on the reliable channel"]);
    assert.equal(out.depth, 3);
  });
});
