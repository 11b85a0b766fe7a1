"""Removing a virtual node for good (`virtual-kubelet remove-node`, the chart's pre-delete hook).

A kubelet never deletes its own Node when it stops, and neither does this agent: a restart, a
rolling update or a crash must leave the node and its pods in place for the next agent to adopt.
Uninstalling is different, and only the operator knows it is happening, so the removal is a
separate step, run while the agent still serves the node, in this order:

1. cordon the node, so nothing new is scheduled onto it;
2. delete the pods bound to it and wait until the agent has stopped them in the provider and they
   are gone (pods still there after the drain timeout are deleted with grace period 0: their
   backend resources may then be left behind, and the log names them);
3. scale the agent's Deployment to 0 and wait until its pods are gone, so that no agent is left to
   renew the node's heartbeat;
4. delete the Node; its Lease in kube-node-lease goes with it (owner reference).

Each step is idempotent: a rerun after a failure, or a node that is already gone, is fine.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ..kube.client import KubeClient, path
from ..kube.errors import ApiError

log = logging.getLogger(__name__)


class RemovalError(RuntimeError):
    """A step could not be done (a refused request, a timeout); the message says which."""


@dataclass(frozen=True)
class Removal:
    node: str
    deployment: tuple[str, str] | None = None  # (namespace, name) of the agent's Deployment
    drain_timeout: float = 120.0
    stop_timeout: float = 120.0
    poll_interval: float = 1.0


async def _until(
    check: Callable[[], Awaitable[bool]], timeout: float, interval: float, what: str
) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if await check():
            return True
        if time.monotonic() >= deadline:
            log.warning("timed out after %.0f s waiting for %s", timeout, what)
            return False
        await asyncio.sleep(interval)


async def _ignore_missing(call: Awaitable[Any]) -> Any:
    try:
        return await call
    except ApiError as exc:
        if exc.not_found:
            return None
        raise


async def _pods_on(client: KubeClient, node: str) -> list[dict[str, Any]]:
    listing = await client.get(path("v1", "pods"), {"fieldSelector": f"spec.nodeName={node}"})
    return list(listing.get("items") or [])


def _name(pod: dict[str, Any]) -> str:
    return f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"


async def drain(client: KubeClient, removal: Removal) -> list[str]:
    """Cordon and drain the node; returns the pods that had to be deleted with grace period 0."""
    node_path = path("v1", "nodes", name=removal.node)
    if await _ignore_missing(client.patch(node_path, {"spec": {"unschedulable": True}})) is None:
        log.info("node %s does not exist: nothing to drain", removal.node)
        return []
    pods = await _pods_on(client, removal.node)
    log.info("node %s cordoned; deleting its %d pods", removal.node, len(pods))
    for pod in pods:
        meta = pod["metadata"]
        await _ignore_missing(client.delete(path("v1", "pods", meta["namespace"], meta["name"])))

    async def drained() -> bool:
        return not await _pods_on(client, removal.node)

    if await _until(drained, removal.drain_timeout, removal.poll_interval, "the pods to stop"):
        return []
    forced = []
    for pod in await _pods_on(client, removal.node):
        meta = pod["metadata"]
        forced.append(_name(pod))
        await _ignore_missing(
            client.delete(
                path("v1", "pods", meta["namespace"], meta["name"]), {"gracePeriodSeconds": 0}
            )
        )
    log.warning("pods not stopped within the drain timeout, deleted without grace: %s", forced)
    return forced


async def stop_agents(client: KubeClient, removal: Removal) -> None:
    """Scale the agent's Deployment to 0 and wait until its pods are gone."""
    if removal.deployment is None:
        return
    namespace, name = removal.deployment
    deployment = await _ignore_missing(client.get(path("apps/v1", "deployments", namespace, name)))
    if deployment is None:
        log.info("deployment %s/%s does not exist: no agent to stop", namespace, name)
        return
    await client.patch(
        path("apps/v1", "deployments", namespace, name, "scale"), {"spec": {"replicas": 0}}
    )
    labels = deployment["spec"]["selector"].get("matchLabels") or {}
    selector = ",".join(f"{key}={value}" for key, value in sorted(labels.items()))

    async def stopped() -> bool:
        listing = await client.get(path("v1", "pods", namespace), {"labelSelector": selector})
        return not listing.get("items")

    if not await _until(stopped, removal.stop_timeout, removal.poll_interval, "the agents"):
        raise RemovalError(
            f"the pods of deployment {namespace}/{name} did not stop within "
            f"{removal.stop_timeout:.0f} s: the node is left in place"
        )
    log.info("deployment %s/%s scaled to 0, its pods are gone", namespace, name)


async def remove(client: KubeClient, removal: Removal) -> list[str]:
    """The whole removal; returns the pods deleted without grace (see `drain`)."""
    try:
        forced = await drain(client, removal)
        await stop_agents(client, removal)
        node_path = path("v1", "nodes", name=removal.node)
        await _ignore_missing(client.delete(node_path))

        async def gone() -> bool:
            return await _ignore_missing(client.get(node_path)) is None

        if not await _until(gone, 60, removal.poll_interval, f"node {removal.node} to go"):
            raise RemovalError(f"node {removal.node} is still there after its deletion")
    except ApiError as exc:
        raise RemovalError(f"removing node {removal.node}: {exc}") from None
    log.info("node %s removed", removal.node)
    return forced
