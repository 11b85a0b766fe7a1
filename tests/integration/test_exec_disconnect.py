"""An exec ends with its client: `kubectl exec` of a command that neither reads stdin nor writes,
killed while the command runs, leaves no process behind in the pod."""

from __future__ import annotations

import secrets
import signal
import subprocess

import psutil

from virtual_kubelet.devcluster import DevCluster, kubectl_path, wait_until

from .conftest import TOLERATION, AgentFactory, create, pod


def _processes_running(argv: list[str]) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if process.info["cmdline"] == argv:
            found.append(process)
    return found


def test_exec_is_stopped_when_kubectl_is_killed(
    devcluster: DevCluster, kube_namespace: str, start_agent: AgentFactory
) -> None:
    agent = start_agent(provider="process")
    agent.approve_serving_certificate()
    create(
        devcluster,
        kube_namespace,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "idle"},
            "spec": {
                "nodeName": agent.node_name,
                "tolerations": [TOLERATION],
                "containers": [{"name": "main", "image": "busybox", "command": ["sleep", "3600"]}],
            },
        },
    )
    wait_until(
        lambda: (
            (pod(devcluster, kube_namespace, "idle") or {}).get("status", {}).get("phase")
            == "Running"
        ),
        60,
        "the pod to run",
    )
    # A duration no other process on the machine uses: it identifies the exec'd command.
    marker = ["sleep", str(100000 + secrets.randbelow(800000))]
    kubectl = subprocess.Popen(
        [
            kubectl_path(),
            "--kubeconfig",
            str(devcluster.kubeconfig),
            "exec",
            "idle",
            "-n",
            kube_namespace,
            "--",
            *marker,
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_until(
            lambda: _processes_running(marker) or kubectl.poll() is not None,
            60,
            "the exec'd command to start",
        )
        assert kubectl.poll() is None, kubectl.communicate()[1]
    finally:
        kubectl.send_signal(signal.SIGKILL)
        kubectl.wait(10)
    wait_until(
        lambda: not _processes_running(marker),
        30,
        f"`{' '.join(marker)}` to end after its kubectl exec was killed",
    )
    # The agent serves the next exec as usual.
    done = devcluster.kubectl("exec", "idle", "-n", kube_namespace, "--", "echo", "next")
    assert done.stdout == "next\n"
