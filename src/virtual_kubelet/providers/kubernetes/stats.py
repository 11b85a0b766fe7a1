"""`/stats/summary` for the virtual node, built from what the target cluster measures of our remote
pods, under their source names (namespace, name and UID), so `kubectl top` and
`kubectl get --raw /api/v1/nodes/<node>/proxy/stats/summary` in the source show them.

Where the target serves the metrics API (`metrics.k8s.io`, metrics-server), one list of our pods'
PodMetrics (by the owner label) gives each container's CPU rate and working set; the cumulative
CPU counter the kubelet reports (and `/metrics/resource` needs) is integrated from those rates
over the time between two summaries. Otherwise the summaries of the target nodes that run our pods
are read through the API server's node proxy (`/api/v1/nodes/<n>/proxy/stats/summary`, what the
target's own kubelets report, counters included) and only our pods kept. The node's figures are
the sums over our pods, its CPU counter kept monotonic as pods come and go.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from ...sdk import Pod, QuantityError, deep_copy, parse_quantity, rfc3339
from ...sdk.kube_api import ApiError, KubeClient
from .naming import OWNER_LABEL

__all__ = ["RemoteStats", "from_pod_metrics", "rename_pods"]

log = logging.getLogger(__name__)

METRICS_PODS = "/apis/metrics.k8s.io/v1beta1/pods"
#: How long to trust "the target has no metrics API" before asking again.
METRICS_RECHECK_SECONDS = 300.0
NODE_TIMEOUT = 10.0


def _quantity(value: object, scale: int = 1) -> int:
    try:
        return int(parse_quantity(str(value or "0")) * Decimal(scale))
    except QuantityError:
        return 0


def from_pod_metrics(item: dict[str, Any]) -> dict[str, Any]:
    """One PodMetrics as a summary's PodStats (podRef as the target names the pod; no CPU
    counters: RemoteStats integrates them)."""
    meta = item.get("metadata") or {}
    when = str(item.get("timestamp") or rfc3339())
    containers: list[dict[str, Any]] = []
    cpu = memory = 0
    for container in item.get("containers") or []:
        usage = container.get("usage") or {}
        rate, working = _quantity(usage.get("cpu"), 10**9), _quantity(usage.get("memory"))
        cpu, memory = cpu + rate, memory + working
        containers.append(
            {
                "name": str(container.get("name") or ""),
                "cpu": {"time": when, "usageNanoCores": rate},
                "memory": {"time": when, "workingSetBytes": working},
            }
        )
    return {
        "podRef": {"name": meta.get("name", ""), "namespace": meta.get("namespace", "")},
        "containers": containers,
        "cpu": {"time": when, "usageNanoCores": cpu},
        "memory": {"time": when, "workingSetBytes": memory},
    }


def rename_pods(pods: list[dict[str, Any]], views: dict[tuple[str, str], Pod]) -> list[Any]:
    """The PodStats of our remote pods only (`views`: the source view of each, by the remote
    namespace and name), with the source pod's namespace, name and UID in podRef."""
    kept = []
    for stats in pods:
        ref = stats.get("podRef") or {}
        view = views.get((str(ref.get("namespace")), str(ref.get("name"))))
        if view is None:
            continue
        renamed = deep_copy(stats)
        meta = view["metadata"]
        renamed["podRef"] = {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid", ""),
        }
        kept.append(renamed)
    return kept


class RemoteStats:
    """Summaries of this node's remote pods, from the target's metrics API or its kubelets."""

    def __init__(
        self,
        target: KubeClient,
        owner: str,
        node_name: str,
        remotes: Callable[[], list[Pod]],
        view_of: Callable[[Pod], Pod],
    ) -> None:
        self._target = target
        self._owner = owner
        self._node_name = node_name
        self._remotes = remotes
        self._view_of = view_of
        self._started = rfc3339()
        #: Monotonic time until which the metrics API is taken to be absent.
        self._no_metrics_until = 0.0
        #: (source pod UID, container) -> (monotonic time, CPU ns): integrated counters.
        self._integrated: dict[tuple[str, str], tuple[float, int]] = {}
        #: Source pod UID -> its last CPU counter; and the node's counter built from them.
        self._pod_cpu: dict[str, int] = {}
        self._node_cpu = 0
        self._warned: set[str] = set()

    async def summary(self) -> dict[str, Any]:
        remotes = self._remotes()
        views = {
            (str(r["metadata"]["namespace"]), str(r["metadata"]["name"])): self._view_of(r)
            for r in remotes
        }
        pods: list[Any] | None = None
        if views and time.monotonic() >= self._no_metrics_until:
            pods = await self._from_metrics(views)
        if pods is None:
            pods = await self._from_kubelets(remotes, views)
        return {"node": self._node(pods), "pods": pods}

    # --- the metrics API ------------------------------------------------------------------------

    async def _from_metrics(self, views: dict[tuple[str, str], Pod]) -> list[Any] | None:
        try:
            listed = await self._target.request(
                "GET",
                METRICS_PODS,
                params={"labelSelector": f"{OWNER_LABEL}={self._owner}"},
                timeout=NODE_TIMEOUT,
            )
        except ApiError as exc:
            if exc.status in (403, 404):
                # No metrics API (or not for us): the kubelets' summaries, asked again later.
                self._no_metrics_until = time.monotonic() + METRICS_RECHECK_SECONDS
            else:
                self._warn("metrics", f"the target's metrics API failed ({exc}); using kubelets")
            return None
        pods = rename_pods([from_pod_metrics(i) for i in listed.get("items") or []], views)
        self._integrate(pods)
        return pods

    def _integrate(self, pods: list[Any]) -> None:
        """CPU counters from rates: each container's grows by its rate times the time since the
        last summary (what metrics-server's rate then reads back)."""
        now = time.monotonic()
        seen: dict[tuple[str, str], tuple[float, int]] = {}
        for stats in pods:
            uid = str(stats["podRef"]["uid"])
            total = 0
            for container in stats["containers"]:
                key = (uid, str(container["name"]))
                rate = int(container["cpu"]["usageNanoCores"])
                last_time, counter = self._integrated.get(key, (now, 0))
                counter += int(rate * (now - last_time))
                seen[key] = (now, counter)
                container["cpu"]["usageCoreNanoSeconds"] = counter
                total += counter
            stats["cpu"]["usageCoreNanoSeconds"] = total
        self._integrated = seen

    # --- the target's kubelets ------------------------------------------------------------------

    async def _from_kubelets(
        self, remotes: list[Pod], views: dict[tuple[str, str], Pod]
    ) -> list[Any]:
        nodes = sorted({str((r.get("spec") or {}).get("nodeName") or "") for r in remotes} - {""})
        answers = await asyncio.gather(*(self._node_summary(n) for n in nodes))
        pods: list[Any] = []
        for summary in answers:
            pods += rename_pods(summary.get("pods") or [], views)
        return pods

    async def _node_summary(self, node: str) -> dict[str, Any]:
        try:
            answer = await self._target.request(
                "GET", f"/api/v1/nodes/{node}/proxy/stats/summary", timeout=NODE_TIMEOUT
            )
        except ApiError as exc:
            self._warn(node, f"no stats from target node {node}: {exc}")
            return {}
        self._warned.discard(node)
        return answer if isinstance(answer, dict) else {}

    def _warn(self, key: str, message: str) -> None:
        if key not in self._warned:  # once per failing source, not once per scrape
            self._warned.add(key)
            log.warning("%s", message)

    # --- the node ---------------------------------------------------------------------------------

    def _node(self, pods: list[Any]) -> dict[str, Any]:
        now = rfc3339()
        counters: dict[str, int] = {}
        for stats in pods:
            counters[str(stats["podRef"]["uid"])] = int(
                (stats.get("cpu") or {}).get("usageCoreNanoSeconds") or 0
            )
        for uid, counter in counters.items():
            self._node_cpu += max(0, counter - self._pod_cpu.get(uid, 0))
        self._pod_cpu = counters

        def total(section: str, field: str) -> int:
            return sum(int((s.get(section) or {}).get(field) or 0) for s in pods)

        return {
            "nodeName": self._node_name,
            "startTime": self._started,
            "cpu": {
                "time": now,
                "usageNanoCores": total("cpu", "usageNanoCores"),
                "usageCoreNanoSeconds": self._node_cpu,
            },
            "memory": {
                "time": now,
                "workingSetBytes": total("memory", "workingSetBytes"),
                "usageBytes": total("memory", "usageBytes"),
            },
        }
