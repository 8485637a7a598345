/**
 * Sending on one data channel without overrunning the browser's buffer.
 *
 * Browsers close a data channel whose send buffer overflows, so frames wait
 * in JavaScript once `bufferedAmount` passes a high-water mark and drain on
 * `bufferedamountlow`. The unreliable channel carries positions and similar
 * state that a newer frame replaces, so there a full buffer drops the frame
 * (and counts it) instead of queueing it: a queue would only deliver stale
 * positions late.
 *
 * Each data channel message costs the comm server about the same whatever
 * its size (docs/benchmarks.md), so once the server announced CAPABILITY_BATCH the
 * frames sent in one JavaScript task (a loop publishing many messages) leave
 * as BATCH frames that fit one SCTP packet. The flush runs as a microtask:
 * batching adds no latency. A batch is counted as the Python SDK and the comm
 * servers count theirs (BATCH_MAX_BYTES and BATCH_ENTRY_OVERHEAD, from
 * webrtc_broker/limits.py), so every side cuts the same frames into the same
 * batches.
 */

import { BATCH_ENTRY_OVERHEAD, BATCH_MAX_BYTES } from "./gen/limits.js";
import { BatchMessageSchema, encode, MessageType } from "./wire.js";

export interface WriterLimits {
  /** Buffered bytes above which frames queue (reliable) or drop (unreliable). */
  highBytes: number;
  /** Frames queued on the reliable channel before the session is given up as stuck. */
  maxQueuedFrames: number;
}

export const DEFAULT_LIMITS: WriterLimits = { highBytes: 1024 * 1024, maxQueuedFrames: 4096 };

export class ChannelWriter {
  readonly reliable: boolean;
  /** Frames dropped because the unreliable channel's buffer was full. */
  dropped = 0;
  /** `bufferedamountlow` events: the browser sent what it held, so the peer acked. */
  drains = 0;
  private readonly queue: Uint8Array[] = [];
  private batchLimit = 0;
  private batch: Uint8Array[] = [];
  private batchBytes = 0;

  /**
   * `onStuck` is called when the reliable queue is full: the peer cannot keep
   * up and the session should end (frames must not be lost silently).
   */
  constructor(
    readonly channel: RTCDataChannel,
    private readonly limits: WriterLimits,
    private readonly onStuck: (reason: string) => void,
  ) {
    this.reliable = channel.label === "reliable";
    channel.bufferedAmountLowThreshold = Math.floor(limits.highBytes / 2);
    channel.addEventListener("bufferedamountlow", () => this.drain());
  }

  get isOpen(): boolean {
    return this.channel.readyState === "open";
  }

  /** Frames waiting for buffer space. */
  get depth(): number {
    return this.queue.length;
  }

  /** Batch from now on: the server announced that it accepts BATCH frames. */
  enableBatching(maxBytes = BATCH_MAX_BYTES): void {
    this.batchLimit = maxBytes;
  }

  /** Send `frame`, possibly in a batch. */
  send(frame: Uint8Array): void {
    if (this.batchLimit === 0) {
      this.write(frame);
      return;
    }
    const size = frame.length + BATCH_ENTRY_OVERHEAD;
    if (this.batchBytes + size > this.batchLimit) {
      this.flush(); // keep order: what is pending goes before this frame
      if (size > this.batchLimit) {
        this.write(frame);
        return;
      }
    }
    if (this.batch.length === 0) {
      queueMicrotask(() => this.flush());
    }
    this.batch.push(frame);
    this.batchBytes += size;
  }

  /** Send the pending batch now (a lone frame goes out as itself). */
  flush(): void {
    const frames = this.batch;
    if (frames.length === 0) {
      return;
    }
    this.batch = [];
    this.batchBytes = 0;
    const [first] = frames;
    if (frames.length === 1 && first !== undefined) {
      this.write(first);
    } else {
      this.write(encode(BatchMessageSchema, { type: MessageType.BATCH, frames }));
    }
  }

  private write(frame: Uint8Array): void {
    if (!this.isOpen) {
      return;
    }
    const full = this.channel.bufferedAmount >= this.limits.highBytes;
    if (!this.reliable) {
      if (full) {
        this.dropped += 1;
      } else {
        this.channel.send(frame as Uint8Array<ArrayBuffer>);
      }
      return;
    }
    if (this.queue.length === 0 && !full) {
      this.channel.send(frame as Uint8Array<ArrayBuffer>);
      return;
    }
    if (this.queue.length >= this.limits.maxQueuedFrames) {
      this.onStuck(`${this.queue.length} frames waiting on the reliable channel`);
      return;
    }
    this.queue.push(frame);
  }

  private drain(): void {
    this.drains += 1;
    while (
      this.queue.length > 0 &&
      this.isOpen &&
      this.channel.bufferedAmount < this.limits.highBytes
    ) {
      const frame = this.queue.shift() as Uint8Array<ArrayBuffer>;
      this.channel.send(frame);
    }
  }
}
