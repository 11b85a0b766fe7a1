"""The Node object: registration (create or adopt), labels and taints, status, re-creation.

The node is built from defaults and the provider's `configure_node`, created if missing or adopted
if it exists (our labels and taints re-applied, other taints kept), and its status is PATCHed with
a strategic merge so conditions written by others survive. If someone deletes the Node, it is
created again. Pod work never goes through here.
"""

from __future__ import annotations

import asyncio
import logging
import platform
from dataclasses import dataclass, field
from typing import Any

from .. import __version__
from ..kube.client import KubeClient, path
from ..kube.errors import ApiError
from ..kube.objects import deep_copy
from ..kube.reflector import CallbackHandler, Reflector
from ..kube.timefmt import rfc3339
from ..sdk import Capabilities, Provider
from .health import ProviderHealth

log = logging.getLogger(__name__)

#: Reported as nodeInfo.kubeletVersion: the Kubernetes API level we implement, tagged as ours.
KUBELET_VERSION = f"v1.36.0-vk-{__version__}"
MANAGED_TAINTS = "virtual-kubelet.io/managed-taints"
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64", "amd64": "amd64"}
_OUR_CONDITIONS = ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure", "NetworkUnavailable")


@dataclass(frozen=True)
class NodeSettings:
    name: str
    provider: str
    operating_system: str = "linux"
    internal_ip: str = "127.0.0.1"
    daemon_port: int = 10250
    taints: tuple[dict[str, str], ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    status_interval: float = 60.0


def default_node(settings: NodeSettings) -> dict[str, Any]:
    """The Node before the provider adds capacity and the like."""
    os_name = settings.operating_system
    arch = _ARCH.get(platform.machine(), platform.machine())
    labels = {
        "type": "virtual-kubelet",
        "kubernetes.io/role": "agent",
        "kubernetes.io/hostname": settings.name,
        "kubernetes.io/os": os_name,
        "beta.kubernetes.io/os": os_name,
        "kubernetes.io/arch": arch,
        "beta.kubernetes.io/arch": arch,
        "alpha.service-controller.kubernetes.io/exclude-balancer": "true",
        "node.kubernetes.io/exclude-from-external-load-balancers": "true",
        **settings.labels,
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": settings.name, "labels": labels},
        "spec": {"taints": [dict(t) for t in settings.taints]},
        "status": {
            "capacity": {"cpu": "0", "memory": "0", "pods": "0"},
            "allocatable": {"cpu": "0", "memory": "0", "pods": "0"},
            "addresses": [
                {"type": "InternalIP", "address": settings.internal_ip},
                {"type": "Hostname", "address": settings.name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": settings.daemon_port}},
            "nodeInfo": {
                "kubeletVersion": KUBELET_VERSION,
                "operatingSystem": os_name,
                "architecture": arch,
                "containerRuntimeVersion": "",
                "kernelVersion": "",
                "osImage": "",
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
            },
            "conditions": [
                _condition("Ready", "True", "KubeletReady", "virtual-kubelet is ready"),
                _condition("MemoryPressure", "False", "KubeletHasSufficientMemory", ""),
                _condition("DiskPressure", "False", "KubeletHasNoDiskPressure", ""),
                _condition("PIDPressure", "False", "KubeletHasSufficientPID", ""),
                _condition("NetworkUnavailable", "False", "RouteCreated", ""),
            ],
        },
    }


def _condition(kind: str, status: str, reason: str, message: str) -> dict[str, str]:
    return {"type": kind, "status": status, "reason": reason, "message": message}


def merge_taints(
    existing: list[dict[str, Any]], desired: list[dict[str, Any]], previously_managed: set[str]
) -> list[dict[str, Any]]:
    """Taints after adoption: ours as desired, others' kept in place, ours no longer wanted gone."""
    ours = {(t["key"], t["effect"]): t for t in desired}
    drop = previously_managed | {t["key"] for t in desired}
    merged = []
    for taint in existing:
        mine = ours.pop((taint["key"], taint["effect"]), None)
        if mine is not None:
            merged.append(mine)
        elif taint["key"] not in drop:
            merged.append(taint)
    return merged + list(ours.values())


class NodeController:
    def __init__(
        self,
        client: KubeClient,
        provider: Provider,
        settings: NodeSettings,
        health: ProviderHealth,
    ) -> None:
        self.client = client
        self.provider = provider
        self.settings = settings
        self.health = health
        self.node: dict[str, Any] | None = None  # the desired node (ours)
        self.uid: str | None = None
        self._dirty = asyncio.Event()
        self._deleted = asyncio.Event()
        self._transitions: dict[str, tuple[str, str]] = {}

    def node_uid(self) -> str | None:
        return self.uid

    async def build(self) -> dict[str, Any]:
        node = default_node(self.settings)
        await self.provider.configure_node(node)
        return node

    async def register(self) -> dict[str, Any]:
        """Create the Node, or adopt an existing one; then write its status. Returns the server's
        view of the node."""
        self.node = await self.build()
        url = path("v1", "nodes", None, self.settings.name)
        try:
            current = await self.client.get(url)
        except ApiError as exc:
            if not exc.not_found:
                raise
            current = None
        if current is None:
            body = deep_copy(self.node)
            body["metadata"].setdefault("annotations", {})[MANAGED_TAINTS] = ",".join(
                sorted({t["key"] for t in self.settings.taints})
            )
            try:
                current = await self.client.create(path("v1", "nodes"), body)
                log.info("registered node %s", self.settings.name)
            except ApiError as exc:
                if not exc.already_exists:
                    raise
                current = await self.client.get(url)
        current = await self._adopt(current)
        self.uid = current["metadata"]["uid"]
        return await self.write_status()

    async def _adopt(self, current: dict[str, Any]) -> dict[str, Any]:
        """Re-apply our labels and taints to an existing Node, keeping everything else."""
        assert self.node is not None
        url = path("v1", "nodes", None, self.settings.name)
        for _ in range(5):
            meta = current["metadata"]
            managed_before = {
                k for k in meta.get("annotations", {}).get(MANAGED_TAINTS, "").split(",") if k
            }
            taints = merge_taints(
                current.get("spec", {}).get("taints", []),
                list(self.node["spec"]["taints"]),
                managed_before,
            )
            labels_ok = all(
                meta.get("labels", {}).get(k) == v
                for k, v in self.node["metadata"]["labels"].items()
            )
            managed_now = ",".join(sorted({t["key"] for t in self.settings.taints}))
            if (
                labels_ok
                and taints == current.get("spec", {}).get("taints", [])
                and meta.get("annotations", {}).get(MANAGED_TAINTS) == managed_now
            ):
                return current
            patch = {
                "metadata": {
                    "resourceVersion": meta["resourceVersion"],  # optimistic: conflict on a race
                    "labels": self.node["metadata"]["labels"],
                    "annotations": {MANAGED_TAINTS: managed_now},
                },
                "spec": {"taints": taints or None},
            }
            try:
                updated: dict[str, Any] = await self.client.patch(url, patch)
                log.info(
                    "adopted existing node %s (labels and taints re-applied)", self.settings.name
                )
                return updated
            except ApiError as exc:
                if not exc.conflict:
                    raise
                current = await self.client.get(url)
        raise ApiError(
            409, "Conflict", f"node {self.settings.name} kept changing while adopting it"
        )

    def _status_patch(self) -> dict[str, Any]:
        assert self.node is not None
        status = deep_copy(self.node["status"])
        now = rfc3339()
        for condition in status.get("conditions", []):
            if condition["type"] == "Ready" and not self.health.healthy:
                condition.update(
                    status="False", reason="ProviderUnhealthy", message=self.health.message
                )
            key = condition["type"]
            previous = self._transitions.get(key)
            if previous is None or previous[0] != condition["status"]:
                self._transitions[key] = (condition["status"], now)
            condition["lastHeartbeatTime"] = now
            condition["lastTransitionTime"] = self._transitions[key][1]
        # Addresses merge by type in a strategic patch; replace them wholesale instead so an
        # address the provider dropped disappears.
        status["addresses"] = [{"$patch": "replace"}, *status.get("addresses", [])]
        return {"status": status}

    async def write_status(self) -> dict[str, Any]:
        url = path("v1", "nodes", None, self.settings.name, "status")
        result: dict[str, Any] = await self.client.patch(url, self._status_patch(), "strategic")
        return result

    def status_changed(self) -> None:
        """Ask for a status write soon (provider push, health change)."""
        self._dirty.set()

    async def run(self) -> None:
        """Keep the Node present and its status fresh until cancelled."""
        watcher = Reflector(
            self.client,
            path("v1", "nodes"),
            name="node",
            field_selector=f"metadata.name={self.settings.name}",
            handler=CallbackHandler(on_delete=lambda _: self._deleted.set()),
        )
        if "notify_node_status" in Capabilities.of(self.provider):
            self.provider.notify_node_status(self._on_provider_node)
        async with asyncio.TaskGroup() as group:
            group.create_task(watcher.run())
            group.create_task(self._status_loop())
            group.create_task(self._health_loop())

    def _on_provider_node(self, node: dict[str, Any]) -> None:
        self.node = deep_copy(node)
        self._dirty.set()

    async def _health_loop(self) -> None:
        while True:
            await self.health.changed.wait()
            self.health.changed.clear()
            self._dirty.set()

    async def _status_loop(self) -> None:
        while True:
            waits = [
                asyncio.ensure_future(self._dirty.wait()),
                asyncio.ensure_future(self._deleted.wait()),
            ]
            try:
                await asyncio.wait(
                    waits,
                    timeout=self.settings.status_interval,
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                for w in waits:
                    w.cancel()
            self._dirty.clear()
            if self._deleted.is_set():
                self._deleted.clear()
                log.warning("node %s was deleted; registering it again", self.settings.name)
                await self._retry(self.register)
                continue
            if not self.health.healthy and self._transitions.get("Ready", ("",))[0] == "False":
                continue  # said NotReady once; no heartbeats while the provider is down
            try:
                await self.write_status()
            except ApiError as exc:
                if exc.not_found:
                    log.warning("node %s is gone; registering it again", self.settings.name)
                    await self._retry(self.register)
                else:
                    log.warning("node status update failed: %s", exc)

    async def _retry(self, action: Any) -> None:
        delay = 0.5
        while True:
            try:
                await action()
                return
            except ApiError as exc:
                log.warning("node registration failed: %s; retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30)
