"""The operator's API client trusts the CA its login names, as a path or inline.

A kubeconfig carries its CA inline (``certificate-authority-data``) and kopf's
kubeconfig login hands it over as data, not as a file: a client that only read
a path fell back to the system's CAs and refused the API server's certificate.
"""

from __future__ import annotations

import base64
import datetime
import ssl
from pathlib import Path

import kopf
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from broker_operator.kube import KubeClient

SERVER = "https://198.19.255.1:6443"


def ca_pem(common_name: str) -> bytes:
    """A self-signed CA certificate, PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


def trusted(context: ssl.SSLContext | bool) -> list[str]:
    """The subjects of the CAs a context trusts, as text."""
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    return [str(ca["subject"]) for ca in context.get_ca_certs()]


def test_an_inline_ca_from_a_kubeconfig_is_trusted() -> None:
    data = base64.b64encode(ca_pem("inline-ca"))  # as certificate-authority-data holds it
    client = KubeClient(kopf.ConnectionInfo(server=SERVER, ca_data=data, token="t"))
    (subject,) = trusted(client._ssl())
    assert "'inline-ca'" in subject


def test_a_ca_file_is_trusted(tmp_path: Path) -> None:
    path = tmp_path / "ca.crt"
    path.write_bytes(ca_pem("file-ca"))
    client = KubeClient(kopf.ConnectionInfo(server=SERVER, ca_path=str(path), token="t"))
    (subject,) = trusted(client._ssl())
    assert "'file-ca'" in subject


def test_insecure_skips_verification_and_plain_http_has_no_tls() -> None:
    insecure = KubeClient(kopf.ConnectionInfo(server=SERVER, insecure=True))._ssl()
    assert isinstance(insecure, ssl.SSLContext)
    assert insecure.verify_mode == ssl.CERT_NONE
    assert KubeClient(kopf.ConnectionInfo(server="http://127.0.0.1:8080"))._ssl() is False
