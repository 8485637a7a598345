/**
 * One RTCPeerConnection carrying the broker's two data channels.
 *
 * The comm server is the side that received CONNECT, so it creates both
 * channels (`reliable`, `unreliable`) and the offer; the browser answers and
 * adopts the channels from `datachannel` events. aiortc puts its candidates
 * in the SDP, while the browser trickles its own: they travel through the
 * coordinator as the JSON of `RTCIceCandidate.toJSON()`. Remote candidates
 * that arrive before the offer is applied are held, as the protocol asks.
 */

import type { WriterLimits } from "./channel.js";
import { ChannelWriter, DEFAULT_LIMITS } from "./channel.js";
import { MAX_CANDIDATE_BYTES, MAX_CANDIDATES } from "./gen/limits.js";

export type FrameHandler = (frame: Uint8Array, reliable: boolean) => void;

const RELIABLE = "reliable";
/** Milliseconds a closing session waits for reliable frames to leave. */
const DRAIN_MS = 500;
const UNRELIABLE = "unreliable";

const utf8 = new TextEncoder();

export class Session {
  readonly pc: RTCPeerConnection;
  reliable: ChannelWriter | undefined;
  unreliable: ChannelWriter | undefined;
  /** Resolves when both channels are open; rejects if the session closes first. */
  readonly opened: Promise<void>;
  closed = false;
  closeReason = "";
  /** Data-channel messages received on both channels. */
  received = 0;
  /** Called with each local candidate's JSON, to be sent to the server. */
  onCandidate: (candidateJson: string) => void = () => {};
  private readonly closeCallbacks: ((reason: string) => void)[] = [];
  private resolveOpened!: () => void;
  private rejectOpened!: (error: Error) => void;
  private remoteSet = false;
  private heldCandidates: RTCIceCandidateInit[] = [];
  private candidatesLeft = MAX_CANDIDATES;

  constructor(
    private readonly onFrame: FrameHandler,
    iceServers: RTCIceServer[] = [],
    iceTransportPolicy: RTCIceTransportPolicy = "all",
    private readonly limits: WriterLimits = DEFAULT_LIMITS,
  ) {
    this.opened = new Promise<void>((resolve, reject) => {
      this.resolveOpened = resolve;
      this.rejectOpened = reject;
    });
    this.opened.catch(() => {}); // nobody may be waiting when it closes
    this.pc = new RTCPeerConnection({ iceServers, iceTransportPolicy });
    this.pc.addEventListener("datachannel", (event) => this.adopt(event.channel));
    this.pc.addEventListener("icecandidate", (event) => {
      // A null candidate (or an empty one) marks the end of gathering: nothing to send.
      if (event.candidate !== null && event.candidate.candidate !== "") {
        this.onCandidate(JSON.stringify(event.candidate.toJSON()));
      }
    });
    this.pc.addEventListener("connectionstatechange", () => {
      const state = this.pc.connectionState;
      if (state === "failed" || state === "closed") {
        this.close(`connection ${state}`);
      }
    });
  }

  /** Apply the server's offer (JSON `{type, sdp}`) and return our answer's JSON. */
  async acceptOffer(offerJson: string): Promise<string> {
    const offer = JSON.parse(offerJson) as RTCSessionDescriptionInit;
    if (offer.type !== "offer" || typeof offer.sdp !== "string") {
      throw new TypeError("the server's offer is not a session description of type offer");
    }
    await this.pc.setRemoteDescription(offer);
    this.remoteSet = true;
    const held = this.heldCandidates;
    this.heldCandidates = [];
    for (const candidate of held) {
      try {
        await this.pc.addIceCandidate(candidate);
      } catch (error) {
        // One candidate the browser cannot use must not cost the offer.
        console.debug("webrtc-broker: dropping a held candidate:", error);
      }
    }
    const answer = await this.pc.createAnswer();
    await this.pc.setLocalDescription(answer);
    const local = this.pc.localDescription;
    return JSON.stringify({ type: local?.type ?? answer.type, sdp: local?.sdp ?? answer.sdp });
  }

  /**
   * Add a remote candidate (JSON), holding it until the offer is applied.
   * Throws for one that is not a candidate, too large, or above the session's
   * budget: checked on arrival, so that what is held is bounded and parsed.
   */
  async addCandidate(candidateJson: string): Promise<void> {
    if (candidateJson.length > MAX_CANDIDATE_BYTES) {
      throw new RangeError(`candidate of ${candidateJson.length} characters`);
    }
    if (this.candidatesLeft <= 0) {
      throw new RangeError("too many candidates");
    }
    this.candidatesLeft -= 1;
    const init: unknown = JSON.parse(candidateJson);
    if (typeof init !== "object" || init === null || !("candidate" in init)) {
      throw new TypeError("not a candidate");
    }
    const candidate = init as RTCIceCandidateInit;
    if (typeof candidate.candidate !== "string") {
      throw new TypeError("not a candidate");
    }
    if (!candidate.candidate) {
      return; // end of candidates
    }
    if (!this.remoteSet) {
      this.heldCandidates.push(candidate);
      return;
    }
    await this.pc.addIceCandidate(candidate);
  }

  private adopt(channel: RTCDataChannel): void {
    const stuck = (reason: string): void => this.close(`slow connection: ${reason}`);
    let writer: ChannelWriter;
    if (channel.label === RELIABLE && this.reliable === undefined) {
      writer = this.reliable = new ChannelWriter(channel, this.limits, stuck);
    } else if (channel.label === UNRELIABLE && this.unreliable === undefined) {
      writer = this.unreliable = new ChannelWriter(channel, this.limits, stuck);
    } else {
      channel.close();
      return;
    }
    const reliable = writer.reliable;
    channel.binaryType = "arraybuffer";
    channel.addEventListener("message", (event: MessageEvent<ArrayBuffer | string>) => {
      if (this.closed) {
        return;
      }
      const data = event.data;
      this.received += 1;
      this.onFrame(typeof data === "string" ? utf8.encode(data) : new Uint8Array(data), reliable);
    });
    channel.addEventListener("open", () => this.checkOpen());
    channel.addEventListener("close", () => this.close(`${channel.label} channel closed`));
    this.checkOpen();
  }

  private checkOpen(): void {
    if (this.reliable?.isOpen && this.unreliable?.isOpen) {
      this.resolveOpened();
    }
  }

  /** Send a frame; a stuck reliable channel closes the session. */
  send(frame: Uint8Array, reliable: boolean): void {
    (reliable ? this.reliable : this.unreliable)?.send(frame);
  }

  /** Send BATCH frames from now on (the server announced CAPABILITY_BATCH). */
  enableBatching(): void {
    this.reliable?.enableBatching();
    this.unreliable?.enableBatching();
  }

  /** Changes whenever the server shows life: a message from it, or buffer space
   * freed by its acknowledgements (see liveness.ts). */
  get peerProgress(): string {
    return `${this.received}/${this.reliable?.drains ?? 0}/${this.unreliable?.drains ?? 0}`;
  }

  /** Frames dropped because the unreliable channel's buffer was full. */
  get dropped(): number {
    return this.unreliable?.dropped ?? 0;
  }

  /** Call `callback(reason)` once the session closes (soon, if it already has). */
  onClose(callback: (reason: string) => void): void {
    if (this.closed) {
      queueMicrotask(() => callback(this.closeReason));
    } else {
      this.closeCallbacks.push(callback);
    }
  }

  /**
   * Close at once for this side (nothing more is sent or delivered), but let
   * the frames already handed to the channels leave first, for a while.
   */
  close(reason = "closed"): void {
    if (this.closed) {
      return;
    }
    this.closed = true;
    this.closeReason = reason;
    this.rejectOpened(new Error(reason));
    for (const callback of this.closeCallbacks.splice(0)) {
      try {
        callback(reason);
      } catch (error) {
        reportError(error);
      }
    }
    this.reliable?.flush();
    this.unreliable?.flush();
    // Closing a channel sends what it buffered first, then tells the server at once
    // (the page may be going away: a closed page would leave the server to time out).
    this.reliable?.channel.close();
    this.unreliable?.channel.close();
    void this.drained(DRAIN_MS).then(() => this.pc.close());
  }

  /** Resolves once the reliable channel has closed (sent what it held), or after `ms`. */
  private async drained(ms: number): Promise<void> {
    const channel = this.reliable?.channel;
    const deadline = performance.now() + ms;
    const open = (): boolean => channel !== undefined && channel.readyState !== "closed";
    while (open() && performance.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }
}
