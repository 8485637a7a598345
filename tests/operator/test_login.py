"""The operator logs in without a Kubernetes client library: in a pod, else the kubeconfig."""

from __future__ import annotations

from pathlib import Path

import kopf
import pytest

from broker_operator import login


def service_account(root: Path, *, token: str = "tok-1", ca: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "token").write_text(token + "\n")
    (root / "namespace").write_text("brokers\n")
    if ca:
        (root / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    return root


def test_in_a_pod_the_service_account_and_the_kubelets_address(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = service_account(tmp_path / "sa")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "6443")
    info = login.in_cluster(account)
    assert info is not None
    assert info.server == "https://10.96.0.1:6443"
    assert (info.token, info.default_namespace) == ("tok-1", "brokers")
    assert info.ca_path == str(account / "ca.crt")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "fd00::1")
    assert login.in_cluster(account).server == "https://[fd00::1]:6443"  # type: ignore[union-attr]


def test_outside_a_pod_there_are_no_in_cluster_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = service_account(tmp_path / "sa")
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert login.in_cluster(account) is None  # a token file alone is not a pod
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    assert login.in_cluster(tmp_path / "absent") is None


def test_the_kubeconfig_when_not_in_a_pod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    config = tmp_path / "kubeconfig"
    config.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "contexts: [{name: c, context: {cluster: k, user: u, namespace: ns1}}]\n"
        "clusters: [{name: k, cluster: {server: 'https://127.0.0.1:6443',"
        " certificate-authority-data: Q0E=}}]\n"
        "users: [{name: u, user: {token: secret-token}}]\n"
    )
    monkeypatch.setenv("KUBECONFIG", str(config))
    info = login.credentials(settings=kopf.OperatorSettings())
    assert (info.server, info.token, info.default_namespace) == (
        "https://127.0.0.1:6443",
        "secret-token",
        "ns1",
    )


def test_no_credentials_at_all_is_a_login_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.kube/config either
    with pytest.raises(kopf.LoginError):
        login.credentials(settings=kopf.OperatorSettings())


def test_a_kubeconfig_token_file_is_read_at_every_login(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``tokenFile`` (a token that rotates on disk), which kopf's own login leaves out."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    token = tmp_path / "token"
    token.write_text("first\n")
    config = tmp_path / "kubeconfig"
    config.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
        "clusters: [{name: k, cluster: {server: 'https://127.0.0.1:6443'}}]\n"
        f"users: [{{name: u, user: {{tokenFile: '{token}'}}}}]\n"
    )
    monkeypatch.setenv("KUBECONFIG", str(config))
    assert login.credentials(settings=kopf.OperatorSettings()).token == "first"
    token.write_text("rotated\n")
    assert login.credentials(settings=kopf.OperatorSettings()).token == "rotated"
