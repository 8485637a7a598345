/** What a subscriber receives. */

import type { Role } from "./wire.js";

const utf8 = new TextDecoder();

/** A topic message delivered to this client. */
export class ReceivedMessage {
  constructor(
    /** Alias of the client that published it. */
    readonly sender: number,
    readonly body: Uint8Array,
    /** Whether it came on the reliable channel. */
    readonly reliable: boolean,
    /**
     * The topic it was published to, when the server sends topic names
     * (servers that announce CAPABILITY_TOPIC_NAMES); otherwise `undefined`.
     */
    readonly topic?: string,
    /** The sender's authenticated identity, for messages published with identity. */
    readonly identity?: Uint8Array,
    /** The sender's role, for messages published with identity. */
    readonly role?: Role,
  ) {}

  /** The body decoded as UTF-8. */
  get text(): string {
    return utf8.decode(this.body);
  }

  /** The identity decoded as UTF-8 (`undefined` for messages without identity). */
  get identityText(): string | undefined {
    return this.identity === undefined ? undefined : utf8.decode(this.identity);
  }
}
