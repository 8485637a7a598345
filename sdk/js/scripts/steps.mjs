// Steps shared by the build (build.mjs) and the unit tests (test.mjs).

import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** The SDK's folder (sdk/js) and the repository's root. */
export const sdk = resolve(dirname(fileURLToPath(import.meta.url)), "..");
export const root = resolve(sdk, "../..");

/** The project's virtualenv Python, whose grpcio-tools provides protoc. */
const python = process.env.PYTHON ?? join(root, ".venv/bin/python");

/** Generate the protobuf code (src/gen) from broker.proto with protoc-gen-es. */
export function generateProtobuf() {
  const out = join(sdk, "src/gen");
  mkdirSync(out, { recursive: true });
  execFileSync(
    python,
    [
      "-m",
      "grpc_tools.protoc",
      `--plugin=protoc-gen-es=${join(sdk, "node_modules/.bin/protoc-gen-es")}`,
      `-I${join(root, "webrtc_broker/wire")}`,
      `--es_out=${out}`,
      "--es_opt=target=ts,import_extension=js",
      "broker.proto",
    ],
    { stdio: "inherit" },
  );
}

/** Check every source of the TypeScript project `config` in strict mode (tsc, no output). */
export function typeCheck(config) {
  try {
    execFileSync(join(sdk, "node_modules/.bin/tsc"), ["-p", join(sdk, config)], {
      stdio: "inherit",
    });
  } catch {
    // tsc printed the errors: a stack trace of this script would only bury them.
    console.error(`browser SDK: tsc found errors in ${config}`);
    process.exit(1);
  }
}

/**
 * The npm package's version, or an error if it is not the Python package's:
 * the SDK and the coordinator that serves it are released together, so an
 * `npm install webrtc-broker-sdk@X` matches `pip install webrtc-broker==X`.
 * The Python version is written in pyproject.toml and webrtc_broker/__init__.py.
 */
export function checkedVersion() {
  const npm = JSON.parse(readFileSync(join(sdk, "package.json"), "utf8")).version;
  const pyproject = readFileSync(join(root, "pyproject.toml"), "utf8");
  const project = pyproject.split(/^\[project\]\s*$/m)[1]?.split(/^\[/m)[0] ?? "";
  const versions = {
    "sdk/js/package.json": npm,
    "pyproject.toml": /^version\s*=\s*"([^"]+)"/m.exec(project)?.[1],
    "webrtc_broker/__init__.py": /^__version__\s*=\s*"([^"]+)"/m.exec(
      readFileSync(join(root, "webrtc_broker/__init__.py"), "utf8"),
    )?.[1],
  };
  const differing = Object.values(versions).some((version) => version !== npm);
  if (differing) {
    const listed = Object.entries(versions)
      .map(([file, version]) => `${file}: ${version ?? "(none found)"}`)
      .join(", ");
    throw new Error(`the SDK's and the Python package's versions differ: ${listed}`);
  }
  return npm;
}
