"""The slurm provider end to end: a real single-node Slurm (private, started by the fixture)
behind a real API server, driven through kubectl as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from virtual_kubelet.devcluster import DevCluster, wait_until
from virtual_kubelet.devcluster.agent import AgentProcess
from virtual_kubelet.devcluster.slurm import SlurmCluster

from .conftest import TOLERATION, AgentFactory, create, pod
from .slurm_backend import cancel_jobs_of_node, jobs_of, slurm
from .sshd import Sshd, sshd

__all__ = ["slurm", "sshd"]  # the fixtures, imported for pytest


def _agent(start_agent: AgentFactory, cluster: SlurmCluster, **kwargs: Any) -> AgentProcess:
    settings = {"slurm_conf": str(cluster.config_file), "poll_seconds": 1}
    settings.update(kwargs.pop("settings", {}))
    agent = start_agent(provider="slurm", provider_config=settings, **kwargs)
    agent.approve_serving_certificate()  # kubectl logs and exec go through the kubelet API
    return agent


def _pod(name: str, node: str, script: str, **extra: Any) -> dict[str, Any]:
    annotations = extra.pop("annotations", {})
    resources = extra.pop("resources", {})
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {
            "nodeName": node,
            "tolerations": [TOLERATION],
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 10,
            "containers": [
                {
                    "name": "main",
                    "image": "docker.io/library/busybox:1.36",
                    "command": ["sh", "-c", script],
                    "resources": resources,
                }
            ],
            **extra,
        },
    }


def _status(cluster: DevCluster, namespace: str, name: str) -> dict[str, Any]:
    return (pod(cluster, namespace, name) or {}).get("status", {})


def _terminated(cluster: DevCluster, namespace: str, name: str) -> dict[str, Any] | None:
    for status in _status(cluster, namespace, name).get("containerStatuses") or []:
        found = status.get("state", {}).get("terminated")
        if found:
            return dict(found)
    return None


def test_the_slurm_helper_is_idempotent_and_reports_its_daemons(slurm: SlurmCluster) -> None:
    before = slurm.pids()
    assert all(before.values())
    slurm.up()  # again: nothing restarted
    assert slurm.pids() == before
    shown = subprocess.run(
        [
            sys.executable,
            "-m",
            "virtual_kubelet.devcluster.slurm",
            "status",
            "--name",
            slurm.home.name,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert f"slurmctld={before['slurmctld']}" in shown.stdout
    sinfo = slurm.cli("sinfo", "--noheader", "--partition=debug", "--format=%P %a %T")
    partition, available, state = sinfo.stdout.split()
    assert (partition, available) == ("debug*", "up")
    assert state in ("idle", "mixed", "allocated")


def test_a_job_completes_with_its_logs_and_a_failing_pod_fails_with_its_exit_code(
    devcluster: DevCluster, kube_namespace: str, start_agent: AgentFactory, slurm: SlurmCluster
) -> None:
    agent = _agent(start_agent, slurm)
    node = agent.wait_ready()
    assert node["status"]["capacity"]["cpu"] == str(os.cpu_count())
    assert node["status"]["capacity"]["memory"] == "4000Mi"
    template = _pod("x", agent.node_name, 'echo "hello from $GREETING"; echo to-stderr >&2')
    template["spec"]["containers"][0]["env"] = [{"name": "GREETING", "value": "slurm"}]
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
    assert sorted(logs.stdout.splitlines()) == ["hello from slurm", "to-stderr"]
    stamped = devcluster.kubectl("logs", "-n", kube_namespace, "job/hello", "--timestamps")
    assert all(line[:4].isdigit() and "Z " in line for line in stamped.stdout.splitlines())

    wait_until(
        lambda: _status(devcluster, kube_namespace, "fails").get("phase") == "Failed",
        60,
        "the failing pod to be Failed",
    )
    assert (_terminated(devcluster, kube_namespace, "fails") or {}).get("exitCode") == 3
    uid = (pod(devcluster, kube_namespace, "fails") or {})["metadata"]["uid"]
    (job_seen,) = jobs_of(slurm, uid)
    assert job_seen["job_state"] == "FAILED"
    assert devcluster.kubectl("logs", "-n", kube_namespace, "fails").stdout == "failing\n"


def test_memory_overrun_is_oomkilled_and_impossible_resources_stay_pending_with_the_reason(
    devcluster: DevCluster, kube_namespace: str, start_agent: AgentFactory, slurm: SlurmCluster
) -> None:
    agent = _agent(start_agent, slurm)
    hog = "python3 -c 'import time; a = bytearray(300 * 2**20); time.sleep(30)'"
    create(
        devcluster,
        kube_namespace,
        _pod("hog", agent.node_name, hog, resources={"limits": {"memory": "50Mi"}}),
    )
    huge = _pod("huge", agent.node_name, "true", resources={"requests": {"cpu": "64"}})
    create(devcluster, kube_namespace, huge)
    closed = _pod(
        "closed",
        agent.node_name,
        "true",
        annotations={"slurm.virtual-kubelet.io/partition": "closed"},
    )
    create(devcluster, kube_namespace, closed)
    nowhere = _pod(
        "nowhere",
        agent.node_name,
        "true",
        annotations={"slurm.virtual-kubelet.io/partition": "nope"},
    )
    create(devcluster, kube_namespace, nowhere)

    wait_until(
        lambda: _status(devcluster, kube_namespace, "hog").get("phase") == "Failed",
        60,
        "the memory hog to fail",
    )
    assert _status(devcluster, kube_namespace, "hog")["reason"] == "OOMKilled"
    assert _terminated(devcluster, kube_namespace, "hog") == {
        **(_terminated(devcluster, kube_namespace, "hog") or {}),
        "reason": "OOMKilled",
        "exitCode": 137,
    }

    wait_until(
        lambda: "PartitionConfig" in _status(devcluster, kube_namespace, "huge").get("message", ""),
        30,
        "the impossible pod to show Slurm's reason",
    )
    assert _status(devcluster, kube_namespace, "huge")["phase"] == "Pending"
    described = devcluster.kubectl("describe", "pod", "-n", kube_namespace, "huge").stdout
    assert "SlurmJobPending" in described
    assert "is pending: PartitionConfig" in described

    wait_until(
        lambda: "PartitionDown" in _status(devcluster, kube_namespace, "closed").get("message", ""),
        30,
        "the pod in a closed partition to show Slurm's reason",
    )
    assert _status(devcluster, kube_namespace, "closed")["phase"] == "Pending"

    wait_until(
        lambda: _status(devcluster, kube_namespace, "nowhere").get("phase") == "Failed",
        30,
        "the pod naming no partition to fail",
    )
    assert "Invalid partition name" in _status(devcluster, kube_namespace, "nowhere")["message"]


def test_deleting_a_running_pod_cancels_its_job_within_the_grace_period(
    devcluster: DevCluster, kube_namespace: str, start_agent: AgentFactory, slurm: SlurmCluster
) -> None:
    agent = _agent(start_agent, slurm)
    script = "trap 'echo stopping; exit 0' TERM; echo up; while true; do sleep 0.2; done"
    create(devcluster, kube_namespace, _pod("runner", agent.node_name, script))
    wait_until(
        lambda: _status(devcluster, kube_namespace, "runner").get("phase") == "Running",
        60,
        "the pod to run",
    )
    # Running means the container's step runs, not that its shell has set the trap yet: a TERM
    # before `trap` kills it with 143 (the job then ends FAILED, as a kubelet's container would
    # end in Error). The trap is set once "up" is in its log.
    wait_until(
        lambda: (
            "up" in devcluster.kubectl("logs", "-n", kube_namespace, "runner", check=False).stdout
        ),
        30,
        "the container to set its TERM trap",
    )
    uid = (pod(devcluster, kube_namespace, "runner") or {})["metadata"]["uid"]
    (job,) = jobs_of(slurm, uid)
    assert job["job_state"] == "RUNNING"
    devcluster.kubectl("delete", "pod", "-n", kube_namespace, "runner", "--wait=false")
    wait_until(
        lambda: all(j["job_state"] != "RUNNING" for j in jobs_of(slurm, uid)),
        10,
        "the job to end within the grace period",
    )
    wait_until(lambda: pod(devcluster, kube_namespace, "runner") is None, 15, "the pod to be gone")
    assert [j["job_state"] for j in jobs_of(slurm, uid)] in (["COMPLETED"], ["CANCELLED"])


def test_a_restarted_agent_adopts_running_jobs_without_submitting_them_again(
    devcluster: DevCluster, kube_namespace: str, start_agent: AgentFactory, slurm: SlurmCluster
) -> None:
    agent = _agent(start_agent, slurm)
    create(devcluster, kube_namespace, _pod("steady", agent.node_name, "echo up; exec sleep 300"))
    wait_until(
        lambda: _status(devcluster, kube_namespace, "steady").get("phase") == "Running",
        60,
        "the pod to run",
    )
    first = _status(devcluster, kube_namespace, "steady")["containerStatuses"][0]
    agent.kill()
    _agent(start_agent, slurm, name=agent.node_name)  # Ready once it has adopted its pods
    status = _status(devcluster, kube_namespace, "steady")
    assert status["phase"] == "Running"
    assert status["containerStatuses"][0]["containerID"] == first["containerID"]
    assert status["containerStatuses"][0]["state"] == first["state"]
    uid = (pod(devcluster, kube_namespace, "steady") or {})["metadata"]["uid"]
    assert [j["job_state"] for j in jobs_of(slurm, uid)] == ["RUNNING"]
    assert devcluster.kubectl("logs", "-n", kube_namespace, "steady").stdout == "up\n"
    done = devcluster.kubectl(
        "exec", "-n", kube_namespace, "steady", "--", "sh", "-c", "echo in-job; exit 4", check=False
    )
    assert (done.returncode, done.stdout) == (4, "in-job\n")


def _counting_bin_dir(directory: Path) -> Path:
    """Wrappers of the Slurm commands that log each call (name and time) and run the real one."""
    directory.mkdir()
    for name in ("sbatch", "squeue", "scancel", "sinfo", "scontrol", "srun"):
        wrapper = directory / name
        wrapper.write_text(
            f'#!/bin/sh\necho "$(date +%s.%N) {name}" >> {directory}/calls.log\n'
            f'exec /usr/bin/{name} "$@"\n'
        )
        wrapper.chmod(0o755)
    return directory


def test_a_burst_of_200_pods_is_tracked_with_a_bounded_number_of_slurm_calls(
    devcluster: DevCluster,
    kube_namespace: str,
    start_agent: AgentFactory,
    slurm: SlurmCluster,
    tmp_path: Path,
) -> None:
    bin_dir = _counting_bin_dir(tmp_path / "bin")
    agent = _agent(start_agent, slurm, settings={"bin_dir": str(bin_dir), "poll_seconds": 2})
    names = [f"burst-{i}" for i in range(200)]
    burst = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [_pod(n, agent.node_name, "echo done") for n in names],
    }
    started = time.monotonic()
    create(devcluster, kube_namespace, burst)
    slurm_words = ("is pending:", "is RUNNING", "is CONFIGURING")

    def untracked() -> list[str]:
        """Pods whose status does not come from Slurm yet: every pod must be Pending with its
        job's state or reason, Running or Succeeded."""
        listed = devcluster.get_json("pods", "-n", kube_namespace)["items"]
        waiting = [
            item["metadata"]["name"]
            for item in listed
            if item.get("status", {}).get("phase") not in ("Running", "Succeeded")
            and not any(
                word in (state.get("waiting") or {}).get("message", "")
                for state in (
                    s.get("state", {}) for s in item.get("status", {}).get("containerStatuses", [])
                )
                for word in slurm_words
            )
        ]
        return waiting if len(listed) == len(names) else names

    try:
        wait_until(lambda: not untracked(), 90, "all 200 pods to show their job's state")
        tracked = time.monotonic() - started
        # Watch the queue drain for a while longer: the call rate must not grow with the pods.
        wait_until(lambda: time.monotonic() - started > tracked + 20, 30, "20 s of tracking")
        elapsed = time.monotonic() - started
        succeeded = sum(
            1
            for item in devcluster.get_json("pods", "-n", kube_namespace)["items"]
            if item.get("status", {}).get("phase") == "Succeeded"
        )
    finally:
        cancel_jobs_of_node(slurm, agent.node_name)
    calls = [line.split() for line in (bin_dir / "calls.log").read_text().splitlines()]
    by_name: dict[str, int] = {}
    for _, name in calls:
        by_name[name] = by_name.get(name, 0) + 1
    print(
        f"200 pods tracked by Slurm after {tracked:.1f} s, {succeeded} succeeded after "
        f"{elapsed:.1f} s, Slurm calls: {by_name} ({len(calls) / elapsed:.1f}/s in all, "
        f"{by_name['squeue'] / elapsed:.2f} squeue/s)"
    )
    assert by_name["sbatch"] == len(names)  # one submission per pod, none twice
    # Status is one squeue per poll (every 2 s, plus one after a burst of submissions), never
    # one per pod.
    assert by_name["squeue"] <= elapsed / 2 + 20
    assert by_name.get("scontrol", 0) == 0
    assert succeeded > 0


@pytest.mark.parametrize("client", ["system", "asyncssh"])
def test_through_ssh_to_a_login_node_pods_run_log_and_exec(
    devcluster: DevCluster,
    kube_namespace: str,
    start_agent: AgentFactory,
    slurm: SlurmCluster,
    sshd: Sshd,
    client: str,
) -> None:
    # A real sshd on loopback stands for the login node; its ForceCommand records each remote
    # command line before running it.
    settings: dict[str, Any] = {"ssh_host": "root@127.0.0.1", "ssh_client": client}
    if client == "system":
        settings["ssh_options"] = [
            "-o",
            "BatchMode=yes",
            "-p",
            str(sshd.port),
            "-i",
            str(sshd.client_key),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            f"UserKnownHostsFile={sshd.known_hosts}",
            "-o",
            "StrictHostKeyChecking=yes",
        ]
    else:
        settings.update(
            ssh_port=sshd.port,
            ssh_identity_file=str(sshd.client_key),
            ssh_known_hosts=str(sshd.known_hosts),
        )
    agent = _agent(start_agent, slurm, settings=settings)
    create(
        devcluster, kube_namespace, _pod("remote", agent.node_name, "echo from-login; sleep 300")
    )
    wait_until(
        lambda: _status(devcluster, kube_namespace, "remote").get("phase") == "Running",
        60,
        "the pod to run",
    )
    wait_until(
        lambda: devcluster.kubectl("logs", "-n", kube_namespace, "remote").stdout == "from-login\n",
        15,
        "the pod's log",
    )
    done = devcluster.kubectl(
        "exec",
        "-i",
        "-n",
        kube_namespace,
        "remote",
        "--",
        "sh",
        "-c",
        "read x; echo got $x; exit 5",
        input="it\n",
        check=False,
    )
    assert (done.returncode, done.stdout) == (5, "got it\n")
    calls = sshd.lines()
    assert all(line.startswith("env SLURM_CONF=") for line in calls), calls
    assert {line.split()[2] for line in calls} >= {"sbatch", "squeue", "sinfo", "srun"}
    logins = sshd.log.read_text().count("Accepted publickey")
    if client == "asyncssh":
        assert logins == 1  # one connection kept open for every command
    else:
        # The system ssh: one connection a command (a poll's login may not have run yet).
        assert logins >= len(calls) > 1
