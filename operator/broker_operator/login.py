"""Where the operator's Kubernetes credentials come from: no client library needed.

In a pod: the mounted service-account token and CA, and the API server the
kubelet names in ``KUBERNETES_SERVICE_HOST``/``_PORT`` (the address the
Kubernetes client libraries use; kopf's own service-account login assumes the
name ``kubernetes.default.svc``, which needs cluster DNS and a server
certificate that names it). Elsewhere: kopf's kubeconfig login (token, client
certificate, basic auth, or a ``tokenFile`` read again at every login, which
kopf's own kubeconfig login leaves out; not exec plugins). kopf's watches and
:class:`~broker_operator.kube.KubeClient` both use this, so they always talk to
the same server with the same identity.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import kopf
import yaml

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")


def in_cluster(account: Path = SERVICE_ACCOUNT) -> kopf.ConnectionInfo | None:
    """The pod's service-account credentials, or None outside a pod."""
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    token_file = account / "token"
    if not host or not token_file.exists():
        return None
    server_host = f"[{host}]" if ":" in host else host
    ca_file = account / "ca.crt"
    namespace_file = account / "namespace"
    return kopf.ConnectionInfo(
        server=f"https://{server_host}:{port}",
        ca_path=str(ca_file) if ca_file.exists() else None,
        token=token_file.read_text(encoding="utf-8").strip() or None,
        default_namespace=(
            namespace_file.read_text(encoding="utf-8").strip() or None
            if namespace_file.exists()
            else None
        ),
    )


def credentials(*, settings: kopf.OperatorSettings, **_: Any) -> kopf.ConnectionInfo:
    """In-cluster credentials, else the kubeconfig's (blocking file reads).

    Also kopf's ``on.login`` handler: kopf passes ``settings`` and more keywords."""
    info = in_cluster()
    if info is not None:
        return info
    info = kopf.login_with_kubeconfig(settings=settings)
    if info is None:
        raise kopf.LoginError("no service account in this pod and no kubeconfig (KUBECONFIG)")
    if info.token is None:
        token_file = kubeconfig_token_file()
        if token_file is not None:
            token = Path(token_file).read_text(encoding="utf-8").strip()
            info = dataclasses.replace(info, token=token or None)
    return info


def kubeconfig_token_file() -> str | None:
    """The current context's user's ``tokenFile`` in the (first) kubeconfig, if any."""
    paths = os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
    first = next((p for p in paths.split(os.pathsep) if p), None)
    if first is None or not os.path.exists(first):
        return None
    with open(first, encoding="utf-8") as file:
        config = yaml.safe_load(file) or {}
    context_name = config.get("current-context")
    contexts = {c.get("name"): c.get("context") or {} for c in config.get("contexts") or []}
    users = {u.get("name"): u.get("user") or {} for u in config.get("users") or []}
    user = users.get(contexts.get(context_name, {}).get("user"), {})
    token_file = user.get("tokenFile")
    return str(token_file) if token_file else None
