"""The API server's storage semantics, without HTTP.

What it does, after the Kubernetes "API concepts" and "garbage collection"
documentation:

* every write gets the next ``resourceVersion`` (one counter for the whole
  store, as etcd's revision); a write that changes nothing gets none;
* objects get ``uid``, ``creationTimestamp`` and ``generation``, which grows
  only when something outside ``metadata`` and ``status`` changes;
* ``status`` is written only through the status subresource of kinds that
  have one, and the main resource ignores it; ``scale`` reads and writes the
  replica paths (the CRD's ``specReplicasPath`` etc.);
* optimistic concurrency: a write carrying a stale ``resourceVersion`` gets
  409, a failed JSON-patch ``test`` gets 422;
* deletion honours finalizers (``deletionTimestamp`` first) and then deletes
  dependents whose ``ownerReferences`` name the deleted ``uid`` (background
  propagation; ``Orphan`` strips the references instead); an object created
  with owners that are all gone is deleted right after its creation;
* creating a CRD serves its resources (with its schema: validation,
  defaulting and pruning of custom resources); built-in objects are
  validated against the official schemas;
* namespaced objects need an existing namespace; deleting a namespace
  deletes its objects;
* watches replay events after a ``resourceVersion``, or start with the
  current objects as ``ADDED``.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import json
import secrets
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jsonpatch

from tests.operator import schemas
from tests.operator.apiserver.kinds import BUILTINS, Kind, kinds_of_crd
from tests.operator.apiserver.selectors import field_predicate, label_predicate

Obj = dict[str, Any]
StorageKey = tuple[str, str]  # (group, plural): all versions of a resource share storage
ObjectId = tuple[str, str, str, str]  # (group, plural, namespace or "", name)

MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"

STATEFULSET_MUTABLE = {
    "replicas",
    "template",
    "updateStrategy",
    "persistentVolumeClaimRetentionPolicy",
    "minReadySeconds",
    "ordinals",
    "revisionHistoryLimit",
}


class ApiError(Exception):
    """An error the API server answers with a ``Status`` object."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message

    def status(self) -> Obj:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }


@dataclass(frozen=True)
class Event:
    rv: int
    storage: StorageKey
    type: str
    obj: Obj


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _strip_directives(patch: Any) -> Any:
    """Strategic merge patch, approximated: its ``$`` directives dropped, then merged."""
    if isinstance(patch, dict):
        return {k: _strip_directives(v) for k, v in patch.items() if not k.startswith("$")}
    if isinstance(patch, list):
        return [_strip_directives(v) for v in patch]
    return patch


def _get_path(obj: Mapping[str, Any], path: str) -> Any:
    node: Any = obj
    for part in path.strip(".").split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _set_path(obj: Obj, path: str, value: Any) -> None:
    parts = path.strip(".").split(".")
    node = obj
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Store:
    """Objects, kinds, the event log and the watchers' wake-up signal."""

    def __init__(self, *, validate: bool = True, clock: Callable[[], str] = _now) -> None:
        self.validate = validate
        self.clock = clock
        self.kinds: dict[tuple[str, str, str], Kind] = {k.key: k for k in BUILTINS}
        self.objects: dict[ObjectId, Obj] = {}
        self.log: list[Event] = []
        self.rv = 0
        self._changed = asyncio.Event()
        self._next_ip = 10
        for name in ("default", "kube-system", "kube-public"):
            self.create(self.kind("", "v1", "namespaces"), None, {"metadata": {"name": name}})

    # -- kinds ----------------------------------------------------------------------------------

    def kind(self, group: str, version: str, plural: str) -> Kind:
        try:
            return self.kinds[(group, version, plural)]
        except KeyError:
            raise ApiError(
                404, "NotFound", "the server could not find the requested resource"
            ) from None

    def kind_of(self, api_version: str, kind_name: str) -> Kind:
        for kind in self.kinds.values():
            if kind.api_version == api_version and kind.kind == kind_name:
                return kind
        raise ApiError(404, "NotFound", f"no kind {kind_name!r} is registered for {api_version}")

    # -- reading --------------------------------------------------------------------------------

    def _id(self, kind: Kind, namespace: str | None, name: str) -> ObjectId:
        return (kind.group, kind.plural, namespace or "" if kind.namespaced else "", name)

    def _out(self, kind: Kind, obj: Obj) -> Obj:
        out = copy.deepcopy(obj)
        out["apiVersion"] = kind.api_version
        out["kind"] = kind.kind
        return out

    def _stored(self, kind: Kind, namespace: str | None, name: str) -> Obj:
        obj = self.objects.get(self._id(kind, namespace, name))
        if obj is None:
            raise ApiError(
                404, "NotFound", f'{kind.plural}.{kind.group or "core"} "{name}" not found'
            )
        return obj

    def get(self, kind: Kind, namespace: str | None, name: str) -> Obj:
        return self._out(kind, self._stored(kind, namespace, name))

    def _matches(
        self, kind: Kind, namespace: str | None, obj: Obj, labels: str | None, fields: str | None
    ) -> bool:
        meta = obj["metadata"]
        if kind.namespaced and namespace and meta.get("namespace") != namespace:
            return False
        return label_predicate(labels)(meta.get("labels") or {}) and field_predicate(fields)(obj)

    def list_objects(
        self,
        kind: Kind,
        namespace: str | None,
        labels: str | None = None,
        fields: str | None = None,
    ) -> Obj:
        try:
            items = [
                self._out(kind, obj)
                for (group, plural, _, _), obj in sorted(self.objects.items())
                if (group, plural) == (kind.group, kind.plural)
                and self._matches(kind, namespace, obj, labels, fields)
            ]
        except ValueError as exc:
            raise ApiError(400, "BadRequest", str(exc)) from None
        return {
            "apiVersion": kind.api_version,
            "kind": f"{kind.kind}List",
            "metadata": {"resourceVersion": str(self.rv)},
            "items": items,
        }

    # -- writing --------------------------------------------------------------------------------

    def _commit(self, kind: Kind, obj: Obj, event: str) -> Obj:
        meta = obj["metadata"]
        ident = self._id(kind, meta.get("namespace"), meta["name"])
        self.rv += 1
        if event == "DELETED":
            self.objects.pop(ident, None)
        else:
            meta["resourceVersion"] = str(self.rv)
            self.objects[ident] = obj
        self.log.append(Event(self.rv, (kind.group, kind.plural), event, self._out(kind, obj)))
        self._changed.set()
        self._changed = asyncio.Event()
        return self._out(kind, obj)

    def _check(self, kind: Kind, obj: Obj, field_validation: str | None) -> Obj:
        """Validate (and for custom resources default and prune) ``obj``."""
        if not self.validate:
            return obj
        body = {**obj, "apiVersion": kind.api_version, "kind": kind.kind}
        if kind.schema is not None:
            schema = kind.schema
            if field_validation == "Strict":
                unknown = schemas.unknown_fields(schema, body)
                if unknown:
                    raise self._invalid(kind, obj, unknown)
            schemas.prune(schema, body)
            schemas.apply_defaults(schema, body)
            problems = schemas.validate_custom(schema, body)
        else:
            try:
                problems = schemas.validate_official(body)
            except KeyError:
                problems = []
        if problems:
            raise self._invalid(kind, obj, problems)
        body.pop("apiVersion")
        body.pop("kind")
        return body

    def _invalid(self, kind: Kind, obj: Obj, problems: list[str]) -> ApiError:
        name = obj.get("metadata", {}).get("name", "")
        return ApiError(
            422,
            "Invalid",
            f'{kind.kind} "{name}" is invalid: ' + "; ".join(problems),
        )

    def create(
        self, kind: Kind, namespace: str | None, body: Obj, field_validation: str | None = None
    ) -> Obj:
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if kind.namespaced:
            if meta.get("namespace") and namespace and meta["namespace"] != namespace:
                raise ApiError(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not match the namespace sent "
                    "on the request",
                )
            namespace = namespace or meta.get("namespace")
            if not namespace:
                raise ApiError(400, "BadRequest", "a namespace is required")
            if ("", "namespaces", "", namespace) not in self.objects:
                raise ApiError(404, "NotFound", f'namespaces "{namespace}" not found')
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise ApiError(422, "Invalid", "metadata.name: Required value")
            meta["name"] = meta["generateName"] + secrets.token_hex(3)[:5]
        if self._id(kind, namespace, meta["name"]) in self.objects:
            raise ApiError(
                409,
                "AlreadyExists",
                f'{kind.plural}.{kind.group or "core"} "{meta["name"]}" already exists',
            )
        if "status" in kind.subresources:
            obj.pop("status", None)
        for managed in ("uid", "resourceVersion", "deletionTimestamp", "generation"):
            meta.pop(managed, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = self.clock()
        meta["generation"] = 1
        self._defaults(kind, obj)
        obj = self._check(kind, obj, field_validation)
        created = self._commit(kind, obj, "ADDED")
        if kind.kind == "CustomResourceDefinition":
            self._serve_crd(obj)
        if self._owners_gone(obj):
            # A controller still creating children of an owner deleted meanwhile: the
            # create succeeds, then the garbage collector deletes the dangling dependent.
            self.delete(kind, namespace, meta["name"], "Background")
        return created

    def _owners_gone(self, obj: Obj) -> bool:
        """True if ``obj`` names owners and none of them exists any more."""
        owners = {ref.get("uid") for ref in obj["metadata"].get("ownerReferences") or []}
        if not owners:
            return False
        return not any(o["metadata"].get("uid") in owners for o in self.objects.values())

    def _defaults(self, kind: Kind, obj: Obj) -> None:
        """The few defaults clients rely on (a Service's cluster IP, a CRD's conditions)."""
        if kind.kind == "Service":
            spec = obj.setdefault("spec", {})
            spec.setdefault("type", "ClusterIP")
            if spec.get("clusterIP") != "None":
                self._next_ip += 1
                spec["clusterIP"] = f"10.96.0.{self._next_ip}"
            spec["clusterIPs"] = [spec["clusterIP"]]
        if kind.kind == "CustomResourceDefinition":
            obj["status"] = {
                "conditions": [
                    {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts"},
                    {"type": "Established", "status": "True", "reason": "InitialNamesAccepted"},
                ],
                "acceptedNames": obj["spec"]["names"],
            }

    def _serve_crd(self, crd: Obj) -> None:
        for kind in kinds_of_crd(crd):
            self.kinds[kind.key] = kind

    def _immutable(self, kind: Kind, old: Obj, new: Obj) -> None:
        problems = []
        old_spec, new_spec = old.get("spec") or {}, new.get("spec") or {}
        if kind.kind == "StatefulSet":
            changed = {
                k
                for k in set(old_spec) | set(new_spec)
                if k not in STATEFULSET_MUTABLE and old_spec.get(k) != new_spec.get(k)
            }
            if changed:
                problems.append(
                    "spec: Forbidden: updates to statefulset spec for fields other than "
                    f"{sorted(STATEFULSET_MUTABLE)} are forbidden (changed: {sorted(changed)})"
                )
        if kind.kind == "Deployment" and old_spec.get("selector") != new_spec.get("selector"):
            problems.append("spec.selector: Invalid value: field is immutable")
        if (
            kind.kind == "Service"
            and new_spec.get("clusterIP") is not None
            and old_spec.get("clusterIP") != new_spec.get("clusterIP")
        ):
            problems.append("spec.clusterIP: Invalid value: field is immutable")
        if problems:
            raise self._invalid(kind, new, problems)

    def _update(
        self,
        kind: Kind,
        old: Obj,
        new: Obj,
        subresource: str | None,
        field_validation: str | None = None,
    ) -> Obj:
        """Write ``new`` over ``old`` with the API server's rules for each part."""
        old_meta = old["metadata"]
        new = copy.deepcopy(new)
        meta = new.setdefault("metadata", {})
        sent_rv = meta.get("resourceVersion")
        if sent_rv and sent_rv != old_meta["resourceVersion"]:
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {kind.plural} "{old_meta["name"]}": the '
                "object has been modified; please apply your changes to the latest version "
                "and try again",
            )
        if subresource == "status":
            candidate = copy.deepcopy(old)
            if "status" in new:
                candidate["status"] = new["status"]
            else:
                candidate.pop("status", None)
            new = candidate
        else:
            if "status" in kind.subresources:
                if "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
                else:
                    new.pop("status", None)
            for fixed in ("uid", "creationTimestamp", "name", "namespace", "deletionTimestamp"):
                if fixed in old_meta:
                    meta[fixed] = old_meta[fixed]
                else:
                    meta.pop(fixed, None)
            meta["generation"] = old_meta["generation"]
            self._immutable(kind, old, new)
        new["metadata"]["resourceVersion"] = old_meta["resourceVersion"]
        new = self._check(kind, new, field_validation)
        if new == old:
            return self._out(kind, old)
        spec_changed = {k: v for k, v in new.items() if k not in ("metadata", "status")} != {
            k: v for k, v in old.items() if k not in ("metadata", "status")
        }
        if spec_changed:
            new["metadata"]["generation"] = old_meta["generation"] + 1
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            return self._remove(kind, new, "Background")
        return self._commit(kind, new, "MODIFIED")

    def replace(
        self,
        kind: Kind,
        namespace: str | None,
        name: str,
        body: Obj,
        *,
        subresource: str | None = None,
        field_validation: str | None = None,
    ) -> Obj:
        old = self._stored(kind, namespace, name)
        if subresource == "scale":
            return self._write_scale(kind, old, body)
        return self._update(kind, old, body, subresource, field_validation)

    def patch(
        self,
        kind: Kind,
        namespace: str | None,
        name: str,
        patch: Any,
        *,
        content_type: str,
        subresource: str | None = None,
        field_validation: str | None = None,
    ) -> Obj:
        old = self._stored(kind, namespace, name)
        if content_type == STRATEGIC and kind.schema is not None:
            raise ApiError(
                415, "UnsupportedMediaType", "strategic merge patch is not supported here"
            )
        if subresource == "scale":
            current = self.scale(kind, namespace, name)
            return self._write_scale(kind, old, self._apply_patch(current, patch, content_type))
        base = self._out(kind, old)
        new = self._apply_patch(base, patch, content_type)
        new.pop("apiVersion", None)
        new.pop("kind", None)
        if content_type != JSON_PATCH:
            # Merge patches do not carry a precondition unless they say so.
            sent = (
                (patch.get("metadata") or {}).get("resourceVersion")
                if isinstance(patch, dict)
                else None
            )
            new.setdefault("metadata", {})["resourceVersion"] = (
                sent or old["metadata"]["resourceVersion"]
            )
        return self._update(kind, old, new, subresource, field_validation)

    def _apply_patch(self, base: Obj, patch: Any, content_type: str) -> Obj:
        if content_type == MERGE:
            result = merge_patch(base, patch)
        elif content_type == STRATEGIC:
            result = merge_patch(base, _strip_directives(patch))
        elif content_type == JSON_PATCH:
            try:
                result = jsonpatch.apply_patch(base, patch)
            except jsonpatch.JsonPatchTestFailed as exc:
                raise ApiError(422, "Invalid", f"the server rejected the patch: {exc}") from None
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
                raise ApiError(422, "Invalid", f"the patch cannot be applied: {exc}") from None
        else:
            raise ApiError(
                415, "UnsupportedMediaType", f"the body of type {content_type!r} is not supported"
            )
        if not isinstance(result, dict):
            raise ApiError(400, "BadRequest", "the patch did not produce an object")
        return result

    # -- scale ----------------------------------------------------------------------------------

    def scale(self, kind: Kind, namespace: str | None, name: str) -> Obj:
        if "scale" not in kind.subresources:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        obj = self._stored(kind, namespace, name)
        meta = obj["metadata"]
        status: Obj = {"replicas": _get_path(obj, kind.status_replicas_path) or 0}
        if kind.label_selector_path:
            selector = _get_path(obj, kind.label_selector_path)
            if selector:
                status["selector"] = selector
        return {
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": {
                k: meta[k]
                for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                if k in meta
            },
            "spec": {"replicas": _get_path(obj, kind.spec_replicas_path) or 0},
            "status": status,
        }

    def _write_scale(self, kind: Kind, old: Obj, scale: Obj) -> Obj:
        replicas = (scale.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or replicas < 0:
            raise ApiError(
                422, "Invalid", "spec.replicas: Invalid value: must be a non-negative integer"
            )
        new = copy.deepcopy(old)
        sent_rv = (scale.get("metadata") or {}).get("resourceVersion")
        if sent_rv:
            new["metadata"]["resourceVersion"] = sent_rv
        _set_path(new, kind.spec_replicas_path, replicas)
        self._update(kind, old, new, None)
        meta = old["metadata"]
        return self.scale(kind, meta.get("namespace"), meta["name"])

    # -- deleting -------------------------------------------------------------------------------

    def delete(
        self, kind: Kind, namespace: str | None, name: str, propagation: str = "Background"
    ) -> Obj:
        obj = self._stored(kind, namespace, name)
        meta = obj["metadata"]
        if meta.get("finalizers"):
            if not meta.get("deletionTimestamp"):
                marked = copy.deepcopy(obj)
                marked["metadata"]["deletionTimestamp"] = self.clock()
                return self._commit(kind, marked, "MODIFIED")
            return self._out(kind, obj)
        return self._remove(kind, obj, propagation)

    def _remove(self, kind: Kind, obj: Obj, propagation: str) -> Obj:
        out = self._commit(kind, obj, "DELETED")
        uid = obj["metadata"]["uid"]
        if kind.kind == "CustomResourceDefinition":
            for served in kinds_of_crd(obj):
                self.kinds.pop(served.key, None)
            group, plural = obj["spec"]["group"], obj["spec"]["names"]["plural"]
            for ident in [i for i in self.objects if i[:2] == (group, plural)]:
                self.objects.pop(ident, None)
        if kind.kind == "Namespace":
            name = obj["metadata"]["name"]
            for ident, child in list(self.objects.items()):
                if ident[2] == name and ident in self.objects:
                    self._remove(self._kind_by_storage(ident), child, "Background")
        self._collect(uid, propagation)
        return out

    def _kind_by_storage(self, ident: ObjectId) -> Kind:
        for kind in self.kinds.values():
            if (kind.group, kind.plural) == ident[:2]:
                return kind
        raise KeyError(ident)

    def _collect(self, owner_uid: str, propagation: str) -> None:
        """The garbage collector: dependents of a deleted owner go (or lose the reference)."""
        for ident, child in list(self.objects.items()):
            refs = child["metadata"].get("ownerReferences") or []
            if not any(ref.get("uid") == owner_uid for ref in refs) or ident not in self.objects:
                continue
            kind = self._kind_by_storage(ident)
            remaining = [ref for ref in refs if ref.get("uid") != owner_uid]
            if propagation == "Orphan" or remaining:
                updated = copy.deepcopy(child)
                if remaining:
                    updated["metadata"]["ownerReferences"] = remaining
                else:
                    updated["metadata"].pop("ownerReferences", None)
                self._commit(kind, updated, "MODIFIED")
            else:
                self.delete(kind, ident[2] or None, ident[3], "Background")

    # -- watching -------------------------------------------------------------------------------

    async def watch(
        self,
        kind: Kind,
        namespace: str | None,
        since: str | None,
        *,
        labels: str | None = None,
        fields: str | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[Obj]:
        """Events after ``since`` (or the current objects as ADDED, then events)."""
        storage = (kind.group, kind.plural)
        if since in (None, "", "0"):
            start = self.rv
            for item in self.list_objects(kind, namespace, labels, fields)["items"]:
                yield {"type": "ADDED", "object": item}
        else:
            try:
                start = int(str(since))
            except ValueError:
                raise ApiError(400, "BadRequest", f"invalid resourceVersion {since!r}") from None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout if timeout else None
        position = next((i for i, e in enumerate(self.log) if e.rv > start), len(self.log))
        while True:
            while position < len(self.log):
                event = self.log[position]
                position += 1
                if event.storage != storage:
                    continue
                obj = dict(event.obj, apiVersion=kind.api_version)
                if self._matches(kind, namespace, obj, labels, fields):
                    yield {"type": event.type, "object": obj}
            changed = self._changed
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return
            try:
                await asyncio.wait_for(changed.wait(), remaining)
            except TimeoutError:
                return

    def dump(self) -> str:
        """Every stored object, for failure messages."""
        return json.dumps(sorted(self.objects), indent=1)
