/**
 * Errors the SDK raises. They mirror the Python SDK's exceptions so that code
 * and docs can talk about both the same way; `name` is set explicitly so that
 * it survives any minifier and reads well in a page (`${err.name}: ...`).
 */

/** Base class of every error the SDK raises. */
export class BrokerError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "BrokerError";
  }
}

/** The coordinator knows no comm server (or not the one asked for). */
export class NoServerAvailableError extends BrokerError {
  constructor(message: string) {
    super(message);
    this.name = "NoServerAvailableError";
  }
}

/** The comm server refused the session: it has reached its peer limit. */
export class ServerFullError extends BrokerError {
  constructor(message: string) {
    super(message);
    this.name = "ServerFullError";
  }
}

/** The coordinator or the comm server refused the credentials. */
export class AuthenticationError extends BrokerError {
  constructor(message: string) {
    super(message);
    this.name = "AuthenticationError";
  }
}

/**
 * The coordinator said "not now": it is shutting down or at a connection cap.
 * Unlike {@link AuthenticationError} this passes: try again later (a
 * reconnecting client does, with backoff). `status` is the HTTP status of the
 * refusal (503, or 429 over the per-address cap).
 */
export class CoordinatorUnavailableError extends BrokerError {
  readonly status: number;

  constructor(message: string, status: number) {
    super(message);
    this.name = "CoordinatorUnavailableError";
    this.status = status;
  }
}

/** The session was not established in time. */
export class ConnectTimeoutError extends BrokerError {
  constructor(message: string) {
    super(message);
    this.name = "ConnectTimeoutError";
  }
}

/**
 * No echo of a PING within its timeout: the server is slow or the path to it
 * is stalled. The session is left as it is (the keepalive decides whether the
 * server is dead).
 */
export class PingTimeoutError extends BrokerError {
  constructor(message: string) {
    super(message);
    this.name = "PingTimeoutError";
  }
}

/** The client has ended (closed by `close()`, or its session lost with reconnecting off). */
export class ClosedError extends BrokerError {
  constructor(message: string) {
    super(message);
    this.name = "ClosedError";
  }
}

/** The session ended and the client is reconnecting to another server; try again. */
export class DisconnectedError extends ClosedError {
  constructor(message: string) {
    super(message);
    this.name = "DisconnectedError";
  }
}

/** A frame is larger than data channels carry once the server has relayed it. */
export class MessageTooLargeError extends BrokerError {
  constructor(message: string) {
    super(message);
    this.name = "MessageTooLargeError";
  }
}
