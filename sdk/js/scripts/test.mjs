// Runs the SDK's unit tests (test/*.test.ts) with Node's own test runner.
//
// Node 20 cannot run TypeScript, so tsc checks the tests against the sources
// in strict mode, esbuild compiles each test file (with the SDK modules it
// imports) into one ES module in a temporary folder, and `node --test` runs
// those. The tests cover what runs without a browser; tests/browser drives
// the whole SDK in Chromium.

import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import * as esbuild from "esbuild";

import { generateLimits, generateProtobuf, sdk, typeCheck } from "./steps.mjs";

const testDir = join(sdk, "test");

async function compile(outdir) {
  const entries = readdirSync(testDir)
    .filter((name) => name.endsWith(".test.ts"))
    .sort()
    .map((name) => join(testDir, name));
  if (entries.length === 0) {
    throw new Error(`no *.test.ts in ${testDir}`);
  }
  await esbuild.build({
    entryPoints: entries,
    outdir,
    outExtension: { ".js": ".mjs" },
    bundle: true,
    format: "esm",
    platform: "node",
    target: "node20",
    sourcemap: "inline",
    logLevel: "warning",
  });
  return entries.map((entry) =>
    join(outdir, entry.slice(testDir.length + 1).replace(/\.ts$/, ".mjs")),
  );
}

async function main() {
  generateProtobuf();
  generateLimits();
  typeCheck("test/tsconfig.json");
  const outdir = mkdtempSync(join(tmpdir(), "webrtc-broker-sdk-test-"));
  try {
    const files = await compile(outdir);
    const run = spawnSync(
      process.execPath,
      [
        "--test",
        "--test-reporter=spec",
        // A test that waits forever fails, and a timer a failed test left behind
        // (a client still reconnecting) does not keep the run from ending.
        "--test-timeout=30000",
        "--test-force-exit",
        // Node 20 calls node:test's mock timers experimental, once per test file.
        "--disable-warning=ExperimentalWarning",
        ...files,
      ],
      {
        stdio: "inherit",
      },
    );
    process.exitCode = run.status ?? 1;
  } finally {
    rmSync(outdir, { recursive: true, force: true });
  }
}

await main();
