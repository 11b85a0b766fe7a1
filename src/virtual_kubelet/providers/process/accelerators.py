"""GPU use for `/stats/summary`: the `accelerators` of each container that holds GPUs, in the
kubelet's stats/v1alpha1 AcceleratorStats shape (make, model, id, memoryTotal, memoryUsed,
dutyCycle), as cAdvisor reports them for NVIDIA devices.

With NVML (`nvidia-ml-py` installed and a driver answering) the figures are the device's own:
`id` is its UUID, `model` its name, memory in bytes, `dutyCycle` the percentage of time a kernel
ran over NVML's last sample period. They are figures of the whole device (NVML cannot tell the
processes' share), which is what a container holding the device exclusively uses. Without NVML,
or for a configured device NVML does not know, the entry has `make`, the configured `id` and the
configured model if any, and no usage figures: they are left out rather than made up.

Everything here blocks (NVML calls): call `read` in a thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

MAKE = "nvidia"


def _text(value: Any) -> str:
    """NVML strings are bytes in older nvidia-ml-py releases, str in newer ones."""
    return value.decode() if isinstance(value, bytes) else str(value)


class Accelerators:
    """Reads the devices' figures through NVML, initialised once on first use (an init can take
    seconds on a GPU without persistence mode) and shut down by `close`."""

    def __init__(self, model: str | None = None) -> None:
        #: The model to report for devices NVML does not describe (the config's `gpu_model`).
        self.model = model
        self._nvml: Any = None
        self._tried = False

    def _library(self) -> Any:
        if self._tried:
            return self._nvml
        self._tried = True
        try:
            import pynvml  # type: ignore[import-not-found]  # optional: pip install nvidia-ml-py
        except ImportError:
            return None
        try:
            pynvml.nvmlInit()
        except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
            log.info("process provider: no GPU figures for /stats/summary (NVML: %s)", exc)
            return None
        self._nvml = pynvml
        return pynvml

    def _handle(self, nvml: Any, device: str) -> Any:
        try:
            if device.isdigit():
                return nvml.nvmlDeviceGetHandleByIndex(int(device))
            return nvml.nvmlDeviceGetHandleByUUID(device)
        except Exception:  # NVMLError_NotFound, InvalidArgument: a device NVML does not know
            return None

    def read(self, devices: list[str]) -> list[dict[str, Any]]:
        """One AcceleratorStats entry per device, in the order given."""
        nvml = self._library() if devices else None
        entries = []
        for device in devices:
            handle = self._handle(nvml, device) if nvml is not None else None
            if handle is None:
                entries.append(self._bare(device))
            else:
                entries.append(self._measured(nvml, handle, device))
        return entries

    def _bare(self, device: str) -> dict[str, Any]:
        entry: dict[str, Any] = {"make": MAKE, "id": device}
        if self.model:
            entry["model"] = self.model
        return entry

    def _measured(self, nvml: Any, handle: Any, device: str) -> dict[str, Any]:
        entry: dict[str, Any] = {"make": MAKE}
        # Each figure on its own: a MIG device, say, has memory but no utilisation counter.
        readers: dict[str, Callable[[], Any]] = {
            "model": lambda: _text(nvml.nvmlDeviceGetName(handle)),
            "id": lambda: _text(nvml.nvmlDeviceGetUUID(handle)),
            "memoryTotal": lambda: int(nvml.nvmlDeviceGetMemoryInfo(handle).total),
            "memoryUsed": lambda: int(nvml.nvmlDeviceGetMemoryInfo(handle).used),
            "dutyCycle": lambda: int(nvml.nvmlDeviceGetUtilizationRates(handle).gpu),
        }
        for key, reader in readers.items():
            try:
                entry[key] = reader()
            except Exception as exc:  # NVMLError_NotSupported, GpuIsLost, ...
                log.debug("process provider: NVML has no %s for a GPU: %s", key, exc)
        if "model" not in entry and self.model:
            entry["model"] = self.model
        entry.setdefault("id", device)
        return entry

    def close(self) -> None:
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except Exception as exc:
                log.debug("process provider: NVML shutdown: %s", exc)
        self._nvml, self._tried = None, False
