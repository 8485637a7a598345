"""The browser SDK as an npm package: `npm pack` in sdk/js, installed offline into a
scratch project, imported by Node and type-checked by the repository's pinned tsc.

The package must stand alone: one ES module that imports nothing (so installing it
needs no registry), its declarations, and the version of the Python package whose
coordinator serves the same module.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest

import webrtc_broker

ROOT = Path(__file__).resolve().parents[2]
SDK = ROOT / "sdk" / "js"
STATIC = ROOT / "webrtc_broker" / "static" / "sdk"
TSC = SDK / "node_modules" / ".bin" / "tsc"
NAME = "webrtc-broker-sdk"
PACKED_FILES = {
    "package/package.json",
    "package/README.md",
    "package/dist/webrtc-broker.js",
    "package/dist/webrtc-broker.d.ts",
}
PUBLIC_API = {
    "AuthenticationError",
    "BrokerClient",
    "BrokerError",
    "CLIENT_CAPABILITIES",
    "Capability",
    "ClosedError",
    "ConnectTimeoutError",
    "CoordinatorUnavailableError",
    "DisconnectedError",
    "MAX_FRAME_BYTES",
    "MessageTooLargeError",
    "NoServerAvailableError",
    "PingTimeoutError",
    "ReceivedMessage",
    "Role",
    "ServerFullError",
    "coordinatorOrder",
}
# Anything a module loads at run time: `import ... from`, `export ... from`, a bare
# `import "x"`, a dynamic `import(...)` or a `require(...)`.
RUNTIME_IMPORT = re.compile(
    r"""^\s*(import|export)\b[^;]*?\bfrom\s*["']|^\s*import\s*["']|\bimport\s*\(|\brequire\s*\(""",
    re.MULTILINE,
)

# The same program in both resolution modes a TypeScript user picks from. The
# @ts-expect-error lines fail the check if the declarations were missing or `any`.
USAGE_TS = """\
import {
  BrokerClient,
  type ConnectOptions,
  coordinatorOrder,
  type ReceivedMessage,
  ServerFullError,
  type SignallingDrops,
} from "webrtc-broker-sdk";

const options: ConnectOptions = { timeout: 5000, keepalive: { interval: 500 }, reconnect: false };

export async function run(): Promise<number> {
  const client: BrokerClient = await BrokerClient.connect(["ws://a", "ws://b"], "token", options);
  const stop: () => void = client.on("message", (message: ReceivedMessage) => {
    const text: string = message.text;
    const topic: string | undefined = message.topic;
    console.log(text, topic);
  });
  stop();
  client.publish("room", "hello", { reliable: false });
  await client.subscribe(["room"], { compress: true });
  const drops: Readonly<SignallingDrops> = client.signallingDropped;
  const order: string[] = coordinatorOrder(client.coordinatorUrls);
  console.log(drops, order);
  // @ts-expect-error topics are strings
  client.publish(1, "x");
  // @ts-expect-error ping() resolves with milliseconds
  const wrong: string = await client.ping();
  console.log(wrong);
  return new ServerFullError("full").message.length;
}
"""

IMPORT_JS = """\
import * as sdk from "webrtc-broker-sdk";
const message = new sdk.ReceivedMessage(3, new TextEncoder().encode("hé"), true, "room");
const both = sdk.Capability.CAPABILITY_BATCH | sdk.Capability.CAPABILITY_TOPIC_NAMES;
console.log(JSON.stringify({
  exports: Object.keys(sdk).sort(),
  order: sdk.coordinatorOrder(["ws://a", "ws://b", "ws://c"], "ws://a"),
  text: message.text,
  full: new sdk.ServerFullError("x") instanceof sdk.BrokerError,
  capabilities: sdk.CLIENT_CAPABILITIES === both,
}));
"""


@dataclass(frozen=True)
class Packed:
    tarball: Path
    members: dict[str, bytes]

    def json(self, name: str) -> dict[str, object]:
        value = json.loads(self.members[name])
        assert isinstance(value, dict)
        return value


def execute(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=110, check=False
    )


def run(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    """Run a command; fail the test with its output if it fails."""
    done = execute(args, cwd, env)
    assert done.returncode == 0, (
        f"{' '.join(args)} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
    )
    return done.stdout


def typecheck(
    project: Path, env: dict[str, str], source: str, module: str, resolution: str
) -> subprocess.CompletedProcess[str]:
    """The repository's tsc, strict, on one TypeScript file of `project`."""
    name = f"check-{resolution}"
    (project / f"{name}.ts").write_text(source)
    config = {
        "compilerOptions": {
            "target": "ES2022",
            "module": module,
            "moduleResolution": resolution,
            "lib": ["ES2022", "DOM"],
            "strict": True,
            "noEmit": True,
            "types": [],
        },
        "files": [f"{name}.ts"],
    }
    (project / f"tsconfig.{name}.json").write_text(json.dumps(config))
    return execute([str(TSC), "-p", f"tsconfig.{name}.json"], project, env)


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path is not None, f"{name} is not on PATH (Node.js 20 or later is needed)"
    return path


@pytest.fixture(scope="module")
def npm_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """npm with a cache of its own and nothing to say beyond the task."""
    assert TSC.exists(), "sdk/js/node_modules is missing: `make sdk` installs it"
    return {
        **os.environ,
        "PYTHON": sys.executable,  # protoc for the build, from this virtualenv
        "npm_config_cache": str(tmp_path_factory.mktemp("npm-cache")),
        "npm_config_audit": "false",
        "npm_config_fund": "false",
        "npm_config_update_notifier": "false",
    }


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory, npm_env: dict[str, str]) -> Packed:
    """`npm pack` (its prepack step builds sdk/js/dist) into a temporary folder."""
    out = tmp_path_factory.mktemp("pack")
    run([tool("npm"), "pack", "--pack-destination", str(out)], SDK, npm_env)
    [tarball] = out.glob("*.tgz")
    with tarfile.open(tarball) as archive:
        members = {
            member.name: extracted.read()
            for member in archive.getmembers()
            if (extracted := archive.extractfile(member)) is not None
        }
    return Packed(tarball, members)


@pytest.fixture(scope="module")
def scratch(
    tmp_path_factory: pytest.TempPathFactory, packed: Packed, npm_env: dict[str, str]
) -> Path:
    """A new project with the tarball installed, offline: the package needs no registry."""
    project = tmp_path_factory.mktemp("scratch")
    manifest = {"name": "scratch", "version": "0.0.0", "private": True, "type": "module"}
    (project / "package.json").write_text(json.dumps(manifest))
    run([tool("npm"), "install", "--offline", str(packed.tarball)], project, npm_env)
    return project


def test_the_tarball_holds_the_module_its_declarations_and_nothing_else(packed: Packed) -> None:
    assert set(packed.members) == PACKED_FILES
    assert packed.tarball.name == f"{NAME}-{webrtc_broker.__version__}.tgz"


def test_the_manifest_is_publishable_with_the_python_packages_version(packed: Packed) -> None:
    manifest = packed.json("package/package.json")
    assert manifest["name"] == NAME
    assert manifest["version"] == webrtc_broker.__version__
    assert "private" not in manifest
    assert manifest["type"] == "module"
    assert manifest["sideEffects"] is False
    assert manifest["exports"] == {
        ".": {"types": "./dist/webrtc-broker.d.ts", "import": "./dist/webrtc-broker.js"}
    }
    for field in ("dependencies", "peerDependencies", "optionalDependencies"):
        assert field not in manifest, f"the package must not depend on anything: {field}"


def test_the_packed_module_is_the_one_the_coordinator_serves(packed: Packed) -> None:
    for name in ("webrtc-broker.js", "webrtc-broker.d.ts"):
        assert packed.members[f"package/dist/{name}"] == (STATIC / name).read_bytes(), name


def test_the_module_imports_nothing_at_run_time(packed: Packed) -> None:
    module = packed.members["package/dist/webrtc-broker.js"].decode()
    assert RUNTIME_IMPORT.findall(module) == []
    # The check finds what it looks for (protobuf-es is bundled, not imported).
    assert RUNTIME_IMPORT.search('import { create } from "@bufbuild/protobuf";')
    assert RUNTIME_IMPORT.search('const m = await import("x");')
    assert "BinaryWriter" in module


def test_node_imports_the_installed_package_by_name(scratch: Path, npm_env: dict[str, str]) -> None:
    installed = scratch / "node_modules" / NAME / "package.json"
    assert json.loads(installed.read_text())["version"] == webrtc_broker.__version__
    output = run([tool("node"), "--input-type=module", "-e", IMPORT_JS], scratch, npm_env)
    assert json.loads(output) == {
        "exports": sorted(PUBLIC_API),
        "order": ["ws://b", "ws://c", "ws://a"],
        "text": "hé",
        "full": True,
        "capabilities": True,
    }


@pytest.mark.parametrize(
    ("module", "resolution"), [("nodenext", "nodenext"), ("esnext", "bundler")]
)
def test_typescript_checks_a_program_against_the_declarations(
    scratch: Path, npm_env: dict[str, str], module: str, resolution: str
) -> None:
    done = typecheck(scratch, npm_env, USAGE_TS, module, resolution)
    assert done.returncode == 0, done.stdout + done.stderr


def test_typescript_rejects_a_misuse_of_the_declarations(
    scratch: Path, npm_env: dict[str, str]
) -> None:
    """The check above can fail: a wrong call is an error."""
    misuse = (
        'import { BrokerClient } from "webrtc-broker-sdk";\n'
        'export const client: Promise<string> = BrokerClient.connect("ws://a");\n'
    )
    done = typecheck(scratch, npm_env, misuse, "nodenext", "nodenext")
    assert done.returncode != 0
    assert "check-nodenext.ts(2," in done.stdout and "BrokerClient" in done.stdout, done.stdout
