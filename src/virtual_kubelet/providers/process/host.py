"""What the process provider learns about this machine: whether volumeMounts can be bind mounts
in private mount namespaces (asked once, at start), and the node's capacity and system info.
Blocking reads run in threads; the mount check runs in a `shim probe-mounts` child, so the agent's
own mount namespace is never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from ...sdk import AGENT_VERSION, Node
from .config import ProcessConfig, ProviderConfigError
from .shim_protocol import SHIM_MODULE
from .stats import memory_total

log = logging.getLogger(__name__)


async def detect_bind_mounts(config: ProcessConfig, scratch_root: Path) -> bool:
    """Whether volumeMounts are bind mounts (`mounts: auto` decides by trying once, in a
    scratch directory under `scratch_root`); ProviderConfigError if `mounts: bind` cannot be."""
    if config.mounts == "env":
        log.info("process provider: volumeMounts as VK_VOLUME_* env vars (mounts: env)")
        return False
    if os.geteuid() != 0:
        reason = "the agent does not run as root"
    else:
        scratch = await asyncio.to_thread(tempfile.mkdtemp, dir=scratch_root)
        try:
            probe = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                SHIM_MODULE,
                "probe-mounts",
                scratch,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
            _, err = await probe.communicate()
        finally:
            await asyncio.to_thread(shutil.rmtree, scratch, ignore_errors=True)
        if probe.returncode == 0:
            log.info("process provider: volumeMounts as bind mounts in private namespaces")
            return True
        reason = err.decode(errors="replace").strip() or f"exit code {probe.returncode}"
    if config.mounts == "bind":
        raise ProviderConfigError(f"mounts: bind is not possible on this host: {reason}")
    log.warning(
        "process provider: bind mounts are not possible (%s); volumeMounts are passed as "
        "VK_VOLUME_* env vars instead",
        reason,
    )
    return False


async def describe_node(node: Node, pods: int, state_dir: Path) -> None:
    """Put this machine's capacity (cpu, memory, `pods`, disk) and system info into `node`."""
    details = await asyncio.to_thread(_host_details, state_dir)
    resources = {
        "cpu": str(os.cpu_count() or 1),
        "memory": f"{details['memory'] // 1024}Ki",
        "pods": str(pods),
        "ephemeral-storage": f"{details['storage'] // 1024}Ki",
    }
    status = node.setdefault("status", {})
    status["capacity"] = dict(resources)
    status["allocatable"] = dict(resources)
    info = status.setdefault("nodeInfo", {})
    info["containerRuntimeVersion"] = f"process://{AGENT_VERSION}"
    info["kernelVersion"] = os.uname().release
    info["osImage"] = details["os_image"]
    for key in ("machineID", "bootID"):
        if details.get(key):
            info[key] = details[key]


def _host_details(state_dir: Path) -> dict[str, Any]:
    details: dict[str, Any] = {"memory": memory_total(), "storage": 0, "os_image": "Linux"}
    target = state_dir if state_dir.exists() else Path("/")
    with contextlib.suppress(OSError):
        fs = os.statvfs(target)
        details["storage"] = fs.f_blocks * fs.f_frsize
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                details["os_image"] = line.split("=", 1)[1].strip().strip('"')
    for key, path in (
        ("machineID", "/etc/machine-id"),
        ("bootID", "/proc/sys/kernel/random/boot_id"),
    ):
        with contextlib.suppress(OSError):
            details[key] = Path(path).read_text().strip()
    return details
