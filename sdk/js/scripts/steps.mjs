// Steps shared by the build (build.mjs) and the unit tests (test.mjs).

import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
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

/** The Python module of the limits both SDKs share (their one source). */
const limitsModule = join(root, "webrtc_broker/limits.py");

/**
 * Reads `limitsModule` with the project's Python: each name in its `__all__`
 * with its value, whether that is an int or a float (seconds), and its
 * docstring. The module imports nothing, so it runs on its own.
 */
const READ_LIMITS = `
import ast, inspect, json, runpy, sys
path = sys.argv[1]
values = runpy.run_path(path)
body = ast.parse(open(path, encoding="utf-8").read()).body
docs = {}
for node, after in zip(body, body[1:]):
    if (
        isinstance(node, ast.Assign)
        and isinstance(after, ast.Expr)
        and isinstance(after.value, ast.Constant)
        and isinstance(after.value.value, str)
    ):
        for target in node.targets:
            if isinstance(target, ast.Name):
                docs[target.id] = inspect.cleandoc(after.value.value)
out = []
for name in values["__all__"]:
    value = values[name]
    if type(value) not in (int, float):
        sys.exit(f"{path}: {name} is a {type(value).__name__}, not an int or float")
    kind = "int" if type(value) is int else "seconds"
    out.append({"name": name, "value": value, "kind": kind, "doc": docs.get(name, "")})
print(json.dumps(out))
`;

/** A docstring as a TypeScript doc comment (rST's double backticks become Markdown's). */
function docComment(doc) {
  const lines = doc.replaceAll("``", "`").replaceAll("*/", "*\\/").split("\n");
  return ["/**", ...lines.map((line) => (line ? ` * ${line}` : " *")), " */"].join("\n");
}

/**
 * Generate src/gen/limits.ts from webrtc_broker/limits.py: ints keep their
 * names, floats (seconds) become `<NAME>_MS` in whole milliseconds.
 */
export function generateLimits() {
  const out = join(sdk, "src/gen");
  mkdirSync(out, { recursive: true });
  const read = execFileSync(python, ["-c", READ_LIMITS, limitsModule], { encoding: "utf8" });
  const constants = JSON.parse(read).map(({ name, value, kind, doc }) => {
    if (kind === "int") {
      return `${docComment(doc)}\nexport const ${name}: number = ${value};\n`;
    }
    const comment = docComment(`${doc}\n\nIn milliseconds (the Python SDK has it in seconds).`);
    return `${comment}\nexport const ${name}_MS: number = ${Math.round(value * 1000)};\n`;
  });
  const header =
    "// Generated from webrtc_broker/limits.py by scripts/steps.mjs: edit that module.\n";
  writeFileSync(join(out, "limits.ts"), [header, ...constants].join("\n"));
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
