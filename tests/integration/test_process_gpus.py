"""GPUs in the process provider through the real control plane: the node advertises
`nvidia.com/gpu` from a configured list of 2 devices; of three 1-GPU pods two run with distinct
CUDA_VISIBLE_DEVICES, the third waits (WaitingForGPU, visible in kubectl) and starts when one
ends."""

from __future__ import annotations

from typing import Any

from virtual_kubelet.devcluster import DevCluster, wait_until

from .conftest import TOLERATION, AgentFactory, create, pod


def _gpu_pod(name: str, node: str, script: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeName": node,
            "tolerations": [TOLERATION],
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 2,
            "containers": [
                {
                    "name": "main",
                    "image": "busybox",
                    "command": ["sh", "-c", 'echo "cuda=$CUDA_VISIBLE_DEVICES"; ' + script],
                    "resources": {"limits": {"nvidia.com/gpu": "1"}},
                }
            ],
        },
    }


def _state(cluster: DevCluster, namespace: str, name: str) -> dict[str, Any]:
    statuses = (pod(cluster, namespace, name) or {}).get("status", {}).get("containerStatuses")
    return dict((statuses or [{}])[0].get("state", {}))


def test_three_one_gpu_pods_share_two_devices_one_at_a_time(
    devcluster: DevCluster, kube_namespace: str, start_agent: AgentFactory
) -> None:
    agent = start_agent(provider="process", provider_config={"gpus": ["0", "1"]})
    agent.approve_serving_certificate()
    node = agent.wait_ready()
    assert node["status"]["capacity"]["nvidia.com/gpu"] == "2"
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == "2"

    create(devcluster, kube_namespace, _gpu_pod("first", agent.node_name, "sleep 4"))
    create(devcluster, kube_namespace, _gpu_pod("second", agent.node_name, "exec sleep 120"))
    for name in ("first", "second"):
        wait_until(lambda n=name: "running" in _state(devcluster, kube_namespace, n), 60, name)
    create(devcluster, kube_namespace, _gpu_pod("third", agent.node_name, "exec sleep 120"))
    wait_until(
        lambda: (
            _state(devcluster, kube_namespace, "third").get("waiting", {}).get("reason")
            == "WaitingForGPU"
        ),
        30,
        "the third pod to wait for a GPU",
    )
    assert _state(devcluster, kube_namespace, "third")["waiting"]["message"] == (
        "needs 1 nvidia.com/gpu, 0 of 2 free"
    )

    def shown(name: str) -> str:
        return devcluster.kubectl("logs", "-n", kube_namespace, name).stdout.strip()

    assert {shown("first"), shown("second")} == {"cuda=0", "cuda=1"}
    first = shown("first")
    wait_until(lambda: "running" in _state(devcluster, kube_namespace, "third"), 30, "third")
    assert "terminated" in _state(devcluster, kube_namespace, "first")
    wait_until(lambda: shown("third") != "", 15, "the third pod's log")
    assert shown("third") == first
