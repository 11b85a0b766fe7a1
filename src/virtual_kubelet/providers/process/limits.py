"""Container resource limits through cgroup v1, where the kernel and our privileges allow it.

A container with `resources.limits.memory` gets `memory.limit_in_bytes` (swap included when the
kernel accounts it), one with `limits.cpu` gets a CFS quota, in the cgroup
`<hierarchy>/<agent's own cgroup>/<cgroup_parent>/<pod uid>/<container>`; for an agent in the root
cgroup that is `/sys/fs/cgroup/memory/virtual-kubelet/<pod uid>/<container>`. Nesting under the
agent's own cgroup keeps pods inside whatever limits the agent itself runs under. The shim moves
the command into these cgroups before exec.

What cannot be applied (no cgroup v1 hierarchy, not writable, cgroup v2 only) is skipped with one
log line per reason: a limit never fails a pod. Nothing here reads the container's env.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from pathlib import Path
from typing import Any

from ...sdk import QuantityError, parse_quantity

log = logging.getLogger(__name__)

CFS_PERIOD_US = 100_000
#: The kernel's smallest CFS quota.
MIN_QUOTA_US = 1000


def _hierarchies() -> dict[str, Path]:
    """controller -> the directory of *our* cgroup in its v1 hierarchy."""
    mounts: dict[str, Path] = {}
    try:
        mountinfo = Path("/proc/self/mountinfo").read_text()
        own = Path("/proc/self/cgroup").read_text()
    except OSError:
        return {}
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3 or tail[0] != "cgroup":
            continue
        for option in tail[2].split(","):
            mounts.setdefault(option, Path(fields[4]))
    found: dict[str, Path] = {}
    for line in own.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3 or not parts[1]:
            continue
        for controller in parts[1].split(","):
            if controller in mounts:
                found[controller] = mounts[controller] / parts[2].lstrip("/")
    return found


class Cgroups:
    """Creates and removes the cgroups of containers; detects once what is possible."""

    def __init__(self, enabled: bool, parent: str) -> None:
        self.bases: dict[str, Path] = {}
        self._warned: set[str] = set()
        if not enabled:
            log.info("process provider: cgroup limits disabled by the config (cgroups: false)")
            return
        hierarchies = _hierarchies()
        for controller in ("memory", "cpu"):
            own = hierarchies.get(controller)
            if own is None:
                self._warn(
                    f"no-{controller}",
                    f"no cgroup v1 '{controller}' hierarchy is mounted; {controller} limits "
                    "are not applied",
                )
                continue
            base = own / parent
            try:
                base.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                self._warn(
                    f"ro-{controller}",
                    f"cannot create {base} ({exc.strerror}); {controller} limits are not applied",
                )
                continue
            self.bases[controller] = base

    def _warn(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning("process provider: %s", message)

    def prepare(self, uid: str, name: str, container: dict[str, Any]) -> list[str]:
        """The cgroups (with their limits set) the container's processes should join."""
        limits = (container.get("resources") or {}).get("limits") or {}
        wanted: dict[str, list[tuple[str, str]]] = {}
        try:
            if "memory" in limits:
                memory = math.floor(parse_quantity(limits["memory"]))
                wanted["memory"] = [("memory.limit_in_bytes", str(max(memory, 4096)))]
            if "cpu" in limits:
                quota = math.ceil(parse_quantity(limits["cpu"]) * CFS_PERIOD_US)
                wanted["cpu"] = [
                    ("cpu.cfs_period_us", str(CFS_PERIOD_US)),
                    ("cpu.cfs_quota_us", str(max(quota, MIN_QUOTA_US))),
                ]
        except QuantityError as exc:
            self._warn(f"quantity-{uid}-{name}", f"container {name}: bad limit ({exc}); ignored")
            return []
        paths: list[str] = []
        for controller, settings in wanted.items():
            base = self.bases.get(controller)
            if base is None:
                continue
            path = base / uid / name
            try:
                path.mkdir(parents=True, exist_ok=True)
                for filename, value in settings:
                    (path / filename).write_text(value)
                if controller == "memory" and (path / "memory.memsw.limit_in_bytes").exists():
                    # Without this, a container over its limit swaps instead of being OOM-killed.
                    with contextlib.suppress(OSError):
                        (path / "memory.memsw.limit_in_bytes").write_text(settings[0][1])
            except OSError as exc:
                self._warn(
                    f"write-{controller}",
                    f"cannot set {controller} limits in {path} ({exc.strerror}); not applied",
                )
                continue
            paths.append(str(path))
        return paths

    def remove_pod(self, uid: str) -> None:
        """Remove the pod's cgroups (once its processes are gone; busy ones are left alone)."""
        for base in self.bases.values():
            pod = base / uid
            if not pod.is_dir():
                continue
            for child in pod.iterdir():
                if child.is_dir():
                    try:
                        os.rmdir(child)
                    except OSError as exc:
                        log.debug("cgroup %s not removed: %s", child, exc.strerror)
            with contextlib.suppress(OSError):
                os.rmdir(pod)
