/**
 * webrtc-broker's browser SDK: publish and subscribe over WebRTC data
 * channels through a webrtc-broker cluster.
 *
 * ```js
 * import { BrokerClient } from "/sdk/webrtc-broker.js";
 * const client = await BrokerClient.connect(`ws://${location.host}`, "alice");
 * client.on("message", (m) => console.log(m.sender, m.text));
 * await client.subscribe(["room/1"]);
 * client.publish("room/1", "hello");
 * // Several coordinator replicas: whichever answers, the others on reconnect.
 * // BrokerClient.connect(["wss://c1.example", "wss://c2.example"], token);
 * ```
 */

export type {
  BrokerClientEvents,
  ConnectOptions,
  KeepaliveOptions,
  PingOptions,
  PublishOptions,
  ReconnectOptions,
  SubscribeOptions,
} from "./client.js";
export { BrokerClient, CLIENT_CAPABILITIES, coordinatorOrder, MAX_FRAME_BYTES } from "./client.js";
export {
  AuthenticationError,
  BrokerError,
  ClosedError,
  ConnectTimeoutError,
  CoordinatorUnavailableError,
  DisconnectedError,
  MessageTooLargeError,
  NoServerAvailableError,
  PingTimeoutError,
  ServerFullError,
} from "./errors.js";
export type { Listener } from "./events.js";
export type { SignallingDrop, SignallingDrops } from "./link.js";
export { ReceivedMessage } from "./message.js";
export { Capability, Role } from "./wire.js";
