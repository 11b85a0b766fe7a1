"""The chart's agent really runs in the cluster: `helm install` into the dev cluster.

The dev cluster has no container runtime of its own, so its pod runs on a first virtual node
served by the **process** provider, whose `images` map runs the chart's image name as this
checkout's `python -m virtual_kubelet` (test_chart_in_cluster_cri.py runs the built container image
on the cri provider instead). That agent
pod reads the mounted service-account token and the in-cluster configuration (the dev cluster
has no kube-proxy, so KUBERNETES_SERVICE_HOST/PORT name the API server's own address instead of
the `kubernetes` Service's ClusterIP), registers its own node with the mock provider, runs a pod
and serves `kubectl logs` and `kubectl exec` for it, holding only the chart's least-privilege
ClusterRole: any `forbidden` in its log fails the test. `helm uninstall` then removes it all.

With two replicas (the mock's persisted pods on a directory both replicas mount, as a
ReadWriteMany claim would give them), kill -9 of the leader's process: the standby takes the node
over within the lease duration, the node never goes NotReady and the pods are not restarted.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from virtual_kubelet.devcluster import DevCluster, wait_until
from virtual_kubelet.devcluster.agent import AgentProcess
from virtual_kubelet.devcluster.ports import free_port

from .conftest import TOLERATION, AgentFactory, create, pod, pod_manifest
from .test_helm_chart import CHART, run_helm
from .test_leader_election import (
    GRACE_S,
    LEASE_DURATION_S,
    MAX_RETRY_WAIT_S,
    RETRY_PERIOD_S,
    NodeWatch,
)

IMAGE = "virtual-kubelet-python:in-cluster-test"


def _first_node(start_agent: AgentFactory) -> AgentProcess:
    """The process-provider node the chart's agent pods run on."""
    host = start_agent(
        provider="process",
        provider_config={
            "images": {IMAGE: {"command": [sys.executable, "-m", "virtual_kubelet"]}},
        },
    )
    host.approve_serving_certificate()
    return host


def _values(cluster: DevCluster, host: AgentProcess, node: str) -> dict[str, Any]:
    server = urlparse(cluster.server)
    repository, tag = IMAGE.split(":")
    return {
        "provider": "mock",
        "nodeName": node,
        "image": {"repository": repository, "tag": tag},
        "nodeSelector": {"kubernetes.io/hostname": host.node_name},
        "tolerations": [TOLERATION],
        # Host network on the first node: ports no other agent of the machine holds.
        "kubeletApi": {"port": free_port(cluster.node_ip)},
        "metrics": {"port": free_port("0.0.0.0")},
        # The process provider runs it as this user: the interpreter lives under /root.
        "podSecurityContext": {"runAsUser": 0},
        "securityContext": {"allowPrivilegeEscalation": False},
        "extraEnv": [
            {"name": "KUBERNETES_SERVICE_HOST", "value": server.hostname},
            {"name": "KUBERNETES_SERVICE_PORT", "value": str(server.port)},
        ],
    }


def _helm(helm: Path, cluster: DevCluster, *args: str) -> subprocess.CompletedProcess[str]:
    return run_helm(helm, *args, "--kubeconfig", str(cluster.kubeconfig))


def test_helm_install_runs_the_agent_in_cluster(
    helm: Path,
    devcluster: DevCluster,
    kube_namespace: str,
    start_agent: AgentFactory,
    tmp_path: Path,
) -> None:
    host = _first_node(start_agent)
    node = f"vk-chart-{secrets.token_hex(3)}"
    values = _values(devcluster, host, node)
    values_file = tmp_path / "values.json"
    values_file.write_text(json.dumps(values))
    release = "vk"
    installed = run_helm(
        helm,
        "install",
        release,
        str(CHART),
        "--namespace",
        kube_namespace,
        "--kubeconfig",
        str(devcluster.kubeconfig),
        "-f",
        str(values_file),
    )
    assert installed.returncode == 0, installed.stderr
    try:
        _check_agent_in_cluster(devcluster, kube_namespace, node, host)
    finally:
        uninstalled = run_helm(
            helm,
            "uninstall",
            release,
            "--namespace",
            kube_namespace,
            "--kubeconfig",
            str(devcluster.kubeconfig),
            "--wait",
            "--timeout=60s",
        )
        devcluster.kubectl("delete", "node", node, "--wait=false", check=False)
    assert uninstalled.returncode == 0, uninstalled.stderr
    selector = f"app.kubernetes.io/instance={release}"

    def left_over() -> list[str]:
        names = devcluster.kubectl(
            "get",
            "all,configmaps,secrets,serviceaccounts,leases",
            "-n",
            kube_namespace,
            "-l",
            selector,
            "-o",
            "name",
        ).stdout.split()
        names += devcluster.kubectl(
            "get",
            "clusterroles,clusterrolebindings",
            "-l",
            f"{selector},virtual-kubelet.io/node={node}",
            "-o",
            "name",
        ).stdout.split()
        return names

    wait_until(lambda: not left_over(), 60, "everything the chart created to be gone")


def _check_agent_in_cluster(cluster: DevCluster, namespace: str, node: str, host: Any) -> None:
    def agent_log() -> str:
        return cluster.kubectl(
            "logs",
            "-n",
            namespace,
            "-l",
            "app.kubernetes.io/component=kubelet",
            "--tail=-1",
            check=False,
        ).stdout

    def node_ready() -> bool:
        result = cluster.kubectl("get", "node", node, "-o", "json", check=False)
        if result.returncode != 0:
            return False
        conditions = json.loads(result.stdout)["status"].get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    try:
        wait_until(node_ready, 40, f"the in-cluster agent's node {node} to be Ready")
    except Exception:
        shims = "".join(p.read_text() for p in host.state_dir.rglob("shim.log"))
        raise AssertionError(
            f"agent pod log:\n{agent_log()[-3000:]}\nhost agent log:\n{host.log()[-2000:]}"
            f"\nshim logs:\n{shims[-3000:]}"
        ) from None
    log = agent_log()
    assert "via in-cluster service account" in log, log[-3000:]

    def pending_csr() -> str | None:
        listing = cluster.get_json("csr", "-l", f"virtual-kubelet.io/node={node}")
        for csr in listing["items"]:
            if not csr.get("status", {}).get("conditions"):
                return str(csr["metadata"]["name"])
        return None

    cluster.kubectl("certificate", "approve", wait_until(pending_csr, 60, "its serving CSR"))
    wait_until(lambda: "kubelet API serving on" in agent_log(), 60, "its kubelet API")

    create(cluster, namespace, pod_manifest("hello", node))
    wait_until(
        lambda: (
            (pod(cluster, namespace, "hello") or {}).get("status", {}).get("phase") == "Running"
        ),
        60,
        "a pod on the in-cluster agent's node",
    )
    logs = cluster.kubectl("logs", "-n", namespace, "hello", check=False)
    assert logs.returncode == 0, logs.stderr
    executed = cluster.kubectl("exec", "-n", namespace, "hello", "--", "echo", "in", "cluster")
    assert executed.stdout.strip() == "in cluster"

    forbidden = [
        line for line in agent_log().splitlines() if " 403 " in line or "forbidden" in line
    ]
    assert not forbidden, forbidden


def _agent_pid(pod_name: str) -> int:
    """The PID of the agent process that the process provider runs for `pod_name`."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--leader-elect\0" in cmdline and f"POD_NAME={pod_name}".encode() in environ:
            return int(entry.name)
    raise AssertionError(f"no agent process for pod {pod_name}")


def test_two_replicas_survive_kill_9_of_the_leader(
    helm: Path,
    devcluster: DevCluster,
    kube_namespace: str,
    start_agent: AgentFactory,
    tmp_path: Path,
) -> None:
    host = _first_node(start_agent)
    node = f"vk-ha-chart-{secrets.token_hex(3)}"
    shared = tmp_path / "shared-state"  # what a ReadWriteMany claim gives real replicas
    shared.mkdir()
    values = _values(devcluster, host, node)
    values.update(
        replicaCount=2,
        providers={"mock": {"persist": True}},
        stateVolume={"hostPath": {"path": str(shared), "type": "Directory"}},
        leaderElection={
            "leaseDuration": f"{LEASE_DURATION_S}s",
            "renewDeadline": "3s",
            "retryPeriod": f"{RETRY_PERIOD_S:g}s",
        },
        # Both replicas share the first node's network here: no metrics port to fight over.
        metrics={"port": 0},
    )
    values_file = tmp_path / "values.json"
    values_file.write_text(json.dumps(values))
    installed = _helm(
        helm, devcluster, "install", "ha", str(CHART), "-n", kube_namespace, "-f", str(values_file)
    )
    assert installed.returncode == 0, installed.stderr
    creations_log = shared / f"mock-{node}-creations.log"

    def holder() -> str:
        lease = devcluster.kubectl(
            "get",
            "lease",
            f"virtual-kubelet-{node}",
            "-n",
            kube_namespace,
            "-o",
            "json",
            check=False,
        )
        if lease.returncode != 0:
            return ""
        return str(json.loads(lease.stdout)["spec"].get("holderIdentity") or "")

    try:
        leader = wait_until(holder, 60, "a leader")
        agents = devcluster.get_json(
            "pods", "-n", kube_namespace, "-l", "app.kubernetes.io/instance=ha"
        )["items"]
        leader_pod = leader.rsplit("_", 1)[0]
        assert leader_pod in {p["metadata"]["name"] for p in agents}, "the Lease names a pod"
        wait_until(lambda: _node_ready(devcluster, node), 60, "the node to be Ready")

        names = ["ha-a", "ha-b"]
        for name in names:
            create(devcluster, kube_namespace, pod_manifest(name, node))

        def states() -> dict[str, Any] | None:
            pods = [pod(devcluster, kube_namespace, n) or {} for n in names]
            if all(p.get("status", {}).get("phase") == "Running" for p in pods):
                return {p["metadata"]["name"]: p["status"]["containerStatuses"] for p in pods}
            return None

        before = wait_until(states, 60, "the pods to run")
        creations = creations_log.read_text()

        with NodeWatch(devcluster, node) as watch:
            wait_until(lambda: len(watch.renewals) >= 1, 30, "a first heartbeat seen")
            os.kill(_agent_pid(leader_pod), signal.SIGKILL)
            killed = time.monotonic()
            new_leader = wait_until(
                lambda: (h := holder()) not in ("", leader) and h, 30, "a standby to take over"
            )
            took_over = time.monotonic() - killed
            assert took_over <= LEASE_DURATION_S + MAX_RETRY_WAIT_S + 1.0, took_over
            wait_until(
                lambda: time.monotonic() - killed > GRACE_S + 6 and len(watch.renewals) >= 3,
                GRACE_S + 30,
                "the node-monitor grace period to pass with heartbeats",
            )
        # Either replica may hold the Lease now: the standby, or the killed leader's container
        # restarted as a new candidate (a new identity) that reached the expired Lease first.
        # What matters to the operator is a new holder within the bound, no NotReady, no restarts.
        assert new_leader.rsplit("_", 1)[0] in {p["metadata"]["name"] for p in agents}, new_leader
        assert set(watch.ready_seen) == {"True"}, watch.ready_seen
        assert watch.longest_heartbeat_gap() < GRACE_S, watch.renewals
        assert states() == before, "the pods were restarted"
        assert creations_log.read_text() == creations, "a pod was created again"
    finally:
        _helm(helm, devcluster, "uninstall", "ha", "-n", kube_namespace, "--wait", "--timeout=60s")
        devcluster.kubectl("delete", "node", node, "--wait=false", check=False)


def _node_ready(cluster: DevCluster, node: str) -> bool:
    result = cluster.kubectl("get", "node", node, "-o", "json", check=False)
    if result.returncode != 0:
        return False
    conditions = json.loads(result.stdout)["status"].get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
