"""The slurm provider's `rest` backend end to end: the private single-node Slurm with slurmrestd
(Debian's, OpenAPI v0.0.38, on a unix socket with rest_auth/local) behind a real API server. The
agent's `bin_dir` holds only a logging `srun` (for exec): had the provider run sbatch, squeue,
scancel or sinfo, the call would fail, and the log shows it never tried."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from virtual_kubelet.devcluster import DevCluster, wait_until
from virtual_kubelet.devcluster.agent import AgentProcess
from virtual_kubelet.devcluster.slurm import SlurmCluster, SlurmUnavailable
from virtual_kubelet.testing import ConformanceProfile, ProviderConformance

from .conftest import AgentFactory, create, pod
from .slurm_backend import (
    cancel_agent_jobs_after,
    cancel_jobs_of_node,
    jobs_of,
    newest_job_id,
    slurm,
)
from .test_conformance_slurm import SlurmWorkloads
from .test_slurm_provider import _pod, _status, _terminated

__all__ = ["slurm"]  # the fixture, imported for pytest


@pytest.fixture(scope="session")
def slurm_rest(slurm: SlurmCluster) -> Iterator[SlurmCluster]:
    """The `slurm` cluster with slurmrestd running (stopped afterwards if started here)."""
    started_here = not slurm.rest_ping()
    try:
        slurm.rest_up()
    except SlurmUnavailable as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"slurmrestd is required under CI=true: {exc}")
        pytest.skip(f"no slurmrestd here: {exc}")
    yield slurm
    if started_here:
        slurm.rest_down()


@pytest.fixture
def nodes(slurm_rest: SlurmCluster) -> Iterator[list[str]]:
    """Node names whose jobs are cancelled after the test (the sleeping ones would otherwise
    hold the small dev Slurm's slots for the tests after it)."""
    names: list[str] = []
    yield names
    for name in names:
        cancel_jobs_of_node(slurm_rest, name)


def _srun_only(directory: Path) -> Path:
    """A bin_dir with a logging srun and nothing else."""
    directory.mkdir(exist_ok=True)
    wrapper = directory / "srun"
    wrapper.write_text(f'#!/bin/sh\necho srun >> {directory}/calls.log\nexec /usr/bin/srun "$@"\n')
    wrapper.chmod(0o755)
    return directory


def _settings(cluster: SlurmCluster, bin_dir: Path) -> dict[str, Any]:
    return {
        "backend": "rest",
        "rest_url": cluster.rest_url,
        "slurm_conf": str(cluster.config_file),  # for srun (exec) only
        "bin_dir": str(bin_dir),
        "poll_seconds": 1,
    }


def _agent(
    start_agent: AgentFactory,
    cluster: SlurmCluster,
    bin_dir: Path,
    nodes: list[str],
    **kwargs: Any,
) -> AgentProcess:
    agent = start_agent(provider="slurm", provider_config=_settings(cluster, bin_dir), **kwargs)
    nodes.append(agent.node_name)
    agent.approve_serving_certificate()
    return agent


def _cli_calls(bin_dir: Path) -> list[str]:
    log = bin_dir / "calls.log"
    return log.read_text().split() if log.exists() else []


def test_through_slurmrestd_a_job_completes_with_logs_and_a_failing_pod_has_its_exit_code(
    devcluster: DevCluster,
    kube_namespace: str,
    start_agent: AgentFactory,
    slurm_rest: SlurmCluster,
    tmp_path: Path,
    nodes: list[str],
) -> None:
    bin_dir = _srun_only(tmp_path / "bin")
    agent = _agent(start_agent, slurm_rest, bin_dir, nodes)
    node = agent.wait_ready()
    assert node["status"]["capacity"]["cpu"] == str(os.cpu_count())
    assert node["status"]["capacity"]["memory"] == "4000Mi"
    available = {c["type"]: c for c in node["status"]["conditions"]}["SlurmAvailable"]
    assert available["status"] == "True"
    template = _pod("x", agent.node_name, 'echo "hello from $GREETING"; echo to-stderr >&2')
    template["spec"]["containers"][0]["env"] = [{"name": "GREETING", "value": "rest"}]
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "hello"},
        "spec": {"backoffLimit": 0, "template": {"spec": template["spec"]}},
    }
    create(devcluster, kube_namespace, job)
    create(devcluster, kube_namespace, _pod("fails", agent.node_name, "echo failing; exit 3"))
    devcluster.kubectl(
        "wait",
        "-n",
        kube_namespace,
        "--for=condition=complete",
        "job/hello",
        "--timeout=60s",
        timeout=90,
    )
    logs = devcluster.kubectl("logs", "-n", kube_namespace, "job/hello")
    assert sorted(logs.stdout.splitlines()) == ["hello from rest", "to-stderr"]
    wait_until(
        lambda: _status(devcluster, kube_namespace, "fails").get("phase") == "Failed",
        60,
        "the failing pod to be Failed",
    )
    assert (_terminated(devcluster, kube_namespace, "fails") or {}).get("exitCode") == 3
    uid = (pod(devcluster, kube_namespace, "fails") or {})["metadata"]["uid"]
    (seen,) = jobs_of(slurm_rest, uid)
    assert seen["job_state"] == "FAILED"
    assert _cli_calls(bin_dir) == []


def test_through_slurmrestd_a_refused_pod_and_deletion_cancels_the_job(
    devcluster: DevCluster,
    kube_namespace: str,
    start_agent: AgentFactory,
    slurm_rest: SlurmCluster,
    tmp_path: Path,
    nodes: list[str],
) -> None:
    bin_dir = _srun_only(tmp_path / "bin")
    agent = _agent(start_agent, slurm_rest, bin_dir, nodes)
    agent.wait_ready()
    bad = _pod(
        "bad",
        agent.node_name,
        "true",
        annotations={"slurm.virtual-kubelet.io/partition": "no-such-partition"},
    )
    create(devcluster, kube_namespace, bad)
    wait_until(
        lambda: _status(devcluster, kube_namespace, "bad").get("phase") == "Failed",
        60,
        "the refused pod to fail",
    )
    assert "Invalid partition name" in _status(devcluster, kube_namespace, "bad")["message"]

    script = "echo up; while true; do sleep 0.2; done"
    create(devcluster, kube_namespace, _pod("runner", agent.node_name, script))
    wait_until(
        lambda: _status(devcluster, kube_namespace, "runner").get("phase") == "Running",
        60,
        "the pod to run",
    )
    uid = (pod(devcluster, kube_namespace, "runner") or {})["metadata"]["uid"]
    assert [j["job_state"] for j in jobs_of(slurm_rest, uid)] == ["RUNNING"]
    devcluster.kubectl("delete", "pod", "-n", kube_namespace, "runner", "--wait=false")
    wait_until(
        lambda: all(j["job_state"] != "RUNNING" for j in jobs_of(slurm_rest, uid)),
        15,
        "the job to end within the grace period",
    )
    wait_until(lambda: pod(devcluster, kube_namespace, "runner") is None, 20, "the pod to be gone")
    assert _cli_calls(bin_dir) == []


def test_through_slurmrestd_a_restarted_agent_adopts_its_job_and_exec_uses_srun(
    devcluster: DevCluster,
    kube_namespace: str,
    start_agent: AgentFactory,
    slurm_rest: SlurmCluster,
    tmp_path: Path,
    nodes: list[str],
) -> None:
    bin_dir = _srun_only(tmp_path / "bin")
    agent = _agent(start_agent, slurm_rest, bin_dir, nodes)
    create(devcluster, kube_namespace, _pod("steady", agent.node_name, "echo up; exec sleep 300"))
    wait_until(
        lambda: _status(devcluster, kube_namespace, "steady").get("phase") == "Running",
        60,
        "the pod to run",
    )
    first = _status(devcluster, kube_namespace, "steady")["containerStatuses"][0]
    agent.kill()
    _agent(start_agent, slurm_rest, bin_dir, nodes, name=agent.node_name)
    status = _status(devcluster, kube_namespace, "steady")
    assert status["phase"] == "Running"
    assert status["containerStatuses"][0]["containerID"] == first["containerID"]
    uid = (pod(devcluster, kube_namespace, "steady") or {})["metadata"]["uid"]
    assert [j["job_state"] for j in jobs_of(slurm_rest, uid)] == ["RUNNING"]
    assert devcluster.kubectl("logs", "-n", kube_namespace, "steady").stdout == "up\n"
    assert _cli_calls(bin_dir) == []
    done = devcluster.kubectl(
        "exec", "-n", kube_namespace, "steady", "--", "sh", "-c", "echo in-job; exit 4", check=False
    )
    assert (done.returncode, done.stdout) == (4, "in-job\n")
    assert _cli_calls(bin_dir) == ["srun"]  # exec, the one operation left on the CLI


class TestSlurmRestConformance(ProviderConformance):
    @pytest.fixture(scope="class")
    @classmethod
    def conformance_profile(cls, slurm_rest: SlurmCluster) -> Iterator[ConformanceProfile]:
        before = newest_job_id(slurm_rest)
        yield ConformanceProfile(
            provider="slurm",
            config={
                "backend": "rest",
                "rest_url": slurm_rest.rest_url,
                "slurm_conf": str(slurm_rest.config_file),
                "poll_seconds": 1,
            },
            workloads=SlurmWorkloads(),
        )
        # The suite's jobs that still run (its agents are gone), so later tests find room.
        cancel_agent_jobs_after(slurm_rest, before)
