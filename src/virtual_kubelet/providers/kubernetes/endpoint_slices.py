"""Source EndpointSlices reflected into the target (with `reflect_services: true`), so a reflected
Service in the target also reaches the pods that stayed in the source, as Liqo does.

One watch of EndpointSlices per followed source namespace. For each slice of a Service that is
reflected (services.py), an owner-labelled copy goes into the target namespace with the same name,
address type and ports, and the endpoints that are NOT this node's (ours already run in the
target, where the target's endpoint controller lists them). The copy's `managed-by` label is ours,
so the target's controller leaves it alone, while `kubernetes.io/service-name` ties it to the
reflected Service (kube-proxy and DNS merge every slice of a Service). Endpoints keep addresses,
conditions and hostname; nodeName and targetRef name source objects and are dropped. A source
slice deleted, or its Service's copy removed, removes the copies. Whether the addresses can be
reached from the target is the networks' business: nothing here connects them.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ...sdk.kube_api import ApiError, CallbackHandler, KubeClient, Reflector, path
from .naming import OWNER_LABEL, SOURCE_CLUSTER, SOURCE_NAME, SOURCE_NAMESPACE

__all__ = ["MANAGED_BY", "EndpointSliceReflection", "slice_copy"]

log = logging.getLogger(__name__)

Obj = dict[str, Any]
SERVICE_NAME = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
MANAGED_BY = "offload.virtual-kubelet.io"
_ENDPOINT_FIELDS = ("addresses", "conditions", "hostname", "zone", "hints")


def _slices(namespace: str, name: str | None = None) -> str:
    return path("discovery.k8s.io/v1", "endpointslices", namespace, name)


def slice_copy(
    source: Obj, target_ns: str, *, owner: str, cluster_id: str, node: str
) -> Obj | None:
    """The target's copy of a source EndpointSlice: the endpoints not on `node` (our own pods),
    without references to source objects. None: not a Service's slice."""
    meta = source["metadata"]
    service = (meta.get("labels") or {}).get(SERVICE_NAME)
    if not service:
        return None
    endpoints = [
        {k: e[k] for k in _ENDPOINT_FIELDS if k in e}
        for e in source.get("endpoints") or []
        if e.get("nodeName") != node and e.get("addresses")
    ]
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": meta["name"],
            "namespace": target_ns,
            "labels": {
                SERVICE_NAME: service,
                MANAGED_BY_LABEL: MANAGED_BY,
                OWNER_LABEL: owner,
            },
            "annotations": {
                SOURCE_CLUSTER: cluster_id,
                SOURCE_NAMESPACE: meta["namespace"],
                SOURCE_NAME: meta["name"],
            },
        },
        "addressType": source.get("addressType") or "IPv4",
        "endpoints": endpoints,
        "ports": source.get("ports") or [],
    }


class EndpointSliceReflection:
    """Keeps copies of the source's EndpointSlices of reflected Services in the target."""

    def __init__(
        self, source: KubeClient, target: KubeClient, owner: str, cluster_id: str, node: str
    ) -> None:
        self._source = source
        self._target = target
        self._owner = owner
        self._cluster_id = cluster_id
        self._node = node
        #: source namespace -> target namespace.
        self._followed: dict[str, str] = {}
        #: (source namespace, Service name) of the Services whose copies exist in the target.
        self._services: set[tuple[str, str]] = set()
        #: (source namespace, slice name) -> the latest source slice.
        self._seen: dict[tuple[str, str], Obj] = {}
        #: One sync at a time per slice, each writing what is latest (never a stale copy).
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._watches: list[asyncio.Task[None]] = []
        self._writes: set[asyncio.Task[None]] = set()

    def follow(self, source_ns: str, target_ns: str) -> None:
        if source_ns in self._followed:
            return
        self._followed[source_ns] = target_ns
        reflector = Reflector(
            self._source,
            _slices(source_ns),
            name=f"source endpointslices in {source_ns}",
            handler=CallbackHandler(
                on_add=self._changed,
                on_update=lambda _old, new: self._changed(new),
                on_delete=self._deleted,
            ),
        )
        self._watches.append(asyncio.get_running_loop().create_task(reflector.run()))

    async def close(self) -> None:
        for task in [*self._watches, *self._writes]:
            task.cancel()
        await asyncio.gather(*self._watches, *self._writes, return_exceptions=True)

    # --- what services.py tells -------------------------------------------------------------------

    def service_reflected(self, source_ns: str, service: str) -> None:
        """The Service's copy exists in the target: its slices follow."""
        if (source_ns, service) in self._services:
            return
        self._services.add((source_ns, service))
        for key, found in list(self._seen.items()):
            if key[0] == source_ns and _service_of(found) == service:
                self._spawn(self._sync(key))

    def service_removed(self, source_ns: str, service: str) -> None:
        """The Service's copy is gone: so are its slices' copies."""
        self._services.discard((source_ns, service))
        target_ns = self._followed.get(source_ns)
        if target_ns:
            self._spawn(self._delete_all(target_ns, service))

    # --- source events ----------------------------------------------------------------------------

    def _changed(self, found: Obj) -> None:
        meta = found["metadata"]
        key = (str(meta["namespace"]), str(meta["name"]))
        self._seen[key] = found
        self._spawn(self._sync(key))

    def _deleted(self, found: Obj) -> None:
        meta = found["metadata"]
        key = (str(meta["namespace"]), str(meta["name"]))
        self._seen.pop(key, None)
        self._spawn(self._sync(key))

    async def _sync(self, key: tuple[str, str]) -> None:
        """Make the target's copy of source slice `key` what the source has now."""
        source_ns, name = key
        target_ns = self._followed.get(source_ns)
        if not target_ns:
            return
        async with self._locks.setdefault(key, asyncio.Lock()):
            found = self._seen.get(key)
            if found is None:
                self._locks.pop(key, None)
                await self._delete(target_ns, name)
                return
            if (source_ns, _service_of(found)) not in self._services:
                return
            copy = slice_copy(
                found, target_ns, owner=self._owner, cluster_id=self._cluster_id, node=self._node
            )
            if copy is not None:
                await self._write(copy)

    # --- the target -------------------------------------------------------------------------------

    def _ours(self, existing: Obj) -> bool:
        # Both labels: the target's controller copies the Service's labels (our owner label
        # among them) onto the slices it manages.
        labels = existing["metadata"].get("labels") or {}
        return labels.get(OWNER_LABEL) == self._owner and labels.get(MANAGED_BY_LABEL) == MANAGED_BY

    async def _write(self, copy: Obj) -> None:
        namespace, name = copy["metadata"]["namespace"], copy["metadata"]["name"]
        try:
            try:
                await self._target.create(_slices(namespace), copy)
                log.info("reflected endpointslice %s/%s into the target", namespace, name)
                return
            except ApiError as exc:
                if not exc.conflict:
                    raise
            existing = await self._target.get(_slices(namespace, name))
            if not self._ours(existing):
                log.warning(
                    "endpointslice %s/%s exists in the target and was not created by this "
                    "node; left untouched",
                    namespace,
                    name,
                )
                return
            copy["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
            await self._target.replace(_slices(namespace, name), copy)
        except ApiError as exc:
            log.warning(
                "cannot reflect endpointslice %s/%s into the target: %s", namespace, name, exc
            )

    async def _delete(self, namespace: str, name: str) -> None:
        url = _slices(namespace, name)
        try:
            existing = await self._target.get(url)
            if not self._ours(existing):
                return
            await self._target.delete(url, {"preconditions": {"uid": existing["metadata"]["uid"]}})
            log.info("removed endpointslice %s/%s from the target", namespace, name)
        except ApiError as exc:
            if not (exc.not_found or exc.conflict):
                log.warning(
                    "cannot remove endpointslice %s/%s from the target: %s", namespace, name, exc
                )

    async def _delete_all(self, namespace: str, service: str) -> None:
        selector = (
            f"{SERVICE_NAME}={service},{OWNER_LABEL}={self._owner},{MANAGED_BY_LABEL}={MANAGED_BY}"
        )
        try:
            listed = await self._target.get(_slices(namespace), {"labelSelector": selector})
        except ApiError as exc:
            log.warning("cannot list endpointslices of %s/%s: %s", namespace, service, exc)
            return
        for item in listed.get("items") or []:
            await self._delete(namespace, str(item["metadata"]["name"]))

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)


def _service_of(found: Obj) -> str:
    return str((found["metadata"].get("labels") or {}).get(SERVICE_NAME) or "")
