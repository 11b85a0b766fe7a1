"""Statistics from /proc in the kubelet's stats/v1alpha1 Summary shape.

A container is the process group of its command (every process whose pgrp is the recorded pgid):
CPU is the sum of their utime+stime+cutime+cstime (what reaped children used is counted by the
reaper), kept monotonic; usageNanoCores is the rate between two calls (never 0 for a live
container, as metrics-server drops zeros); memory is their summed RSS. The GPUs a container holds
are its `accelerators` (accelerators.py). The node comes from /proc/stat, /proc/meminfo and
statvfs of the state directory. Everything here is blocking file reading: call `sample` in a
thread. It never signals or changes a process.
"""

from __future__ import annotations

import datetime
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...sdk import rfc3339
from .accelerators import Accelerators

_TICK_NS = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class ContainerRef:
    name: str
    pgid: int
    started_at: float
    #: Distinguishes runs, so a restart does not look like negative CPU use.
    run_key: str
    #: The GPUs the run holds (reported as its `accelerators`).
    gpus: tuple[str, ...] = ()


@dataclass(frozen=True)
class PodRef:
    name: str
    namespace: str
    uid: str
    start_time: str
    containers: list[ContainerRef] = field(default_factory=list)


def _groups(wanted: set[int]) -> dict[int, tuple[int, int]]:
    """pgid -> (cpu ticks, rss pages) summed over the live processes of each wanted group."""
    totals: dict[int, tuple[int, int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) < 22:
            continue
        pgid = int(fields[2])
        if pgid not in wanted:
            continue
        ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))
        rss = max(int(fields[21]), 0)
        cpu, memory = totals.get(pgid, (0, 0))
        totals[pgid] = (cpu + ticks, memory + rss)
    return totals


def _meminfo() -> dict[str, int]:
    values: dict[str, int] = {}
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return values
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[name] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return values


def _node_cpu_ns() -> tuple[int, float]:
    """Busy CPU time of the host (all cores) and the boot time."""
    busy, boot = 0, time.time() - time.monotonic()
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            parts = line.split()
            if parts and parts[0] == "cpu":
                values = [int(v) for v in parts[1:9]]
                busy = sum(values) - values[3] - values[4]  # without idle and iowait
            elif parts and parts[0] == "btime":
                boot = float(parts[1])
    except (OSError, ValueError):
        pass
    return busy * _TICK_NS, boot


def memory_total() -> int:
    return _meminfo().get("MemTotal", 0)


class Stats:
    """Keeps the previous samples, for rates and monotonic counters."""

    def __init__(self, state_dir: Path, accelerators: Accelerators | None = None) -> None:
        self.state_dir = state_dir
        self.accelerators = accelerators if accelerators is not None else Accelerators()
        self._cpu: dict[str, tuple[float, int]] = {}  # run key / "node" -> (time, cpu ns)

    def _rate(self, key: str, now: float, cpu_ns: int, since: float) -> tuple[int, int]:
        """(monotonic cpu ns, nanocores) for `key`."""
        previous = self._cpu.get(key)
        if previous is not None:
            cpu_ns = max(cpu_ns, previous[1])
            then, before = previous
        else:
            then, before = since, 0
        elapsed = max(now - then, 1e-3)
        self._cpu[key] = (now, cpu_ns)
        return cpu_ns, int((cpu_ns - before) / elapsed)

    def sample(self, node_name: str, pods: list[PodRef]) -> dict[str, Any]:
        now = time.time()
        stamp = rfc3339(datetime.datetime.fromtimestamp(now, datetime.UTC))
        wanted = {c.pgid for pod in pods for c in pod.containers}
        groups = _groups(wanted) if wanted else {}
        seen: set[str] = {"node"}
        pod_stats = []
        for pod in pods:
            containers: list[dict[str, Any]] = []
            for ref in pod.containers:
                ticks, pages = groups.get(ref.pgid, (0, 0))
                seen.add(ref.run_key)
                cpu, rate = self._rate(ref.run_key, now, ticks * _TICK_NS, ref.started_at)
                memory = pages * _PAGE
                containers.append(
                    {
                        "name": ref.name,
                        "startTime": rfc3339(
                            datetime.datetime.fromtimestamp(ref.started_at, datetime.UTC)
                        ),
                        "cpu": {
                            "time": stamp,
                            "usageNanoCores": max(rate, 1),
                            "usageCoreNanoSeconds": max(cpu, 1),
                        },
                        "memory": {
                            "time": stamp,
                            "workingSetBytes": max(memory, 1),
                            "usageBytes": max(memory, 1),
                            "rssBytes": memory,
                        },
                    }
                )
                if ref.gpus:
                    containers[-1]["accelerators"] = self.accelerators.read(list(ref.gpus))
            pod_stats.append(
                {
                    "podRef": {"name": pod.name, "namespace": pod.namespace, "uid": pod.uid},
                    "startTime": pod.start_time,
                    "containers": containers,
                    "cpu": {
                        "time": stamp,
                        "usageNanoCores": sum(c["cpu"]["usageNanoCores"] for c in containers),
                        "usageCoreNanoSeconds": sum(
                            c["cpu"]["usageCoreNanoSeconds"] for c in containers
                        ),
                    },
                    "memory": {
                        "time": stamp,
                        "workingSetBytes": sum(c["memory"]["workingSetBytes"] for c in containers),
                        "usageBytes": sum(c["memory"]["usageBytes"] for c in containers),
                        "rssBytes": sum(c["memory"]["rssBytes"] for c in containers),
                    },
                }
            )
        for key in set(self._cpu) - seen:
            del self._cpu[key]  # runs that ended
        node_cpu, boot = _node_cpu_ns()
        cpu, rate = self._rate("node", now, node_cpu, boot)
        info = _meminfo()
        total = info.get("MemTotal", 0)
        available = info.get("MemAvailable", info.get("MemFree", 0))
        node: dict[str, Any] = {
            "nodeName": node_name,
            "startTime": rfc3339(datetime.datetime.fromtimestamp(boot, datetime.UTC)),
            "cpu": {"time": stamp, "usageNanoCores": max(rate, 1), "usageCoreNanoSeconds": cpu},
            "memory": {
                "time": stamp,
                "availableBytes": available,
                "usageBytes": max(total - info.get("MemFree", 0), 1),
                "workingSetBytes": max(total - available, 1),
                "rssBytes": max(total - available - info.get("Cached", 0), 0),
            },
        }
        try:
            fs = os.statvfs(self.state_dir)
            node["fs"] = {
                "time": stamp,
                "capacityBytes": fs.f_blocks * fs.f_frsize,
                "availableBytes": fs.f_bavail * fs.f_frsize,
                "usedBytes": (fs.f_blocks - fs.f_bfree) * fs.f_frsize,
                "inodes": fs.f_files,
                "inodesFree": fs.f_ffree,
                "inodesUsed": fs.f_files - fs.f_ffree,
            }
        except OSError:
            pass
        return {"node": node, "pods": pod_stats}
