"""A small asynchronous Kubernetes client for the handful of calls the operator makes.

kopf watches and patches the ``BrokerCluster`` itself; everything else
(get, create, merge-patch, delete of the objects it owns, status and scale of
the resource) goes through here. It logs in exactly as kopf does
(:mod:`broker_operator.login`: in-cluster service account, else kubeconfig), so
both always talk to the same server with the same identity, and it speaks
plain HTTP+JSON through aiohttp (already kopf's transport) instead of the
``kubernetes`` package's generated, thread-bound API classes. Only the kinds
in :data:`RESOURCES` are known: the operator never needs discovery.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import aiohttp
import kopf

from broker_operator import API_VERSION, KIND, PLURAL
from broker_operator.login import credentials
from broker_operator.manifests import ObjectKey

logger = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=30, sock_connect=10)

CREDENTIALS_MAX_AGE = 60.0
"""Seconds credentials are used before they are read again: well within the
life of a rotated token (the kubelet replaces it with a fifth of its life left)."""

Login = Callable[[], Awaitable[kopf.ConnectionInfo]]
"""Reads the credentials (again): in-cluster ServiceAccount, else kubeconfig."""


@dataclass(frozen=True)
class ResourceType:
    api_version: str
    plural: str

    def path(
        self, namespace: str | None, name: str | None = None, subresource: str | None = None
    ) -> str:
        """The URL path; ``namespace=None`` lists across all namespaces."""
        root = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        if namespace is None:
            return f"{root}/{self.plural}"
        path = f"{root}/namespaces/{namespace}/{self.plural}"
        if name is not None:
            path += f"/{name}"
            if subresource is not None:
                path += f"/{subresource}"
        return path


RESOURCES: dict[tuple[str, str], ResourceType] = {
    (api_version, kind): ResourceType(api_version, plural)
    for api_version, kind, plural in [
        ("v1", "Service", "services"),
        ("v1", "Pod", "pods"),  # list (advertised addresses), patch (a load balancer's)
        ("apps/v1", "Deployment", "deployments"),
        ("apps/v1", "StatefulSet", "statefulsets"),
        ("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets"),
        ("monitoring.coreos.com/v1", "ServiceMonitor", "servicemonitors"),
        ("v1", "Event", "events"),
        ("v1", "Secret", "secrets"),  # create only: the generated server secret
        (API_VERSION, KIND, PLURAL),
    ]
}


def resource_of(key: ObjectKey) -> ResourceType:
    return RESOURCES[(key.api_version, key.kind)]


class ApiError(Exception):
    """The API server refused a request; ``status`` is the HTTP status."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409

    @property
    def unauthorized(self) -> bool:
        """The credentials were refused (expired, rotated away or revoked)."""
        return self.status == 401


def _transport(info: kopf.ConnectionInfo) -> tuple[object, ...]:
    """What the HTTP session is built from (all but the token, which goes in each request)."""
    return (
        info.server,
        info.insecure,
        info.ca_path,
        info.ca_data,
        info.certificate_path,
        info.certificate_data,
        info.private_key_path,
        info.private_key_data,
        info.username,
        info.password,
    )


class KubeClient:
    """JSON over HTTP to one API server; :meth:`close` when done.

    With ``login``, credentials are read again every ``max_age`` seconds and after
    a 401; without it (tests), ``info`` is used as given.
    """

    def __init__(
        self,
        info: kopf.ConnectionInfo,
        login: Login | None = None,
        *,
        max_age: float = CREDENTIALS_MAX_AGE,
    ) -> None:
        self._info = info
        self._login = login
        self._max_age = max_age
        self._read_at = time.monotonic()
        self._refreshing = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    async def login(cls, settings: kopf.OperatorSettings | None = None) -> KubeClient:
        """A client whose credentials are kopf's, read again as they rotate."""
        chosen = settings or kopf.OperatorSettings()

        async def read() -> kopf.ConnectionInfo:
            return await asyncio.to_thread(partial(credentials, settings=chosen))

        return cls(await read(), read)

    async def _refresh(self, stale: kopf.ConnectionInfo) -> None:
        """Read the credentials again, unless another request already did since ``stale``."""
        assert self._login is not None
        async with self._refreshing:
            if self._info is not stale:
                return
            info = await self._login()
            if _transport(info) != _transport(self._info) and self._session is not None:
                # New server or TLS material: requests from now on use a new session.
                old, self._session = self._session, None
                await old.close()
            self._info = info
            self._read_at = time.monotonic()

    async def _refresh_quietly(self) -> None:
        """The periodic re-read: a failure keeps the credentials in use (they may still be
        valid) and is retried after another ``max_age``; a 401 would force the issue."""
        try:
            await self._refresh(self._info)
        except Exception as exc:  # any login failure: keep what works
            logger.warning("could not read the credentials again (%s); keeping them", exc)
            self._read_at = time.monotonic()

    def _ssl(self) -> ssl.SSLContext | bool:
        """TLS as kopf's own sessions set it up: the CA and client certificate from
        files or from the kubeconfig's inline ``*-data`` (which a kubeconfig login
        gives instead of paths), or no verification for ``insecure-skip-tls-verify``."""
        if not self._info.server.startswith("https"):
            return False
        return self._info.as_ssl_context()

    def _headers(self) -> dict[str, str]:
        info = self._info
        headers = {"Accept": "application/json"}
        if info.token:
            headers["Authorization"] = f"{info.scheme or 'Bearer'} {info.token}"
        return headers

    def _session_for_requests(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            auth = None
            if self._info.username and self._info.password:
                auth = aiohttp.BasicAuth(self._info.username, self._info.password)
            self._session = aiohttp.ClientSession(
                base_url=self._info.server.rstrip("/"),
                auth=auth,
                timeout=REQUEST_TIMEOUT,
                connector=aiohttp.TCPConnector(ssl=self._ssl()),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        params: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """One call; the decoded JSON answer, or :class:`ApiError`."""
        if self._login is None:
            return await self._send(method, path, body, content_type, params)
        if time.monotonic() - self._read_at >= self._max_age:
            await self._refresh_quietly()
        used = self._info
        try:
            return await self._send(method, path, body, content_type, params)
        except ApiError as exc:
            if not exc.unauthorized:
                raise
            logger.info("credentials refused (%s); reading them again", exc)
            await self._refresh(used)
            return await self._send(method, path, body, content_type, params)

    async def _send(
        self,
        method: str,
        path: str,
        body: Any,
        content_type: str,
        params: dict[str, str] | None,
    ) -> dict[str, Any]:
        session = self._session_for_requests()
        headers = self._headers()
        if body is not None:
            headers["Content-Type"] = content_type
        async with session.request(
            method, path, json=body, headers=headers, params=params
        ) as response:
            try:
                data = await response.json(content_type=None)
            except ValueError:
                data = None
            if response.status >= 400:
                status = data if isinstance(data, dict) else {}
                raise ApiError(
                    response.status,
                    str(status.get("reason") or response.reason or ""),
                    str(status.get("message") or (await response.text())[:200]),
                )
            return data if isinstance(data, dict) else {}

    async def get(self, key: ObjectKey, subresource: str | None = None) -> dict[str, Any] | None:
        try:
            path = resource_of(key).path(key.namespace, key.name, subresource)
            return await self.request("GET", path)
        except ApiError as exc:
            if exc.not_found:
                return None
            raise

    async def create(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Create; the name may come from ``metadata.generateName``."""
        resource = RESOURCES[(manifest["apiVersion"], manifest["kind"])]
        path = resource.path(manifest["metadata"]["namespace"])
        return await self.request("POST", path, manifest)

    async def merge_patch(
        self, key: ObjectKey, patch: dict[str, Any], subresource: str | None = None
    ) -> dict[str, Any]:
        path = resource_of(key).path(key.namespace, key.name, subresource)
        return await self.request("PATCH", path, patch, content_type=MERGE_PATCH)

    async def list_objects(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        label_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        """Every object of a kind in ``namespace`` (``None``: all namespaces), or those
        ``label_selector`` matches."""
        params = {"labelSelector": label_selector} if label_selector else None
        path = RESOURCES[(api_version, kind)].path(namespace)
        answer = await self.request("GET", path, params=params)
        items = answer.get("items") or []
        for item in items:  # lists leave apiVersion and kind out of their items
            item.setdefault("apiVersion", api_version)
            item.setdefault("kind", kind)
        return list(items)

    async def delete(self, key: ObjectKey) -> bool:
        """Delete with background propagation (dependents go too); False if it was absent."""
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        try:
            await self.request("DELETE", resource_of(key).path(key.namespace, key.name), body)
        except ApiError as exc:
            if exc.not_found:
                return False
            raise
        return True
