// webrtc-broker browser SDK. Generated from sdk/js by `make sdk`: edit the sources there.
/** A tiny typed event emitter: browsers' EventTarget cannot type its payloads. */
export type Listener<T> = (value: T) => void;
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
	CAPABILITY_TOPIC_NAMES = 2
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
/** A client session with one comm server. */
export declare class BrokerClient {
	/** This client's alias: receivers see it as the sender of what it publishes. */
	readonly alias: number;
	/** The comm server this session is with. */
	readonly serverAlias: number;
	/** The coordinator's list of servers, in its order of preference. */
	readonly servers: readonly number[];
	/** What this client announced in its AUTH. */
	readonly capabilities: number;
	private readonly session;
	private announced;
	private receivedCount;
	private sentCount;
	private readonly ws;
	private readonly events;
	private readonly pings;
	private nextPing;
	private readonly refusal;
	private refuse;
	private refused;
	private signalling;
	private answered;
	private established;
	private constructor();
	/**
	 * Connect through the coordinator at `coordinatorUrl` (`ws://host:port`,
	 * `wss://...`, or the `http(s)://` equivalent).
	 *
	 * `credentials` go to the coordinator (`token` query parameter) and to the
	 * comm server (AUTH body). Rejects with {@link ServerFullError},
	 * {@link AuthenticationError}, {@link NoServerAvailableError},
	 * {@link ConnectTimeoutError} or another {@link BrokerError}.
	 */
	static connect(coordinatorUrl: string, credentials?: string | Uint8Array, options?: ConnectOptions): Promise<BrokerClient>;
	private static connectWithin;
	private static attempt;
	private establish;
	/** Wait for `step`, unless the server refuses first. */
	private firstOf;
	private onCoordinatorFrame;
	private onRefused;
	private signal;
	private sendCoordinator;
	private onFrame;
	private deliver;
	private send;
	/**
	 * Replace this client's subscriptions with `topics` (empty: unsubscribe
	 * from everything). Resolves once the server has applied them.
	 */
	subscribe(topics: Iterable<string>, options?: SubscribeOptions): Promise<void>;
	/** Publish `body` to every other subscriber of `topic`. */
	publish(topic: string, body: string | Uint8Array, options?: PublishOptions): void;
	/** Publish `body` stamped by the server with this client's authenticated identity. */
	publishIdentity(topic: string, body: string | Uint8Array, options?: PublishOptions): void;
	/** Round-trip time to the comm server, in milliseconds. */
	ping(options?: PublishOptions): Promise<number>;
	/** Listen to `message` or `close` events; returns a function that stops listening. */
	on<K extends keyof BrokerClientEvents>(type: K, listener: Listener<BrokerClientEvents[K]>): () => void;
	off<K extends keyof BrokerClientEvents>(type: K, listener: Listener<BrokerClientEvents[K]>): void;
	/** What the server announced in its AUTH (0 for servers that announce nothing). */
	get serverCapabilities(): number;
	/** Topic messages received (those inside BATCH frames included). */
	get received(): number;
	/** Topic messages published. */
	get sent(): number;
	/** Whether the session is closed. */
	get closed(): boolean;
	/** Why the session closed ("" while it is open). */
	get closeReason(): string;
	/** Unreliable frames dropped because the channel's buffer was full. */
	get dropped(): number;
	private onSessionClosed;
	/** Close the session and the coordinator connection. */
	close(): void;
}
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
/** The session was not established in time. */
export declare class ConnectTimeoutError extends BrokerError {
	constructor(message: string);
}
/** The client is closed (by `close()` or by the server). */
export declare class ClosedError extends BrokerError {
	constructor(message: string);
}

export {};
