"""`virtual-kubelet remove-node` against the real dev cluster, where no chart is involved: the
paths the chart's uninstall test does not take (tests/integration/test_chart_in_cluster_cri.py
covers the drain through a running agent and the Deployment scaled to 0)."""

from __future__ import annotations

import subprocess
import sys

from virtual_kubelet.devcluster import DevCluster, wait_until

from .conftest import AgentFactory, create, pod, pod_manifest


def _remove_node(cluster: DevCluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "virtual_kubelet", "remove-node", *args],
        env={"KUBECONFIG": str(cluster.kubeconfig), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_pods_no_agent_stops_are_deleted_without_grace_and_a_rerun_is_harmless(
    devcluster: DevCluster, kube_namespace: str, start_agent: AgentFactory
) -> None:
    agent = start_agent(provider="mock")
    node = agent.node_name
    create(devcluster, kube_namespace, pod_manifest("stays", node))
    wait_until(
        lambda: (
            (pod(devcluster, kube_namespace, "stays") or {}).get("status", {}).get("phase")
            == "Running"
        ),
        60,
        "the pod to run",
    )
    # No agent left to stop the pod: its deletion cannot finish by itself.
    agent.stop()

    removed = _remove_node(devcluster, "--nodename", node, "--drain-timeout", "3s")
    assert removed.returncode == 0, removed.stderr
    assert f"node {node} removed (1 pods forced)" in removed.stdout
    assert f"{kube_namespace}/stays" in removed.stderr  # the log names what was forced
    assert pod(devcluster, kube_namespace, "stays") is None
    gone = devcluster.kubectl("get", "node", node, check=False)
    assert gone.returncode != 0
    assert "NotFound" in gone.stderr

    again = _remove_node(devcluster, "--nodename", node)
    assert again.returncode == 0, again.stderr
    assert "does not exist" in again.stderr


def test_a_bad_deployment_argument_is_refused(devcluster: DevCluster) -> None:
    refused = _remove_node(devcluster, "--nodename", "x", "--deployment", "no-slash")
    assert refused.returncode == 2
    assert "--deployment" in refused.stderr
    assert "NAMESPACE/NAME" in refused.stderr
