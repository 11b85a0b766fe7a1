"""The slurm provider runs each container of a pod as a job step of the pod's one job (init
containers as steps before the others), against a real Slurm and the real control plane."""

from __future__ import annotations

from typing import Any

from virtual_kubelet.devcluster import DevCluster, wait_until
from virtual_kubelet.devcluster.slurm import SlurmCluster

from .conftest import TOLERATION, AgentFactory, create, pod
from .slurm_backend import cancel_jobs_of_node, jobs_of, slurm

__all__ = ["slurm"]  # the fixture, imported for pytest

SHOW = 'echo "step=$SLURM_STEP_ID name=$SLURM_JOB_NAME"'


def _container(name: str, script: str) -> dict[str, Any]:
    return {"name": name, "image": "busybox", "command": ["sh", "-c", script]}


def _steps(cluster: SlurmCluster, job_id: str) -> dict[str, str]:
    """step name -> step id of a running job, as squeue shows them."""
    shown = cluster.cli("squeue", "--steps", f"--jobs={job_id}", "--noheader", "--format=%i %j")
    assert shown.returncode == 0, shown.stderr
    return {
        parts[1]: parts[0]
        for parts in (line.split() for line in shown.stdout.splitlines())
        if parts
    }


def test_each_container_is_a_job_step_and_init_containers_come_first(
    devcluster: DevCluster, kube_namespace: str, start_agent: AgentFactory, slurm: SlurmCluster
) -> None:
    agent = start_agent(
        provider="slurm",
        provider_config={"slurm_conf": str(slurm.config_file), "poll_seconds": 1},
    )
    agent.approve_serving_certificate()  # kubectl logs goes through the kubelet API
    agent.wait_ready()
    manifest = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "steps"},
        "spec": {
            "nodeName": agent.node_name,
            "tolerations": [TOLERATION],
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 5,
            "initContainers": [_container("prepare", SHOW)],
            "containers": [
                _container("main", f"{SHOW}; exec sleep 120"),
                _container("side", f"{SHOW}; exec sleep 120"),
            ],
        },
    }
    try:
        create(devcluster, kube_namespace, manifest)
        wait_until(
            lambda: (
                (pod(devcluster, kube_namespace, "steps") or {}).get("status", {}).get("phase")
                == "Running"
            ),
            90,
            "the pod to run",
        )
        uid = (pod(devcluster, kube_namespace, "steps") or {})["metadata"]["uid"]
        (job,) = jobs_of(slurm, uid)  # one job for the pod
        job_id = str(job["job_id"])
        # The main containers are steps of that job, side by side (the init step has ended).
        steps = wait_until(
            lambda: (found := _steps(slurm, job_id)) and {"main", "side"} <= set(found) and found,
            60,
            "a step for each container",
        )
        assert steps["main"] != steps["side"]

        def logs(container: str) -> str:
            return devcluster.kubectl(
                "logs", "-n", kube_namespace, "steps", "-c", container
            ).stdout.strip()

        names = ("prepare", "main", "side")
        shown = {c: wait_until(lambda c=c: logs(c), 30, f"{c}'s output") for c in names}
        # Each container saw its own step (its id and name), the init container the first one.
        assert shown["prepare"] == "step=0 name=prepare"
        assert shown["main"] == f"step={steps['main'].split('.')[-1]} name=main"
        assert shown["side"] == f"step={steps['side'].split('.')[-1]} name=side"
    finally:
        cancel_jobs_of_node(slurm, agent.node_name)
