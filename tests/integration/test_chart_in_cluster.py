"""The chart's agent really runs in the cluster: `helm install` into the dev cluster.

The dev cluster has no container runtime of its own, so its pod runs on a first virtual node
served by the **process** provider, whose `images` map runs the chart's image name as this
checkout's `python -m virtual_kubelet` (the container image itself is not built yet). That agent
pod reads the mounted service-account token and the in-cluster configuration (the dev cluster
has no kube-proxy, so KUBERNETES_SERVICE_HOST/PORT name the API server's own address instead of
the `kubernetes` Service's ClusterIP), registers its own node with the mock provider, runs a pod
and serves `kubectl logs` and `kubectl exec` for it, holding only the chart's least-privilege
ClusterRole: any `forbidden` in its log fails the test. `helm uninstall` then removes it all.
"""

from __future__ import annotations

import json
import secrets
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from virtual_kubelet.devcluster import DevCluster, wait_until
from virtual_kubelet.devcluster.ports import free_port

from .conftest import TOLERATION, AgentFactory, create, pod, pod_manifest
from .test_helm_chart import CHART, run_helm

IMAGE = "virtual-kubelet-python:in-cluster-test"


def test_helm_install_runs_the_agent_in_cluster(
    helm: Path,
    devcluster: DevCluster,
    kube_namespace: str,
    start_agent: AgentFactory,
    tmp_path: Path,
) -> None:
    host = start_agent(
        provider="process",
        provider_config={
            "images": {IMAGE: {"command": [sys.executable, "-m", "virtual_kubelet"]}},
        },
    )
    host.approve_serving_certificate()
    node = f"vk-chart-{secrets.token_hex(3)}"
    server = urlparse(devcluster.server)
    repository, tag = IMAGE.split(":")
    values: dict[str, Any] = {
        "provider": "mock",
        "nodeName": node,
        "image": {"repository": repository, "tag": tag},
        "nodeSelector": {"kubernetes.io/hostname": host.node_name},
        "tolerations": [TOLERATION],
        # Host network on the first node: ports no other agent of the machine holds.
        "kubeletApi": {"port": free_port(devcluster.node_ip)},
        "metrics": {"port": free_port("0.0.0.0")},
        # The process provider runs it as this user: the interpreter lives under /root.
        "podSecurityContext": {"runAsUser": 0},
        "securityContext": {"allowPrivilegeEscalation": False},
        "extraEnv": [
            {"name": "KUBERNETES_SERVICE_HOST", "value": server.hostname},
            {"name": "KUBERNETES_SERVICE_PORT", "value": str(server.port)},
        ],
    }
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
