// Builds the browser SDK (one ES module and one .d.ts) and the demo page's
// script into the Python package's static files, which the coordinator serves
// and which are committed so that `pip install` users need no Node.js.
//
//   node scripts/build.mjs           build and write the files
//   node scripts/build.mjs --check   the same, but exit 1 if any file changed,
//                                    i.e. the committed build was stale
//   node scripts/build.mjs --dist    write the same SDK module and .d.ts into
//                                    dist/ for the npm package (`npm pack` runs
//                                    this as its prepack step)
//
// Steps: the npm package's version must be the Python package's; protoc-gen-es
// generates the protobuf code from broker.proto (protoc is grpcio-tools' one,
// from the project's virtualenv: $PYTHON), the same Python turns the limits
// both SDKs share (webrtc_broker/limits.py) into src/gen/limits.ts, so the
// committed build goes stale when they change; tsc checks every source in strict
// mode, esbuild bundles (@bufbuild/protobuf included: the module imports
// nothing), dts-bundle-generator rolls the declarations up. Every tool is
// pinned by package-lock.json, so the same sources always give the same bytes.

import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";

import { generateDtsBundle } from "dts-bundle-generator";
import * as esbuild from "esbuild";

import {
  checkedVersion,
  generateLimits,
  generateProtobuf,
  root,
  sdk,
  typeCheck,
} from "./steps.mjs";

const staticDir = join(root, "webrtc_broker/static");
const distDir = join(sdk, "dist");
const check = process.argv.includes("--check");
const dist = process.argv.includes("--dist");

const BANNER =
  "// webrtc-broker browser SDK. Generated from sdk/js by `make sdk`: edit the sources there.";

async function bundle(entry, extra = {}) {
  const result = await esbuild.build({
    entryPoints: [join(sdk, entry)],
    bundle: true,
    format: "esm",
    platform: "browser",
    target: "es2022",
    charset: "utf8",
    legalComments: "none",
    write: false,
    logLevel: "warning",
    ...extra,
  });
  const [file] = result.outputFiles;
  return file.text;
}

function declarations() {
  const [text] = generateDtsBundle(
    [
      {
        filePath: join(sdk, "src/index.ts"),
        output: { noBanner: true, exportReferencedTypes: false },
      },
    ],
    { preferredConfigPath: join(sdk, "tsconfig.json") },
  );
  return `${BANNER}\n${text}`;
}

/** The SDK's module and declarations, as the coordinator serves them and npm ships them. */
async function sdkFiles() {
  return {
    "webrtc-broker.js": await bundle("src/index.ts", { banner: { js: BANNER } }),
    "webrtc-broker.d.ts": declarations(),
  };
}

/** Write the npm package's files into dist/ (replacing what was there). */
async function writeDist() {
  const files = await sdkFiles();
  rmSync(distDir, { recursive: true, force: true });
  mkdirSync(distDir, { recursive: true });
  for (const [name, text] of Object.entries(files)) {
    writeFileSync(join(distDir, name), text);
  }
  console.log(`browser SDK: wrote ${relative(root, distDir)} (${Object.keys(files).join(", ")})`);
}

/** Write the static files that changed; with --check, exit 1 if any did. */
async function writeStatic() {
  const outputs = {};
  for (const [name, text] of Object.entries(await sdkFiles())) {
    outputs[`sdk/${name}`] = text;
  }
  outputs["demo.js"] = await bundle("demo/demo.ts", {
    // The demo loads the SDK the coordinator serves rather than a copy of it.
    external: ["/sdk/webrtc-broker.js"],
    banner: { js: "// The demo page's script. Generated from sdk/js/demo by `make sdk`." },
  });
  const stale = [];
  for (const [name, text] of Object.entries(outputs)) {
    const path = join(staticDir, name);
    const before = existsSync(path) ? readFileSync(path, "utf8") : undefined;
    if (before !== text) {
      stale.push(relative(root, path));
      mkdirSync(dirname(path), { recursive: true });
      writeFileSync(path, text);
    }
  }
  if (stale.length === 0) {
    console.log("browser SDK: the committed build is current");
  } else if (check) {
    console.error(
      `browser SDK: the committed build was stale; rebuilt ${stale.join(", ")}: commit them`,
    );
    process.exit(1);
  } else {
    console.log(`browser SDK: wrote ${stale.join(", ")}`);
  }
}

async function main() {
  try {
    checkedVersion();
  } catch (error) {
    console.error(`browser SDK: ${error.message}`);
    process.exit(1);
  }
  generateProtobuf();
  generateLimits();
  typeCheck("tsconfig.json");
  await (dist ? writeDist() : writeStatic());
}

await main();
