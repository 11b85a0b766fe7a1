"""The node as the runtime shows it: `Version` for nodeInfo, `Status` for health (RuntimeReady and
NetworkReady, whose failures become the node's NotReady reason), capacity from the config or from
this host."""

from __future__ import annotations

import os
from typing import Any

from ...sdk import Node
from .client import CriClient, CriError, cri
from .config import CriConfig


class RuntimeNotReady(RuntimeError):
    """The runtime answered but says it cannot run pods (or did not answer)."""


def host_memory() -> str:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    return f"{int(line.split()[1])}Ki"
    except OSError:
        pass
    return "0"


async def runtime_version(client: CriClient) -> Any:
    return await client.runtime("Version", cri.VersionRequest())


async def check_status(client: CriClient, endpoint: str) -> None:
    """Raise RuntimeNotReady, naming the endpoint and the runtime's reason, unless the runtime
    answers and both RuntimeReady and NetworkReady are true."""
    try:
        reply = await client.runtime("Status", cri.StatusRequest())
    except CriError as exc:
        raise RuntimeNotReady(
            f"container runtime at {endpoint} is unreachable: {exc.details or exc}"
        ) from None
    problems = [
        f"{c.type}=false ({c.reason}: {c.message})".replace(" ()", "")
        for c in reply.status.conditions
        if not c.status
    ]
    if problems:
        raise RuntimeNotReady(
            f"container runtime at {endpoint} is not ready: {'; '.join(problems)}"
        )


def fill_node(node: Node, config: CriConfig, version: Any | None) -> None:
    capacity = {
        "cpu": config.capacity.cpu or str(os.cpu_count() or 1),
        "memory": config.capacity.memory or host_memory(),
        "pods": str(config.capacity.pods),
    }
    status = node.setdefault("status", {})
    status.setdefault("capacity", {}).update(capacity)
    status.setdefault("allocatable", {}).update(capacity)
    if version is not None:
        status.setdefault("nodeInfo", {})["containerRuntimeVersion"] = (
            f"{version.runtime_name}://{version.runtime_version}"
        )
