"""The node's capacity from `sinfo`: CPUs, memory and GPUs (gres) of the cluster's usable nodes,
those of the configured partition only when one is set; and whether any node can run jobs."""

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


UNUSABLE = ("down", "drain", "drng", "fail", "maint", "inval", "futr", "unk")


def _in(node: SlurmNode, partition: str | None) -> bool:
    return not partition or node.partition == partition


def usable(node: SlurmNode) -> bool:
    return node.state.rstrip("*~#!%$@^-") not in UNUSABLE


def unusable_reason(nodes: list[SlurmNode], partition: str | None) -> str | None:
    """Why no job could run now (no node of the partition is usable), or None."""
    mine = [n for n in nodes if _in(n, partition)]
    if any(usable(n) for n in mine):
        return None
    where = f" in partition {partition}" if partition else ""
    if not mine:
        return f"Slurm has no node{where}"
    states = ", ".join(f"{n.name} {n.state}" for n in mine[:5])
    return f"no usable Slurm node{where} ({states})"


def capacity_of(nodes: list[SlurmNode], partition: str | None) -> dict[str, str]:
    """The sum over usable nodes (each counted once, down and drained ones left out)."""
    seen: dict[str, SlurmNode] = {}
    for node in nodes:
        if _in(node, partition) and usable(node):
            seen.setdefault(node.name, node)
    capacity = {
        "cpu": str(sum(n.cpus for n in seen.values())),
        "memory": f"{sum(n.memory_mb for n in seen.values())}Mi",
    }
    gpus = sum(n.gpus for n in seen.values())
    if gpus:
        capacity["nvidia.com/gpu"] = str(gpus)
    return capacity
