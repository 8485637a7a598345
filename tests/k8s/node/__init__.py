"""A real node for the local control plane: kubelet, containerd and runc, CNI, kube-proxy, DNS.

``make k8s-up`` grows it after the control plane (``python -m tests.k8s.node
up`` on its own); ``make k8s-down`` removes it with every trace. Its state is
in ``.cache/k8s/node/``:

- **containerd** (Debian's 1.6, CRI v1) with its own config, root, state,
  socket and runc root in ``containerd/``, the cgroupfs driver (as the
  kubelet) and a sandbox image built here; network namespaces are mounted in
  its state folder too;
- **images**: ``webrtc-broker.test/pause:<hash>`` (the sandbox) and
  ``webrtc-broker.test/probe:<hash>`` (the tests' image: :data:`PROBE_IMAGE`
  after :meth:`Node.up`), each one static program (``cmd/``) in an OCI
  archive written by :mod:`tests.k8s.node.images` and imported with ``ctr``;
  nothing is pulled from a registry, so pods use ``imagePullPolicy: Never``
  or ``IfNotPresent``;
- **CNI** (Debian's containernetworking-plugins: bridge, host-local,
  portmap, loopback): pods get addresses in :data:`POD_CIDR` on the bridge
  ``wbk8sn-<hash>`` (its gateway 198.18.128.1), without masquerade (nothing
  leaves the machine); the Service range is routed to the bridge too, so
  the host reaches ClusterIPs;
- **kubelet** (the control-plane executable's ``kubelet``) registers the
  Node :data:`NODE_NAME` with the API server's address on the ``wbk8s-*``
  interface as its InternalIP, and the taint :data:`TAINT`: pods of the
  other tests sharing the control plane stay Pending as before, and a pod
  meant for this node carries :data:`TOLERATION`;
- **kube-proxy** in iptables mode, NodePorts on the node's address only;
- **CoreDNS** (``tests/k8s/coredns/``) as a host process on the node's
  address, port 53, behind the Service ``kube-system/kube-dns`` at
  :data:`DNS_IP` (the kubelet's clusterDNS): ``cluster.local`` from the API
  server, NXDOMAIN for every other name (no upstream).

One node per machine: kube-proxy's chains, the kubelet's ``kubepods``
cgroups and NodePorts are the machine's, not a checkout's. A second
checkout's ``make k8s-up`` starts its control plane without a node and says
whose node runs.

The kubelet changes three kernel settings as it starts (vm.overcommit_memory,
kernel.panic, kernel.panic_on_oops); the node puts back the values it found.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.k8s import build
from tests.k8s.cluster import SERVICE_CIDR, ControlPlane, spawn_detached
from tests.k8s.node import images, teardown

NODE_NAME = "wbk8s-node"
POD_CIDR = "198.18.128.0/20"
DNS_IP = "198.18.0.10"
CLUSTER_DOMAIN = "cluster.local"
TAINT = {"key": "webrtc-broker.test/node", "value": "real", "effect": "NoSchedule"}
TOLERATION = {**TAINT, "operator": "Equal"}
BRIDGE_PREFIX = "wbk8sn-"
CNI_BIN = Path("/usr/lib/cni")
CNI_PLUGINS = ("bridge", "host-local", "portmap", "loopback")
KERNEL_SETTINGS = (
    "vm/overcommit_memory",
    "kernel/panic",
    "kernel/panic_on_oops",
    "net/bridge/bridge-nf-call-iptables",
)
START_TIMEOUT = 180.0
DNS_MANAGER = "webrtc-broker.test-node"
ISOLATION_CHAIN = "CNI-WBK8S-ISOLATION"  # removed with the CNI plugins' chains


class NodeUnavailable(RuntimeError):
    """This machine cannot run the node (a missing tool, no root, another node runs)."""


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _gateway() -> str:
    return str(next(ipaddress.ip_network(POD_CIDR).hosts()))


def _sysctl(name: str) -> Path:
    return Path("/proc/sys") / name


@dataclass
class Node:
    """The node of ``plane``, with its files in ``plane.state_dir / "node"``."""

    plane: ControlPlane

    name: str = NODE_NAME

    @property
    def folder(self) -> Path:
        return self.plane.state_dir / "node"

    @property
    def socket(self) -> Path:
        return self.folder / "containerd" / "containerd.sock"

    @property
    def bridge(self) -> str:
        digest = hashlib.sha256(str(self.plane.state_dir.resolve()).encode()).hexdigest()
        return BRIDGE_PREFIX + digest[:8]

    def log(self, component: str) -> Path:
        return self.folder / "logs" / f"{component}.log"

    def logs(self, tail: int = 4000) -> str:
        parts = []
        for path in sorted((self.folder / "logs").glob("*.log")):
            parts.append(f"--- {path.name} ---\n{path.read_text(errors='replace')[-tail:]}")
        return "\n".join(parts)

    # --- state -------------------------------------------------------------

    @property
    def state_file(self) -> Path:
        return self.folder / "state.json"

    def state(self) -> dict[str, Any] | None:
        try:
            state: dict[str, Any] = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return None
        return state

    def _save(self, state: dict[str, Any]) -> None:
        self.state_file.write_text(json.dumps(state, indent=2))

    @property
    def address(self) -> str:
        """The node's InternalIP: the API server's address on its ``wbk8s-*`` interface."""
        return self.plane.host_address().address

    @property
    def probe_image(self) -> str:
        state = self.state()
        if state is None:
            raise RuntimeError("the node does not run")
        return str(state["images"]["probe"])

    def running(self) -> bool:
        """Whether every process of the node is alive and the Node is Ready."""
        state = self.state()
        if state is None or not state.get("complete"):
            return False
        programs = build.build_image_programs()
        if state["images"] != {n: images.image_ref(n, p) for n, p in programs.items()}:
            return False  # the images' programs changed since: start anew
        for pid in state["pids"].values():
            if not teardown._alive(int(pid)):
                return False
        return self.ready()

    def ready(self) -> bool:
        with contextlib.suppress(httpx.HTTPError, RuntimeError), self.plane.client() as http:
            answer = http.get(f"/api/v1/nodes/{NODE_NAME}")
            if answer.status_code != 200:
                return False
            conditions = answer.json().get("status", {}).get("conditions", [])
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
        return False

    # --- checks ------------------------------------------------------------

    def _other_node(self) -> str | None:
        """The bridge of another checkout's node on this machine, if one runs."""
        for name in teardown.interfaces():
            if name.startswith(BRIDGE_PREFIX) and name != self.bridge:
                return name
        return None

    def _check(self) -> None:
        if os.geteuid() != 0:
            raise NodeUnavailable("the node needs root (mounts, interfaces, iptables, cgroups)")
        missing = [
            tool
            for tool in ("containerd", "containerd-shim-runc-v2", "runc", "ctr", "iptables")
            if shutil.which(tool) is None
        ]
        missing += [str(CNI_BIN / p) for p in CNI_PLUGINS if not (CNI_BIN / p).is_file()]
        if missing:
            raise NodeUnavailable(
                f"missing {', '.join(missing)} (Debian: apt-get install containerd runc "
                "containernetworking-plugins iptables conntrack)"
            )
        if self.plane.host_address().interface is None:
            raise NodeUnavailable("the API server listens on loopback, which pods cannot reach")
        other = self._other_node()
        if other is not None:
            raise NodeUnavailable(
                f"another checkout's node runs on this machine (bridge {other}); one node "
                "per machine: kube-proxy's chains and the kubelet's cgroups are machine-wide"
            )

    # --- start -------------------------------------------------------------

    def _spawn(self, name: str, command: list[str]) -> int:
        return spawn_detached(command, self.log(name), self.folder)

    def _wait(self, what: str, check: Any, deadline: float, pid: int | None = None) -> None:
        last: object = None
        while time.monotonic() < deadline:
            if pid is not None and not teardown._alive(pid):
                raise RuntimeError(f"{what} exited:\n{self.logs()}")
            try:
                if check():
                    return
            except (OSError, httpx.HTTPError, subprocess.SubprocessError) as exc:
                last = exc
            time.sleep(0.25)
        raise RuntimeError(f"{what} not ready within {START_TIMEOUT:.0f} s ({last!r})")

    def _kernel_settings(self) -> dict[str, str]:
        return {
            name: _sysctl(name).read_text().strip()
            for name in KERNEL_SETTINGS
            if _sysctl(name).exists()
        }

    def _network(self) -> None:
        """The bridge with the pods' gateway, and the Service range routed to it."""
        _sysctl("net/bridge/bridge-nf-call-iptables").write_text("1")
        subprocess.run(["ip", "link", "add", self.bridge, "type", "bridge"], check=True)
        subprocess.run(
            ["ip", "addr", "add", f"{_gateway()}/{POD_CIDR.split('/')[1]}", "dev", self.bridge],
            check=True,
        )
        subprocess.run(["ip", "link", "set", self.bridge, "up"], check=True)
        subprocess.run(
            ["ip", "route", "add", SERVICE_CIDR, "dev", self.bridge, "src", self.address],
            check=True,
        )
        # A pod reaching itself through its Service is masqueraded (kube-proxy), so its
        # answers come back to the bridge's address and are forwarded to it: forwarding
        # on the bridge only (the machine's setting stays off), and only onto the bridge,
        # so that nothing of a pod's is forwarded off the machine.
        _sysctl(f"net/ipv4/conf/{self.bridge}/forwarding").write_text("1")
        for rule in (
            ["-N", ISOLATION_CHAIN],
            ["-A", ISOLATION_CHAIN, "-o", self.bridge, "-j", "RETURN"],
            ["-A", ISOLATION_CHAIN, "-j", "DROP"],
            ["-I", "FORWARD", "-i", self.bridge, "-j", ISOLATION_CHAIN],
        ):
            subprocess.run(["iptables", "-w", "5", *rule], check=True, capture_output=True)
        cni = self.folder / "cni"
        (cni / "net.d").mkdir(parents=True, exist_ok=True)
        conflist = {
            "cniVersion": "0.4.0",
            "name": "wbk8s",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.bridge,
                    "isGateway": True,
                    "ipMasq": False,  # nothing leaves the machine
                    "hairpinMode": True,  # a pod reaches itself through its Service
                    "ipam": {
                        "type": "host-local",
                        "dataDir": str(cni / "ipam"),
                        "ranges": [[{"subnet": POD_CIDR, "gateway": _gateway()}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }
        (cni / "net.d" / "10-wbk8s.conflist").write_text(json.dumps(conflist, indent=2))

    def _containerd_config(self, pause: str) -> Path:
        base = self.folder / "containerd"
        runtime = 'plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc'
        config = f"""\
version = 2
root = "{base / "root"}"
state = "{base / "state"}"
disabled_plugins = [
  "io.containerd.internal.v1.opt",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
]

[grpc]
  address = "{self.socket}"

[ttrpc]
  address = "{self.socket}.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  disable_apparmor = true
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_unprivileged_ports = false

[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{runtime}]
  runtime_type = "io.containerd.runc.v2"

[{runtime}.options]
  SystemdCgroup = false
  BinaryName = "{shutil.which("runc")}"
  Root = "{base / "runc"}"

[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "{CNI_BIN}"
  conf_dir = "{self.folder / "cni" / "net.d"}"
  max_conf_num = 1
"""
        path = base / "config.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(config)
        return path

    def ctr(self, *args: str, timeout: float = 120) -> str:
        """``ctr`` of this node's containerd, in the CRI's namespace ``k8s.io``."""
        answer = subprocess.run(
            ["ctr", "--address", str(self.socket), "--namespace", "k8s.io", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if answer.returncode != 0:
            raise subprocess.SubprocessError(f"ctr {' '.join(args)}: {answer.stderr.strip()}")
        return answer.stdout

    def _import_images(self, programs: dict[str, Path]) -> dict[str, str]:
        refs = {}
        for name, program in programs.items():
            ref = images.image_ref(name, program)
            archive = images.oci_archive(program, ref, self.folder / "images" / f"{name}.tar")
            self.ctr("images", "import", str(archive))
            refs[name] = ref
        return refs

    def _kubelet_config(self, port: int, healthz: int) -> Path:
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": self.address,
            "port": port,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": healthz,
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(self.plane.pki / "ca.crt")},
            },
            "authorization": {"mode": "Webhook"},
            "cgroupDriver": "cgroupfs",
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "clusterDNS": [DNS_IP],
            "clusterDomain": CLUSTER_DOMAIN,
            "resolvConf": "",  # no upstream: pods learn nothing of the host's resolver
            "failSwapOn": False,
            "registerWithTaints": [TAINT],
            "serializeImagePulls": False,
            # A shared test machine: never collect images or evict pods for its disk.
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "evictionHard": {
                "memory.available": "1Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
                "nodefs.inodesFree": "1%",
            },
            "makeIPTablesUtilChains": False,
            "rotateCertificates": False,
            "shutdownGracePeriod": "0s",
            "syncFrequency": "10s",
            "fileCheckFrequency": "10s",
            "nodeStatusUpdateFrequency": "5s",
        }
        path = self.folder / "kubelet" / "config.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config))
        return path

    def _proxy_config(self, healthz: int, metrics: int) -> Path:
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {
                "kubeconfig": str(
                    self.plane.client_kubeconfig(
                        self.folder / "kube-proxy.kubeconfig", "system:kube-proxy"
                    )
                )
            },
            "hostnameOverride": NODE_NAME,
            "bindAddress": self.address,
            "healthzBindAddress": f"127.0.0.1:{healthz}",
            "metricsBindAddress": f"127.0.0.1:{metrics}",
            "mode": "iptables",
            "clusterCIDR": POD_CIDR,
            "detectLocalMode": "ClusterCIDR",
            # NodePorts on the node's address only, never on the machine's own network.
            "nodePortAddresses": [f"{self.address}/32"],
            "iptables": {"localhostNodePorts": False, "masqueradeAll": False},
            # Leave the machine's conntrack settings as they are.
            "conntrack": {
                "maxPerCore": 0,
                "min": 0,
                "tcpEstablishedTimeout": "0s",
                "tcpCloseWaitTimeout": "0s",
            },
        }
        path = self.folder / "kube-proxy.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    def _dns_objects(self) -> None:
        """RBAC for CoreDNS, and the Service ``kube-dns`` whose endpoint is CoreDNS here."""
        ports = [
            {"name": "dns", "port": 53, "protocol": "UDP"},
            {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
        ]
        labels = {"app.kubernetes.io/managed-by": DNS_MANAGER}
        objects: list[tuple[str, dict[str, Any]]] = [
            (
                "/apis/rbac.authorization.k8s.io/v1/clusterroles",
                {
                    "metadata": {"name": "system:coredns", "labels": labels},
                    "rules": [
                        {
                            "apiGroups": [""],
                            "resources": ["endpoints", "services", "pods", "namespaces"],
                            "verbs": ["list", "watch"],
                        },
                        {
                            "apiGroups": ["discovery.k8s.io"],
                            "resources": ["endpointslices"],
                            "verbs": ["list", "watch"],
                        },
                    ],
                },
            ),
            (
                "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
                {
                    "metadata": {"name": "system:coredns", "labels": labels},
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "ClusterRole",
                        "name": "system:coredns",
                    },
                    "subjects": [
                        {
                            "apiGroup": "rbac.authorization.k8s.io",
                            "kind": "User",
                            "name": "system:coredns",
                        }
                    ],
                },
            ),
            (
                "/api/v1/namespaces/kube-system/services",
                {
                    "metadata": {"name": "kube-dns", "labels": labels},
                    "spec": {
                        "clusterIP": DNS_IP,
                        "ports": [{**p, "targetPort": 53} for p in ports],
                    },
                },
            ),
            (
                "/apis/discovery.k8s.io/v1/namespaces/kube-system/endpointslices",
                {
                    "metadata": {
                        "name": "kube-dns-node",
                        "labels": {
                            **labels,
                            "kubernetes.io/service-name": "kube-dns",
                            "endpointslice.kubernetes.io/managed-by": DNS_MANAGER,
                        },
                    },
                    "addressType": "IPv4",
                    "endpoints": [
                        {
                            "addresses": [self.address],
                            "conditions": {"ready": True},
                            "nodeName": NODE_NAME,
                        }
                    ],
                    "ports": ports,
                },
            ),
        ]
        with self.plane.client() as http:
            for path, body in objects:
                name = body["metadata"]["name"]
                http.delete(f"{path}/{name}")  # a leftover may name another address
                answer = http.post(path, json=body)
                if answer.status_code == 409:  # still being deleted
                    time.sleep(1)
                    answer = http.post(path, json=body)
                answer.raise_for_status()

    def _corefile(self, ready_port: int) -> Path:
        kubeconfig = self.plane.client_kubeconfig(
            self.folder / "coredns.kubeconfig", "system:coredns"
        )
        corefile = f"""\
{CLUSTER_DOMAIN}:53 {{
    bind {self.address}
    errors
    log
    ready 127.0.0.1:{ready_port}
    kubernetes {CLUSTER_DOMAIN} {{
        kubeconfig {kubeconfig} system:coredns
        pods insecure
        ttl 5
    }}
}}
.:53 {{
    bind {self.address}
    errors
    log
    template ANY ANY {{
        rcode NXDOMAIN
    }}
}}
"""
        path = self.folder / "Corefile"
        path.write_text(corefile)
        return path

    def up(self) -> float:
        """Start the node (building what it needs first); seconds taken. A node that runs
        is kept as it is."""
        if self.running():
            return 0.0
        self._check()
        binary = build.build()
        coredns = build.build_coredns()
        programs = build.build_image_programs()
        self.down()
        started = time.monotonic()
        deadline = started + START_TIMEOUT
        self.folder.mkdir(parents=True, exist_ok=True)
        state: dict[str, Any] = {
            "kernel": self._kernel_settings(),
            "nft_tables": teardown.nft_tables(),
            "run_containerd": teardown.RUN_CONTAINERD.exists(),
            "bridge": self.bridge,
            "pids": {},
            "complete": False,
        }
        self._save(state)
        pids: dict[str, int] = state["pids"]
        try:
            self._network()
            pause = images.image_ref("pause", programs["pause"])
            config = self._containerd_config(pause)
            pids["containerd"] = self._spawn("containerd", ["containerd", "--config", str(config)])
            self._save(state)
            self._wait(
                "containerd", lambda: self.ctr("version", timeout=5), deadline, pids["containerd"]
            )
            state["images"] = self._import_images(programs)
            self._save(state)

            self._dns_objects()
            ready_port = _free_port()
            pids["coredns"] = self._spawn(
                "coredns", [str(coredns), "-conf", str(self._corefile(ready_port))]
            )
            self._save(state)

            proxy = self._proxy_config(_free_port(), _free_port())
            pids["kube-proxy"] = self._spawn(
                "kube-proxy", [str(binary), "kube-proxy", f"--config={proxy}"]
            )
            self._save(state)

            kubelet_config = self._kubelet_config(_free_port(self.address), _free_port())
            kubeconfig = self.plane.client_kubeconfig(
                self.folder / "kubelet.kubeconfig", f"system:node:{NODE_NAME}", "system:nodes"
            )
            pids["kubelet"] = self._spawn(
                "kubelet",
                [
                    str(binary),
                    "kubelet",
                    f"--config={kubelet_config}",
                    f"--kubeconfig={kubeconfig}",
                    f"--hostname-override={NODE_NAME}",
                    f"--node-ip={self.address}",
                    f"--root-dir={self.folder / 'kubelet' / 'root'}",
                    f"--cert-dir={self.folder / 'kubelet' / 'pki'}",
                    "--v=1",
                ],
            )
            self._save(state)
            ready_url = f"http://127.0.0.1:{ready_port}/ready"
            self._wait(
                "coredns",
                lambda: httpx.get(ready_url, timeout=2).status_code == 200,
                deadline,
                pids["coredns"],
            )
            self._wait("the Node", self.ready, deadline, pids["kubelet"])
            state["complete"] = True
            self._save(state)
        except BaseException:
            print(self.logs(), file=sys.stderr)
            self.down()
            raise
        return time.monotonic() - started

    # --- stop --------------------------------------------------------------

    def down(self) -> None:
        """Stop the node and remove every trace of it: processes, containers and their
        shims, mounts, interfaces, iptables rules, pod cgroups, the Node and kube-dns
        objects (while the API server runs), kernel settings, its folder."""
        if not self.folder.exists() and self.bridge not in teardown.interfaces():
            return  # no node of this control plane: nothing of the machine's is touched
        state = self.state() or {}
        pids = {k: int(v) for k, v in state.get("pids", {}).items()}
        # The kubelet first, so that it restarts nothing while the rest goes.
        teardown.stop([pids[k] for k in ("kubelet",) if k in pids])
        if "containerd" in pids and teardown._alive(pids["containerd"]):
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                for task in self.ctr("tasks", "list", "-q", timeout=20).split():
                    with contextlib.suppress(subprocess.SubprocessError):
                        self.ctr("tasks", "kill", "-s", "SIGKILL", task, timeout=20)
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    with contextlib.suppress(subprocess.SubprocessError):
                        for task in self.ctr("tasks", "list", "-q", timeout=20).split():
                            self.ctr("tasks", "delete", "-f", task, timeout=20)
                    if not self.ctr("tasks", "list", "-q", timeout=20).split():
                        break
                    time.sleep(0.2)
                for container in self.ctr("containers", "list", "-q", timeout=20).split():
                    with contextlib.suppress(subprocess.SubprocessError):
                        self.ctr("containers", "delete", container, timeout=20)
        teardown.stop(pids.values())
        # What is left: containers of a killed containerd, their shims.
        runc_root = self.folder / "containerd" / "runc"
        if runc_root.is_dir():
            for namespace in runc_root.iterdir():
                listing = subprocess.run(
                    ["runc", "--root", str(namespace), "list", "-q"],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                for container in listing.stdout.split():
                    subprocess.run(
                        ["runc", "--root", str(namespace), "delete", "--force", container],
                        capture_output=True,
                        check=False,
                    )
        teardown.stop(teardown.processes_naming([str(self.socket), str(self.folder)]), grace=5)
        teardown.unmount_all(self.folder)
        teardown.remove_bridge(self.bridge)
        if self._other_node() is None:
            binary = build.built()
            if binary is not None:
                subprocess.run(
                    [str(binary), "kube-proxy", "--cleanup"], capture_output=True, check=False
                )
            teardown.remove_rules()
            if "nft_tables" in state:
                teardown.remove_empty_nft_tables(state["nft_tables"])
            teardown.remove_cgroups()
        if "run_containerd" in state:
            teardown.remove_run_containerd(state["run_containerd"])
        for name, value in state.get("kernel", {}).items():
            with contextlib.suppress(OSError):
                _sysctl(name).write_text(value)
        if self.plane.state_file.exists():
            self._delete_objects()
        shutil.rmtree(self.folder, ignore_errors=True)

    def _delete_objects(self) -> None:
        paths = [
            f"/api/v1/nodes/{NODE_NAME}",
            "/api/v1/namespaces/kube-system/services/kube-dns",
            "/apis/discovery.k8s.io/v1/namespaces/kube-system/endpointslices/kube-dns-node",
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/system:coredns",
            "/apis/rbac.authorization.k8s.io/v1/clusterroles/system:coredns",
        ]
        with contextlib.suppress(httpx.HTTPError, OSError), self.plane.client(timeout=5) as http:
            for path in paths:
                http.delete(path)

    def traces(self) -> dict[str, list[str]]:
        """What of a node is on this machine: processes, mounts, interfaces, iptables rules,
        pod cgroups, files (all empty once it is down)."""
        return {
            "processes": [
                str(pid) for pid in teardown.processes_naming([str(self.socket), str(self.folder)])
            ],
            "mounts": teardown.mounts_under(self.folder),
            "interfaces": [
                name
                for name, master in teardown.interfaces().items()
                if self.bridge in (name, master)
            ],
            "iptables": teardown.iptables_rules(),
            "cgroups": [str(path) for path in teardown.pod_cgroups()],
            "files": [str(self.folder)] if self.folder.exists() else [],
            "shim sockets": [str(path) for path in (teardown.RUN_CONTAINERD / "s").glob("*")],
        }
