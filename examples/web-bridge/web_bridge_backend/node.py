"""What the backend says about its node: capacity, conditions and addresses (from `--node-file`,
re-read when it changes, else from this host), and the stats summary (CPU and memory of each
container's processes, read from /proc).
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .runtime import PodRecord, Run, rfc3339

log = logging.getLogger(__name__)

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def host_capacity() -> dict[str, str]:
    memory = os.sysconf("SC_PHYS_PAGES") * _PAGE
    return {"cpu": str(os.cpu_count() or 1), "memory": f"{memory // 1024}Ki", "pods": "110"}


class NodeInfo:
    """The node document (`capacity`, `allocatable`, `conditions`, `addresses`); `watch` calls
    `on_change` with it whenever `--node-file` changes."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._mtime: int | None = None
        self.doc: dict[str, Any] = {
            "capacity": host_capacity(),
            "conditions": [],
            "addresses": [],
        }
        self.reload()

    def reload(self) -> bool:
        """Read `--node-file` if it changed; True if the document changed."""
        if self.path is None:
            return False
        try:
            mtime = self.path.stat().st_mtime_ns
            if mtime == self._mtime:
                return False
            self._mtime = mtime
            doc = json.loads(self.path.read_text())
        except (OSError, ValueError) as exc:
            log.warning("node file %s not used: %s", self.path, exc)
            return False
        if not isinstance(doc, dict):
            log.warning("node file %s not used: not a JSON object", self.path)
            return False
        updated = {**self.doc, **{k: v for k, v in doc.items() if k in _NODE_FIELDS}}
        if updated == self.doc:
            return False
        self.doc = updated
        return True

    async def watch(self, on_change: Callable[[dict[str, Any]], None]) -> None:
        while True:
            await asyncio.sleep(1.0)  # a file has no change notification that is portable
            if self.reload():
                log.info("node file changed: pushing the node")
                on_change(self.doc)


_NODE_FIELDS = ("capacity", "allocatable", "conditions", "addresses")


class Stats:
    """stats/v1alpha1 Summary over the pods' processes; CPU rates from the previous sample."""

    def __init__(self) -> None:
        self.started = datetime.datetime.now(datetime.UTC)
        self._last: dict[int, tuple[float, int]] = {}  # process pid -> (monotonic, cpu ns)

    def summary(self, node_name: str, pods: list[PodRecord]) -> dict[str, Any]:
        stamp = rfc3339(datetime.datetime.now(datetime.UTC))
        by_session = _sessions()
        pod_stats = []
        total_rate = total_cpu = total_memory = 0
        for record in pods:
            containers = []
            for container in record.containers:
                run = container.current
                if run is None or run.process is None or run.finished is not None:
                    continue
                cpu_ns, memory = by_session.get(run.process.pid, (0, 0))
                rate = self._rate(run, cpu_ns)
                memory = max(memory, 1)  # metrics-server drops a live container at 0 bytes
                containers.append(
                    {
                        "name": container.name,
                        "startTime": rfc3339(run.started),
                        "cpu": {
                            "time": stamp,
                            "usageNanoCores": rate,
                            "usageCoreNanoSeconds": max(cpu_ns, 1),
                        },
                        "memory": {"time": stamp, "workingSetBytes": memory, "rssBytes": memory},
                    }
                )
            if not containers:
                continue
            rate = sum(c["cpu"]["usageNanoCores"] for c in containers)
            cpu = sum(c["cpu"]["usageCoreNanoSeconds"] for c in containers)
            memory = sum(c["memory"]["workingSetBytes"] for c in containers)
            total_rate, total_cpu, total_memory = (
                total_rate + rate,
                total_cpu + cpu,
                total_memory + memory,
            )
            meta = record.pod["metadata"]
            pod_stats.append(
                {
                    "podRef": {
                        "name": meta["name"],
                        "namespace": meta["namespace"],
                        "uid": meta.get("uid", ""),
                    },
                    "startTime": rfc3339(record.created),
                    "containers": containers,
                    "cpu": {"time": stamp, "usageNanoCores": rate, "usageCoreNanoSeconds": cpu},
                    "memory": {"time": stamp, "workingSetBytes": memory},
                }
            )
        return {
            "node": {
                "nodeName": node_name,
                "startTime": rfc3339(self.started),
                "cpu": {
                    "time": stamp,
                    "usageNanoCores": total_rate + 1,
                    "usageCoreNanoSeconds": total_cpu + 1,
                },
                "memory": {"time": stamp, "workingSetBytes": total_memory + 1},
            },
            "pods": pod_stats,
        }

    def _rate(self, run: Run, cpu_ns: int) -> int:
        assert run.process is not None
        pid = run.process.pid
        moment = asyncio.get_running_loop().time()
        before = self._last.get(pid)
        self._last[pid] = (moment, cpu_ns)
        if before is None or moment <= before[0]:
            elapsed = max((datetime.datetime.now(datetime.UTC) - run.started).total_seconds(), 1e-3)
            return max(int(cpu_ns / elapsed), 1)
        return max(int((cpu_ns - before[1]) / (moment - before[0])), 1)


def _sessions() -> dict[int, tuple[int, int]]:
    """session id -> (CPU time in ns, resident bytes) summed over that session's processes.
    Every container runs in its own session (its first process's pid), children included."""
    found: dict[int, tuple[int, int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        session = int(fields[3])
        cpu_ns = (int(fields[11]) + int(fields[12])) * 1_000_000_000 // _TICKS
        rss = int(fields[21]) * _PAGE
        cpu, memory = found.get(session, (0, 0))
        found[session] = (cpu + cpu_ns, memory + rss)
    return found
