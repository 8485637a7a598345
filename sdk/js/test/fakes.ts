/**
 * Stand-ins for the browser objects the SDK drives (a data channel, a peer
 * connection, a WebSocket), recording what the SDK does to them and letting a
 * test fire their events.
 */

type Handler = (event: never) => void;

/** Listeners by event type, fired by the test. */
class Events {
  private readonly handlers = new Map<string, { handler: Handler; once: boolean }[]>();

  addEventListener(type: string, handler: Handler, options?: { once?: boolean }): void {
    const list = this.handlers.get(type) ?? [];
    list.push({ handler, once: options?.once ?? false });
    this.handlers.set(type, list);
  }

  removeEventListener(type: string, handler: Handler): void {
    const list = this.handlers.get(type) ?? [];
    this.handlers.set(
      type,
      list.filter((entry) => entry.handler !== handler),
    );
  }

  /** Call every listener of `type` with `event`. */
  fire(type: string, event: object = {}): void {
    const list = this.handlers.get(type) ?? [];
    this.handlers.set(
      type,
      list.filter((entry) => !entry.once),
    );
    for (const { handler } of list) {
      handler(event as never);
    }
  }

  listening(type: string): number {
    return this.handlers.get(type)?.length ?? 0;
  }
}

/** An RTCDataChannel whose buffer level the test sets. */
export class FakeChannel extends Events {
  readyState: RTCDataChannelState = "open";
  bufferedAmount = 0;
  bufferedAmountLowThreshold = 0;
  binaryType = "blob";
  readonly sent: Uint8Array[] = [];

  constructor(readonly label: string) {
    super();
  }

  send(data: Uint8Array): void {
    this.sent.push(data);
  }

  close(): void {
    this.readyState = "closed";
  }

  /** Typed as what the SDK expects. */
  get asChannel(): RTCDataChannel {
    return this as unknown as RTCDataChannel;
  }
}

/** An RTCPeerConnection that records descriptions and candidates. */
export class FakePeerConnection extends Events {
  /** Every peer connection made since the last reset, in order. */
  static all: FakePeerConnection[] = [];
  readonly log: string[] = [];
  readonly candidates: RTCIceCandidateInit[] = [];
  localDescription: RTCSessionDescriptionInit | null = null;
  connectionState: RTCPeerConnectionState = "new";
  /** Candidates whose text is listed here are refused, as a browser refuses unusable ones. */
  refuse = new Set<string>();

  constructor(readonly config: RTCConfiguration) {
    super();
    FakePeerConnection.all.push(this);
  }

  async setRemoteDescription(description: RTCSessionDescriptionInit): Promise<void> {
    this.log.push(`remote ${description.type}`);
  }

  async addIceCandidate(candidate: RTCIceCandidateInit): Promise<void> {
    if (this.refuse.has(candidate.candidate ?? "")) {
      throw new Error("unusable candidate");
    }
    this.log.push(`candidate ${candidate.candidate}`);
    this.candidates.push(candidate);
  }

  async createAnswer(): Promise<RTCSessionDescriptionInit> {
    this.log.push("create answer");
    return { type: "answer", sdp: "v=0 answer" };
  }

  async setLocalDescription(description: RTCSessionDescriptionInit): Promise<void> {
    this.log.push(`local ${description.type}`);
    this.localDescription = description;
  }

  close(): void {
    this.log.push("close");
    this.connectionState = "closed";
  }
}

/**
 * A WebSocket that opens on the next task (or, for URLs in `refused`, closes
 * as a refused upgrade does) and takes the frames the test pushes.
 */
export class FakeWebSocket extends Events {
  static readonly CONNECTING = 0;
  static readonly OPEN = 1;
  static readonly CLOSING = 2;
  static readonly CLOSED = 3;
  /** Every socket made since the last reset, in order. */
  static all: FakeWebSocket[] = [];
  /** Coordinator hosts whose upgrade fails. */
  static refused = new Set<string>();
  readyState = FakeWebSocket.CONNECTING;
  binaryType = "blob";
  readonly sent: Uint8Array[] = [];

  constructor(readonly url: string) {
    super();
    FakeWebSocket.all.push(this);
    const opens = !FakeWebSocket.refused.has(new URL(url).host);
    setTimeout(() => {
      if (opens) {
        this.readyState = FakeWebSocket.OPEN;
        this.fire("open");
      } else {
        this.close();
      }
    });
  }

  send(data: Uint8Array): void {
    this.sent.push(data);
  }

  /** A binary frame from the coordinator. */
  receive(frame: Uint8Array): void {
    const buffer = frame.buffer.slice(frame.byteOffset, frame.byteOffset + frame.byteLength);
    this.fire("message", { data: buffer });
  }

  close(): void {
    if (this.readyState !== FakeWebSocket.CLOSED) {
      this.readyState = FakeWebSocket.CLOSED;
      this.fire("close");
    }
  }
}

/** Put a fake under a browser global's name for the test's duration; returns the undo. */
export function installGlobal(name: string, value: unknown): () => void {
  const scope = globalThis as Record<string, unknown>;
  const had = Object.hasOwn(scope, name);
  const before = scope[name];
  scope[name] = value;
  return () => {
    if (had) {
      scope[name] = before;
    } else {
      delete scope[name];
    }
  };
}

/** Let pending promise callbacks and zero-delay timers run. */
export function settle(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}
