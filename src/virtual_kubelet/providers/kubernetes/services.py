"""Source Services reflected into the target namespaces (`reflect_services: true`), so offloaded
pods find their peers in the target by the Service's name, as at home.

One watch of Services per source namespace that has offloaded pods; every Service with a
selector gets an owner-labelled copy in the target namespace with the same name, selector and
ports (a ClusterIP of the target's own, or headless if the source's is). The target's endpoint
controller then lists the target pods the selector matches (our remote pods keep their source
labels). A Service deleted in the source is deleted in the target; a target Service we did not
create is never overwritten. The Service's EndpointSlices in the source follow its copy
(endpoint_slices.py): the target's Service then also lists the pods that stayed in the source.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ...sdk.kube_api import ApiError, CallbackHandler, KubeClient, Reflector, path
from .endpoint_slices import EndpointSliceReflection
from .naming import OWNER_LABEL, SOURCE_CLUSTER, SOURCE_NAME, SOURCE_NAMESPACE

__all__ = ["ServiceReflection"]

log = logging.getLogger(__name__)

Obj = dict[str, Any]
_PORT_FIELDS = ("name", "port", "targetPort", "protocol", "appProtocol")


class ServiceReflection:
    """Copies selector Services of the source namespaces we run pods of into the target."""

    def __init__(
        self, source: KubeClient, target: KubeClient, owner: str, cluster_id: str, node: str
    ) -> None:
        self._source = source
        self._target = target
        self._owner = owner
        self._cluster_id = cluster_id
        #: source namespace -> target namespace, for the namespaces followed.
        self._followed: dict[str, str] = {}
        self._watches: list[asyncio.Task[None]] = []
        self._writes: set[asyncio.Task[None]] = set()
        self.slices = EndpointSliceReflection(source, target, owner, cluster_id, node)

    def follow(self, source_ns: str, target_ns: str) -> None:
        """Reflect the Services of `source_ns` into `target_ns` from now on."""
        if source_ns in self._followed:
            return
        self._followed[source_ns] = target_ns
        reflector = Reflector(
            self._source,
            path("v1", "services", source_ns),
            name=f"source services in {source_ns}",
            handler=CallbackHandler(
                on_add=self._changed,
                on_update=lambda _old, new: self._changed(new),
                on_delete=self._deleted,
            ),
        )
        self._watches.append(asyncio.get_running_loop().create_task(reflector.run()))
        self.slices.follow(source_ns, target_ns)

    async def close(self) -> None:
        for task in [*self._watches, *self._writes]:
            task.cancel()
        await asyncio.gather(*self._watches, *self._writes, return_exceptions=True)
        await self.slices.close()

    def _copy_of(self, service: Obj, target_ns: str) -> Obj | None:
        spec = service.get("spec") or {}
        if not spec.get("selector") or spec.get("type") == "ExternalName":
            return None  # nothing the target's endpoint controller could fill in
        copy_spec: Obj = {
            "selector": dict(spec["selector"]),
            "ports": [{k: p[k] for k in _PORT_FIELDS if k in p} for p in spec.get("ports") or []],
        }
        if spec.get("clusterIP") == "None":
            copy_spec["clusterIP"] = "None"
        meta = service["metadata"]
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": meta["name"],
                "namespace": target_ns,
                "labels": {OWNER_LABEL: self._owner},
                "annotations": {
                    SOURCE_CLUSTER: self._cluster_id,
                    SOURCE_NAMESPACE: meta["namespace"],
                    SOURCE_NAME: meta["name"],
                },
            },
            "spec": copy_spec,
        }

    def _changed(self, service: Obj) -> None:
        target_ns = self._followed.get(service["metadata"]["namespace"])
        copy = self._copy_of(service, target_ns) if target_ns else None
        if copy is not None:
            self._spawn(self._write(copy))

    def _deleted(self, service: Obj) -> None:
        target_ns = self._followed.get(service["metadata"]["namespace"])
        if target_ns:
            self.slices.service_removed(
                service["metadata"]["namespace"], service["metadata"]["name"]
            )
            self._spawn(self._delete(target_ns, service["metadata"]["name"]))

    async def _write(self, copy: Obj) -> None:
        namespace, name = copy["metadata"]["namespace"], copy["metadata"]["name"]
        source_ns = copy["metadata"]["annotations"][SOURCE_NAMESPACE]
        url = path("v1", "services", namespace, name)
        try:
            try:
                await self._target.create(path("v1", "services", namespace), copy)
                log.info("reflected service %s/%s into the target", namespace, name)
                self.slices.service_reflected(source_ns, name)
                return
            except ApiError as exc:
                if not exc.conflict:
                    raise
            existing = await self._target.get(url)
            if (existing["metadata"].get("labels") or {}).get(OWNER_LABEL) != self._owner:
                log.warning(
                    "service %s/%s exists in the target and was not created by this node; "
                    "left untouched",
                    namespace,
                    name,
                )
                return
            patch = {"metadata": copy["metadata"], "spec": copy["spec"]}
            await self._target.patch(url, patch, "merge")
            self.slices.service_reflected(source_ns, name)
        except ApiError as exc:
            log.warning("cannot reflect service %s/%s into the target: %s", namespace, name, exc)

    async def _delete(self, namespace: str, name: str) -> None:
        url = path("v1", "services", namespace, name)
        try:
            existing = await self._target.get(url)
            if (existing["metadata"].get("labels") or {}).get(OWNER_LABEL) != self._owner:
                return
            await self._target.delete(url, {"preconditions": {"uid": existing["metadata"]["uid"]}})
            log.info("removed service %s/%s from the target", namespace, name)
        except ApiError as exc:
            if not (exc.not_found or exc.conflict):
                log.warning("cannot remove service %s/%s from the target: %s", namespace, name, exc)

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)
