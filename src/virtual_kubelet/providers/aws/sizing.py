"""Fargate task sizes: a pod's summed CPU and memory rounded UP to the smallest valid Fargate
combination (AWS "Task CPU and memory" table, up to 16 vCPU / 120 GiB; 8 and 16 vCPU need Linux
platform version 1.4.0 or later). Pure."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SIZES", "FargateSize", "round_up"]


@dataclass(frozen=True, order=True)
class FargateSize:
    #: CPU units (1024 = 1 vCPU) and memory in MiB, as ECS takes them (as strings) on the task.
    cpu: int
    memory: int


def _table() -> tuple[FargateSize, ...]:
    rows: list[tuple[int, range | tuple[int, ...]]] = [
        (256, (512, 1024, 2048)),
        (512, range(1024, 4096 + 1, 1024)),
        (1024, range(2048, 8192 + 1, 1024)),
        (2048, range(4096, 16384 + 1, 1024)),
        (4096, range(8192, 30720 + 1, 1024)),
        (8192, range(16384, 61440 + 1, 4096)),
        (16384, range(32768, 122880 + 1, 8192)),
    ]
    return tuple(sorted(FargateSize(cpu, memory) for cpu, memories in rows for memory in memories))


#: Every valid size, smallest first (by CPU, then memory).
SIZES = _table()


def round_up(cpu_units: float, memory_mib: float) -> FargateSize:
    """The valid size with the least CPU, then the least memory, that holds both. ValueError when
    nothing does (over 16 vCPU or 120 GiB)."""
    fits = [s for s in SIZES if s.cpu >= cpu_units and s.memory >= memory_mib]
    if not fits:
        raise ValueError(
            f"the pod needs {cpu_units / 1024:g} vCPU and {memory_mib:g} MiB; the largest Fargate "
            "task has 16 vCPU and 120 GiB (122880 MiB)"
        )
    return min(fits, key=lambda s: (s.cpu, s.memory))
