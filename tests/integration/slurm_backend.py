"""The `slurm` fixture: a private single-node Slurm (installed from Debian when missing), shared
by the slurm provider's tests and stopped afterwards if they started it. Under CI=true a backend
that cannot be had is a failure; elsewhere the tests are skipped with the reason."""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from virtual_kubelet.devcluster.slurm import SlurmCluster, SlurmUnavailable


@pytest.fixture(scope="session")
def slurm() -> Iterator[SlurmCluster]:
    # One private Slurm per checkout: test runs of two checkouts must not share jobs or stop
    # each other's daemons.
    checkout = Path(__file__).resolve().parents[2]
    cluster = SlurmCluster.named(f"tests-{zlib.crc32(str(checkout).encode()) % 100000}")
    started_here = not cluster.running()
    try:
        cluster.up()
    except SlurmUnavailable as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Slurm is required under CI=true: {exc}")
        pytest.skip(f"no Slurm here: {exc}")
    yield cluster
    if started_here:
        cluster.down()


def jobs_of(cluster: SlurmCluster, uid: str) -> list[dict[str, Any]]:
    """Slurm's own view of the jobs whose comment names pod `uid`."""
    shown = cluster.cli("squeue", "--json")
    assert shown.returncode == 0, shown.stderr
    return [
        job
        for job in json.loads(shown.stdout)["jobs"]
        if str(job.get("comment", "")).endswith(f":{uid}")
    ]


def cancel_jobs_of_node(cluster: SlurmCluster, node_name: str) -> None:
    """Cancel every job an agent on `node_name` submitted (so none waits in the next test's way)."""
    shown = cluster.cli("squeue", "--json")
    ids = [
        str(job["job_id"])
        for job in json.loads(shown.stdout)["jobs"]
        if str(job.get("comment", "")).startswith(f"vk:{node_name}:")
    ]
    if ids:
        cluster.cli("scancel", *ids)


def newest_job_id(cluster: SlurmCluster) -> int:
    shown = cluster.cli("squeue", "--json")
    return max((int(j["job_id"]) for j in json.loads(shown.stdout)["jobs"]), default=0)


def cancel_agent_jobs_after(cluster: SlurmCluster, job_id: int) -> None:
    """Cancel the agents' jobs (comment `vk:...`) newer than `job_id`: a class of tests whose
    agents are gone leaves its pods' jobs running, and the single-node Slurm has room for only a
    few, so the next file's pods would wait on `Resources`."""
    shown = cluster.cli("squeue", "--json")
    ids = [
        str(job["job_id"])
        for job in json.loads(shown.stdout)["jobs"]
        if int(job["job_id"]) > job_id and str(job.get("comment", "")).startswith("vk:")
    ]
    if ids:
        cluster.cli("scancel", *ids)
