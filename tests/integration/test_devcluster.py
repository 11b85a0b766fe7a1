"""The dev cluster is a real, working control plane: API server, controllers, scheduler, kubectl."""

from __future__ import annotations

import json
import secrets
from typing import Any

import pytest

from virtual_kubelet.devcluster import DevCluster, Versions, wait_until


def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for c in obj.get("status", {}).get("conditions", []):
        if c["type"] == kind:
            return c
    return None


def test_kubectl_and_server_versions_match(devcluster: DevCluster) -> None:
    versions = json.loads(devcluster.kubectl("version", "-o", "json").stdout)
    expected = Versions.from_env().kubernetes
    assert versions["clientVersion"]["gitVersion"] == expected
    assert versions["serverVersion"]["gitVersion"] == expected
    assert versions["serverVersion"]["minor"] == str(Versions.from_env().kubernetes_minor)
    assert devcluster.kubectl("get", "--raw", "/readyz").stdout == "ok"


def test_new_namespace_gets_default_service_account(
    devcluster: DevCluster, kube_namespace: str
) -> None:
    account = wait_until(
        lambda: devcluster.kubectl(
            "get", "serviceaccount", "default", "-n", kube_namespace, "-o", "name", check=False
        ).stdout.strip(),
        30,
        "the service-account controller to create `default`",
    )
    assert account == "serviceaccount/default"


DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: registry.invalid/web:1}]
"""


def test_deployment_creates_replicaset_and_pending_pods(
    devcluster: DevCluster, kube_namespace: str
) -> None:
    devcluster.kubectl("apply", "-n", kube_namespace, "-f", "-", input=DEPLOYMENT)

    def replicaset() -> dict[str, Any] | None:
        items = devcluster.get_json("replicasets", "-n", kube_namespace)["items"]
        return items[0] if items else None

    rs = wait_until(replicaset, 30, "the deployment controller to create a ReplicaSet")
    assert rs["metadata"]["ownerReferences"][0]["kind"] == "Deployment"

    def unschedulable_pods() -> list[dict[str, Any]] | None:
        pods = devcluster.get_json("pods", "-n", kube_namespace, "-l", "app=web")["items"]
        scheduled = [_condition(p, "PodScheduled") for p in pods]
        done = len(pods) == 2 and all(c and c["reason"] == "Unschedulable" for c in scheduled)
        return pods if done else None

    # No node exists: the scheduler has looked at both pods and could place neither.
    pods = wait_until(unschedulable_pods, 60, "2 pods marked Unschedulable by the scheduler")
    for pod in pods:
        assert pod["status"]["phase"] == "Pending"
        assert pod["metadata"]["ownerReferences"][0]["name"] == rs["metadata"]["name"]
        assert "nodeName" not in pod["spec"]


def test_pod_bound_to_missing_node_bypasses_scheduler_and_stays_pending(
    devcluster: DevCluster, kube_namespace: str
) -> None:
    missing = f"missing-node-{secrets.token_hex(3)}"
    bound = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "bound"},
        "spec": {"nodeName": missing, "containers": [{"name": "c", "image": "registry.invalid/x"}]},
    }
    probe = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "probe"},
        "spec": {"containers": [{"name": "c", "image": "registry.invalid/x"}]},
    }
    devcluster.kubectl("create", "-n", kube_namespace, "-f", "-", input=json.dumps(bound))
    devcluster.kubectl("create", "-n", kube_namespace, "-f", "-", input=json.dumps(probe))

    # Once the scheduler has judged the later `probe` pod, it has had its chance at `bound` too.
    wait_until(
        lambda: _condition(
            devcluster.get_json("pod", "probe", "-n", kube_namespace), "PodScheduled"
        ),
        60,
        "the scheduler to process the probe pod",
    )
    pod = devcluster.get_json("pod", "bound", "-n", kube_namespace)
    assert pod["spec"]["nodeName"] == missing
    assert pod["status"]["phase"] == "Pending"
    assert _condition(pod, "PodScheduled") is None, "the scheduler must not touch a bound pod"


def test_silent_node_turns_unknown_and_unreachable(devcluster: DevCluster) -> None:
    name = f"silent-{secrets.token_hex(3)}"
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}
    devcluster.kubectl("create", "-f", "-", input=json.dumps(node))
    try:

        def unreachable() -> dict[str, Any] | None:
            current = devcluster.get_json("node", name)
            ready = _condition(current, "Ready")
            taints = {t["key"] for t in current["spec"].get("taints", [])}
            if (
                ready
                and ready["status"] == "Unknown"
                and "node.kubernetes.io/unreachable" in taints
            ):
                return current
            return None

        # The fixture's node-startup grace period is 20 s; allow for a loaded 2-core machine.
        current = wait_until(
            unreachable, 90, "node-lifecycle to mark the node Unknown + unreachable"
        )
        assert _condition(current, "Ready")["reason"] == "NodeStatusNeverUpdated"  # type: ignore[index]
    finally:
        devcluster.kubectl("delete", "node", name, "--wait=false", check=False)


def test_api_server_refuses_to_proxy_to_loopback_nodes_but_not_to_the_node_address(
    devcluster: DevCluster,
) -> None:
    """Why the dev cluster has a node address: `nodes/<n>/proxy` rejects 127.0.0.1."""
    if devcluster.node_address is None:
        pytest.skip("creating a node address needs root")
    name = f"proxy-{secrets.token_hex(3)}"
    devcluster.kubectl(
        "create",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}),
    )
    try:
        for address, refused in (("127.0.0.1", True), (devcluster.node_ip, False)):
            status = {
                "status": {
                    "addresses": [{"type": "InternalIP", "address": address}],
                    "daemonEndpoints": {"kubeletEndpoint": {"Port": 1}},
                }
            }
            devcluster.kubectl(
                "patch",
                "node",
                name,
                "--subresource=status",
                "--type=merge",
                "-p",
                json.dumps(status),
            )
            result = devcluster.kubectl(
                "get", "--raw", f"/api/v1/nodes/{name}/proxy/healthz", check=False
            )
            assert result.returncode != 0  # nothing listens on port 1 either way
            assert ("address not allowed" in result.stderr) is refused, result.stderr
    finally:
        devcluster.kubectl("delete", "node", name, "--wait=false", check=False)
