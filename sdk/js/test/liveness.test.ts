import assert from "node:assert/strict";
import { test } from "node:test";

import { keepaliveTick, SilenceClock } from "../src/liveness.js";

// The clock takes the time as an argument: each test is its own fake clock.

test("progress at every tick keeps a server alive however long it runs", () => {
  const clock = new SilenceClock(1000, 4000);
  for (let tick = 0; tick < 20; tick += 1) {
    assert.equal(clock.tick(`progress ${tick}`, tick * 1000), false);
    assert.equal(clock.silentFor, 0);
  }
});

test("a silent server is presumed dead once the silence passes the timeout", () => {
  const clock = new SilenceClock(1000, 4000);
  assert.equal(clock.tick("p", 0), false);
  const verdicts = [1000, 2000, 3000, 4000, 5000].map((now) => clock.tick("p", now));
  // 4000 ms of silence is not yet more than the timeout; 5000 ms is.
  assert.deepEqual(verdicts, [false, false, false, false, true]);
  assert.equal(clock.silentFor, 5000);
});

test("the keepalive looks at least four times within its timeout", () => {
  assert.equal(keepaliveTick(3000, 4000), 1000);
  assert.equal(keepaliveTick(500, 4000), 500);
  assert.equal(keepaliveTick(3000, 60_000), 3000);
});

test("progress after a silence starts the count again", () => {
  const clock = new SilenceClock(1000, 4000);
  clock.tick("a", 0);
  clock.tick("a", 1000);
  clock.tick("a", 2000);
  assert.equal(clock.silentFor, 2000);
  assert.equal(clock.tick("b", 3000), false);
  assert.equal(clock.silentFor, 0);
});

test("a late tick (a throttled background tab) adds at most one interval", () => {
  const clock = new SilenceClock(1000, 4000);
  clock.tick("p", 0);
  // A minute between ticks says nothing about the server: it counts as 1000 ms.
  assert.equal(clock.tick("p", 60_000), false);
  assert.equal(clock.silentFor, 1000);
  assert.equal(clock.tick("p", 120_000), false);
  assert.equal(clock.silentFor, 2000);
});

test("ticks closer than the interval add only the time that passed", () => {
  const clock = new SilenceClock(1000, 4000);
  clock.tick("p", 0);
  clock.tick("p", 250);
  clock.tick("p", 400);
  assert.equal(clock.silentFor, 400);
});
