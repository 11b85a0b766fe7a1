"""The slurm provider passes the provider conformance suite (virtual_kubelet.testing) against a
real single-node Slurm: containers are plain processes in Slurm jobs, volume files are found
through VK_VOLUME_* as with the process provider's env mode."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from virtual_kubelet.devcluster.slurm import SlurmCluster
from virtual_kubelet.testing import (
    ConformanceProfile,
    ProcessWorkloads,
    ProviderConformance,
    Workload,
)

from .slurm_backend import cancel_agent_jobs_after, newest_job_id, slurm

__all__ = ["slurm"]  # the fixture, imported for pytest


class SlurmWorkloads(ProcessWorkloads):
    """Shell commands in Slurm jobs; a pod naming a partition Slurm does not have is refused."""

    def rejected(self) -> Workload | None:
        return Workload(
            container={"command": ["true"]},
            annotations={"slurm.virtual-kubelet.io/partition": "no-such-partition"},
            message="Invalid partition name",
        )


class TestSlurmConformance(ProviderConformance):
    @pytest.fixture(scope="class")
    @classmethod
    def conformance_profile(cls, slurm: SlurmCluster) -> Iterator[ConformanceProfile]:
        before = newest_job_id(slurm)
        yield ConformanceProfile(
            provider="slurm",
            config={"slurm_conf": str(slurm.config_file), "poll_seconds": 1},
            workloads=SlurmWorkloads(),
        )
        cancel_agent_jobs_after(slurm, before)
