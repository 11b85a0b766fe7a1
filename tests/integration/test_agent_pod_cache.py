"""The agent's pod cache keeps pods packed (issue 18): a pod created before an agent restart, read
back from that cache, still carries everything the controllers need. Its status is put right and
its graceful deletion waits for the provider, which gets the pod with its annotations."""

from __future__ import annotations

import json
import time

from virtual_kubelet.devcluster import DevCluster, wait_until

from .conftest import AgentFactory, condition, create, pod, pod_manifest

PERSIST = {"persist": True}


def _ready(cluster: DevCluster, namespace: str, name: str) -> bool:
    current = pod(cluster, namespace, name)
    return (current or {}).get("status", {}).get("phase") == "Running" and (
        condition(current, "Ready") or {}
    ).get("status") == "True"


def test_a_pod_from_before_a_restart_gets_its_status_written_and_is_deleted_gracefully(
    devcluster: DevCluster, kube_namespace: str, start_agent: AgentFactory
) -> None:
    agent = start_agent(provider_config=PERSIST)
    manifest = pod_manifest(
        "survivor",
        agent.node_name,
        # The mock takes 3 s to stop it: read from the pod the agent hands to delete_pod.
        annotations={"mock.virtual-kubelet.io/stop-seconds": "3", "team": "storage"},
        labels={"app": "survivor"},
        terminationGracePeriodSeconds=60,
    )
    create(devcluster, kube_namespace, manifest)
    wait_until(lambda: _ready(devcluster, kube_namespace, "survivor"), 60, "survivor Ready")
    uid = pod(devcluster, kube_namespace, "survivor")["metadata"]["uid"]  # type: ignore[index]
    assert agent.stop() == 0

    # While no agent serves the node, its status is changed behind the provider's back.
    tampered = {"status": {"conditions": [{"type": "Ready", "status": "False", "reason": "X"}]}}
    devcluster.kubectl(
        "patch",
        "pod",
        "survivor",
        "-n",
        kube_namespace,
        "--subresource=status",
        "--type=strategic",
        "-p",
        json.dumps(tampered),
    )
    assert not _ready(devcluster, kube_namespace, "survivor")

    restarted = start_agent(name=agent.node_name, provider_config=PERSIST)
    # The adopted pod's status, diffed against the packed cache, is written back.
    wait_until(lambda: _ready(devcluster, kube_namespace, "survivor"), 60, "survivor Ready again")
    current = pod(devcluster, kube_namespace, "survivor")
    assert current is not None
    assert current["metadata"]["uid"] == uid  # adopted, not re-created
    assert current["metadata"]["labels"] == {"app": "survivor"}
    assert [u for u in restarted.mock_creations() if u == uid] == [uid]  # created once

    started = time.monotonic()
    devcluster.kubectl("delete", "pod", "survivor", "-n", kube_namespace, "--wait=false")
    wait_until(lambda: pod(devcluster, kube_namespace, "survivor") is None, 45, "survivor removed")
    elapsed = time.monotonic() - started
    # Removed once the provider stopped it (its annotated 3 s: the provider was given the whole
    # pod), neither at once nor at the end of the 60 s grace period.
    assert 2.5 <= elapsed < 30, elapsed
    assert f"{kube_namespace}/survivor" not in restarted.mock_pods()
