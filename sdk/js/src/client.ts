/**
 * The browser client, which mirrors the Python SDK.
 *
 * `BrokerClient.connect` resolves only for a session that works: it follows
 * AUTH with a PING on the same ordered channel, whose echo proves the server
 * accepted the AUTH (the protocol has no acknowledgement).
 *
 * A client keeps working when its comm server goes away. A keepalive notices
 * a silent server within seconds (WebRTC alone takes about half a minute);
 * the client then goes back to the coordinator, which points it to a live
 * server, and restores its subscriptions there. Its alias changes, since the
 * coordinator hands out a new one; publishing while it is reconnecting
 * throws {@link DisconnectedError}.
 *
 * Several coordinator replicas can be given ({@link coordinatorOrder}): a
 * connect, and every reconnect, goes through whichever of them answers. Only
 * refused credentials end the search, since every replica checks them alike.
 */

import {
  AuthenticationError,
  ClosedError,
  ConnectTimeoutError,
  DisconnectedError,
  MessageTooLargeError,
  NoServerAvailableError,
  PingTimeoutError,
} from "./errors.js";
import type { Listener } from "./events.js";
import { Emitter } from "./events.js";
import {
  CONNECT_TIMEOUT_MS,
  KEEPALIVE_INTERVAL_MS,
  KEEPALIVE_TIMEOUT_MS,
  MAX_FRAME_BYTES,
  PING_TIMEOUT_MS,
  RECONNECT_ATTEMPT_TIMEOUT_MS,
  RECONNECT_FIRST_DELAY_MS,
  RECONNECT_MAX_DELAY_MS,
} from "./gen/limits.js";
import type { Attempt, SignallingDrops } from "./link.js";
import { CoordinatorLostError, fetchIceServers, Link, withinTimeout } from "./link.js";
import { keepaliveTick, SilenceClock } from "./liveness.js";
import { ReceivedMessage } from "./message.js";
import { compressedSubscriptionFrame, subscriptionFrame } from "./subscription.js";
import {
  AuthMessageSchema,
  aliasNumber,
  BatchMessageSchema,
  Capability,
  decodeAs,
  encode,
  FrameError,
  frameType,
  MessageType,
  PingMessageSchema,
  Role,
  TopicFWMessageSchema,
  TopicIdentityFWMessageSchema,
  TopicIdentityMessageSchema,
  TopicMessageSchema,
  toBytes,
} from "./wire.js";

/** What this SDK announces in its AUTH: it unpacks BATCH frames and reads topic names. */
export const CLIENT_CAPABILITIES = Capability.CAPABILITY_BATCH | Capability.CAPABILITY_TOPIC_NAMES;

// The limits both SDKs share come from webrtc_broker/limits.py (see gen/limits.ts).
export { MAX_FRAME_BYTES, PING_TIMEOUT_MS };

/** How the client tells a live server from a dead one (milliseconds). */
export interface KeepaliveOptions {
  /**
   * Hearing nothing for this long, the client sends a PING (default 3000). A
   * comm server probes an idle client sooner, so an idle session hears that.
   */
  interval?: number;
  /** Hearing nothing for this long, the server is presumed dead (default 4000). */
  timeout?: number;
}

/** Capped exponential backoff between attempts to get back to a server (milliseconds). */
export interface ReconnectOptions {
  /** The wait before the second round of attempts; it doubles each round (default 100). */
  firstDelay?: number;
  /** The longest wait between rounds (default 5000). */
  maxDelay?: number;
  /** How long one attempt (coordinator, WebRTC set-up, AUTH) may take (default 20000). */
  attemptTimeout?: number;
}

export interface ConnectOptions {
  /** A server alias from the coordinator's list, instead of its first choice (first session). */
  server?: number;
  /**
   * Milliseconds the first set-up may take (default 20000). Without `server`,
   * a server that refuses (full), fails, or does not answer within half of
   * that is passed over for the next one the coordinator lists.
   */
  timeout?: number;
  /**
   * STUN/TURN servers for the peer connection (default: those the coordinator
   * hands out at `/ice-servers`, fetched again for every session since their
   * TURN credentials expire, with the credentials as a bearer token; none if
   * it has no such endpoint).
   */
  iceServers?: RTCIceServer[];
  /**
   * `"relay"` restricts sessions to TURN-relayed candidates (the peer
   * connection's `iceTransportPolicy`; default `"all"`).
   */
  iceTransportPolicy?: RTCIceTransportPolicy;
  /**
   * Capability bits announced in AUTH (default {@link CLIENT_CAPABILITIES});
   * 0 makes the session look like an original-protocol client.
   */
  capabilities?: number;
  /** `false` relies on WebRTC alone to notice a dead server. */
  keepalive?: KeepaliveOptions | false;
  /** `false` ends the client (a `close` event) when its session ends. */
  reconnect?: ReconnectOptions | false;
}

export interface PublishOptions {
  /** The reliable ordered channel (default) or the unreliable unordered one. */
  reliable?: boolean;
}

export interface PingOptions extends PublishOptions {
  /**
   * Milliseconds to wait for the echo before rejecting with
   * {@link PingTimeoutError} (default {@link PING_TIMEOUT_MS}); `Infinity`
   * waits as long as the session lives.
   */
  timeout?: number;
}

export interface SubscribeOptions {
  /** Send the topic list gzip-compressed (worth it for thousands of topics). */
  compress?: boolean;
}

export interface BrokerClientEvents extends Record<string, unknown> {
  /** A topic message arrived. */
  message: ReceivedMessage;
  /** The session with the server was lost and the client is looking for another; the reason. */
  reconnecting: string;
  /** A new session works again (new alias, maybe another server); subscriptions are restored. */
  reconnected: BrokerClient;
  /** The client has ended (closed, or reconnecting off or refused); the reason. */
  close: string;
}

/** A PING whose echo only proves the server alive (no ping() waits for time -1). */
const KEEPALIVE_FRAME = encode(PingMessageSchema, { type: MessageType.PING, time: -1 });

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** `ms` +-20%: clients that failed together must not retry in lockstep. */
function jittered(ms: number): number {
  return Math.round(ms * (0.8 + 0.4 * Math.random()));
}

/** The coordinator URLs as a list: one URL as a string, or several (replicas). */
function coordinatorUrls(urls: string | readonly string[]): readonly string[] {
  const listed = typeof urls === "string" ? [urls] : [...urls];
  if (listed.length === 0 || !listed.every((url) => typeof url === "string" && url !== "")) {
    throw new TypeError(`coordinator URLs must be non-empty strings: ${String(urls)}`);
  }
  return listed;
}

/**
 * The order in which a connect tries `urls`: each once, rotating through the
 * list. The first connect (no `after`) starts at a random URL, so that clients
 * given the same list spread over the replicas instead of all holding their
 * coordinator connection on the first one (which would also send all of them
 * back at once when it goes away). A reconnect starts after `after`, the URL
 * of the link that died, so that URL is tried last: its replica may be what
 * failed.
 */
export function coordinatorOrder(urls: readonly string[], after?: string): string[] {
  const index = after === undefined ? -1 : urls.indexOf(after);
  const start = index >= 0 ? index + 1 : Math.floor(Math.random() * urls.length);
  return urls.map((_, i) => urls[(start + i) % urls.length] as string);
}

/** Throws {@link MessageTooLargeError} for a frame no server would relay. */
function checkSize(frame: Uint8Array): void {
  if (frame.length > MAX_FRAME_BYTES) {
    throw new MessageTooLargeError(
      `${frame.length} bytes encoded; at most ${MAX_FRAME_BYTES} can be relayed`,
    );
  }
}

/** `work`, unless `ms` pass first (then a {@link ConnectTimeoutError} saying `what`). */
async function within<T>(ms: number | undefined, work: Promise<T>, what: string): Promise<T> {
  if (ms === undefined) {
    return work;
  }
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new ConnectTimeoutError(`${what} within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([work, expired]);
  } finally {
    clearTimeout(timer);
  }
}

/** A client of the broker: one session with one comm server at a time. */
export class BrokerClient {
  /** What this client announces in its AUTH. */
  readonly capabilities: number;
  private readonly events = new Emitter<BrokerClientEvents>();
  private readonly pings = new Map<number, (error?: Error) => void>();
  private readonly keepalive: Required<KeepaliveOptions> | false;
  private readonly reconnect: Required<ReconnectOptions> | false;
  private nextPing = 1;
  private link: Link | undefined;
  private pending: Link | undefined;
  private subscription: Uint8Array | undefined;
  private endReason = "";
  private announced = 0;
  private receivedCount = 0;
  private sentCount = 0;
  private reconnectCount = 0;
  private readonly droppedSignalling: SignallingDrops = {};
  /** A page that goes away closes its client, so that the server frees the session at once. */
  private readonly onPageHide = (event: PageTransitionEvent): void => {
    if (!event.persisted) {
      this.close();
    }
  };

  /** The coordinator of the current (or last) link; see {@link coordinatorUrl}. */
  private url: string;

  private constructor(
    private readonly urls: readonly string[],
    private readonly credentials: Uint8Array,
    private readonly options: ConnectOptions,
  ) {
    this.url = urls[0] ?? "";
    this.capabilities = options.capabilities ?? CLIENT_CAPABILITIES;
    const keepalive = options.keepalive ?? {};
    this.keepalive = keepalive && {
      interval: KEEPALIVE_INTERVAL_MS,
      timeout: KEEPALIVE_TIMEOUT_MS,
      ...keepalive,
    };
    const reconnect = options.reconnect ?? {};
    this.reconnect = reconnect && {
      firstDelay: RECONNECT_FIRST_DELAY_MS,
      maxDelay: RECONNECT_MAX_DELAY_MS,
      attemptTimeout: RECONNECT_ATTEMPT_TIMEOUT_MS,
      ...reconnect,
    };
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
   *
   * `coordinatorUrl` may also be a list of URLs, one per coordinator replica:
   * the client starts at a random one (so clients spread over the replicas)
   * and moves on to the next when one cannot take it: a refusal that says
   * "not now" (HTTP 503 or 429), a coordinator that cannot be reached or does
   * not WELCOME within half of `options.timeout`, one with no comm server, or
   * one whose servers all fail the set-up. A coordinator WebSocket that closes
   * before the session is up fails the set-up at once (the server drops a
   * set-up it can no longer signal); when the last URL of a round fails so,
   * the client goes round the list again after a short backoff, until
   * `options.timeout`. Refused credentials (HTTP 401/403,
   * or a server's AUTH refusal) are final: every replica checks them alike.
   * When every URL fails, the last error is thrown. Reconnects go through the
   * same list, the URL of the lost link last; `coordinatorUrl` is the one in use.
   */
  static async connect(
    coordinatorUrl: string | readonly string[],
    credentials: string | Uint8Array = "",
    options: ConnectOptions = {},
  ): Promise<BrokerClient> {
    const urls = coordinatorUrls(coordinatorUrl);
    const client = new BrokerClient(urls, toBytes(credentials), options);
    await client.firstLink(options.server, options.timeout ?? CONNECT_TIMEOUT_MS);
    globalThis.addEventListener?.("pagehide", client.onPageHide);
    void client.supervise();
    return client;
  }

  /**
   * The first session, through the first coordinator (in
   * {@link coordinatorOrder}) that gives one; only refused credentials stop
   * the search early.
   *
   * A round tries every URL once. When a round ends because a coordinator
   * connection closed during the set-up (a replica restarting), another round
   * follows after a short backoff, until the connect's own timeout: a single
   * URL behind a Service then reaches a live replica on the next try.
   */
  private async firstLink(server: number | undefined, timeoutMs: number): Promise<void> {
    const deadline = performance.now() + timeoutMs;
    let wait = RECONNECT_FIRST_DELAY_MS;
    for (;;) {
      try {
        await this.firstLinkRound(server, timeoutMs, deadline);
        return;
      } catch (error) {
        if (!(error instanceof CoordinatorLostError) || this.endReason) {
          throw error;
        }
        const pause = jittered(wait);
        if (performance.now() + pause >= deadline) {
          throw new ConnectTimeoutError(
            `no session within ${timeoutMs / 1000} s (${error.message})`,
          );
        }
        console.info(
          `webrtc-broker: ${error.message}; the next round of coordinators in ${pause} ms`,
        );
        await delay(pause);
        wait = Math.min(RECONNECT_MAX_DELAY_MS, wait * 2);
      }
    }
  }

  /** Each coordinator once, in {@link coordinatorOrder}; the last one's error is thrown. */
  private async firstLinkRound(
    server: number | undefined,
    timeoutMs: number,
    deadline: number,
  ): Promise<void> {
    const order = coordinatorOrder(this.urls);
    for (const [index, url] of order.entries()) {
      const last = index === order.length - 1;
      try {
        await this.firstLinkVia(url, server, timeoutMs, deadline, last);
        return;
      } catch (error) {
        if (last || error instanceof AuthenticationError || this.endReason) {
          throw error;
        }
        console.info(`webrtc-broker: no session through ${url} (${String(error)}); next one`);
      }
    }
  }

  /**
   * The first session through the coordinator at `url`: on `server` only, if
   * given; otherwise on the coordinator's choice, or on the next server it
   * lists when one refuses (full), fails, or does not answer CONNECT within
   * half of `timeoutMs`. Unless this is the `last` coordinator to try, it too
   * must WELCOME within half of `timeoutMs`: an unreachable one must not eat
   * the time the next one needs.
   */
  private async firstLinkVia(
    url: string,
    server: number | undefined,
    timeoutMs: number,
    deadline: number,
    last: boolean,
  ): Promise<void> {
    const welcomeWithin = last ? undefined : timeoutMs / 2;
    if (server !== undefined) {
      const left = Math.max(0, deadline - performance.now());
      await withinTimeout(left, (attempt) =>
        this.openLink(url, server, attempt, [], undefined, welcomeWithin),
      );
      return;
    }
    const failed: number[] = [];
    for (;;) {
      const left = deadline - performance.now();
      if (left <= 0) {
        throw new ConnectTimeoutError(`no session within ${timeoutMs / 1000} s`);
      }
      // The attempt records the link it made, so a failure tells which server it was.
      const made: { attempt?: Attempt } = {};
      try {
        await withinTimeout(left, (attempt) => {
          made.attempt = attempt;
          return this.openLink(url, undefined, attempt, failed, timeoutMs / 2, welcomeWithin);
        });
        return;
      } catch (error) {
        const tried = made.attempt?.link;
        if (
          tried === undefined || // the coordinator failed, not a server
          error instanceof CoordinatorLostError || // the same
          error instanceof AuthenticationError || // the same on every server
          error instanceof NoServerAvailableError
        ) {
          throw error;
        }
        failed.push(tried.serverAlias);
        if (tried.servers.every((alias) => failed.includes(alias))) {
          throw error;
        }
        console.info(`webrtc-broker: server ${tried.serverAlias} failed (${String(error)})`);
      }
    }
  }

  /**
   * A session through a new connection to the coordinator at `url`.
   * `answerWithinMs` bounds the wait for the server's first answer, when
   * another server could be tried; `welcomeWithinMs` the wait for the
   * coordinator's WELCOME (`/ice-servers` included), when another coordinator
   * could be tried.
   */
  private async openLink(
    url: string,
    server: number | undefined,
    attempt: Attempt,
    avoid: readonly number[] = [],
    answerWithinMs?: number,
    welcomeWithinMs?: number,
  ): Promise<void> {
    let opened: Link | undefined;
    const onFrame = (frame: Uint8Array, reliable: boolean): void => {
      if (opened !== undefined) {
        this.onFrame(opened, frame, reliable);
      }
    };
    const welcomed = async (): Promise<Link> => {
      // The ICE servers come from the coordinator this link goes through.
      const iceServers = this.options.iceServers ?? (await fetchIceServers(url, this.credentials));
      attempt.check();
      const options = {
        server,
        avoid,
        iceServers,
        iceTransportPolicy: this.options.iceTransportPolicy,
        dropped: this.droppedSignalling,
      };
      return Link.open(url, this.credentials, options, onFrame, attempt);
    };
    // On expiry the caller's withinTimeout aborts the attempt, which releases the link.
    const link = await within(welcomeWithinMs, welcomed(), `no WELCOME from ${url}`);
    opened = link;
    this.pending = link;
    this.announced = 0;
    link.session.onClose(() => this.failPings(new DisconnectedError("the session ended")));
    const auth = encode(AuthMessageSchema, {
      type: MessageType.AUTH,
      role: Role.CLIENT,
      body: this.credentials,
      capabilities: this.capabilities,
    });
    try {
      // A server's silence is cut short only when there is another server to try.
      const others = link.servers.some(
        (alias) => alias !== link.serverAlias && !avoid.includes(alias),
      );
      const answerWithin = others ? answerWithinMs : undefined;
      await link.establish(auth, () => this.pingOn(link, true), answerWithin);
    } finally {
      this.pending = undefined;
    }
    if (this.endReason) {
      link.close("closed by the client");
      throw new ClosedError(`client closed: ${this.endReason}`);
    }
    this.link = link;
    this.url = url;
    if (this.subscription !== undefined) {
      link.session.send(this.subscription, true);
    }
  }

  /** This client's alias (it changes when the client reconnects; 0 while it does). */
  get alias(): number {
    return this.link?.alias ?? 0;
  }

  /**
   * The URL of the coordinator the current session was made through (while
   * reconnecting: the last one that gave a session).
   */
  get coordinatorUrl(): string {
    return this.url;
  }

  /** Every coordinator URL the client was given. */
  get coordinatorUrls(): readonly string[] {
    return this.urls;
  }

  /** The comm server of the current session (0 while reconnecting). */
  get serverAlias(): number {
    return this.link?.serverAlias ?? 0;
  }

  /** The coordinator's list of servers when the current session was made, best first. */
  get servers(): readonly number[] {
    return this.link?.servers ?? [];
  }

  /** The STUN/TURN servers of the current session (empty when there is none). */
  get iceServers(): readonly RTCIceServer[] {
    return this.link?.iceServers ?? [];
  }

  // -- staying connected -------------------------------------------------

  /** Keep the session alive; replace it when it dies, if reconnecting is on. */
  private async supervise(): Promise<void> {
    while (this.link !== undefined && !this.endReason) {
      const link = this.link;
      await this.watch(link);
      if (this.endReason) {
        return;
      }
      const reason = link.session.closeReason;
      link.close(reason);
      this.link = undefined;
      if (this.reconnect === false) {
        this.end(reason);
        return;
      }
      this.events.emit("reconnecting", reason);
      if (!(await this.reestablish(this.reconnect, link.serverAlias, this.url))) {
        return;
      }
      this.events.emit("reconnected", this);
    }
  }

  /** Resolve when `link`'s session has closed or its server went silent. */
  private watch(link: Link): Promise<void> {
    return new Promise((resolve) => {
      const keepalive = this.keepalive;
      let timer: ReturnType<typeof setInterval> | undefined;
      link.session.onClose(() => {
        clearInterval(timer);
        resolve();
      });
      if (keepalive === false || link.session.closed) {
        return;
      }
      const tick = keepaliveTick(keepalive.interval, keepalive.timeout);
      const silence = new SilenceClock(tick, keepalive.timeout);
      silence.tick(link.session.peerProgress, performance.now());
      timer = setInterval(() => {
        if (silence.tick(link.session.peerProgress, performance.now())) {
          link.session.close("server silent; presumed dead");
        } else if (silence.silentFor >= keepalive.interval) {
          // Quiet for a while (a publisher hears nothing, and the server did not
          // probe us): ask for an echo.
          link.session.send(KEEPALIVE_FRAME, true);
        }
      }, tick);
    });
  }

  /**
   * Get a new session after losing the one with server `lost`, made through
   * the coordinator at `via`. Each round tries every coordinator once, `via`
   * last (its replica may be what failed), without waiting between them;
   * rounds are spaced by backoff. Only refused credentials end the client.
   */
  private async reestablish(
    policy: Required<ReconnectOptions>,
    lost: number,
    via: string,
  ): Promise<boolean> {
    let wait = policy.firstDelay;
    const order = coordinatorOrder(this.urls, via);
    while (!this.endReason) {
      for (const [index, url] of order.entries()) {
        // A server alias means something only to the coordinator that gave it.
        const avoid = url === via ? [lost] : [];
        const welcomeWithin = index === order.length - 1 ? undefined : policy.attemptTimeout / 2;
        try {
          await withinTimeout(policy.attemptTimeout, (attempt) =>
            this.openLink(url, undefined, attempt, avoid, undefined, welcomeWithin),
          );
          this.reconnectCount += 1;
          return true;
        } catch (error) {
          if (this.endReason) {
            return false;
          }
          if (error instanceof AuthenticationError) {
            this.end(`credentials refused on reconnect: ${error.message}`);
            return false;
          }
          console.info(`webrtc-broker: reconnect through ${url} failed (${String(error)})`);
        }
      }
      const pause = jittered(wait);
      console.info(`webrtc-broker: no coordinator gave a session; next round in ${pause} ms`);
      await delay(pause);
      wait = Math.min(policy.maxDelay, wait * 2);
    }
    return false;
  }

  // -- traffic ----------------------------------------------------------

  private onFrame(link: Link, frame: Uint8Array, reliable: boolean, inBatch = false): void {
    try {
      switch (frameType(frame)) {
        case MessageType.TOPIC_FW: {
          const fw = decodeAs(TopicFWMessageSchema, frame);
          const sender = aliasNumber(fw.fromAlias);
          this.deliver(new ReceivedMessage(sender, fw.body, reliable, fw.topic || undefined));
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
        case MessageType.BATCH: {
          if (!inBatch) {
            for (const inner of decodeAs(BatchMessageSchema, frame).frames) {
              this.onFrame(link, inner, reliable, true);
            }
          }
          break;
        }
        case MessageType.AUTH: {
          // A server that knows capabilities answers ours with its own.
          this.announced = decodeAs(AuthMessageSchema, frame).capabilities;
          if (this.announced & this.capabilities & Capability.CAPABILITY_BATCH) {
            link.session.enableBatching();
          }
          break;
        }
        case MessageType.PING: {
          const probe = decodeAs(PingMessageSchema, frame).time;
          const waiter = this.pings.get(probe);
          this.pings.delete(probe);
          waiter?.();
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

  /** The working link, or the error that says why there is none. */
  private current(): Link {
    const link = this.link;
    if (link === undefined || link.session.closed) {
      if (this.endReason) {
        throw new ClosedError(`client closed: ${this.endReason}`);
      }
      throw new DisconnectedError("the client is reconnecting to another server");
    }
    return link;
  }

  private send(frame: Uint8Array, reliable: boolean): void {
    const link = this.current();
    checkSize(frame);
    link.session.send(frame, reliable);
  }

  /**
   * Replace this client's subscriptions with `topics` (empty: unsubscribe
   * from everything). Resolves once the server has applied them: the PING
   * sent after them on the same ordered channel has come back, so messages
   * published to `topics` from then on are delivered. Rejects with
   * {@link DisconnectedError} if the session ends first; the subscriptions
   * are restored on whatever server the client reconnects to all the same.
   */
  async subscribe(topics: Iterable<string>, options: SubscribeOptions = {}): Promise<void> {
    const list = [...topics];
    const frame = options.compress
      ? await compressedSubscriptionFrame(list)
      : subscriptionFrame(list);
    checkSize(frame); // before it is kept: a reconnect sends it again unchecked
    this.subscription = frame;
    this.send(frame, true);
    // The server handles reliable frames in order, so this echo follows the change.
    // Unbounded, as before: a dead server ends the session (and the wait) via the keepalive.
    await this.pingOn(this.current(), true);
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

  /**
   * Round-trip time to the comm server, in milliseconds. Rejects with
   * {@link PingTimeoutError} when no echo comes within `options.timeout`, and
   * with {@link DisconnectedError} when the session ends first. An unreliable
   * PING that is lost is only ever answered by the timeout.
   */
  async ping(options: PingOptions = {}): Promise<number> {
    return this.pingOn(
      this.current(),
      options.reliable ?? true,
      options.timeout ?? PING_TIMEOUT_MS,
    );
  }

  private async pingOn(link: Link, reliable: boolean, timeoutMs = Infinity): Promise<number> {
    // The echo comes back unchanged, so a unique value doubles as the probe's id.
    const probe = this.nextPing++;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const echoed = new Promise<void>((resolve, reject) => {
      this.pings.set(probe, (error) => (error ? reject(error) : resolve()));
      // A timer past 2^31 - 1 ms would fire at once: a non-finite timeout sets none.
      if (Number.isFinite(timeoutMs)) {
        timer = setTimeout(() => {
          this.pings.delete(probe);
          reject(new PingTimeoutError(`no echo of a PING within ${timeoutMs} ms`));
        }, timeoutMs);
      }
    });
    const started = performance.now();
    try {
      link.session.send(
        encode(PingMessageSchema, { type: MessageType.PING, time: probe }),
        reliable,
      );
      await echoed;
    } finally {
      clearTimeout(timer);
      this.pings.delete(probe);
    }
    return performance.now() - started;
  }

  // -- events and closing -----------------------------------------------

  /** Listen to an event (see {@link BrokerClientEvents}); returns a function that stops it. */
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

  /** Times the client moved to another session after losing one. */
  get reconnects(): number {
    return this.reconnectCount;
  }

  /**
   * Frames from the coordinator that every link so far dropped, by reason
   * (a server's repeated offer, another server's frames, ...): each costs at
   * most its session, never the client.
   */
  get signallingDropped(): Readonly<SignallingDrops> {
    return { ...this.droppedSignalling };
  }

  /** Unreliable frames dropped because the channel's buffer was full (current session). */
  get dropped(): number {
    return this.link?.session.dropped ?? 0;
  }

  /** Whether the client has ended (it does not while it reconnects). */
  get closed(): boolean {
    return this.endReason !== "";
  }

  /** Why the client ended ("" while it has not). */
  get closeReason(): string {
    return this.endReason;
  }

  private failPings(error: Error): void {
    for (const waiter of this.pings.values()) {
      waiter(error);
    }
    this.pings.clear();
  }

  /** The client is over: fail whatever waits and tell the listeners. */
  private end(reason: string): void {
    if (this.endReason) {
      return;
    }
    this.endReason = reason || "closed";
    globalThis.removeEventListener?.("pagehide", this.onPageHide);
    this.failPings(new ClosedError(`client closed: ${this.endReason}`));
    this.events.emit("close", this.endReason);
  }

  /**
   * Close the session and the coordinator connection; no reconnect follows.
   * What was published before still goes out.
   */
  close(): void {
    this.end("closed by the client");
    this.pending?.close("closed by the client");
    this.link?.close("closed by the client");
  }
}
