import assert from "node:assert/strict";
import { describe, type TestContext, test } from "node:test";

import {
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
} from "../src/errors.js";
import { Attempt, diagnoseRefusal, withinTimeout } from "../src/link.js";
import { FrameError } from "../src/wire.js";

describe("error classes", () => {
  test("each has its own name and is a BrokerError", () => {
    const errors = [
      new NoServerAvailableError("m"),
      new ServerFullError("m"),
      new AuthenticationError("m"),
      new CoordinatorUnavailableError("m", 503),
      new ConnectTimeoutError("m"),
      new PingTimeoutError("m"),
      new ClosedError("m"),
      new DisconnectedError("m"),
      new MessageTooLargeError("m"),
    ];
    for (const error of errors) {
      assert.ok(error instanceof BrokerError && error instanceof Error);
      assert.equal(error.name, error.constructor.name);
      assert.equal(error.message, "m");
      assert.equal(String(error), `${error.name}: m`);
    }
  });

  test("a DisconnectedError is a ClosedError: code that handles closing handles both", () => {
    assert.ok(new DisconnectedError("m") instanceof ClosedError);
    assert.ok(!(new ClosedError("m") instanceof DisconnectedError));
  });

  test("CoordinatorUnavailableError carries the HTTP status", () => {
    assert.equal(new CoordinatorUnavailableError("m", 429).status, 429);
  });
});

type Route = (init: RequestInit | undefined) => Response | Promise<Response>;

/** Replace fetch for the test: `routes` maps a path to an answer; an absent path fails. */
function fakeFetch(t: TestContext, routes: Record<string, Route>): string[] {
  const asked: string[] = [];
  t.mock.method(globalThis, "fetch", async (input: string | URL, init?: RequestInit) => {
    const url = new URL(String(input));
    asked.push(`${url.pathname}${url.search}${init?.mode === "no-cors" ? " no-cors" : ""}`);
    const route = routes[init?.mode === "no-cors" ? `${url.pathname} no-cors` : url.pathname];
    if (route === undefined) {
      throw new TypeError("Failed to fetch");
    }
    return route(init);
  });
  return asked;
}

const answer =
  (status: number, body = ""): Route =>
  () =>
    new Response(body, { status });

describe("why the coordinator refused a WebSocket (diagnoseRefusal)", () => {
  const base = "http://coordinator.test:9090";

  test("403 from the admission check: refused credentials, with the coordinator's reason", async (t) => {
    const asked = fakeFetch(t, { "/connect": answer(403, "bad_token\n") });
    const error = await diagnoseRefusal(base, "?token=x");
    assert.ok(error instanceof AuthenticationError);
    assert.equal(error.message, "the coordinator refused the credentials (HTTP 403: bad_token)");
    assert.deepEqual(asked, ["/connect?token=x"]);
  });

  test("401 is refused credentials too; a reason that is not a word is left out", async (t) => {
    fakeFetch(t, { "/connect": answer(401, "<html>nope</html>") });
    const error = await diagnoseRefusal(base, "");
    assert.ok(error instanceof AuthenticationError);
    assert.equal(error.message, "the coordinator refused the credentials (HTTP 401)");
  });

  for (const status of [503, 429]) {
    test(`${status}: the coordinator cannot take the connection now`, async (t) => {
      fakeFetch(t, { "/connect": answer(status, "draining") });
      const error = await diagnoseRefusal(base, "");
      assert.ok(error instanceof CoordinatorUnavailableError);
      assert.equal(error.status, status);
      assert.match(error.message, new RegExp(`HTTP ${status}: draining`));
    });
  }

  test("the check admits the client: the WebSocket itself failed", async (t) => {
    fakeFetch(t, { "/connect": answer(200) });
    const error = await diagnoseRefusal(base, "");
    assert.equal(error.constructor, BrokerError);
    assert.match(error.message, /admits this client now/);
  });

  test("no admission check, /readyz says 503: the coordinator is shutting down", async (t) => {
    const asked = fakeFetch(t, { "/connect": answer(404), "/readyz": answer(503) });
    const error = await diagnoseRefusal(base, "");
    assert.ok(error instanceof CoordinatorUnavailableError);
    assert.equal(error.status, 503);
    assert.deepEqual(asked, ["/connect", "/readyz"]);
  });

  test("no admission check, /readyz answers: the credentials were refused", async (t) => {
    fakeFetch(t, { "/readyz": answer(200) });
    assert.ok((await diagnoseRefusal(base, "")) instanceof AuthenticationError);
  });

  test("an opaque cross-origin answer still proves the coordinator up", async (t) => {
    const asked = fakeFetch(t, { "/readyz no-cors": answer(200) });
    assert.ok((await diagnoseRefusal(base, "")) instanceof AuthenticationError);
    assert.deepEqual(asked, ["/connect", "/readyz", "/readyz no-cors"]);
  });

  test("no answer at all: the coordinator cannot be reached", async (t) => {
    fakeFetch(t, {});
    const error = await diagnoseRefusal(base, "");
    assert.equal(error.constructor, BrokerError);
    assert.equal(error.message, `cannot reach the coordinator at ${base}`);
  });
});

/** Let promise callbacks run (setImmediate stays real when only setTimeout is faked). */
const nextTask = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

describe("withinTimeout", () => {
  test("resolves with the work's value and leaves what it made alone", async () => {
    let made: Attempt | undefined;
    const value = await withinTimeout(1000, async (attempt) => {
      made = attempt;
      return 42;
    });
    assert.equal(value, 42);
    assert.equal(made?.aborted, false);
  });

  test("rejects with ConnectTimeoutError when the time runs out, and aborts the attempt", async (t) => {
    t.mock.timers.enable({ apis: ["setTimeout"] });
    const closed: string[] = [];
    let made: Attempt | undefined;
    const outcome = withinTimeout(2000, (attempt) => {
      made = attempt;
      attempt.ws = { close: () => closed.push("ws") } as unknown as WebSocket;
      return new Promise<never>(() => {});
    });
    let settled = false;
    const done = (): void => {
      settled = true;
    };
    outcome.then(done, done);
    t.mock.timers.tick(1999);
    await nextTask();
    assert.equal(settled, false);
    t.mock.timers.tick(1);
    await assert.rejects(outcome, (error: unknown) => {
      assert.ok(error instanceof ConnectTimeoutError);
      assert.equal(error.message, "no session within 2 s");
      return true;
    });
    assert.equal(made?.aborted, true);
    assert.deepEqual(closed, ["ws"]);
  });

  test("turns any other failure into a BrokerError and aborts the attempt", async () => {
    let made: Attempt | undefined;
    await assert.rejects(
      withinTimeout(1000, async (attempt) => {
        made = attempt;
        throw new FrameError("garbled");
      }),
      (error: unknown) => error instanceof BrokerError && error.message === "FrameError: garbled",
    );
    assert.equal(made?.aborted, true);
  });

  test("keeps a BrokerError as it is", async () => {
    const refusal = new ServerFullError("server 3 is full");
    await assert.rejects(
      withinTimeout(1000, async () => {
        throw refusal;
      }),
      (error: unknown) => error === refusal,
    );
  });
});

describe("Attempt", () => {
  test("check() passes until the attempt is aborted, then releases and throws", () => {
    const attempt = new Attempt();
    attempt.check();
    let closes = 0;
    attempt.ws = { close: () => (closes += 1) } as unknown as WebSocket;
    attempt.abort();
    assert.equal(closes, 1);
    // Something made after the abort (a socket that opened late) is released by check().
    assert.throws(() => attempt.check(), ConnectTimeoutError);
    assert.equal(closes, 2);
  });
});
