"""NVIDIA GPUs as a node resource (`nvidia.com/gpu`): which devices there are (a configured list,
else NVML through `nvidia-ml-py` when it is installed and a driver answers), and which container
holds which (exclusive: one device, one container at a time).

A container asking for N GPUs (`resources.limits["nvidia.com/gpu"]`) gets N free devices before
it starts, in CUDA_VISIBLE_DEVICES and NVIDIA_VISIBLE_DEVICES; with fewer free it waits
(`WaitingForGPU`, saying how many are free) and starts once others end. Its devices are recorded
in its container record, so a restarted agent takes them back for the runs it adopts and never
gives them to anyone else meanwhile; they are freed when the run ends.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

from ...sdk import QuantityError, parse_quantity

log = logging.getLogger(__name__)

GPU_RESOURCE = "nvidia.com/gpu"


def requested_gpus(container: dict[str, Any]) -> int:
    """How many GPUs a container asks for (limits, else requests, as extended resources go)."""
    resources = container.get("resources") or {}
    for kind in ("limits", "requests"):
        value = (resources.get(kind) or {}).get(GPU_RESOURCE)
        if value is not None:
            try:
                return max(0, math.ceil(float(parse_quantity(str(value)))))
            except QuantityError:
                return 0
    return 0


def discover_nvml() -> list[str]:
    """The indices of the GPUs NVML sees, or [] without nvidia-ml-py or a driver."""
    try:
        import pynvml  # type: ignore[import-not-found]  # optional: pip install nvidia-ml-py
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
        log.info("process provider: no GPUs through NVML (%s)", exc)
        return []
    try:
        return [str(i) for i in range(int(pynvml.nvmlDeviceGetCount()))]
    finally:
        pynvml.nvmlShutdown()


class GpuPool:
    """The node's GPUs and who holds them; owners are `<pod uid>/<container>`."""

    def __init__(self, devices: list[str]) -> None:
        self.devices = list(dict.fromkeys(devices))
        self.holders: dict[str, str] = {}  # device -> owner
        self._freed = asyncio.Event()

    @property
    def free(self) -> list[str]:
        return [d for d in self.devices if d not in self.holders]

    def held_by(self, owner: str) -> list[str]:
        return [d for d in self.devices if self.holders.get(d) == owner]

    def acquire(self, owner: str, count: int) -> list[str] | None:
        """`count` free devices for `owner` (those it holds already count), or None."""
        held = self.held_by(owner)
        if len(held) >= count:
            return held[:count]
        free = self.free
        if len(held) + len(free) < count:
            return None
        taken = held + free[: count - len(held)]
        for device in taken:
            self.holders[device] = owner
        return taken

    def restore(self, owner: str, devices: list[str]) -> list[str]:
        """Take back what a run adopted after a restart holds; devices that are gone or held by
        another owner are left out (and logged)."""
        kept = []
        for device in devices:
            if device not in self.devices or self.holders.get(device, owner) != owner:
                log.warning(
                    "process provider: %s held GPU %s, which is not available", owner, device
                )
                continue
            self.holders[device] = owner
            kept.append(device)
        return kept

    def release(self, owner: str) -> None:
        released = [d for d, o in self.holders.items() if o == owner]
        for device in released:
            del self.holders[device]
        if released:
            self._freed.set()
            self._freed = asyncio.Event()

    async def wait_freed(self) -> None:
        await self._freed.wait()

    def shortage(self, count: int) -> str:
        """Why `count` GPUs cannot be had now, for the container's waiting message."""
        total = len(self.devices)
        if count > total:
            return f"needs {count} {GPU_RESOURCE}, the node has {total}"
        return f"needs {count} {GPU_RESOURCE}, {len(self.free)} of {total} free"


def visible_devices_env(devices: list[str]) -> dict[str, str]:
    joined = ",".join(devices)
    # CUDA numbers devices fastest first unless told otherwise; NVML, nvidia-smi and a configured
    # list number them by PCI bus: with this, index N is the same device for all of them.
    return {
        "CUDA_VISIBLE_DEVICES": joined,
        "NVIDIA_VISIBLE_DEVICES": joined,
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
    }
