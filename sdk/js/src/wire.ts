/**
 * Frames on the wire: every frame is one protobuf message whose field 1 is
 * its type (docs/protocol.md). The message classes are generated from
 * webrtc_broker/wire/broker.proto by protoc-gen-es, so the browser and the
 * Python side share one schema.
 *
 * Aliases are uint64 on the wire (bigint in the generated code) but numbers
 * in this SDK's API: the coordinator keeps them below 2**53.
 */

import type { DescMessage, MessageInitShape, MessageShape } from "@bufbuild/protobuf";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";

import { MessageHeaderSchema, type MessageType } from "./gen/broker_pb.js";

export * from "./gen/broker_pb.js";

/** A frame that is not a valid broker message. */
export class FrameError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "FrameError";
  }
}

const TYPE_TAG = 0x08; // field 1, varint

/** The message type of `data`, read without parsing the whole frame when possible. */
export function frameType(data: Uint8Array): MessageType {
  const first = data[0];
  const second = data[1];
  if (first === TYPE_TAG && second !== undefined && second < 0x80) {
    return second as MessageType;
  }
  return decodeAs(MessageHeaderSchema, data).type;
}

/** Parse `data` as a message of `schema`; any failure is a {@link FrameError}. */
export function decodeAs<Desc extends DescMessage>(
  schema: Desc,
  data: Uint8Array,
): MessageShape<Desc> {
  try {
    return fromBinary(schema, data);
  } catch (error) {
    throw new FrameError(`cannot decode ${schema.typeName}: ${String(error)}`);
  }
}

/** Serialize a message given as a plain initializer. */
export function encode<Desc extends DescMessage>(
  schema: Desc,
  init: MessageInitShape<Desc>,
): Uint8Array<ArrayBuffer> {
  return toBinary(schema, create(schema, init));
}

/** A uint64 alias from the wire as a JavaScript number. */
export function aliasNumber(alias: bigint): number {
  return Number(alias);
}

/** A JavaScript-number alias for the wire. */
export function aliasBigint(alias: number): bigint {
  return BigInt(alias);
}

const utf8Encoder = new TextEncoder();

/** Bytes of a string (UTF-8) or the bytes themselves. */
export function toBytes(value: string | Uint8Array): Uint8Array {
  return typeof value === "string" ? utf8Encoder.encode(value) : value;
}
