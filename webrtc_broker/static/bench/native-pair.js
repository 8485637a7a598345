// @ts-check
/**
 * The native yardstick of `webrtc-broker bench`: two of Chromium's peer
 * connections (libwebrtc) in this page, connected to each other, one data
 * channel sending as fast as its flow control allows. The bench runs it
 * through Playwright (webrtc_broker/bench/nativepair.py) and reads the count.
 *
 * Flow control keeps the sender's buffer between two bounds: fill it up to
 * BUFFER_HIGH, wait for `bufferedamountlow` (at BUFFER_LOW), fill again. The
 * buffer never runs dry, so the channel moves what the stack can, and never
 * grows without bound (Chromium closes a channel whose buffer overflows). On
 * an unreliable channel whatever arrives is counted.
 *
 * Both peers share the page's one thread: while the sender fills its buffer
 * the receiver's events wait, and a whole fill (megabytes of small messages)
 * can take over a second on a busy machine, longer than a short counted
 * window. So the sender fills in slices of SLICE_BYTES and lets the page's
 * events run between them: the receiver counts as messages arrive.
 *
 * @typedef {{size: number, reliable: boolean, warmupMs: number, seconds: number}} PairOptions
 * @typedef {{sent: number, received: number}} PairCounts
 */

// Wide bounds: every refill waits for an event, and the channel must not run
// dry meanwhile. Measured with 100 B messages on 2 cores: 256 kB/64 kB moved
// about 8,000 messages/s, 8 MB/2 MB four to five times that. Chromium closes a
// channel whose buffer passes 16 MB.
const BUFFER_HIGH = 8 * 1024 * 1024;
const BUFFER_LOW = 2 * 1024 * 1024;
const SLICE_BYTES = 1024 * 1024;
const DRAIN_MS = 200;

/**
 * Hand every ICE candidate of `from` to `to`.
 * @param {RTCPeerConnection} from
 * @param {RTCPeerConnection} to
 */
function trickle(from, to) {
  from.onicecandidate = (event) => {
    if (event.candidate) void to.addIceCandidate(event.candidate);
  };
}

/**
 * Resolves once the channel's buffer drops to BUFFER_LOW.
 * @param {RTCDataChannel} channel
 * @returns {Promise<void>}
 */
function drained(channel) {
  return new Promise((resolve) =>
    channel.addEventListener("bufferedamountlow", () => resolve(), { once: true }),
  );
}

const yielder = new MessageChannel();

/**
 * Lets the page's other events (the receiver's messages) run. A message to
 * ourselves, not `setTimeout(0)`, which Chromium delays by 4 ms and more.
 * @returns {Promise<void>}
 */
function yieldToEvents() {
  return new Promise((resolve) => {
    yielder.port1.onmessage = () => resolve();
    yielder.port2.postMessage(null);
  });
}

/**
 * Send `size`-byte messages for `warmupMs` and then `seconds`; count those that
 * arrive during the seconds.
 * @param {PairOptions} options
 * @returns {Promise<PairCounts>}
 */
async function measureNativePair(options) {
  /** @type {RTCConfiguration} */
  const noServers = { iceServers: [] };
  const sender = new RTCPeerConnection(noServers);
  const receiver = new RTCPeerConnection(noServers);
  try {
    trickle(sender, receiver);
    trickle(receiver, sender);
    const channel = sender.createDataChannel(
      "bench",
      options.reliable ? {} : { ordered: false, maxRetransmits: 0 },
    );
    channel.bufferedAmountLowThreshold = BUFFER_LOW;
    /** @type {Promise<RTCDataChannel>} */
    const incoming = new Promise((resolve) => {
      receiver.ondatachannel = (event) => resolve(event.channel);
    });
    const opened = new Promise((resolve) => {
      channel.onopen = resolve;
    });
    await sender.setLocalDescription();
    await receiver.setRemoteDescription(
      /** @type {RTCSessionDescription} */ (sender.localDescription),
    );
    await receiver.setLocalDescription();
    await sender.setRemoteDescription(
      /** @type {RTCSessionDescription} */ (receiver.localDescription),
    );
    const remote = await incoming;
    await opened;

    const warmupEnd = performance.now() + options.warmupMs;
    let windowStart = Number.POSITIVE_INFINITY;
    let windowEnd = Number.POSITIVE_INFINITY;
    let received = 0;
    remote.onmessage = () => {
      const now = performance.now();
      if (now >= windowStart && now < windowEnd) received += 1;
    };
    const message = new Uint8Array(options.size);
    let sent = 0;
    while (performance.now() < windowEnd) {
      if (channel.bufferedAmount < BUFFER_HIGH) {
        const sliceEnd = Math.min(BUFFER_HIGH, channel.bufferedAmount + SLICE_BYTES);
        while (channel.bufferedAmount < sliceEnd) {
          channel.send(message);
          sent += 1;
        }
        await yieldToEvents();
      } else {
        await drained(channel);
      }
      const now = performance.now();
      if (windowStart === Number.POSITIVE_INFINITY && now >= warmupEnd) {
        windowStart = now;
        windowEnd = now + options.seconds * 1000;
      }
    }
    await new Promise((resolve) => setTimeout(resolve, DRAIN_MS));
    return { sent, received };
  } finally {
    sender.close();
    receiver.close();
  }
}

Object.assign(globalThis, { measureNativePair });
