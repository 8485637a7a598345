// Builds the browser SDK (one ES module and one .d.ts) and the demo page's
// script into the Python package's static files, which the coordinator serves
// and which are committed so that `pip install` users need no Node.js.
//
//   node scripts/build.mjs           build and write the files
//   node scripts/build.mjs --check   the same, but exit 1 if any file changed,
//                                    i.e. the committed build was stale
//
// Steps: protoc-gen-es generates the protobuf code from broker.proto (protoc
// is grpcio-tools' one, from the project's virtualenv: $PYTHON), tsc checks
// every source in strict mode, esbuild bundles, dts-bundle-generator rolls the
// declarations up. Every tool is pinned by package-lock.json, so the same
// sources always give the same bytes.

import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import { generateDtsBundle } from "dts-bundle-generator";
import * as esbuild from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const sdk = resolve(here, "..");
const root = resolve(sdk, "../..");
const staticDir = join(root, "webrtc_broker/static");
const check = process.argv.includes("--check");
const python = process.env.PYTHON ?? join(root, ".venv/bin/python");

const BANNER =
  "// webrtc-broker browser SDK. Generated from sdk/js by `make sdk`: edit the sources there.";

function generateProtobuf() {
  const out = join(sdk, "src/gen");
  mkdirSync(out, { recursive: true });
  execFileSync(
    python,
    [
      "-m", "grpc_tools.protoc",
      `--plugin=protoc-gen-es=${join(sdk, "node_modules/.bin/protoc-gen-es")}`,
      `-I${join(root, "webrtc_broker/wire")}`,
      `--es_out=${out}`,
      "--es_opt=target=ts,import_extension=js",
      "broker.proto",
    ],
    { stdio: "inherit" },
  );
}

function typeCheck() {
  execFileSync(join(sdk, "node_modules/.bin/tsc"), ["-p", join(sdk, "tsconfig.json")], {
    stdio: "inherit",
  });
}

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

async function main() {
  generateProtobuf();
  typeCheck();
  const outputs = {
    "sdk/webrtc-broker.js": await bundle("src/index.ts", { banner: { js: BANNER } }),
    "sdk/webrtc-broker.d.ts": declarations(),
    "demo.js": await bundle("demo/demo.ts", {
      // The demo loads the SDK the coordinator serves rather than a copy of it.
      external: ["/sdk/webrtc-broker.js"],
      banner: { js: "// The demo page's script. Generated from sdk/js/demo by `make sdk`." },
    }),
  };
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

await main();
