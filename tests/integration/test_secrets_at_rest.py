"""A Secret's value never leaves memory through the agent: not in the mock provider's journal on
disk, not in the kubelet port's `/runningpods`, and it is back in the pod after an agent restart."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from virtual_kubelet.devcluster import DevCluster, wait_until

from .conftest import AgentFactory, create, pod, pod_manifest

PERSIST = {"persist": True}


def _files_containing(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_secret_env_stays_off_disk_and_out_of_runningpods_across_a_restart(
    devcluster: DevCluster, kube_namespace: str, start_agent: AgentFactory
) -> None:
    value = f"seeded-{secrets.token_hex(12)}"
    devcluster.kubectl(
        "create",
        "secret",
        "generic",
        "db",
        "-n",
        kube_namespace,
        f"--from-literal=password={value}",
    )
    agent = start_agent(provider_config=PERSIST)
    agent.approve_serving_certificate()
    manifest = pod_manifest("app", agent.node_name)
    manifest["spec"]["containers"][0]["env"] = [
        {"name": "PLAIN", "value": "visible"},
        {
            "name": "PASSWORD",
            "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}},
        },
    ]
    create(devcluster, kube_namespace, manifest)

    def running() -> bool:
        return (pod(devcluster, kube_namespace, "app") or {}).get("status", {}).get(
            "phase"
        ) == "Running"

    wait_until(running, 60, "the pod to run")

    def env() -> str:
        return devcluster.kubectl("exec", "-n", kube_namespace, "app", "--", "env").stdout

    assert f"PASSWORD={value}" in env()  # the workload does get it
    journal = agent.state_dir / f"mock-{agent.node_name}.jsonl"
    assert journal.exists()
    assert _files_containing(agent.state_dir, value.encode()) == []
    running_pods = devcluster.kubectl(
        "get", "--raw", f"/api/v1/nodes/{agent.node_name}/proxy/runningpods"
    ).stdout
    assert value not in running_pods
    (listed,) = json.loads(running_pods)["items"]
    assert listed["metadata"]["name"] == "app"
    assert listed["spec"]["containers"] == [{"name": "main", "image": "registry.invalid/app:1"}]

    # A crash and a restart: the pod is adopted, and its env is resolved again from the Secret.
    agent.kill()
    restarted = start_agent(name=agent.node_name, provider_config=PERSIST)
    restarted.approve_serving_certificate()
    wait_until(lambda: f"PASSWORD={value}" in env(), 60, "the secret value back in the pod")
    assert "PLAIN=visible" in env()
    assert (
        restarted.mock_creations().count(
            (pod(devcluster, kube_namespace, "app") or {})["metadata"]["uid"]
        )
        == 1
    ), "adopted, not created again"
    assert _files_containing(restarted.state_dir, value.encode()) == []
    assert value not in restarted.log()
    events = devcluster.kubectl("get", "events", "-n", kube_namespace, "-o", "json").stdout
    assert value not in events
