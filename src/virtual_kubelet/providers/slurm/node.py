"""The node's capacity from `sinfo`: CPUs, memory and GPUs (gres) of the cluster's usable nodes,
those of the configured partition only when one is set; whether any node can run jobs at all
(the node's Ready); and whether new jobs can start now, with Slurm's reason when not (the
partition DOWN, DRAIN or INACTIVE, its nodes down, drained or in maintenance)."""

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
    #: The partition's availability (%a): up, down, drain or inact.
    available: str = "up"
    #: Why the node is down or drained (%E, as `scontrol update ... reason=` set it); "" if none.
    reason: str = ""
    #: Whether the partition is the default one (marked * by sinfo).
    default: bool = False


#: What `_read_nodes` asks sinfo for; the reason last, as it is free text.
SINFO_FORMAT = "%N|%c|%m|%G|%t|%P|%a|%E"


def parse_sinfo(text: str) -> list[SlurmNode]:
    """Lines of `sinfo --noheader --Node --format=SINFO_FORMAT` (the first six fields alone are
    enough: partition availability and reason are then unknown)."""
    nodes = []
    for line in text.splitlines():
        parts = line.strip().split("|", 7)
        if len(parts) < 6:
            continue
        name, cpus, memory, gres, state, partition = parts[:6]
        available = parts[6].strip().lower() if len(parts) > 6 else "up"
        reason = parts[7].strip() if len(parts) > 7 else ""
        gpus = sum(int(n) for n in GPU_GRES.findall(gres))
        try:
            nodes.append(
                SlurmNode(
                    name,
                    int(cpus),
                    int(memory.rstrip("+")),
                    gpus,
                    state,
                    partition.rstrip("*"),
                    available or "up",
                    "" if reason.lower() == "none" else reason,
                    partition.endswith("*"),
                )
            )
        except ValueError:
            continue
    return nodes


#: Node states (sinfo's short form) in which no new job starts.
UNUSABLE = ("down", "drain", "drng", "fail", "maint", "inval", "futr", "unk")
#: Those in which no job runs at all: the running ones are lost too.
DEAD = ("down", "fail", "inval", "futr", "unk")


def _in(node: SlurmNode, partition: str | None) -> bool:
    return not partition or node.partition == partition


def _state(node: SlurmNode) -> str:
    return node.state.rstrip("*~#!%$@^-")


def usable(node: SlurmNode) -> bool:
    return _state(node) not in UNUSABLE


def _where(partition: str | None) -> str:
    return f" in partition {partition}" if partition else ""


def _states(nodes: list[SlurmNode]) -> str:
    """`a down* (Not responding), b drain (maintenance)`: the first five, each once."""
    shown: dict[str, str] = {}
    for n in nodes:
        shown.setdefault(n.name, f"{n.name} {n.state}" + (f" ({n.reason})" if n.reason else ""))
    return ", ".join(list(shown.values())[:5])


def unusable_reason(nodes: list[SlurmNode], partition: str | None) -> str | None:
    """Why no job can run at all (every node of the partition is down, failed or unknown; a
    drained node still runs its jobs), or None. The node is NotReady for this."""
    mine = [n for n in nodes if _in(n, partition)]
    if any(_state(n) not in DEAD for n in mine):
        return None
    if not mine:
        return f"Slurm has no node{_where(partition)}"
    return f"no usable Slurm node{_where(partition)} ({_states(mine)})"


PARTITION_REASONS = {
    "down": "SlurmPartitionDown",
    "drain": "SlurmPartitionDrain",
    "inact": "SlurmPartitionInactive",
    "inactive": "SlurmPartitionInactive",
}


def unavailable(nodes: list[SlurmNode], partition: str | None) -> tuple[str, str] | None:
    """(reason, message) when new jobs cannot start now, or None. With no partition configured,
    jobs go to the default one: its availability counts, and every node's state."""
    mine = [n for n in nodes if _in(n, partition)]
    checked = mine if partition else [n for n in nodes if n.default]
    closed = next((n for n in checked if n.available != "up"), None)
    if closed is not None:
        reason = PARTITION_REASONS.get(closed.available, "SlurmPartitionUnavailable")
        message = (
            f"Slurm partition {closed.partition} is {closed.available.upper()}: "
            "no new job starts there (running ones go on)"
        )
        return reason, message
    if any(usable(n) for n in mine):
        return None
    if not mine:
        return "SlurmNodesUnavailable", f"Slurm has no node{_where(partition)}"
    return (
        "SlurmNodesUnavailable",
        f"no Slurm node{_where(partition)} takes new jobs ({_states(mine)})",
    )


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
