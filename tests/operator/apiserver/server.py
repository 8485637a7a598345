"""The emulator's HTTP face: kmock's server and request pipeline over :class:`Store`.

``ApiServer`` is a ``kmock.KubernetesEmulator``: kmock serves HTTP on
127.0.0.1, records every request (``server.requests``) and lets a test put
its own reactions in front (``server["patch", kmock.resource(...)] << 500``
makes the next matching PATCH fail). What kmock would answer by itself is
replaced: the catch-all fallback routes every ``/api`` and ``/apis`` request
to the :class:`Store`, and discovery documents are built from the store's
kinds (kmock's call the core group ``/v1`` and know no subresource kinds,
which kubectl rejects).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp.web
import attrs
import kmock
from kmock._internal import rendering

from tests.operator.apiserver.kinds import Kind
from tests.operator.apiserver.store import ApiError, Obj, Store

BARE_NAMESPACES = re.compile(r"^/api/v1/namespaces/?$")
KUBERNETES_VERSION = {"major": "1", "minor": "33", "gitVersion": "v1.33.0-emulated"}


@dataclass(frozen=True)
class Route:
    """A parsed path: ``/apis/{group}/{version}[/namespaces/{ns}]/{plural}[/{name}[/{sub}]]``."""

    group: str
    version: str
    plural: str | None = None
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None


def parse_route(path: str) -> Route | None:
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["api"] and len(parts) >= 2:
        group, version, rest = "", parts[1], parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    namespace = None
    namespace_object = len(rest) == 2 or (len(rest) == 3 and rest[2] in ("status", "finalize"))
    if group == "" and rest[:1] == ["namespaces"] and namespace_object:
        # The Namespace object itself (and its subresources), not objects in a namespace.
        return Route(group, version, "namespaces", None, rest[1], *rest[2:])
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    plural = rest[0] if rest else None
    name = rest[1] if len(rest) > 1 else None
    subresource = rest[2] if len(rest) > 2 else None
    return Route(group, version, plural, namespace, name, subresource)


def _cell(obj: Obj, kind_type: str, path: str) -> Any:
    node: Any = obj
    for part in path.strip(".").split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if kind_type == "date" and isinstance(node, str):
        then = datetime.datetime.fromisoformat(node.replace("Z", "+00:00"))
        seconds = int((datetime.datetime.now(tz=datetime.UTC) - then).total_seconds())
        return f"{max(seconds, 0)}s" if seconds < 120 else f"{seconds // 60}m"
    return node


def table(kind: Kind, items: list[Obj], metadata: Obj) -> Obj:
    """Server-side printing (``kubectl get``) with the CRD's printer columns."""
    columns = [("Name", "string", ".metadata.name"), *kind.columns]
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": [
            {
                "name": name,
                "type": "string" if kind_type == "date" else kind_type,
                "format": "",
                "description": "",
                "priority": 0,
            }
            for name, kind_type, _ in columns
        ],
        "rows": [
            {
                "cells": [_cell(item, kind_type, path) for _, kind_type, path in columns],
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": item["metadata"],
                },
            }
            for item in items
        ],
    }


def _json(payload: Any, status: int = 200) -> aiohttp.web.Response:
    return aiohttp.web.json_response(payload, status=status)


@attrs.define(kw_only=True)
class ApiServer(kmock.KubernetesEmulator):
    """A Kubernetes API server for tests; ``server.store`` is its state."""

    store: Store = attrs.field(factory=Store)

    def __attrs_post_init__(self) -> None:
        """No kmock fallbacks: what no test reaction answers goes to the store."""

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        # Test reactions first (kmock's own matching), then the store. kmock's emulator
        # bookkeeping (KubernetesEmulator._handle) is skipped on purpose.
        try:
            return await kmock.RawHandler._handle(self, request)
        except NotImplementedError:
            return await self._dispatch(request)

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        # kmock's path parser cannot split a bare ``/api/v1/namespaces``: skip its pipeline.
        if BARE_NAMESPACES.match(raw_request.path):
            body = await raw_request.read()
            try:
                data = json.loads(body) if body else None
            except ValueError:
                data = None
            request = rendering.Request(
                method=raw_request.method,
                url=raw_request.url,
                params=dict(raw_request.query),
                headers=dict(raw_request.headers),
                body=body,
                data=data,
                raw_request=raw_request,
            )
            return await self._dispatch(request)
        return await super().__call__(raw_request)

    # -- dispatch -------------------------------------------------------------------------------

    async def _dispatch(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        path = request.url.path
        try:
            if path in ("/", "/version", "/api", "/apis"):
                return _json(self._root(path))
            if path.startswith("/openapi/v3"):
                return _json(self._openapi(path.removeprefix("/openapi/v3").strip("/")))
            route = parse_route(path)
            if route is None:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            if route.plural is None:
                return _json(self._group_version(route))
            return await self._resource(request, route)
        except ApiError as exc:
            return _json(exc.status(), exc.code)

    def _root(self, path: str) -> Any:
        if path == "/version":
            return KUBERNETES_VERSION
        if path == "/api":
            return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
        groups: dict[str, list[str]] = {}
        for kind in self.store.kinds.values():
            if kind.group:
                versions = groups.setdefault(kind.group, [])
                if kind.version not in versions:
                    versions.append(kind.version)
        if path == "/apis":
            return {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [self._group_doc(g, v) for g, v in sorted(groups.items())],
            }
        return {"paths": ["/api", "/api/v1", "/apis", "/version"]}

    def _openapi(self, group_version: str) -> Obj:
        """Just enough OpenAPI v3 for kubectl to see that PATCH takes ``fieldValidation``.

        kubectl validates on the server (``fieldValidation=Strict``) when the
        server's OpenAPI says so; otherwise it wants the whole OpenAPI v2
        schema to validate by itself. No schemas are served.
        """
        docs: dict[str, dict[str, Obj]] = {}
        for kind in self.store.kinds.values():
            gv = f"api/{kind.version}" if not kind.group else f"apis/{kind.group}/{kind.version}"
            prefix = f"/{gv}/namespaces/{{namespace}}" if kind.namespaced else f"/{gv}"
            operation = {
                "x-kubernetes-group-version-kind": {
                    "group": kind.group,
                    "version": kind.version,
                    "kind": kind.kind,
                },
                "parameters": [
                    {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}
                ],
                "responses": {},
            }
            docs.setdefault(gv, {})[f"{prefix}/{kind.plural}/{{name}}"] = {
                "patch": operation,
                "put": operation,
            }
            docs[gv][f"{prefix}/{kind.plural}"] = {"post": operation}
        if not group_version:
            return {
                "paths": {
                    gv: {"serverRelativeURL": f"/openapi/v3/{gv}?hash=emulated"} for gv in docs
                }
            }
        if group_version not in docs:
            raise ApiError(404, "NotFound", f"no OpenAPI document for {group_version}")
        return {
            "openapi": "3.0.0",
            "info": {"title": "Kubernetes (emulated)", "version": KUBERNETES_VERSION["gitVersion"]},
            "paths": docs[group_version],
            "components": {"schemas": {}},
        }

    @staticmethod
    def _group_doc(group: str, versions: list[str]) -> Obj:
        entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {"name": group, "versions": entries, "preferredVersion": entries[0]}

    def _group_version(self, route: Route) -> Any:
        kinds = [
            k
            for k in self.store.kinds.values()
            if k.group == route.group and k.version == route.version
        ]
        if not kinds:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": kinds[0].api_version,
            "resources": [entry for k in kinds for entry in k.discovery()],
        }

    async def _resource(
        self, request: rendering.Request, route: Route
    ) -> aiohttp.web.StreamResponse:
        store = self.store
        assert route.plural is not None
        kind = store.kind(route.group, route.version, route.plural)
        method = request.method.value.upper()
        params = request.params
        validation = params.get("fieldValidation")
        if route.name is None:
            if method == "GET" and params.get("watch") in ("true", "1"):
                timeout = float(params["timeoutSeconds"]) if "timeoutSeconds" in params else None
                events = store.watch(
                    kind,
                    route.namespace,
                    params.get("resourceVersion"),
                    labels=params.get("labelSelector"),
                    fields=params.get("fieldSelector"),
                    timeout=timeout,
                )
                return await self._stream(request, events)
            if method == "GET":
                listed = store.list_objects(
                    kind, route.namespace, params.get("labelSelector"), params.get("fieldSelector")
                )
                if kind.columns and "as=Table" in request.headers.get("Accept", ""):
                    return _json(table(kind, listed["items"], listed["metadata"]))
                return _json(listed)
            if method == "POST":
                return _json(
                    store.create(kind, route.namespace, self._body(request), validation), 201
                )
            raise ApiError(405, "MethodNotAllowed", f"{method} is not allowed on a collection")
        sub = route.subresource
        if sub not in (None, *kind.subresources):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if method == "GET":
            if sub == "scale":
                return _json(store.scale(kind, route.namespace, route.name))
            found = store.get(kind, route.namespace, route.name)
            if kind.columns and "as=Table" in request.headers.get("Accept", ""):
                return _json(table(kind, [found], {"resourceVersion": str(store.rv)}))
            return _json(found)
        if method == "PATCH":
            content_type = request.headers.get("Content-Type", "").split(";")[0].strip()
            return _json(
                store.patch(
                    kind,
                    route.namespace,
                    route.name,
                    self._body(request),
                    content_type=content_type,
                    subresource=sub,
                    field_validation=validation,
                )
            )
        if method == "PUT":
            return _json(
                store.replace(
                    kind,
                    route.namespace,
                    route.name,
                    self._body(request),
                    subresource=sub,
                    field_validation=validation,
                )
            )
        if method == "DELETE" and sub is None:
            options = request.data if isinstance(request.data, dict) else {}
            propagation = params.get("propagationPolicy") or options.get(
                "propagationPolicy", "Background"
            )
            return _json(store.delete(kind, route.namespace, route.name, propagation))
        raise ApiError(405, "MethodNotAllowed", f"{method} is not allowed here")

    @staticmethod
    def _body(request: rendering.Request) -> Any:
        if request.data is None:
            raise ApiError(400, "BadRequest", "the request body is not JSON")
        return request.data

    @staticmethod
    async def _stream(
        request: rendering.Request, events: AsyncIterator[Obj]
    ) -> aiohttp.web.StreamResponse:
        """A watch: headers at once (it may stay quiet for long), then one JSON line per event."""
        raw = request._raw_request
        assert raw is not None
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(raw)
        try:
            async for event in events:
                await response.write(json.dumps(event).encode() + b"\n")
        except ApiError as exc:
            error = {"type": "ERROR", "object": exc.status()}
            await response.write(json.dumps(error).encode() + b"\n")
        except ConnectionError:
            return response  # the client went away
        await response.write_eof()
        return response


@contextlib.asynccontextmanager
async def running_apiserver(store: Store | None = None) -> AsyncIterator[ApiServer]:
    """An :class:`ApiServer` listening on 127.0.0.1 (a free port) while the block runs."""
    async with ApiServer(store=store or Store()) as server, kmock.Server(server):
        yield server
