// webrtc-broker browser SDK. Generated from sdk/js by `make sdk`: edit the sources there.
/** A tiny typed event emitter: browsers' EventTarget cannot type its payloads. */
export type Listener<T> = (value: T) => void;
/**
 * Largest frame a client may send, encoded: what the SDKs refuse with
 * MessageTooLargeError and what a comm server takes by default (`max_frame_bytes`).
 * Data channels carry 256 KiB messages; the relay adds the sender's alias and the
 * topic to what it forwards.
 */
export declare const MAX_FRAME_BYTES: number;
/**
 * Errors the SDK raises. They mirror the Python SDK's exceptions so that code
 * and docs can talk about both the same way; `name` is set explicitly so that
 * it survives any minifier and reads well in a page (`${err.name}: ...`).
 */
/** Base class of every error the SDK raises. */
export declare class BrokerError extends Error {
	constructor(message: string);
}
/** The coordinator knows no comm server (or not the one asked for). */
export declare class NoServerAvailableError extends BrokerError {
	constructor(message: string);
}
/** The comm server refused the session: it has reached its peer limit. */
export declare class ServerFullError extends BrokerError {
	constructor(message: string);
}
/** The coordinator or the comm server refused the credentials. */
export declare class AuthenticationError extends BrokerError {
	constructor(message: string);
}
/**
 * The coordinator said "not now": it is shutting down or at a connection cap.
 * Unlike {@link AuthenticationError} this passes: try again later (a
 * reconnecting client does, with backoff). `status` is the HTTP status of the
 * refusal (503, or 429 over the per-address cap).
 */
export declare class CoordinatorUnavailableError extends BrokerError {
	readonly status: number;
	constructor(message: string, status: number);
}
/** The session was not established in time. */
export declare class ConnectTimeoutError extends BrokerError {
	constructor(message: string);
}
/**
 * No echo of a PING within its timeout: the server is slow or the path to it
 * is stalled. The session is left as it is (the keepalive decides whether the
 * server is dead).
 */
export declare class PingTimeoutError extends BrokerError {
	constructor(message: string);
}
/** The client has ended (closed by `close()`, or its session lost with reconnecting off). */
export declare class ClosedError extends BrokerError {
	constructor(message: string);
}
/** The session ended and the client is reconnecting to another server; try again. */
export declare class DisconnectedError extends ClosedError {
	constructor(message: string);
}
/** A frame is larger than data channels carry once the server has relayed it. */
export declare class MessageTooLargeError extends BrokerError {
	constructor(message: string);
}
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
export type SignallingDrop = "malformed" | "unexpected_type" | "wrong_sender" | "repeated_offer" | "rejected";
/** Dropped coordinator frames by reason; absent reasons are 0. */
export type SignallingDrops = Partial<Record<SignallingDrop, number>>;
/**
 * @generated from enum protocol.Role
 */
export declare enum Role {
	/**
	 * @generated from enum value: UNKNOWN_ROLE = 0;
	 */
	UNKNOWN_ROLE = 0,
	/**
	 * @generated from enum value: CLIENT = 1;
	 */
	CLIENT = 1,
	/**
	 * @generated from enum value: COMMUNICATION_SERVER = 2;
	 */
	COMMUNICATION_SERVER = 2,
	/**
	 * @generated from enum value: COMMUNICATION_SERVER_HUB = 3;
	 */
	COMMUNICATION_SERVER_HUB = 3
}
/**
 * Addition: bits of AuthMessage.capabilities.
 *
 * @generated from enum protocol.Capability
 */
export declare enum Capability {
	/**
	 * @generated from enum value: NO_CAPABILITY = 0;
	 */
	NO_CAPABILITY = 0,
	/**
	 * accepts BATCH frames
	 *
	 * @generated from enum value: CAPABILITY_BATCH = 1;
	 */
	CAPABILITY_BATCH = 1,
	/**
	 * wants the topic in TOPIC_FW and TOPIC_IDENTITY_FW
	 *
	 * @generated from enum value: CAPABILITY_TOPIC_NAMES = 2;
	 */
	CAPABILITY_TOPIC_NAMES = 2,
	/**
	 * a comm server taking SUBSCRIPTION changes (ADD, REMOVE)
	 *
	 * @generated from enum value: CAPABILITY_TOPIC_DELTAS = 4;
	 */
	CAPABILITY_TOPIC_DELTAS = 4
}
/** A topic message delivered to this client. */
export declare class ReceivedMessage {
	/** Alias of the client that published it. */
	readonly sender: number;
	readonly body: Uint8Array;
	/** Whether it came on the reliable channel. */
	readonly reliable: boolean;
	/**
	 * The topic it was published to, when the server sends topic names
	 * (servers that announce CAPABILITY_TOPIC_NAMES); otherwise `undefined`.
	 */
	readonly topic?: string | undefined;
	/** The sender's authenticated identity, for messages published with identity. */
	readonly identity?: Uint8Array | undefined;
	/** The sender's role, for messages published with identity. */
	readonly role?: Role | undefined;
	constructor(
	/** Alias of the client that published it. */
	sender: number, body: Uint8Array, 
	/** Whether it came on the reliable channel. */
	reliable: boolean, 
	/**
	 * The topic it was published to, when the server sends topic names
	 * (servers that announce CAPABILITY_TOPIC_NAMES); otherwise `undefined`.
	 */
	topic?: string | undefined, 
	/** The sender's authenticated identity, for messages published with identity. */
	identity?: Uint8Array | undefined, 
	/** The sender's role, for messages published with identity. */
	role?: Role | undefined);
	/** The body decoded as UTF-8. */
	get text(): string;
	/** The identity decoded as UTF-8 (`undefined` for messages without identity). */
	get identityText(): string | undefined;
}
/** What this SDK announces in its AUTH: it unpacks BATCH frames and reads topic names. */
export declare const CLIENT_CAPABILITIES: number;
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
/**
 * The order in which a connect tries `urls`: each once, rotating through the
 * list. The first connect (no `after`) starts at a random URL, so that clients
 * given the same list spread over the replicas instead of all holding their
 * coordinator connection on the first one (which would also send all of them
 * back at once when it goes away). A reconnect starts after `after`, the URL
 * of the link that died, so that URL is tried last: its replica may be what
 * failed.
 */
export declare function coordinatorOrder(urls: readonly string[], after?: string): string[];
/** A client of the broker: one session with one comm server at a time. */
export declare class BrokerClient {
	private readonly urls;
	private readonly credentials;
	private readonly options;
	/** What this client announces in its AUTH. */
	readonly capabilities: number;
	private readonly events;
	private readonly pings;
	private readonly keepalive;
	private readonly reconnect;
	private nextPing;
	private link;
	private pending;
	private subscription;
	private endReason;
	private announced;
	private receivedCount;
	private sentCount;
	private reconnectCount;
	private readonly droppedSignalling;
	/** A page that goes away closes its client, so that the server frees the session at once. */
	private readonly onPageHide;
	/** The coordinator of the current (or last) link; see {@link coordinatorUrl}. */
	private url;
	private constructor();
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
	static connect(coordinatorUrl: string | readonly string[], credentials?: string | Uint8Array, options?: ConnectOptions): Promise<BrokerClient>;
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
	private firstLink;
	/** Each coordinator once, in {@link coordinatorOrder}; the last one's error is thrown. */
	private firstLinkRound;
	/**
	 * The first session through the coordinator at `url`: on `server` only, if
	 * given; otherwise on the coordinator's choice, or on the next server it
	 * lists when one refuses (full), fails, or does not answer CONNECT within
	 * half of `timeoutMs`. Unless this is the `last` coordinator to try, it too
	 * must WELCOME within half of `timeoutMs`: an unreachable one must not eat
	 * the time the next one needs.
	 */
	private firstLinkVia;
	/**
	 * A session through a new connection to the coordinator at `url`.
	 * `answerWithinMs` bounds the wait for the server's first answer, when
	 * another server could be tried; `welcomeWithinMs` the wait for the
	 * coordinator's WELCOME (`/ice-servers` included), when another coordinator
	 * could be tried.
	 */
	private openLink;
	/** This client's alias (it changes when the client reconnects; 0 while it does). */
	get alias(): number;
	/**
	 * The URL of the coordinator the current session was made through (while
	 * reconnecting: the last one that gave a session).
	 */
	get coordinatorUrl(): string;
	/** Every coordinator URL the client was given. */
	get coordinatorUrls(): readonly string[];
	/** The comm server of the current session (0 while reconnecting). */
	get serverAlias(): number;
	/** The coordinator's list of servers when the current session was made, best first. */
	get servers(): readonly number[];
	/** The STUN/TURN servers of the current session (empty when there is none). */
	get iceServers(): readonly RTCIceServer[];
	/** Keep the session alive; replace it when it dies, if reconnecting is on. */
	private supervise;
	/** Resolve when `link`'s session has closed or its server went silent. */
	private watch;
	/**
	 * Get a new session after losing the one with server `lost`, made through
	 * the coordinator at `via`. Each round tries every coordinator once, `via`
	 * last (its replica may be what failed), without waiting between them;
	 * rounds are spaced by backoff. Only refused credentials end the client.
	 */
	private reestablish;
	private onFrame;
	private deliver;
	/** The working link, or the error that says why there is none. */
	private current;
	private send;
	/**
	 * Replace this client's subscriptions with `topics` (empty: unsubscribe
	 * from everything). Resolves once the server has applied them: the PING
	 * sent after them on the same ordered channel has come back, so messages
	 * published to `topics` from then on are delivered. Rejects with
	 * {@link DisconnectedError} if the session ends first; the subscriptions
	 * are restored on whatever server the client reconnects to all the same.
	 */
	subscribe(topics: Iterable<string>, options?: SubscribeOptions): Promise<void>;
	/** Publish `body` to every other subscriber of `topic`. */
	publish(topic: string, body: string | Uint8Array, options?: PublishOptions): void;
	/** Publish `body` stamped by the server with this client's authenticated identity. */
	publishIdentity(topic: string, body: string | Uint8Array, options?: PublishOptions): void;
	/**
	 * Round-trip time to the comm server, in milliseconds. Rejects with
	 * {@link PingTimeoutError} when no echo comes within `options.timeout`, and
	 * with {@link DisconnectedError} when the session ends first. An unreliable
	 * PING that is lost is only ever answered by the timeout.
	 */
	ping(options?: PingOptions): Promise<number>;
	private pingOn;
	/** Listen to an event (see {@link BrokerClientEvents}); returns a function that stops it. */
	on<K extends keyof BrokerClientEvents>(type: K, listener: Listener<BrokerClientEvents[K]>): () => void;
	off<K extends keyof BrokerClientEvents>(type: K, listener: Listener<BrokerClientEvents[K]>): void;
	/** What the server announced in its AUTH (0 for servers that announce nothing). */
	get serverCapabilities(): number;
	/** Topic messages received (those inside BATCH frames included). */
	get received(): number;
	/** Topic messages published. */
	get sent(): number;
	/** Times the client moved to another session after losing one. */
	get reconnects(): number;
	/**
	 * Frames from the coordinator that every link so far dropped, by reason
	 * (a server's repeated offer, another server's frames, ...): each costs at
	 * most its session, never the client.
	 */
	get signallingDropped(): Readonly<SignallingDrops>;
	/** Unreliable frames dropped because the channel's buffer was full (current session). */
	get dropped(): number;
	/** Whether the client has ended (it does not while it reconnects). */
	get closed(): boolean;
	/** Why the client ended ("" while it has not). */
	get closeReason(): string;
	private failPings;
	/** The client is over: fail whatever waits and tell the listeners. */
	private end;
	/**
	 * Close the session and the coordinator connection; no reconnect follows.
	 * What was published before still goes out.
	 */
	close(): void;
}

export {};
