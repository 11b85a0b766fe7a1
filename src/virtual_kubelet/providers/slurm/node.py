"""The node's capacity from `sinfo`: CPUs, memory and GPUs (gres) of the cluster's nodes, those
of the configured partition only when one is set."""

from __future__ import annotations

import re
from dataclasses import dataclass

GPU_GRES = re.compile(r"gpu(?::[^:(,]+)?:(\d+)")


@dataclass(frozen=True)
class SlurmNode:
    name: str
    cpus: int
    memory_mb: int
    gpus: int
    state: str
    partition: str


def parse_sinfo(text: str) -> list[SlurmNode]:
    """Lines of `sinfo --noheader --Node --format=%N|%c|%m|%G|%t|%P`."""
    nodes = []
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 6:
            continue
        name, cpus, memory, gres, state, partition = parts
        gpus = sum(int(n) for n in GPU_GRES.findall(gres))
        try:
            nodes.append(
                SlurmNode(
                    name, int(cpus), int(memory.rstrip("+")), gpus, state, partition.rstrip("*")
                )
            )
        except ValueError:
            continue
    return nodes


def capacity_of(nodes: list[SlurmNode], partition: str | None) -> dict[str, str]:
    """The sum over usable nodes (each counted once, down and drained ones left out)."""
    seen: dict[str, SlurmNode] = {}
    for node in nodes:
        if partition and node.partition != partition:
            continue
        if node.state.rstrip("*~#!%$@^-") in ("down", "drain", "drng", "fail", "maint"):
            continue
        seen.setdefault(node.name, node)
    capacity = {
        "cpu": str(sum(n.cpus for n in seen.values())),
        "memory": f"{sum(n.memory_mb for n in seen.values())}Mi",
    }
    gpus = sum(n.gpus for n in seen.values())
    if gpus:
        capacity["nvidia.com/gpu"] = str(gpus)
    return capacity
