"""What the virtual node offers: the target's allocatable CPU, memory and pods summed over its
Ready, schedulable nodes, minus what the target's other pods request (ours are counted by the
source cluster's scheduler already); or what a ResourceQuota in the target leaves (hard minus
used, ours excepted); or a fixed override from the config."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from ...sdk import format_quantity, parse_quantity
from ...sdk.kube_api import KubeClient, path
from .naming import OWNER_LABEL

__all__ = ["quota_capacity", "target_capacity"]

_RESOURCES = ("cpu", "memory", "pods")


def _ready(node: dict[str, Any]) -> bool:
    if (node.get("spec") or {}).get("unschedulable"):
        return False
    conditions = (node.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _requests(pod: dict[str, Any]) -> dict[str, Decimal]:
    total = {name: Decimal(0) for name in _RESOURCES}
    for container in pod["spec"].get("containers") or []:
        requests = (container.get("resources") or {}).get("requests") or {}
        for name in ("cpu", "memory"):
            if name in requests:
                total[name] += parse_quantity(requests[name])
    total["pods"] = Decimal(1)
    return total


async def target_capacity(target: KubeClient, owner: str, exclude_node: str) -> dict[str, str]:
    """Free capacity of the target cluster, as node resource quantities."""
    nodes = await target.get(path("v1", "nodes"))
    ready = {
        n["metadata"]["name"]
        for n in nodes.get("items") or []
        if _ready(n) and n["metadata"]["name"] != exclude_node
    }
    free = {name: Decimal(0) for name in _RESOURCES}
    for node in nodes.get("items") or []:
        if node["metadata"]["name"] in ready:
            allocatable = (node.get("status") or {}).get("allocatable") or {}
            for name in _RESOURCES:
                if name in allocatable:
                    free[name] += parse_quantity(allocatable[name])
    pods = await target.get(
        path("v1", "pods"),
        {
            "fieldSelector": "status.phase!=Succeeded,status.phase!=Failed",
            "labelSelector": f"{OWNER_LABEL}!={owner}",
        },
    )
    for pod in pods.get("items") or []:
        if pod["spec"].get("nodeName") in ready:
            for name, amount in _requests(pod).items():
                free[name] -= amount
    return {name: format_quantity(max(value, Decimal(0))) for name, value in free.items()}


#: node resource -> the ResourceQuota keys that bound it, most specific first.
_QUOTA_KEYS = {
    "cpu": ("requests.cpu", "cpu", "limits.cpu"),
    "memory": ("requests.memory", "memory", "limits.memory"),
    "pods": ("pods", "count/pods"),
}


async def quota_capacity(
    target: KubeClient, owner: str, namespace: str, name: str
) -> dict[str, str]:
    """What ResourceQuota `namespace/name` in the target leaves, plus what our own pods there
    use (the source scheduler counts those itself): a resource it does not bound is 0."""
    quota = await target.get(path("v1", "resourcequotas", namespace, name))
    status = quota.get("status") or {}
    hard, used = status.get("hard") or {}, status.get("used") or {}
    ours = await target.get(
        path("v1", "pods", namespace),
        {
            "fieldSelector": "status.phase!=Succeeded,status.phase!=Failed",
            "labelSelector": f"{OWNER_LABEL}={owner}",
        },
    )
    mine = {resource: Decimal(0) for resource in _RESOURCES}
    for pod in ours.get("items") or []:
        for resource, amount in _requests(pod).items():
            mine[resource] += amount
    offered: dict[str, str] = {}
    for resource, keys in _QUOTA_KEYS.items():
        key = next((k for k in keys if k in hard), None)
        if key is None:
            offered[resource] = "0"
            continue
        left = parse_quantity(hard[key]) - parse_quantity(used.get(key, "0")) + mine[resource]
        offered[resource] = format_quantity(max(left, Decimal(0)))
    return offered
