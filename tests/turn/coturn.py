"""A real coturn for tests: started from a config file in a temp dir, stopped on exit.

Usage::

    with run_coturn() as turn:                       # loopback, free ports
        turn.urls()      # ["turn:127.0.0.1:P", "turn:127.0.0.1:P?transport=tcp",
                         #  "turns:127.0.0.1:T?transport=tcp"]
        turn.secret      # coturn's static-auth-secret (TURN REST, use-auth-secret)
        turn.ca_file     # PEM of the CA that signed the TLS certificate
        turn.ssl_context()  # client context trusting only that CA

    with run_coturn(address=ns.address, prefix=ns.command()) as turn:  # in a namespace
        ...

``prefix`` is a command prefix the server runs under (``["ip", "netns", "exec",
NAME]``); readiness is checked with ``ss`` under the same prefix, so the address
need not be reachable from the host. One port (``port``) carries TURN over UDP
and TCP, another (``tls_port``) TURN over TLS (no DTLS: aioice does not speak
it). The certificate is made per run by a throwaway CA, for ``address`` (as an
IP SAN) and ``localhost``.

Relaying is allowed only towards ``allowed_peers`` (default: loopback and
198.18.0.0/15, the test networks): everything else is denied with
``denied-peer-ip``, so even the test server is no open relay. coturn refuses
loopback peers unless ``allow-loopback-peers`` is set (since 4.6), which this
runner sets when a loopback range is allowed. ``extra`` lines are appended to
the config verbatim (e.g. ``"max-allocate-lifetime=30"``).

The process is killed and awaited, and the temp dir removed, whatever happens
in the body. If ``turnserver`` is missing the test is skipped, with the reason
(``make deps-system`` installs it).
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

TURNSERVER = "/usr/bin/turnserver"
DEFAULT_ALLOWED_PEERS: tuple[str, ...] = ("127.0.0.0/8", "198.18.0.0/15")
DEFAULT_RELAY_PORTS = (49152, 65535)
STARTUP_TIMEOUT = 15.0


@dataclass(frozen=True)
class Coturn:
    """A running coturn: where it listens and what it trusts."""

    address: str
    port: int
    tls_port: int
    secret: str
    realm: str
    ca_file: Path
    log_file: Path
    pid: int

    def _host(self) -> str:
        return f"[{self.address}]" if ":" in self.address else self.address

    @property
    def udp_url(self) -> str:
        return f"turn:{self._host()}:{self.port}"

    @property
    def tcp_url(self) -> str:
        return f"turn:{self._host()}:{self.port}?transport=tcp"

    @property
    def tls_url(self) -> str:
        return f"turns:{self._host()}:{self.tls_port}?transport=tcp"

    def urls(self) -> list[str]:
        """TURN/UDP, TURN/TCP and TURNS/TLS URLs, in that order."""
        return [self.udp_url, self.tcp_url, self.tls_url]

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts this server's CA (and nothing else)."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def log(self) -> str:
        """The server's log so far (for failure messages)."""
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""


def skip_reason() -> str | None:
    """Why coturn cannot run here, or None."""
    if shutil.which(TURNSERVER) is None and shutil.which("turnserver") is None:
        return "coturn's turnserver is not installed (make deps-system installs it)"
    if shutil.which("ss") is None:
        return "the coturn runner needs `ss` (iproute2) to see it listening"
    return None


def _free_port(address: str) -> int:
    """A port free for both TCP and UDP on ``address`` (racy, but only in tests)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    for _ in range(50):
        with socket.socket(family, socket.SOCK_STREAM) as tcp:
            tcp.bind((address, 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(family, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((address, port))
                except OSError:
                    continue
                return port
    raise RuntimeError(f"no port free for both TCP and UDP on {address}")


def _write_certificate(directory: Path, address: str) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate it signs; returns (ca, cert, key)."""
    now = datetime.datetime.now(datetime.UTC)
    lifetime = datetime.timedelta(days=1)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "webrtc-broker test TURN CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    with contextlib.suppress(ValueError):
        names.append(x509.IPAddress(ipaddress.ip_address(address)))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, address)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + lifetime)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = directory / "ca.pem"
    cert_file = directory / "cert.pem"
    key_file = directory / "key.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    return ca_file, cert_file, key_file


def _range_line(option: str, network: str) -> str:
    """``option=FIRST-LAST`` for a CIDR (coturn takes ranges, not prefixes)."""
    net = ipaddress.ip_network(network, strict=False)
    return f"{option}={net.network_address}-{net.broadcast_address}"


def _config(
    *,
    directory: Path,
    address: str,
    port: int,
    tls_port: int,
    secret: str,
    realm: str,
    cert: Path,
    key: Path,
    relay_ports: tuple[int, int],
    allowed_peers: Sequence[str],
    extra: Sequence[str],
) -> str:
    lines = [
        f"listening-ip={address}",
        f"relay-ip={address}",
        f"listening-port={port}",
        f"tls-listening-port={tls_port}",
        f"min-port={relay_ports[0]}",
        f"max-port={relay_ports[1]}",
        "use-auth-secret",
        f"static-auth-secret={secret}",
        f"realm={realm}",
        "fingerprint",
        f"cert={cert}",
        f"pkey={key}",
        "no-dtls",
        "no-cli",
        "no-multicast-peers",
        "no-rfc5780",
        "no-stun-backward-compatibility",
        f"pidfile={directory / 'turnserver.pid'}",
        # A database of its own: the default one is shared by every coturn on the host.
        f"userdb={directory / 'turndb'}",
        "log-file=stdout",
        "simple-log",
        "verbose",
        # Deny every peer, then allow only the test networks (allowed wins).
        "denied-peer-ip=0.0.0.0-255.255.255.255",
        "denied-peer-ip=::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    ]
    allowed = [ipaddress.ip_network(peer, strict=False) for peer in allowed_peers]
    if any(net.is_loopback for net in allowed):
        lines.append("allow-loopback-peers")
    lines += [_range_line("allowed-peer-ip", str(net)) for net in allowed]
    lines += list(extra)
    return "\n".join(lines) + "\n"


def _listening(prefix: Sequence[str], address: str, ports: Sequence[tuple[str, int]]) -> bool:
    """Whether every (proto, port) in ``ports`` has a socket on ``address``."""
    result = subprocess.run(
        [*prefix, "ss", "-Hlnut"], capture_output=True, text=True, timeout=10, check=False
    )
    if result.returncode != 0:
        return False
    host = f"[{address}]" if ":" in address else address
    seen: set[tuple[str, str]] = set()
    for line in result.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 5:
            seen.add((fields[0], fields[4]))
    return all((proto, f"{host}:{port}") in seen for proto, port in ports)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


@contextlib.contextmanager
def run_coturn(
    *,
    address: str = "127.0.0.1",
    port: int | None = None,
    tls_port: int | None = None,
    prefix: Sequence[str] = (),
    secret: str | None = None,
    realm: str = "webrtc-broker.test",
    relay_ports: tuple[int, int] = DEFAULT_RELAY_PORTS,
    allowed_peers: Sequence[str] = DEFAULT_ALLOWED_PEERS,
    extra: Sequence[str] = (),
) -> Iterator[Coturn]:
    """Run coturn until the block exits (see the module docstring).

    Ports default to free ones when running on this host, and to 3478 / 5349
    under a ``prefix`` (a fresh namespace has them free).
    """
    reason = skip_reason()
    if reason is not None:
        pytest.skip(reason)
    if port is None:
        port = 3478 if prefix else _free_port(address)
    if tls_port is None:
        tls_port = 5349 if prefix else _free_port(address)
    secret = secret if secret is not None else secrets.token_urlsafe(24)
    binary = TURNSERVER if Path(TURNSERVER).exists() else "turnserver"
    with tempfile.TemporaryDirectory(prefix="coturn-") as tmp:
        directory = Path(tmp)
        ca_file, cert, key = _write_certificate(directory, address)
        config_file = directory / "turnserver.conf"
        config_file.write_text(
            _config(
                directory=directory,
                address=address,
                port=port,
                tls_port=tls_port,
                secret=secret,
                realm=realm,
                cert=cert,
                key=key,
                relay_ports=relay_ports,
                allowed_peers=allowed_peers,
                extra=extra,
            )
        )
        config_file.chmod(0o600)
        log_file = directory / "turnserver.log"
        with log_file.open("wb") as log:
            process = subprocess.Popen(
                [*prefix, binary, "-c", str(config_file)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            turn = Coturn(
                address=address,
                port=port,
                tls_port=tls_port,
                secret=secret,
                realm=realm,
                ca_file=ca_file,
                log_file=log_file,
                pid=process.pid,
            )
            wanted = [("udp", port), ("tcp", port), ("tcp", tls_port)]
            deadline = time.monotonic() + STARTUP_TIMEOUT
            while not _listening(prefix, address, wanted):
                if process.poll() is not None:
                    raise RuntimeError(
                        f"turnserver exited with {process.returncode}:\n{turn.log()[-4000:]}"
                    )
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"turnserver not listening on {address}:{port}/{tls_port} "
                        f"after {STARTUP_TIMEOUT:.0f} s:\n{turn.log()[-4000:]}"
                    )
                time.sleep(0.1)
            yield turn
        finally:
            _stop(process)
