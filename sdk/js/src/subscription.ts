/**
 * SUBSCRIPTION payloads: the client's complete topic set, space-separated,
 * optionally gzip-compressed (a browser's CompressionStream does the gzip).
 */

import { encode, Format, MessageType, SubscriptionMessageSchema } from "./wire.js";

/** Sorted unique topic names, checked the way the Python SDK checks them. */
export function topicList(topics: Iterable<string>): string[] {
  const names = [...new Set(topics)].sort();
  for (const name of names) {
    if (name === "" || /\s/.test(name)) {
      const shown = JSON.stringify(name);
      throw new TypeError(`topic names are non-empty and contain no whitespace: ${shown}`);
    }
  }
  return names;
}

/** A SUBSCRIPTION frame announcing exactly `topics`. */
export function subscriptionFrame(topics: Iterable<string>): Uint8Array {
  const payload = new TextEncoder().encode(topicList(topics).join(" "));
  return encode(SubscriptionMessageSchema, {
    type: MessageType.SUBSCRIPTION,
    format: Format.PLAIN,
    topics: payload,
  });
}

/** The same frame with a gzip-compressed topic list, for very large sets. */
export async function compressedSubscriptionFrame(topics: Iterable<string>): Promise<Uint8Array> {
  const payload = new TextEncoder().encode(topicList(topics).join(" "));
  const stream = new Blob([payload]).stream().pipeThrough(new CompressionStream("gzip"));
  const compressed = new Uint8Array(await new Response(stream).arrayBuffer());
  return encode(SubscriptionMessageSchema, {
    type: MessageType.SUBSCRIPTION,
    format: Format.GZIP,
    topics: compressed,
  });
}
