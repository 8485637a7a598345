/**
 * The browser client: one session with one comm server.
 *
 * Connecting follows docs/protocol.md, as the Python SDK does: WebSocket to
 * the coordinator's `/connect`, WELCOME, CONNECT to the chosen server, answer
 * its offer, trickle our ICE candidates, AUTH on the reliable channel. The
 * protocol has no AUTH acknowledgement, so AUTH is followed by a PING on the
 * same ordered channel: its echo can only come back once the server accepted
 * the AUTH, so `connect` resolves only for a session that really works.
 */

import { Emitter } from "./events.js";
import type { Listener } from "./events.js";
import {
  AuthenticationError,
  BrokerError,
  ClosedError,
  ConnectTimeoutError,
  NoServerAvailableError,
  ServerFullError,
} from "./errors.js";
import { ReceivedMessage } from "./message.js";
import { Session } from "./session.js";
import { compressedSubscriptionFrame, subscriptionFrame } from "./subscription.js";
import {
  AuthMessageSchema,
  BatchMessageSchema,
  Capability,
  ConnectMessageSchema,
  ConnectionRefusedMessageSchema,
  ConnectionRefusedReason,
  FrameError,
  MessageType,
  PingMessageSchema,
  Role,
  TopicFWMessageSchema,
  TopicIdentityFWMessageSchema,
  TopicIdentityMessageSchema,
  TopicMessageSchema,
  WebRtcMessageSchema,
  WelcomeMessageSchema,
  aliasBigint,
  aliasNumber,
  decodeAs,
  encode,
  frameType,
  toBytes,
} from "./wire.js";

/** What this SDK announces in its AUTH: it unpacks BATCH frames and reads topic names. */
export const CLIENT_CAPABILITIES = Capability.CAPABILITY_BATCH | Capability.CAPABILITY_TOPIC_NAMES;

/** Milliseconds to wait, after a session closed during set-up, for the server's reason. */
const REFUSAL_GRACE_MS = 1000;

export interface ConnectOptions {
  /** A server alias from the coordinator's list, instead of its first choice. */
  server?: number;
  /** Milliseconds the whole set-up may take (default 20000). */
  timeout?: number;
  /** STUN/TURN servers for the peer connection (default: none, host candidates only). */
  iceServers?: RTCIceServer[];
  /**
   * Capability bits announced in AUTH (default {@link CLIENT_CAPABILITIES});
   * 0 makes the session look like an original-protocol client.
   */
  capabilities?: number;
}

export interface PublishOptions {
  /** The reliable ordered channel (default) or the unreliable unordered one. */
  reliable?: boolean;
}

export interface SubscribeOptions {
  /** Send the topic list gzip-compressed (worth it for thousands of topics). */
  compress?: boolean;
}

export interface BrokerClientEvents extends Record<string, unknown> {
  /** A topic message arrived. */
  message: ReceivedMessage;
  /** The session closed (by `close()` or by the server); the value is the reason. */
  close: string;
}

const utf8Decoder = new TextDecoder();
const utf8Encoder = new TextEncoder();

/** The coordinator's base URL as a WebSocket URL without a trailing slash. */
export function coordinatorBase(url: string): string {
  const base = url.replace(/\/+$/, "");
  return base.replace(/^http(s?):\/\//, "ws$1://");
}

/**
 * Opens the coordinator WebSocket. Browsers hide why an upgrade failed, so
 * after a failure the coordinator's `/readyz` tells an unreachable or
 * draining coordinator from one that refused these credentials (HTTP 403).
 */
async function openCoordinator(base: string, credentials: Uint8Array): Promise<WebSocket> {
  const token = utf8Decoder.decode(credentials);
  const url = `${base}/connect${token ? `?token=${encodeURIComponent(token)}` : ""}`;
  const ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  const opened = await new Promise<boolean>((resolve) => {
    ws.addEventListener("open", () => resolve(true), { once: true });
    ws.addEventListener("close", () => resolve(false), { once: true });
  });
  if (opened) {
    return ws;
  }
  throw await diagnoseRefusal(base.replace(/^ws/, "http"));
}

async function diagnoseRefusal(httpBase: string): Promise<BrokerError> {
  const refused = new AuthenticationError("the coordinator refused the credentials");
  try {
    const response = await fetch(`${httpBase}/readyz`, { cache: "no-store" });
    if (response.status === 503) {
      return new BrokerError("the coordinator is shutting down");
    }
    return refused;
  } catch {
    // Cross-origin without CORS headers: an opaque answer still proves it is up.
    try {
      await fetch(`${httpBase}/readyz`, { cache: "no-store", mode: "no-cors" });
      return refused;
    } catch {
      return new BrokerError(`cannot reach the coordinator at ${httpBase}`);
    }
  }
}

/** The first binary frame on `ws`, or an error if it closes first. */
function firstFrame(ws: WebSocket): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    const onMessage = (event: MessageEvent<ArrayBuffer | string>): void => {
      if (typeof event.data === "string") {
        return;
      }
      ws.removeEventListener("close", onClose);
      ws.removeEventListener("message", onMessage);
      resolve(new Uint8Array(event.data));
    };
    const onClose = (): void => {
      ws.removeEventListener("message", onMessage);
      reject(new BrokerError("the coordinator closed the connection before WELCOME"));
    };
    ws.addEventListener("message", onMessage);
    ws.addEventListener("close", onClose, { once: true });
  });
}

/** Resources of a connect attempt, so a timeout can release whatever exists so far. */
class Attempt {
  ws: WebSocket | undefined;
  client: BrokerClient | undefined;
  aborted = false;

  abort(): void {
    this.aborted = true;
    this.client?.close();
    this.ws?.close();
  }

  /** Throw (releasing what was made since) if the attempt was abandoned meanwhile. */
  check(): void {
    if (this.aborted) {
      this.abort();
      throw new ConnectTimeoutError("the connect attempt was abandoned");
    }
  }
}

/** A client session with one comm server. */
export class BrokerClient {
  /** This client's alias: receivers see it as the sender of what it publishes. */
  readonly alias: number;
  /** The comm server this session is with. */
  readonly serverAlias: number;
  /** The coordinator's list of servers, in its order of preference. */
  readonly servers: readonly number[];
  /** What this client announced in its AUTH. */
  readonly capabilities: number;
  private readonly session: Session;
  private announced = 0;
  private receivedCount = 0;
  private sentCount = 0;

  private readonly ws: WebSocket;
  private readonly events = new Emitter<BrokerClientEvents>();
  private readonly pings = new Map<number, (error?: Error) => void>();
  private nextPing = 1;
  private readonly refusal: Promise<BrokerError>;
  private refuse!: (error: BrokerError) => void;
  private refused = false;
  private signalling: Promise<void> = Promise.resolve();
  private answered = false;
  private established = false;

  private constructor(
    ws: WebSocket,
    alias: number,
    serverAlias: number,
    servers: readonly number[],
    options: ConnectOptions,
  ) {
    this.ws = ws;
    this.capabilities = options.capabilities ?? CLIENT_CAPABILITIES;
    this.alias = alias;
    this.serverAlias = serverAlias;
    this.servers = servers;
    this.refusal = new Promise((resolve) => {
      this.refuse = resolve;
    });
    this.session = new Session(
      (frame, reliable) => this.onFrame(frame, reliable),
      options.iceServers ?? [],
    );
    this.session.onCandidate = (candidate) =>
      this.signal(MessageType.WEBRTC_ICE_CANDIDATE, utf8Encoder.encode(candidate));
    this.session.onClose((reason) => this.onSessionClosed(reason));
    ws.addEventListener("message", (event: MessageEvent<ArrayBuffer | string>) => {
      if (typeof event.data !== "string") {
        const frame = new Uint8Array(event.data);
        // One at a time and in order: an ICE candidate must not overtake the offer.
        this.signalling = this.signalling.then(() => this.onCoordinatorFrame(frame));
      }
    });
  }

  // -- connecting -------------------------------------------------------

  /**
   * Connect through the coordinator at `coordinatorUrl` (`ws://host:port`,
   * `wss://...`, or the `http(s)://` equivalent).
   *
   * `credentials` go to the coordinator (`token` query parameter) and to the
   * comm server (AUTH body). Rejects with {@link ServerFullError},
   * {@link AuthenticationError}, {@link NoServerAvailableError},
   * {@link ConnectTimeoutError} or another {@link BrokerError}.
   */
  static async connect(
    coordinatorUrl: string,
    credentials: string | Uint8Array = "",
    options: ConnectOptions = {},
  ): Promise<BrokerClient> {
    try {
      return await BrokerClient.connectWithin(coordinatorUrl, credentials, options);
    } catch (error) {
      // Whatever went wrong, callers get a BrokerError (a garbled frame is a FrameError).
      throw error instanceof BrokerError ? error : new BrokerError(String(error));
    }
  }

  private static async connectWithin(
    coordinatorUrl: string,
    credentials: string | Uint8Array,
    options: ConnectOptions,
  ): Promise<BrokerClient> {
    const timeout = options.timeout ?? 20_000;
    const attempt = new Attempt();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const expired = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new ConnectTimeoutError(`no session within ${timeout / 1000} s`)),
        timeout,
      );
    });
    try {
      return await Promise.race([
        BrokerClient.attempt(coordinatorUrl, toBytes(credentials), options, attempt),
        expired,
      ]);
    } catch (error) {
      attempt.abort();
      throw error;
    } finally {
      clearTimeout(timer);
    }
  }

  private static async attempt(
    url: string,
    credentials: Uint8Array,
    options: ConnectOptions,
    attempt: Attempt,
  ): Promise<BrokerClient> {
    const ws = await openCoordinator(coordinatorBase(url), credentials);
    attempt.ws = ws;
    attempt.check();
    const frame = await firstFrame(ws);
    attempt.check();
    if (frameType(frame) !== MessageType.WELCOME) {
      throw new BrokerError(`the coordinator sent ${MessageType[frameType(frame)]}, not WELCOME`);
    }
    const welcome = decodeAs(WelcomeMessageSchema, frame);
    const servers = welcome.availableServers.map(aliasNumber);
    const first = servers[0];
    if (first === undefined) {
      throw new NoServerAvailableError("the coordinator has no comm server registered");
    }
    if (options.server !== undefined && !servers.includes(options.server)) {
      throw new NoServerAvailableError(
        `server ${options.server} is not registered: ${servers.join(", ")}`,
      );
    }
    const client = new BrokerClient(
      ws,
      aliasNumber(welcome.alias),
      options.server ?? first,
      servers,
      options,
    );
    attempt.client = client;
    await client.establish(credentials);
    return client;
  }

  private async establish(credentials: Uint8Array): Promise<void> {
    this.sendCoordinator(
      encode(ConnectMessageSchema, {
        type: MessageType.CONNECT,
        fromAlias: aliasBigint(this.alias),
        toAlias: aliasBigint(this.serverAlias),
      }),
    );
    try {
      await this.firstOf(this.session.opened);
      this.session.send(
        encode(AuthMessageSchema, {
          type: MessageType.AUTH,
          role: Role.CLIENT,
          body: credentials,
          capabilities: this.capabilities,
        }),
        true,
      );
      await this.firstOf(this.ping());
      this.established = true;
    } catch (error) {
      const refusal = error instanceof BrokerError && !(error instanceof ClosedError);
      if (refusal || !this.session.closed) {
        throw error;
      }
      // The server closes a refused session; its reason travels via the coordinator.
      const grace = new Promise<undefined>((resolve) =>
        setTimeout(() => resolve(undefined), REFUSAL_GRACE_MS),
      );
      const reason = await Promise.race([this.refusal, grace]);
      throw reason ?? new BrokerError(`session closed during set-up: ${this.session.closeReason}`);
    }
  }

  /** Wait for `step`, unless the server refuses first. */
  private async firstOf<T>(step: Promise<T>): Promise<T> {
    return Promise.race([
      step,
      this.refusal.then((error) => {
        throw error;
      }),
    ]);
  }

  private async onCoordinatorFrame(frame: Uint8Array): Promise<void> {
    try {
      const kind = frameType(frame);
      if (kind === MessageType.WEBRTC_OFFER) {
        if (this.answered || this.session.closed) {
          return;
        }
        this.answered = true;
        const offer = decodeAs(WebRtcMessageSchema, frame);
        try {
          const answer = await this.session.acceptOffer(utf8Decoder.decode(offer.data));
          this.signal(MessageType.WEBRTC_ANSWER, utf8Encoder.encode(answer));
        } catch (error) {
          // Without an answer there is no session: fail the set-up now, not at the timeout.
          this.session.close(`cannot answer the server's offer: ${String(error)}`);
        }
      } else if (kind === MessageType.WEBRTC_ICE_CANDIDATE) {
        const candidate = decodeAs(WebRtcMessageSchema, frame);
        await this.session.addCandidate(utf8Decoder.decode(candidate.data));
      } else if (kind === MessageType.CONNECTION_REFUSED) {
        this.onRefused(decodeAs(ConnectionRefusedMessageSchema, frame));
      }
    } catch (error) {
      // A garbled frame, or a candidate the browser rejects: the rest may still work.
      console.warn("webrtc-broker: ignoring a coordinator frame:", error);
    }
  }

  private onRefused(message: { reason: ConnectionRefusedReason; data: Uint8Array }): void {
    if (this.refused) {
      return;
    }
    this.refused = true;
    const detail = utf8Decoder.decode(message.data);
    const server = this.serverAlias;
    if (message.reason === ConnectionRefusedReason.SERVER_FULL) {
      this.refuse(new ServerFullError(`server ${server} is full`));
    } else if (message.reason === ConnectionRefusedReason.AUTH_FAILED) {
      this.refuse(new AuthenticationError(`server ${server} refused: ${detail || "auth"}`));
    } else {
      this.refuse(new BrokerError(`server ${server} refused the session: ${detail}`));
    }
  }

  private signal(type: MessageType, data: Uint8Array): void {
    this.sendCoordinator(
      encode(WebRtcMessageSchema, {
        type,
        fromAlias: aliasBigint(this.alias),
        toAlias: aliasBigint(this.serverAlias),
        data,
      }),
    );
  }

  private sendCoordinator(frame: Uint8Array): void {
    if (this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(frame as Uint8Array<ArrayBuffer>);
    }
  }

  // -- traffic ----------------------------------------------------------

  private onFrame(frame: Uint8Array, reliable: boolean, inBatch = false): void {
    try {
      switch (frameType(frame)) {
        case MessageType.TOPIC_FW: {
          const fw = decodeAs(TopicFWMessageSchema, frame);
          this.deliver(
            new ReceivedMessage(
              aliasNumber(fw.fromAlias),
              fw.body,
              reliable,
              fw.topic || undefined,
            ),
          );
          break;
        }
        case MessageType.TOPIC_IDENTITY_FW: {
          const ifw = decodeAs(TopicIdentityFWMessageSchema, frame);
          this.deliver(
            new ReceivedMessage(
              aliasNumber(ifw.fromAlias),
              ifw.body,
              reliable,
              ifw.topic || undefined,
              ifw.identity,
              ifw.role,
            ),
          );
          break;
        }
        case MessageType.PING: {
          const probe = decodeAs(PingMessageSchema, frame).time;
          const waiter = this.pings.get(probe);
          this.pings.delete(probe);
          waiter?.();
          break;
        }
        case MessageType.BATCH: {
          if (!inBatch) {
            for (const inner of decodeAs(BatchMessageSchema, frame).frames) {
              this.onFrame(inner, reliable, true);
            }
          }
          break;
        }
        case MessageType.AUTH: {
          // A server that knows capabilities answers ours with its own.
          this.announced = decodeAs(AuthMessageSchema, frame).capabilities;
          if (this.announced & this.capabilities & Capability.CAPABILITY_BATCH) {
            this.session.enableBatching();
          }
          break;
        }
        default:
          break;
      }
    } catch (error) {
      if (!(error instanceof FrameError)) {
        throw error;
      }
      console.debug("webrtc-broker: ignoring a malformed frame:", error.message);
    }
  }

  private deliver(message: ReceivedMessage): void {
    this.receivedCount += 1;
    this.events.emit("message", message);
  }

  private send(frame: Uint8Array, reliable: boolean): void {
    if (this.session.closed) {
      throw new ClosedError(`session closed: ${this.session.closeReason}`);
    }
    this.session.send(frame, reliable);
  }

  /**
   * Replace this client's subscriptions with `topics` (empty: unsubscribe
   * from everything). Resolves once the server has applied them.
   */
  async subscribe(topics: Iterable<string>, options: SubscribeOptions = {}): Promise<void> {
    const list = [...topics];
    const frame = options.compress
      ? await compressedSubscriptionFrame(list)
      : subscriptionFrame(list);
    this.send(frame, true);
    // The server handles reliable frames in order, so this echo follows the change.
    await this.ping();
  }

  /** Publish `body` to every other subscriber of `topic`. */
  publish(topic: string, body: string | Uint8Array, options: PublishOptions = {}): void {
    const frame = encode(TopicMessageSchema, {
      type: MessageType.TOPIC,
      topic,
      body: toBytes(body),
    });
    this.send(frame, options.reliable ?? true);
    this.sentCount += 1;
  }

  /** Publish `body` stamped by the server with this client's authenticated identity. */
  publishIdentity(topic: string, body: string | Uint8Array, options: PublishOptions = {}): void {
    const frame = encode(TopicIdentityMessageSchema, {
      type: MessageType.TOPIC_IDENTITY,
      topic,
      body: toBytes(body),
    });
    this.send(frame, options.reliable ?? true);
    this.sentCount += 1;
  }

  /** Round-trip time to the comm server, in milliseconds. */
  async ping(options: PublishOptions = {}): Promise<number> {
    // The echo comes back unchanged, so a unique value doubles as the probe's id.
    const probe = this.nextPing++;
    const echoed = new Promise<void>((resolve, reject) => {
      this.pings.set(probe, (error) => (error ? reject(error) : resolve()));
    });
    const started = performance.now();
    try {
      const frame = encode(PingMessageSchema, { type: MessageType.PING, time: probe });
      this.send(frame, options.reliable ?? true);
    } catch (error) {
      this.pings.delete(probe);
      throw error;
    }
    await echoed;
    return performance.now() - started;
  }

  // -- events and closing -----------------------------------------------

  /** Listen to `message` or `close` events; returns a function that stops listening. */
  on<K extends keyof BrokerClientEvents>(
    type: K,
    listener: Listener<BrokerClientEvents[K]>,
  ): () => void {
    return this.events.on(type, listener);
  }

  off<K extends keyof BrokerClientEvents>(
    type: K,
    listener: Listener<BrokerClientEvents[K]>,
  ): void {
    this.events.off(type, listener);
  }

  /** What the server announced in its AUTH (0 for servers that announce nothing). */
  get serverCapabilities(): number {
    return this.announced;
  }

  /** Topic messages received (those inside BATCH frames included). */
  get received(): number {
    return this.receivedCount;
  }

  /** Topic messages published. */
  get sent(): number {
    return this.sentCount;
  }

  /** Whether the session is closed. */
  get closed(): boolean {
    return this.session.closed;
  }

  /** Why the session closed ("" while it is open). */
  get closeReason(): string {
    return this.session.closeReason;
  }

  /** Unreliable frames dropped because the channel's buffer was full. */
  get dropped(): number {
    return this.session.dropped;
  }

  private onSessionClosed(reason: string): void {
    const error = new ClosedError(`session closed: ${reason}`);
    for (const waiter of this.pings.values()) {
      waiter(error);
    }
    this.pings.clear();
    if (this.established) {
      // During set-up the coordinator connection stays: the server's reason may follow.
      this.ws.close();
    }
    this.events.emit("close", reason);
  }

  /** Close the session and the coordinator connection. */
  close(): void {
    this.session.close("closed by the client");
    this.ws.close();
  }
}
