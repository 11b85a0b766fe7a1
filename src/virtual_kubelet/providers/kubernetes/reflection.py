"""ConfigMaps and Secrets the offloaded pods use, copied from the source cluster into their target
namespaces and kept in sync.

Each copy carries the owner label and is counted by the pods that reference it: an edit in the
source (seen by one watch per source namespace and kind) is written to every target copy; a copy
no pod references any more is deleted. A target object of the same name that this node did not
create is never overwritten: the pod is refused with a clear error instead. Values are never logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

from ...sdk import InvalidInput
from ...sdk.kube_api import ApiError, CallbackHandler, KubeClient, Reflector, path
from .naming import OWNER_LABEL, SOURCE_CLUSTER, SOURCE_NAME, SOURCE_NAMESPACE

__all__ = ["ObjectReflection"]

log = logging.getLogger(__name__)

Obj = dict[str, Any]
#: (kind plural, target namespace, name) of one copy in the target.
CopyKey = tuple[str, str, str]
_COPIED_FIELDS = {"configmaps": ("data", "binaryData"), "secrets": ("data", "type")}
#: Secret types the API server fills in itself or refuses to take from a client.
_OPAQUE_IN_TARGET = {"kubernetes.io/service-account-token"}


class ObjectReflection:
    """Copies referenced ConfigMaps and Secrets from `source` into `target`."""

    def __init__(
        self,
        source: KubeClient,
        target: KubeClient,
        owner: str,
        cluster_id: str,
        create_namespace: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self._create_namespace = create_namespace
        self._source = source
        self._target = target
        self._owner = owner
        self._cluster_id = cluster_id
        #: copy -> pod keys (source namespace/name) using it.
        self._users: dict[CopyKey, set[str]] = defaultdict(set)
        #: copy -> the source namespace it comes from.
        self._origin: dict[CopyKey, str] = {}
        #: copy -> the source resourceVersion last written.
        self._written: dict[CopyKey, str] = {}
        self._watches: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._reflectors: dict[tuple[str, str], Reflector] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._namespaces: set[str] = set()

    async def close(self) -> None:
        for task in [*self._watches.values(), *self._tasks]:
            task.cancel()
        await asyncio.gather(*self._watches.values(), *self._tasks, return_exceptions=True)

    # --- pods using copies ------------------------------------------------------------------------

    def adopt(
        self, pod_key: str, source_ns: str, target_ns: str, refs: set[tuple[str, str]]
    ) -> None:
        """Count an adopted pod's references (after a restart) without writing anything yet."""
        for kind, name in refs:
            copy = (kind, target_ns, name)
            self._users[copy].add(pod_key)
            self._origin[copy] = source_ns
            self._watch(source_ns, kind)

    async def ensure(
        self, pod_key: str, source_ns: str, target_ns: str, refs: set[tuple[str, str]]
    ) -> None:
        """Write every object in `refs` into `target_ns` (now) and keep them in sync."""
        await self.ensure_namespace(target_ns)
        for kind, name in sorted(refs):
            copy = (kind, target_ns, name)
            self._users[copy].add(pod_key)
            self._origin[copy] = source_ns
            self._watch(source_ns, kind)
            try:
                obj = await self._source.get(path("v1", kind, source_ns, name))
            except ApiError as exc:
                if exc.not_found:
                    continue  # optional reference (the agent holds pods whose mandatory ones miss)
                raise
            await self._write(copy, obj)

    def release(self, pod_key: str) -> None:
        """The pod is gone from the target: delete the copies no other pod uses."""
        for copy, users in list(self._users.items()):
            users.discard(pod_key)
            if not users:
                del self._users[copy]
                self._origin.pop(copy, None)
                self._written.pop(copy, None)
                self._spawn(self._delete(copy))

    async def collect_garbage(self) -> None:
        """Delete our copies in the target that no pod references (left by an earlier run)."""
        for kind in ("configmaps", "secrets"):
            listing = await self._target.get(
                path("v1", kind), {"labelSelector": f"{OWNER_LABEL}={self._owner}"}
            )
            for item in listing.get("items") or []:
                meta = item["metadata"]
                copy = (kind, meta["namespace"], meta["name"])
                if copy not in self._users:
                    await self._delete(copy)

    # --- writing ----------------------------------------------------------------------------------

    async def ensure_namespace(self, namespace: str) -> None:
        if namespace in self._namespaces:
            return
        if self._create_namespace is not None:  # huawei-cci: a flavor and a network object
            await self._create_namespace(namespace)
            self._namespaces.add(namespace)
            return
        body = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": namespace, "annotations": {SOURCE_CLUSTER: self._cluster_id}},
        }
        try:
            await self._target.create(path("v1", "namespaces"), body)
        except ApiError as exc:
            if not exc.conflict:
                raise
        self._namespaces.add(namespace)

    def _copy_of(self, copy: CopyKey, source: Obj) -> Obj:
        kind, namespace, name = copy
        body: Obj = {
            "apiVersion": "v1",
            "kind": "ConfigMap" if kind == "configmaps" else "Secret",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {OWNER_LABEL: self._owner},
                "annotations": {
                    SOURCE_CLUSTER: self._cluster_id,
                    SOURCE_NAMESPACE: source["metadata"]["namespace"],
                    SOURCE_NAME: name,
                },
            },
        }
        for field in _COPIED_FIELDS[kind]:
            if field in source:
                body[field] = source[field]
        if body.get("type") in _OPAQUE_IN_TARGET:
            body["type"] = "Opaque"
        return body

    async def _write(self, copy: CopyKey, source: Obj) -> None:
        version = source["metadata"].get("resourceVersion", "")
        if version and self._written.get(copy) == version:
            return
        kind, namespace, name = copy
        body = self._copy_of(copy, source)
        try:
            await self._target.create(path("v1", kind, namespace), body)
        except ApiError as exc:
            if not exc.conflict:
                raise
            existing = await self._target.get(path("v1", kind, namespace, name))
            if (existing["metadata"].get("labels") or {}).get(OWNER_LABEL) != self._owner:
                raise InvalidInput(
                    f"{body['kind']} {namespace}/{name} already exists in the target cluster and "
                    "was not created by this node; it is left untouched"
                ) from None
            body["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
            await self._target.replace(path("v1", kind, namespace, name), body)
        self._written[copy] = version
        log.info("reflected %s %s/%s into the target", kind, namespace, name)

    async def _delete(self, copy: CopyKey) -> None:
        kind, namespace, name = copy
        try:
            existing = await self._target.get(path("v1", kind, namespace, name))
            if (existing["metadata"].get("labels") or {}).get(OWNER_LABEL) != self._owner:
                return
            await self._target.delete(
                path("v1", kind, namespace, name),
                {"preconditions": {"uid": existing["metadata"]["uid"]}},
            )
            log.info("removed %s %s/%s from the target: no pod uses it", kind, namespace, name)
        except ApiError as exc:
            if not (exc.not_found or exc.conflict):
                log.warning(
                    "cannot remove %s %s/%s from the target: %s", kind, namespace, name, exc
                )

    # --- following the source ---------------------------------------------------------------------

    def _watch(self, source_ns: str, kind: str) -> None:
        key = (source_ns, kind)
        if key in self._watches:
            return
        reflector = Reflector(
            self._source,
            path("v1", kind, source_ns),
            name=f"source {kind} in {source_ns}",
            handler=CallbackHandler(
                on_add=lambda obj: self._changed(kind, obj),
                on_update=lambda _old, new: self._changed(kind, new),
            ),
        )
        self._reflectors[key] = reflector
        self._watches[key] = asyncio.get_running_loop().create_task(reflector.run())

    def _changed(self, kind: str, obj: Obj) -> None:
        meta = obj["metadata"]
        for copy, origin in list(self._origin.items()):
            same = copy[0] == kind and copy[2] == meta["name"] and origin == meta["namespace"]
            if same and self._written.get(copy) != meta.get("resourceVersion"):
                self._spawn(self._write_logged(copy, obj))

    async def _write_logged(self, copy: CopyKey, obj: Obj) -> None:
        try:
            await self._write(copy, obj)
        except (ApiError, InvalidInput) as exc:
            log.warning("cannot update %s %s/%s in the target: %s", *copy, exc)

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
