/**
 * One attempt at being connected: a coordinator WebSocket plus a session with
 * one comm server. A BrokerClient owns one link at a time and replaces it
 * when the server goes away; everything here is about getting one link up,
 * as docs/protocol.md describes: `/connect`, WELCOME, CONNECT, answer the
 * server's offer, trickle our ICE candidates, open channels, AUTH.
 */

import {
  AuthenticationError,
  BrokerError,
  ClosedError,
  ConnectTimeoutError,
  CoordinatorUnavailableError,
  NoServerAvailableError,
  ServerFullError,
} from "./errors.js";
import { ICE_SERVERS_TIMEOUT_MS, REFUSAL_GRACE_MS } from "./gen/limits.js";
import type { FrameHandler } from "./session.js";
import { Session } from "./session.js";
import {
  aliasBigint,
  aliasNumber,
  ConnectionRefusedMessageSchema,
  ConnectionRefusedReason,
  ConnectMessageSchema,
  decodeAs,
  encode,
  FrameError,
  frameType,
  MessageType,
  WebRtcMessageSchema,
  WelcomeMessageSchema,
} from "./wire.js";

const utf8Decoder = new TextDecoder();
const utf8Encoder = new TextEncoder();

/**
 * Why a frame from the coordinator was dropped (`BrokerClient.signallingDropped`).
 * What the coordinator relays is another party's input: a frame the link
 * cannot use is counted and dropped, and costs at most the link's session.
 *
 * - `malformed`: not a decodable broker frame;
 * - `unexpected_type`: a frame a server never sends a client (an answer, a CONNECT);
 * - `wrong_sender`: from a server other than the one this link asked;
 * - `repeated_offer`: an offer after the one this link answered (or failed to);
 * - `rejected`: the browser refused it (a description or candidate it cannot use).
 */
export type SignallingDrop =
  | "malformed"
  | "unexpected_type"
  | "wrong_sender"
  | "repeated_offer"
  | "rejected";

/** Dropped coordinator frames by reason; absent reasons are 0. */
export type SignallingDrops = Partial<Record<SignallingDrop, number>>;

export interface LinkOptions {
  /** A server alias from the coordinator's list, instead of its first choice. */
  server?: number | undefined;
  /**
   * Without `server`: servers to take only if no other is listed (those that
   * just failed; a frozen process stays registered for a while).
   */
  avoid?: readonly number[] | undefined;
  iceServers: RTCIceServer[];
  /** `"relay"`: the session uses TURN-relayed candidates only (default `"all"`). */
  iceTransportPolicy?: RTCIceTransportPolicy | undefined;
  /** Where the link counts the coordinator frames it drops (shared across links). */
  dropped?: SignallingDrops | undefined;
}

/**
 * The coordinator connection closed before the session was up. Neither the
 * server nor the credentials failed: another connection, to another replica
 * or to the same URL (a Service routes it to a live replica), can carry the
 * set-up. Not exported from the SDK: callers see a {@link BrokerError}.
 */
export class CoordinatorLostError extends BrokerError {}

/** The coordinator's base URL as a WebSocket URL without a trailing slash. */
export function coordinatorBase(url: string): string {
  const base = url.replace(/\/+$/, "");
  return base.replace(/^http(s?):\/\//, "ws$1://");
}

/**
 * The STUN/TURN servers the coordinator hands out at `/ice-servers` (on its
 * http(s) origin), with TURN credentials fresh for this session; none if it
 * cannot say (an older coordinator, an error, a rate limit, a refused token).
 *
 * `credentials` (the client's token) go as `Authorization: Bearer`: with
 * client tokens on, the coordinator issues TURN credentials only against a
 * valid one (the header makes the browser ask first with a CORS preflight,
 * which the coordinator answers). A refused token is reported by `/connect`,
 * which checks it the same way and says why.
 */
export async function fetchIceServers(
  url: string,
  credentials: Uint8Array = new Uint8Array(),
): Promise<RTCIceServer[]> {
  const endpoint = `${coordinatorBase(url).replace(/^ws/, "http")}/ice-servers`;
  const token = utf8Decoder.decode(credentials);
  const headers: Record<string, string> = token ? { Authorization: `Bearer ${token}` } : {};
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), ICE_SERVERS_TIMEOUT_MS);
  try {
    const response = await fetch(endpoint, { signal: controller.signal, headers });
    if (!response.ok) {
      return [];
    }
    const body: unknown = await response.json();
    return Array.isArray(body) ? (body as RTCIceServer[]) : [];
  } catch {
    return [];
  } finally {
    clearTimeout(timer);
  }
}

/** A coordinator WebSocket and the session with the server it pointed us to. */
export class Link {
  readonly session: Session;
  /** The STUN/TURN servers of this link's session. */
  readonly iceServers: readonly RTCIceServer[];
  private readonly refusal: Promise<BrokerError>;
  private refuse!: (error: BrokerError) => void;
  private refused = false;
  private signalling: Promise<void> = Promise.resolve();
  private answered = false;
  private established = false;
  /** Closed by its owner: the coordinator connection's close is then no news. */
  private released = false;
  /** Resolves when the server answers CONNECT, with an offer or a refusal. */
  private readonly serverAnswered: Promise<void>;
  private markAnswered!: () => void;
  private readonly dropped: SignallingDrops;

  private constructor(
    private readonly ws: WebSocket,
    readonly alias: number,
    readonly serverAlias: number,
    readonly servers: readonly number[],
    onFrame: FrameHandler,
    options: LinkOptions,
  ) {
    this.serverAnswered = new Promise((resolve) => {
      this.markAnswered = resolve;
    });
    this.refusal = new Promise((resolve) => {
      this.refuse = resolve;
    });
    this.dropped = options.dropped ?? {};
    this.iceServers = options.iceServers;
    this.session = new Session(onFrame, options.iceServers, options.iceTransportPolicy);
    this.session.onCandidate = (candidate) =>
      this.signal(MessageType.WEBRTC_ICE_CANDIDATE, utf8Encoder.encode(candidate));
    this.session.onClose(() => {
      if (this.established) {
        // During set-up the coordinator connection stays: the server's reason may follow.
        this.ws.close();
      }
    });
    ws.addEventListener("message", (event: MessageEvent<ArrayBuffer | string>) => {
      if (typeof event.data !== "string") {
        const frame = new Uint8Array(event.data);
        // One at a time and in order: an ICE candidate must not overtake the offer.
        this.signalling = this.signalling.then(() => this.onCoordinatorFrame(frame));
      }
    });
    // An error is followed by a close; whichever comes first fails the set-up.
    const lost = (): void => {
      // After the frames that came before it: a refusal the coordinator relayed
      // just before closing says more than the close does.
      this.signalling = this.signalling.then(() => this.onCoordinatorLost());
    };
    ws.addEventListener("close", lost, { once: true });
    ws.addEventListener("error", lost, { once: true });
  }

  /**
   * Connect to the coordinator and make the link (its session not yet
   * connected). `attempt` lets a timeout release what exists so far.
   */
  static async open(
    url: string,
    credentials: Uint8Array,
    options: LinkOptions,
    onFrame: FrameHandler,
    attempt: Attempt,
  ): Promise<Link> {
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
    const link = new Link(
      ws,
      aliasNumber(welcome.alias),
      options.server ?? servers.find((alias) => !(options.avoid ?? []).includes(alias)) ?? first,
      servers,
      onFrame,
      options,
    );
    attempt.link = link;
    return link;
  }

  /**
   * CONNECT, set up WebRTC, send `auth` and wait for `confirm()` (a PING
   * echo): the protocol has no AUTH acknowledgement, but the PING that follows
   * AUTH on the same ordered channel can only be echoed once it was accepted.
   */
  async establish(
    auth: Uint8Array,
    confirm: () => Promise<unknown>,
    answerWithinMs?: number,
  ): Promise<void> {
    if (this.ws.readyState !== WebSocket.OPEN) {
      // A CONNECT into a closed socket would be dropped without a word, and the
      // set-up would wait out its timeout: fail now, so that a connect moves on
      // to another coordinator.
      throw new CoordinatorLostError("the coordinator connection closed before CONNECT");
    }
    this.sendCoordinator(
      encode(ConnectMessageSchema, {
        type: MessageType.CONNECT,
        fromAlias: aliasBigint(this.alias),
        toAlias: aliasBigint(this.serverAlias),
      }),
    );
    if (answerWithinMs !== undefined) {
      await this.expectAnswer(answerWithinMs);
    }
    try {
      await this.unlessRefused(this.session.opened);
      this.session.send(auth, true);
      await this.unlessRefused(confirm());
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

  /**
   * Fail if the server neither offers nor refuses within `ms`: it is frozen,
   * or gone without the coordinator knowing yet. A slow set-up after the
   * offer (ICE gathering against an unanswering STUN server) is not cut short.
   */
  private async expectAnswer(ms: number): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const silent = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(new ConnectTimeoutError(`server ${this.serverAlias} did not answer in ${ms} ms`)),
        ms,
      );
    });
    try {
      await Promise.race([this.serverAnswered, silent]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Wait for `step`, unless the server refuses first. */
  private async unlessRefused<T>(step: Promise<T>): Promise<T> {
    return Promise.race([
      step,
      this.refusal.then((error) => {
        throw error;
      }),
    ]);
  }

  /** Handle one frame; whatever it holds, the next one is handled too. */
  private async onCoordinatorFrame(frame: Uint8Array): Promise<void> {
    let drop: SignallingDrop | undefined;
    try {
      drop = await this.handleCoordinatorFrame(frame);
    } catch (error) {
      drop = error instanceof FrameError ? "malformed" : "rejected";
      console.debug("webrtc-broker: dropping a coordinator frame:", error);
    }
    if (drop !== undefined) {
      this.dropped[drop] = (this.dropped[drop] ?? 0) + 1;
    }
  }

  /** Act on one frame; why it was dropped, or undefined if it was used. */
  private async handleCoordinatorFrame(frame: Uint8Array): Promise<SignallingDrop | undefined> {
    const kind = frameType(frame);
    if (kind === MessageType.WEBRTC_OFFER) {
      const offer = decodeAs(WebRtcMessageSchema, frame);
      if (aliasNumber(offer.fromAlias) !== this.serverAlias) {
        return "wrong_sender";
      }
      this.markAnswered();
      if (this.answered || this.session.closed) {
        // A session takes one offer; another would renegotiate a live one.
        return "repeated_offer";
      }
      this.answered = true;
      let answer: string;
      try {
        answer = await this.session.acceptOffer(utf8Decoder.decode(offer.data));
      } catch (error) {
        // Without an answer there is no session: fail the set-up now, not at the timeout.
        this.session.close(`cannot answer the server's offer: ${String(error)}`);
        throw error;
      }
      this.signal(MessageType.WEBRTC_ANSWER, utf8Encoder.encode(answer));
    } else if (kind === MessageType.WEBRTC_ICE_CANDIDATE) {
      const candidate = decodeAs(WebRtcMessageSchema, frame);
      if (aliasNumber(candidate.fromAlias) !== this.serverAlias) {
        return "wrong_sender";
      }
      await this.session.addCandidate(utf8Decoder.decode(candidate.data));
    } else if (kind === MessageType.CONNECTION_REFUSED) {
      const refusal = decodeAs(ConnectionRefusedMessageSchema, frame);
      if (aliasNumber(refusal.fromAlias) !== this.serverAlias) {
        return "wrong_sender";
      }
      this.markAnswered();
      this.onRefused(refusal);
    } else {
      return "unexpected_type";
    }
    return undefined;
  }

  /**
   * The coordinator WebSocket closed (or failed). The server drops a set-up
   * it can no longer signal through this coordinator, and a session whose
   * DTLS has not started would only hear of it at its timeout: fail the
   * set-up now, so that a connect moves on to another coordinator. An
   * established session carries on: its data channels do not need the
   * coordinator.
   */
  private onCoordinatorLost(): void {
    if (this.established || this.refused || this.released) {
      return;
    }
    this.refused = true;
    this.markAnswered();
    this.refuse(new CoordinatorLostError("the coordinator connection closed during set-up"));
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

  close(reason: string): void {
    this.released = true;
    this.session.close(reason);
    this.ws.close();
  }
}

/** Resources of a connect attempt, so that a timeout can release whatever exists so far. */
export class Attempt {
  ws: WebSocket | undefined;
  link: Link | undefined;
  aborted = false;

  abort(): void {
    this.aborted = true;
    this.link?.close("set-up abandoned");
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

/** Run `work` within `timeoutMs`, releasing what it made if it fails or runs out of time. */
export async function withinTimeout<T>(
  timeoutMs: number,
  work: (attempt: Attempt) => Promise<T>,
): Promise<T> {
  const attempt = new Attempt();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new ConnectTimeoutError(`no session within ${timeoutMs / 1000} s`)),
      timeoutMs,
    );
  });
  try {
    return await Promise.race([work(attempt), expired]);
  } catch (error) {
    attempt.abort();
    // Whatever went wrong, callers get a BrokerError (a garbled frame is a FrameError).
    throw error instanceof BrokerError ? error : new BrokerError(String(error));
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Opens the coordinator WebSocket. Browsers hide why an upgrade failed, so
 * after a failure the SDK asks the coordinator (see {@link diagnoseRefusal}).
 */
async function openCoordinator(base: string, credentials: Uint8Array): Promise<WebSocket> {
  const token = utf8Decoder.decode(credentials);
  const query = token ? `?token=${encodeURIComponent(token)}` : "";
  const ws = new WebSocket(`${base}/connect${query}`);
  ws.binaryType = "arraybuffer";
  const opened = await new Promise<boolean>((resolve) => {
    ws.addEventListener("open", () => resolve(true), { once: true });
    ws.addEventListener("close", () => resolve(false), { once: true });
  });
  if (opened) {
    return ws;
  }
  throw await diagnoseRefusal(base.replace(/^ws/, "http"), query);
}

/**
 * The error for a coordinator that answered an upgrade (or its admission
 * check) with HTTP `status`, if that status is a refusal. Only refused
 * credentials are final; "not now" passes, and the reconnect loop retries it.
 */
function coordinatorRefusal(status: number, reason: string): BrokerError | undefined {
  const detail = /^[a-z_]{1,64}$/.test(reason) ? `HTTP ${status}: ${reason}` : `HTTP ${status}`;
  if (status === 401 || status === 403) {
    return new AuthenticationError(`the coordinator refused the credentials (${detail})`);
  }
  if (status === 429 || status === 503) {
    return new CoordinatorUnavailableError(
      `the coordinator cannot take the connection now (${detail})`,
      status,
    );
  }
  return undefined;
}

/**
 * Why `/connect` failed. The coordinator answers `GET /connect` with the
 * same query with the status the upgrade got (readable from any origin):
 * 403 for refused credentials, 503 or 429 for "not now". A coordinator
 * without that check is asked `/readyz`: 503 means it is draining, another
 * answer (even an opaque cross-origin one) that it refused the credentials,
 * no answer that it cannot be reached.
 */
export async function diagnoseRefusal(httpBase: string, query: string): Promise<BrokerError> {
  try {
    const check = await fetch(`${httpBase}/connect${query}`, { cache: "no-store" });
    const refusal = coordinatorRefusal(check.status, (await check.text()).trim());
    if (refusal !== undefined) {
      return refusal;
    }
    if (check.ok) {
      return new BrokerError("the coordinator admits this client now, but the WebSocket failed");
    }
  } catch {
    // Unreachable, or a coordinator without the check (no CORS headers on a 404).
  }
  const refused = new AuthenticationError("the coordinator refused the credentials");
  try {
    const response = await fetch(`${httpBase}/readyz`, { cache: "no-store" });
    if (response.status === 503) {
      return new CoordinatorUnavailableError("the coordinator is shutting down", 503);
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
