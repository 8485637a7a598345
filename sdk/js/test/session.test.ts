import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, test } from "node:test";

import { Session } from "../src/session.js";
import { FakeChannel, FakePeerConnection, installGlobal, settle } from "./fakes.js";

const OFFER = JSON.stringify({ type: "offer", sdp: "v=0 offer" });

function candidate(text: string): string {
  return JSON.stringify({ candidate: text, sdpMid: "0", sdpMLineIndex: 0 });
}

describe("Session", () => {
  let restore: () => void = () => {};
  let frames: [number[], boolean][] = [];

  beforeEach(() => {
    FakePeerConnection.all = [];
    frames = [];
    restore = installGlobal("RTCPeerConnection", FakePeerConnection);
  });
  afterEach(() => restore());

  function session(): [Session, FakePeerConnection] {
    const made = new Session((frame, reliable) => frames.push([[...frame], reliable]), [], "relay");
    const [pc] = FakePeerConnection.all;
    assert.ok(pc !== undefined);
    return [made, pc];
  }

  function openChannels(pc: FakePeerConnection): [FakeChannel, FakeChannel] {
    const reliable = new FakeChannel("reliable");
    const unreliable = new FakeChannel("unreliable");
    pc.fire("datachannel", { channel: reliable });
    pc.fire("datachannel", { channel: unreliable });
    return [reliable, unreliable];
  }

  test("configures the peer connection with the ICE servers and policy", () => {
    const [, pc] = session();
    assert.deepEqual(pc.config, { iceServers: [], iceTransportPolicy: "relay" });
  });

  test("holds candidates that come before the offer and adds them before answering", async () => {
    const [made, pc] = session();
    await made.addCandidate(candidate("c1"));
    await made.addCandidate(candidate("c2"));
    assert.deepEqual(pc.log, []);
    const answer = await made.acceptOffer(OFFER);
    assert.deepEqual(JSON.parse(answer), { type: "answer", sdp: "v=0 answer" });
    await made.addCandidate(candidate("c3"));
    assert.deepEqual(pc.log, [
      "remote offer",
      "candidate c1",
      "candidate c2",
      "create answer",
      "local answer",
      "candidate c3",
    ]);
  });

  test("a held candidate the browser refuses does not cost the offer", async (t) => {
    t.mock.method(console, "debug", () => {});
    const [made, pc] = session();
    pc.refuse.add("bad");
    await made.addCandidate(candidate("bad"));
    await made.addCandidate(candidate("good"));
    await made.acceptOffer(OFFER);
    assert.deepEqual(
      pc.candidates.map((c) => c.candidate),
      ["good"],
    );
  });

  test("the end-of-candidates marker is taken and not passed on", async () => {
    const [made, pc] = session();
    await made.acceptOffer(OFFER);
    await made.addCandidate(candidate(""));
    assert.deepEqual(pc.candidates, []);
  });

  test("refuses what is not a candidate, a candidate too large, and too many", async () => {
    const [made] = session();
    await assert.rejects(made.addCandidate(`"${"x".repeat(1100)}"`), RangeError);
    await assert.rejects(made.addCandidate(JSON.stringify({ sdpMid: "0" })), TypeError);
    await assert.rejects(made.addCandidate(JSON.stringify({ candidate: 5 })), TypeError);
    await assert.rejects(made.addCandidate("null"), TypeError);
    await assert.rejects(made.addCandidate("{"), SyntaxError);
    // The four refused after parsing count against the budget of 64; the oversized one does not.
    for (let index = 0; index < 60; index += 1) {
      await made.addCandidate(candidate(`c${index}`));
    }
    await assert.rejects(made.addCandidate(candidate("one too many")), /too many candidates/);
  });

  test("refuses a session description that is not an offer", async () => {
    const [made, pc] = session();
    await assert.rejects(made.acceptOffer(JSON.stringify({ type: "answer", sdp: "x" })), TypeError);
    await assert.rejects(made.acceptOffer(JSON.stringify({ type: "offer" })), TypeError);
    assert.deepEqual(pc.log, []);
  });

  test("opens once both channels are open; other channels are closed", async () => {
    const [made, pc] = session();
    let opened = false;
    void made.opened.then(() => {
      opened = true;
    });
    const extra = new FakeChannel("chat");
    pc.fire("datachannel", { channel: extra });
    const reliable = new FakeChannel("reliable");
    reliable.readyState = "connecting";
    pc.fire("datachannel", { channel: reliable });
    pc.fire("datachannel", { channel: new FakeChannel("unreliable") });
    await settle();
    assert.equal(opened, false);
    assert.equal(extra.readyState, "closed");
    reliable.readyState = "open";
    reliable.fire("open");
    await made.opened;
    assert.equal(reliable.binaryType, "arraybuffer");
  });

  test("delivers frames with their channel's kind and counts them as signs of life", () => {
    const [made, pc] = session();
    const [reliable, unreliable] = openChannels(pc);
    const before = made.peerProgress;
    reliable.fire("message", { data: new Uint8Array([1, 2]).buffer });
    unreliable.fire("message", { data: "hi" });
    assert.deepEqual(frames, [
      [[1, 2], true],
      [[0x68, 0x69], false],
    ]);
    assert.equal(made.received, 2);
    assert.notEqual(made.peerProgress, before);
    const progress = made.peerProgress;
    reliable.fire("bufferedamountlow");
    assert.notEqual(made.peerProgress, progress, "buffer space freed by the peer is progress");
  });

  test("sends on the channel asked for", () => {
    const [made, pc] = session();
    const [reliable, unreliable] = openChannels(pc);
    made.send(new Uint8Array([1]), true);
    made.send(new Uint8Array([2]), false);
    assert.deepEqual(reliable.sent, [new Uint8Array([1])]);
    assert.deepEqual(unreliable.sent, [new Uint8Array([2])]);
  });

  test("hands local candidates over as JSON, but not the end of gathering", () => {
    const [made, pc] = session();
    const sent: string[] = [];
    made.onCandidate = (json) => sent.push(json);
    const local = { candidate: "candidate:9", toJSON: () => ({ candidate: "candidate:9" }) };
    pc.fire("icecandidate", { candidate: local });
    pc.fire("icecandidate", { candidate: null });
    pc.fire("icecandidate", { candidate: { candidate: "", toJSON: () => ({}) } });
    assert.deepEqual(sent, ['{"candidate":"candidate:9"}']);
  });

  test("closing tells every callback once, rejects opened, and closes channels and connection", async () => {
    const [made, pc] = session();
    const [reliable, unreliable] = openChannels(pc);
    const reasons: string[] = [];
    made.onClose((reason) => reasons.push(`first ${reason}`));
    made.close("bye");
    made.close("again");
    assert.equal(made.closed, true);
    assert.equal(made.closeReason, "bye");
    assert.deepEqual(reasons, ["first bye"]);
    made.onClose((reason) => reasons.push(`late ${reason}`));
    await settle();
    assert.deepEqual(reasons, ["first bye", "late bye"]);
    assert.equal(reliable.readyState, "closed");
    assert.equal(unreliable.readyState, "closed");
    assert.ok(pc.log.includes("close"));
    // Nothing is delivered after the close.
    reliable.fire("message", { data: new Uint8Array([1]).buffer });
    assert.deepEqual(frames, []);
  });

  test("a session that closes before opening rejects opened with the reason", async () => {
    const [made] = session();
    made.close("set-up abandoned");
    await assert.rejects(made.opened, /set-up abandoned/);
  });

  test("a failed connection closes the session", () => {
    const [made, pc] = session();
    pc.connectionState = "failed";
    pc.fire("connectionstatechange");
    assert.equal(made.closeReason, "connection failed");
  });

  test("a channel that closes closes the session", () => {
    const [made, pc] = session();
    const [, unreliable] = openChannels(pc);
    unreliable.fire("close");
    assert.equal(made.closeReason, "unreliable channel closed");
  });
});
