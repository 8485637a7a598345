"""A local Kubernetes control plane on 127.0.0.1, from the executable ``build.py`` makes.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler run as
background processes of one checkout, with their state, certificates, logs
and kubeconfig in ``.cache/k8s/`` (git-ignored):

- a CA, the API server's serving certificate, client certificates for the
  admin (group ``system:masters``), the controller manager and the scheduler;
- a service-account signing key, so the TokenRequest API issues tokens
  (:meth:`ControlPlane.service_account_token`);
- authorization ``Node,RBAC``: a ServiceAccount may do only what its roles
  grant;
- etcd on plain HTTP, reachable on loopback only; ports are free ones picked
  at start and recorded in ``state.json``, so clones of the repository on the
  same machine can each run one;
- the API server listens on an address of its own on a dummy interface of
  this machine (``hostnet``: 198.19.255.0/24, with a blackhole route for
  198.18.0.0/15), which it advertises as the ``kubernetes`` Service's
  endpoint; the other components stay on loopback;
- Services get addresses in 198.18.0.0/24 (inside 198.18.0.0/15, addresses
  for benchmarking that no real network uses); there is no node yet, so pods
  stay Pending.

Command line (``python -m tests.k8s.cluster``, behind ``make k8s-up`` and
``make k8s-down``)::

    up      build the executable unless cached, start, wait for /readyz
    down    stop every process and remove .cache/k8s/
    status  say whether it runs (exit 1 if not)
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.k8s import build, hostnet
from tests.support import ROOT

STATE_DIR = ROOT / ".cache" / "k8s"
SERVICE_CIDR = "198.18.0.0/24"
SERVICE_ISSUER = "https://kubernetes.default.svc.cluster.local"
START_TIMEOUT = 180.0


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _name(common: str, organization: str | None = None) -> x509.Name:
    parts = [x509.NameAttribute(NameOID.COMMON_NAME, common)]
    if organization is not None:
        parts.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(parts)


def _certificate(
    subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey, *, ca: bool
) -> x509.CertificateBuilder:
    """A 30-day certificate of ``key`` for ``subject``: a CA's (signs certificates) or a
    leaf's (signs handshakes only), unsigned yet."""
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )


@dataclass
class _Issuer:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    def sign(
        self,
        subject: x509.Name,
        key: ec.EllipticCurvePrivateKey,
        *,
        server_names: list[str] | None = None,
    ) -> x509.Certificate:
        builder = _certificate(subject, self.cert.subject, key, ca=False)
        if server_names is None:
            usage = [ExtendedKeyUsageOID.CLIENT_AUTH]
        else:
            usage = [ExtendedKeyUsageOID.SERVER_AUTH]
            names: list[x509.GeneralName] = []
            for entry in server_names:
                try:
                    names.append(x509.IPAddress(ipaddress.ip_address(entry)))
                except ValueError:
                    names.append(x509.DNSName(entry))
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        builder = builder.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
        return builder.sign(self.key, hashes.SHA256())


def _new_ca() -> _Issuer:
    key = _key()
    subject = _name("webrtc-broker-test-ca")
    cert = _certificate(subject, subject, key, ca=True).sign(key, hashes.SHA256())
    return _Issuer(key, cert)


def _service_ip(cidr: str) -> str:
    """The first address of the Service range: the ``kubernetes`` Service's."""
    return str(next(ipaddress.ip_network(cidr).hosts()))


def _free_ports(count: int) -> list[int]:
    """``count`` different free ports on 127.0.0.1 (held together while chosen)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


def spawn_detached(command: list[str], log: Path, cwd: Path) -> int:
    """Start a component in a session of its own, so it outlives ``make k8s-up`` (``down``
    stops it), its output appended to ``log``; its process id."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=cwd,
        )
    return process.pid


@dataclass
class Ports:
    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int

    @classmethod
    def pick(cls) -> Ports:
        return cls(*_free_ports(5))


@dataclass
class ControlPlane:
    """The control plane of one checkout, with its files under ``state_dir``."""

    state_dir: Path = STATE_DIR

    @property
    def pki(self) -> Path:
        return self.state_dir / "pki"

    @property
    def kubeconfig(self) -> Path:
        """The admin's kubeconfig (client certificate in group ``system:masters``)."""
        return self.state_dir / "kubeconfig"

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    @property
    def audit_log(self) -> Path:
        """Every request the API server answered, one JSON event a line (level Metadata:
        user, verb, resource, namespace, name, response code)."""
        return self.state_dir / "logs" / "audit.log"

    def audit_events(self) -> list[dict[str, Any]]:
        if not self.audit_log.exists():
            return []
        lines = self.audit_log.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def log(self, component: str) -> Path:
        return self.state_dir / "logs" / f"{component}.log"

    def logs(self, tail: int = 4000) -> str:
        """The end of every component's log, for a failure report."""
        parts = []
        for path in sorted((self.state_dir / "logs").glob("*.log")):
            if path == self.audit_log:
                continue
            parts.append(f"--- {path.name} ---\n{path.read_text(errors='replace')[-tail:]}")
        return "\n".join(parts)

    # --- state -------------------------------------------------------------

    def _state(self) -> dict[str, Any] | None:
        try:
            state: dict[str, Any] = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return None
        return state

    @property
    def server(self) -> str:
        state = self._state()
        if state is None:
            raise RuntimeError(f"no control plane runs from {self.state_dir}")
        return f"https://{self._host(state).address}:{state['ports']['apiserver']}"

    @staticmethod
    def _host(state: dict[str, Any]) -> hostnet.HostAddress:
        return hostnet.HostAddress(**state.get("host", {"address": hostnet.LOOPBACK}))

    def _pids(self) -> dict[str, int]:
        state = self._state()
        return {} if state is None else {k: int(v) for k, v in state["pids"].items()}

    def _alive(self, pid: int, binary: str) -> bool:
        """Whether ``pid`` is still a process of ``binary`` (not a reused pid)."""
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return bool(command) and command[0].decode(errors="replace") == binary

    @staticmethod
    def _exited(pid: int) -> bool:
        """Whether a child process of this one has exited (its command line reads empty
        for a moment while it starts, so :meth:`_alive` cannot tell yet)."""
        try:
            return os.waitpid(pid, os.WNOHANG)[0] == pid
        except ChildProcessError:
            return True

    def running(self) -> bool:
        """Whether every component of a started control plane is alive and /readyz answers."""
        state = self._state()
        if state is None:
            return False
        if not all(self._alive(pid, state["binary"]) for pid in self._pids().values()):
            return False
        with contextlib.suppress(httpx.HTTPError), self.client() as http:
            return http.get("/readyz").status_code == 200
        return False

    # --- clients -----------------------------------------------------------

    def client(self, token: str | None = None, timeout: float = 10.0) -> httpx.Client:
        """An HTTP client of the API server: the admin's, or one bearing ``token``."""
        context = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        headers = {}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        else:
            context.load_cert_chain(self.pki / "admin.crt", self.pki / "admin.key")
        return httpx.Client(base_url=self.server, verify=context, headers=headers, timeout=timeout)

    def service_account_token(
        self, namespace: str, name: str, *, seconds: int = 3600, create: bool = True
    ) -> str:
        """A token of ServiceAccount ``namespace/name`` from the TokenRequest API.

        With ``create``, the namespace and the ServiceAccount are created when missing.
        """
        with self.client() as http:
            if create:
                for path, body in (
                    ("/api/v1/namespaces", {"metadata": {"name": namespace}}),
                    (
                        f"/api/v1/namespaces/{namespace}/serviceaccounts",
                        {"metadata": {"name": name}},
                    ),
                ):
                    answer = http.post(path, json=body)
                    if answer.status_code not in (201, 409):
                        answer.raise_for_status()
            answer = http.post(
                f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
                json={
                    "apiVersion": "authentication.k8s.io/v1",
                    "kind": "TokenRequest",
                    "spec": {"expirationSeconds": seconds},
                },
            )
            answer.raise_for_status()
            return str(answer.json()["status"]["token"])

    def write_token_kubeconfig(self, path: Path, token: str, user: str = "token") -> Path:
        """A kubeconfig for this API server authenticating with a bearer token."""
        path.write_text(yaml.safe_dump(self._kubeconfig(user, {"token": token})))
        return path

    def write_token_file_kubeconfig(self, path: Path, token_file: Path) -> Path:
        """A kubeconfig whose token is read from ``token_file`` (``tokenFile``), as a
        pod's is from its projected ServiceAccount token."""
        credentials = {"tokenFile": str(token_file)}
        path.write_text(yaml.safe_dump(self._kubeconfig("token-file", credentials)))
        return path

    # --- start and stop ----------------------------------------------------

    def _kubeconfig(self, user: str, credentials: dict[str, str]) -> dict[str, Any]:
        ca = base64.b64encode((self.pki / "ca.crt").read_bytes()).decode()
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "local",
                    "cluster": {"server": self.server, "certificate-authority-data": ca},
                }
            ],
            "users": [{"name": user, "user": credentials}],
            "contexts": [{"name": user, "context": {"cluster": "local", "user": user}}],
            "current-context": user,
        }

    def _cert_kubeconfig(self, user: str) -> Path:
        path = self.state_dir / f"{user}.kubeconfig"
        credentials = {
            "client-certificate-data": base64.b64encode(
                (self.pki / f"{user}.crt").read_bytes()
            ).decode(),
            "client-key-data": base64.b64encode((self.pki / f"{user}.key").read_bytes()).decode(),
        }
        path.write_text(yaml.safe_dump(self._kubeconfig(user, credentials)))
        path.chmod(0o600)
        return path

    def client_kubeconfig(self, path: Path, common_name: str, group: str | None = None) -> Path:
        """A kubeconfig with a new client certificate of this control plane's CA for user
        ``common_name`` (in ``group``): how the node's agents authenticate."""
        ca = _Issuer(
            serialization.load_pem_private_key((self.pki / "ca.key").read_bytes(), None),  # type: ignore[arg-type]
            x509.load_pem_x509_certificate((self.pki / "ca.crt").read_bytes()),
        )
        key = _key()
        cert = ca.sign(_name(common_name, group), key)
        credentials = {
            "client-certificate-data": base64.b64encode(_pem_cert(cert)).decode(),
            "client-key-data": base64.b64encode(_pem_key(key)).decode(),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(self._kubeconfig(common_name, credentials)))
        path.chmod(0o600)
        return path

    def host_address(self) -> hostnet.HostAddress:
        """Where the API server listens (its interface is ``None`` on loopback)."""
        state = self._state()
        if state is None:
            raise RuntimeError(f"no control plane runs from {self.state_dir}")
        return self._host(state)

    def _write_pki(self, host: hostnet.HostAddress) -> None:
        self.pki.mkdir(parents=True, exist_ok=True)
        self.pki.chmod(0o700)
        ca = _new_ca()
        (self.pki / "ca.crt").write_bytes(_pem_cert(ca.cert))
        (self.pki / "ca.key").write_bytes(_pem_key(ca.key))
        server_names = [
            "127.0.0.1",
            host.address,
            _service_ip(SERVICE_CIDR),
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ]
        clients = {
            "admin": _name("admin", "system:masters"),
            "controller-manager": _name("system:kube-controller-manager"),
            "scheduler": _name("system:kube-scheduler"),
            # The API server's to kubelets (logs, exec, port-forward).
            "apiserver-kubelet-client": _name("kube-apiserver-kubelet-client", "system:masters"),
        }
        # The aggregation layer's own CA: the API server proxies to extension API
        # servers with a client certificate of it, and publishes it for them.
        proxy_ca = _new_ca()
        (self.pki / "front-proxy-ca.crt").write_bytes(_pem_cert(proxy_ca.cert))
        key = _key()
        (self.pki / "front-proxy-client.key").write_bytes(_pem_key(key))
        cert = proxy_ca.sign(_name("front-proxy-client"), key)
        (self.pki / "front-proxy-client.crt").write_bytes(_pem_cert(cert))
        key = _key()
        (self.pki / "apiserver.key").write_bytes(_pem_key(key))
        cert = ca.sign(_name("kube-apiserver"), key, server_names=server_names)
        (self.pki / "apiserver.crt").write_bytes(_pem_cert(cert))
        for user, subject in clients.items():
            key = _key()
            (self.pki / f"{user}.key").write_bytes(_pem_key(key))
            (self.pki / f"{user}.crt").write_bytes(_pem_cert(ca.sign(subject, key)))
        signing = _key()
        (self.pki / "sa.key").write_bytes(_pem_key(signing))
        (self.pki / "sa.pub").write_bytes(
            signing.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        for path in self.pki.iterdir():
            path.chmod(0o600)

    def _audit_policy(self) -> Path:
        path = self.state_dir / "audit-policy.yaml"
        policy = {
            "apiVersion": "audit.k8s.io/v1",
            "kind": "Policy",
            "omitStages": ["RequestReceived"],
            "rules": [{"level": "Metadata"}],
        }
        path.write_text(yaml.safe_dump(policy))
        return path

    def _commands(
        self, binary: Path, ports: Ports, host: hostnet.HostAddress
    ) -> dict[str, list[str]]:
        pki = self.pki
        etcd_url = f"http://127.0.0.1:{ports.etcd_client}"
        peer_url = f"http://127.0.0.1:{ports.etcd_peer}"
        return {
            "etcd": [
                str(binary),
                "etcd",
                "--name=default",
                f"--data-dir={self.state_dir / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=default={peer_url}",
                "--unsafe-no-fsync=true",  # test data: durability is not wanted, speed is
                "--log-level=warn",
            ],
            "kube-apiserver": [
                str(binary),
                "kube-apiserver",
                f"--etcd-servers={etcd_url}",
                f"--bind-address={host.address}",
                f"--advertise-address={host.address}",
                f"--secure-port={ports.apiserver}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                "--authorization-mode=Node,RBAC",
                "--anonymous-auth=false",
                f"--service-account-issuer={SERVICE_ISSUER}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                # On loopback, the `kubernetes` Service would list 127.0.0.1, which
                # Endpoints refuse: no endpoint reconciler then.
                *(["--endpoint-reconciler-type=none"] if host.interface is None else []),
                "--allow-privileged=true",
                "--profiling=false",
                f"--cert-dir={self.state_dir / 'apiserver-certs'}",
                f"--requestheader-client-ca-file={pki / 'front-proxy-ca.crt'}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={pki / 'front-proxy-client.crt'}",
                f"--proxy-client-key-file={pki / 'front-proxy-client.key'}",
                f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
                f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
                # The node's address, never its name (which no resolver here knows).
                "--kubelet-preferred-address-types=InternalIP",
                f"--audit-policy-file={self._audit_policy()}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-format=json",
                "--audit-log-mode=blocking",  # an event is written before its answer
            ],
            "kube-controller-manager": [
                str(binary),
                "kube-controller-manager",
                f"--kubeconfig={self._cert_kubeconfig('controller-manager')}",
                f"--authentication-kubeconfig={self.state_dir / 'controller-manager.kubeconfig'}",
                f"--authorization-kubeconfig={self.state_dir / 'controller-manager.kubeconfig'}",
                "--bind-address=127.0.0.1",
                f"--secure-port={ports.controller_manager}",
                f"--cert-dir={self.state_dir / 'controller-manager-certs'}",
                "--leader-elect=false",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                f"--cluster-signing-cert-file={pki / 'ca.crt'}",
                f"--cluster-signing-key-file={pki / 'ca.key'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--profiling=false",
            ],
            "kube-scheduler": [
                str(binary),
                "kube-scheduler",
                f"--kubeconfig={self._cert_kubeconfig('scheduler')}",
                f"--authentication-kubeconfig={self.state_dir / 'scheduler.kubeconfig'}",
                f"--authorization-kubeconfig={self.state_dir / 'scheduler.kubeconfig'}",
                "--bind-address=127.0.0.1",
                f"--secure-port={ports.scheduler}",
                f"--cert-dir={self.state_dir / 'scheduler-certs'}",
                "--leader-elect=false",
                "--profiling=false",
            ],
        }

    def _spawn(self, name: str, command: list[str]) -> int:
        return spawn_detached(command, self.log(name), self.state_dir)

    def _save(
        self, binary: Path, ports: Ports, host: hostnet.HostAddress, pids: dict[str, int]
    ) -> None:
        state = {
            "binary": str(binary),
            "ports": asdict(ports),
            "host": asdict(host),
            "pids": pids,
        }
        self.state_file.write_text(json.dumps(state, indent=2))

    def _wait(self, name: str, probe: str, deadline: float, pid: int) -> None:
        """Poll ``probe`` (a path on the API server, or a URL) until it answers 200."""
        last = ""
        while time.monotonic() < deadline:
            if self._exited(pid):
                raise RuntimeError(f"{name} exited:\n{self.log(name).read_text()[-4000:]}")
            try:
                if probe.startswith(("http://", "https://")):
                    answer = httpx.get(probe, verify=False, timeout=2)
                else:
                    with self.client(timeout=2) as http:
                        answer = http.get(probe)
                if answer.status_code == 200:
                    return
                last = f"{answer.status_code} {answer.text[-600:]}"
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.2)
        raise RuntimeError(f"{name} not ready within {START_TIMEOUT:.0f} s: {last}")

    def up(self) -> float:
        """Start the control plane (building its executable first if needed); seconds taken.

        A control plane already running from ``state_dir`` is kept as it is.
        """
        if self.running():
            return 0.0
        self.down()
        binary = build.build()
        started = time.monotonic()
        deadline = started + START_TIMEOUT
        self.state_dir.mkdir(parents=True, exist_ok=True)
        host = hostnet.claim(self.state_dir)
        self._write_pki(host)
        ports = Ports.pick()
        pids: dict[str, int] = {}
        self._save(binary, ports, host, pids)  # `server` and `down` need them from now on
        try:
            commands = self._commands(binary, ports, host)
            pids["etcd"] = self._spawn("etcd", commands["etcd"])
            self._save(binary, ports, host, pids)
            etcd_health = f"http://127.0.0.1:{ports.etcd_client}/health"
            self._wait("etcd", etcd_health, deadline, pids["etcd"])
            pids["kube-apiserver"] = self._spawn("kube-apiserver", commands["kube-apiserver"])
            self._save(binary, ports, host, pids)
            self._wait("kube-apiserver", "/readyz", deadline, pids["kube-apiserver"])
            admin = self._cert_kubeconfig("admin")
            shutil.copyfile(admin, self.kubeconfig)
            self.kubeconfig.chmod(0o600)
            for name in ("kube-controller-manager", "kube-scheduler"):
                pids[name] = self._spawn(name, commands[name])
                self._save(binary, ports, host, pids)
            probes = {
                "kube-controller-manager": ports.controller_manager,
                "kube-scheduler": ports.scheduler,
            }
            for name, port in probes.items():
                url = f"https://127.0.0.1:{port}/healthz"
                self._wait(name, url, deadline, pids[name])
            # The controllers are at work once the `default` ServiceAccount exists.
            default_account = "/api/v1/namespaces/default/serviceaccounts/default"
            self._wait(
                "kube-controller-manager",
                default_account,
                deadline,
                pids["kube-controller-manager"],
            )
        except BaseException:
            print(self.logs(), file=sys.stderr)
            self.down()
            raise
        return time.monotonic() - started

    def down(self) -> None:
        """Stop the node (if one runs) and every process this control plane started, and
        remove their state."""
        # The node's module imports this one: imported here, when both are loaded.
        from tests.k8s.node import Node  # noqa: PLC0415

        Node(self).down()
        state = self._state()
        if state is not None:
            binary = state["binary"]
            pids = [pid for pid in reversed(self._pids().values()) if self._alive(pid, binary)]
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                for pid in pids:
                    with contextlib.suppress(ChildProcessError):
                        os.waitpid(pid, os.WNOHANG)  # reap children of this process
                if not any(self._alive(pid, binary) for pid in pids):
                    break
                time.sleep(0.1)
            for pid in pids:
                if self._alive(pid, binary):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            hostnet.release(self._host(state))
        shutil.rmtree(self.state_dir, ignore_errors=True)


@contextlib.contextmanager
def running(state_dir: Path = STATE_DIR) -> Iterator[ControlPlane]:
    """A running control plane: one already up is reused and left running; else one is
    started here and stopped afterwards."""
    plane = ControlPlane(state_dir)
    if plane.running():
        yield plane
        return
    plane.up()
    try:
        yield plane
    finally:
        plane.down()


def _node_up(plane: ControlPlane) -> int:
    """Grow the node (``tests.k8s.node``) on a running control plane; 0 unless it fails."""
    from tests.k8s.node import Node, NodeUnavailable  # noqa: PLC0415 (it imports this module)

    node = Node(plane)
    try:
        was_running = node.running()
        seconds = node.up()
    except NodeUnavailable as exc:
        print(f"no node: {exc}; pods stay Pending", file=sys.stderr)
        return 0
    except (RuntimeError, OSError, subprocess.SubprocessError, httpx.HTTPError) as exc:
        print(f"the node did not start: {exc}", file=sys.stderr)
        return 1
    if was_running:
        print(f"node {node.name} already Ready at {node.address}")
    else:
        print(f"node Ready at {node.address} in {seconds:.1f} s")
    return 0


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "status"
    plane = ControlPlane()
    if command == "up":
        was_running = plane.running()
        try:
            seconds = plane.up()
        except build.GoUnavailable as exc:
            print(f"cannot start the control plane: {exc}", file=sys.stderr)
            return 3
        if was_running:
            print(f"already running at {plane.server}")
        else:
            print(f"control plane up at {plane.server} in {seconds:.1f} s")
        code = _node_up(plane)
        print(f"export KUBECONFIG={plane.kubeconfig}")
        return code
    if command == "down":
        plane.down()
        print("control plane stopped; .cache/k8s removed")
        return 0
    if command == "status":
        if plane.running():
            print(f"running at {plane.server}; KUBECONFIG={plane.kubeconfig}")
            return 0
        print("not running")
        return 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
