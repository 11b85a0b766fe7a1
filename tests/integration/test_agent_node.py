"""The agent registers a real Node, keeps it alive, and the cluster notices when it stops."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from virtual_kubelet.devcluster import DevCluster, wait_until
from virtual_kubelet.kube.timefmt import parse

from .conftest import AgentFactory, condition


def _lease_renew_time(cluster: DevCluster, node: str) -> str | None:
    result = cluster.kubectl(
        "get",
        "lease",
        node,
        "-n",
        "kube-node-lease",
        "-o",
        "jsonpath={.spec.renewTime}",
        check=False,
    )
    return result.stdout or None


def test_node_registers_ready_with_labels_taint_and_renewing_lease(
    devcluster: DevCluster, start_agent: AgentFactory
) -> None:
    agent = start_agent(provider_config={"cpu": "8", "memory": "16Gi", "pods": "300"})
    node = agent.wait_ready()
    labels = node["metadata"]["labels"]
    name = agent.node_name
    assert labels["type"] == "virtual-kubelet"
    assert labels["kubernetes.io/role"] == "agent"
    assert labels["kubernetes.io/hostname"] == name
    assert labels["kubernetes.io/os"] == labels["beta.kubernetes.io/os"] == "linux"
    assert labels["node.kubernetes.io/exclude-from-external-load-balancers"] == "true"
    assert labels["alpha.service-controller.kubernetes.io/exclude-balancer"] == "true"
    assert {"key": "virtual-kubelet.io/provider", "value": "mock", "effect": "NoSchedule"} in node[
        "spec"
    ]["taints"]
    status = node["status"]
    assert status["capacity"]["cpu"] == "8"
    assert status["allocatable"]["memory"] == "16Gi"
    assert status["capacity"]["pods"] == "300"
    assert {"type": "InternalIP", "address": devcluster.node_ip} in status["addresses"]
    assert (
        status["daemonEndpoints"]["kubeletEndpoint"]["Port"] == agent.kubelet_port
    )  # KUBELET_PORT
    assert status["nodeInfo"]["kubeletVersion"].startswith("v1.36.0-vk-")
    lease = json.loads(
        devcluster.kubectl("get", "lease", name, "-n", "kube-node-lease", "-o", "json").stdout
    )
    assert lease["spec"]["holderIdentity"] == name
    assert lease["spec"]["leaseDurationSeconds"] == 40
    assert lease["metadata"]["ownerReferences"][0]["uid"] == node["metadata"]["uid"]
    first = parse(lease["spec"]["renewTime"])
    # The lease is renewed every 10 s: within 25 s we must see a newer renewTime.
    wait_until(
        lambda: parse(_lease_renew_time(devcluster, name) or "1970-01-01T00:00:00Z") > first,
        25,
        "the lease to be renewed",
    )


def test_killed_agent_goes_unknown_and_comes_back_ready(
    devcluster: DevCluster, start_agent: AgentFactory
) -> None:
    agent = start_agent()
    name = agent.node_name
    agent.kill()

    def unknown() -> bool:
        ready = condition(devcluster.get_json("node", name), "Ready")
        return bool(ready and ready["status"] == "Unknown")

    # The fixture's node-monitor grace period is 20 s.
    wait_until(unknown, 90, "the node-lifecycle controller to mark the node Unknown")
    taints = {t["key"] for t in devcluster.get_json("node", name)["spec"].get("taints", [])}
    assert "node.kubernetes.io/unreachable" in taints

    restarted = start_agent(name=name)
    node = restarted.wait_ready()
    assert condition(node, "Ready")["status"] == "True"  # type: ignore[index]

    def unreachable_taint_gone() -> bool:
        current = devcluster.get_json("node", name)
        return "node.kubernetes.io/unreachable" not in {
            t["key"] for t in current["spec"].get("taints", [])
        }

    wait_until(unreachable_taint_gone, 60, "the unreachable taint to be removed")


def test_deleted_node_is_created_again(devcluster: DevCluster, start_agent: AgentFactory) -> None:
    agent = start_agent()
    uid = devcluster.get_json("node", agent.node_name)["metadata"]["uid"]
    devcluster.kubectl("delete", "node", agent.node_name)

    def recreated() -> bool:
        result = devcluster.kubectl("get", "node", agent.node_name, "-o", "json", check=False)
        return result.returncode == 0 and json.loads(result.stdout)["metadata"]["uid"] != uid

    wait_until(recreated, 30, "the agent to register the deleted node again")
    agent.wait_ready()


def test_existing_node_is_adopted_keeping_foreign_taints_and_labels(
    devcluster: DevCluster, start_agent: AgentFactory
) -> None:
    name = f"vk-{secrets.token_hex(3)}"
    existing = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"team": "hpc", "type": "wrong"}},
        "spec": {
            "taints": [{"key": "example.com/dedicated", "value": "gpu", "effect": "NoSchedule"}]
        },
    }
    devcluster.kubectl("create", "-f", "-", input=json.dumps(existing))
    node = start_agent(name=name).wait_ready()
    assert node["metadata"]["labels"]["team"] == "hpc"
    assert node["metadata"]["labels"]["type"] == "virtual-kubelet"
    keys = {t["key"] for t in node["spec"]["taints"]}
    assert {"example.com/dedicated", "virtual-kubelet.io/provider"} <= keys


def test_failing_provider_ping_stops_the_lease_and_marks_node_not_ready(
    devcluster: DevCluster, start_agent: AgentFactory, tmp_path: Path
) -> None:
    marker = tmp_path / "unhealthy"
    agent = start_agent(provider_config={"unhealthy_file": str(marker)})
    name = agent.node_name
    marker.touch()

    def not_ready() -> dict[str, str] | None:
        ready = condition(devcluster.get_json("node", name), "Ready")
        return ready if ready and ready["status"] == "False" else None

    ready = wait_until(not_ready, 30, "the node to report Ready=False")
    assert ready["reason"] == "ProviderUnhealthy"
    assert "unhealthy" in ready["message"]
    frozen = _lease_renew_time(devcluster, name)
    # With the provider down the lease is not renewed: after the controller's grace period the
    # node turns Unknown (the kubelet's silence), which a renewed lease would have prevented.
    wait_until(
        lambda: (
            (condition(devcluster.get_json("node", name), "Ready") or {}).get("status") == "Unknown"
        ),
        90,
        "the node to turn Unknown without lease renewals",
    )
    assert _lease_renew_time(devcluster, name) == frozen
    marker.unlink()
    agent.wait_ready(60)


def test_status_writes_keep_conditions_other_components_own(
    devcluster: DevCluster, start_agent: AgentFactory
) -> None:
    agent = start_agent(args=["--node-status-update-frequency", "1s"])
    name = agent.node_name
    foreign = {
        "type": "example.com/GPUHealthy",
        "status": "True",
        "reason": "DriverLoaded",
        "message": "written by a node-problem-detector",
    }
    devcluster.kubectl(
        "patch",
        "node",
        name,
        "--subresource=status",
        "--type=strategic",
        "-p",
        json.dumps({"status": {"conditions": [foreign]}}),
    )
    before = (condition(devcluster.get_json("node", name), "Ready") or {})["lastHeartbeatTime"]

    def rewritten() -> dict[str, object] | None:
        node = devcluster.get_json("node", name)
        ready = condition(node, "Ready") or {}
        return node if ready.get("lastHeartbeatTime", before) > before else None

    node = wait_until(rewritten, 30, "the agent to write the node status again")
    kept = condition(node, "example.com/GPUHealthy")
    assert kept is not None
    assert kept["reason"] == "DriverLoaded"
