"""Every test here runs against the real control plane (the `devcluster` fixture)."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from virtual_kubelet.devcluster import DevCluster, DevClusterError
from virtual_kubelet.devcluster.agent import AgentProcess
from virtual_kubelet.devcluster.tools import ensure_helm

TOLERATION = {"key": "virtual-kubelet.io/provider", "operator": "Exists", "effect": "NoSchedule"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/integration/" in str(item.path):
            item.add_marker(pytest.mark.integration)


AgentFactory = Callable[..., AgentProcess]


@pytest.fixture
def start_agent(devcluster: DevCluster, tmp_path: Path) -> Iterator[AgentFactory]:
    """Start agents (as users would) on uniquely named nodes; stop them and delete their nodes
    afterwards. Call `start_agent(provider_config={...}, args=[...])`."""
    started: list[AgentProcess] = []

    def start(ready: bool = True, name: str | None = None, **kwargs: Any) -> AgentProcess:
        node = name or f"vk-{secrets.token_hex(3)}"
        agent = AgentProcess(devcluster, node, tmp_path / node, **kwargs).start()
        started.append(agent)
        if ready:
            agent.wait_ready()
        return agent

    yield start
    for agent in started:
        agent.stop()
        agent.cleanup()
    for node in {a.node_name for a in started}:
        devcluster.kubectl("delete", "node", node, "--wait=false", check=False)


@pytest.fixture(scope="session")
def helm() -> Path:
    """helm, built from its Go module once and cached. Where it cannot be built the test is
    skipped, except under CI=true, where that is a failure."""
    try:
        return ensure_helm(progress=print)
    except DevClusterError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"helm must build under CI=true: {exc}")
        pytest.skip(f"helm cannot be built here: {exc}")


def pod_manifest(name: str, node: str | None = None, **spec_extra: Any) -> dict[str, Any]:
    annotations = spec_extra.pop("annotations", {})
    labels = spec_extra.pop("labels", {})
    spec: dict[str, Any] = {
        "containers": [{"name": "main", "image": "registry.invalid/app:1"}],
        "tolerations": [TOLERATION],
        **spec_extra,
    }
    if node:
        spec["nodeName"] = node
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations, "labels": labels},
        "spec": spec,
    }


def create(cluster: DevCluster, namespace: str, obj: dict[str, Any]) -> None:
    cluster.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(obj))


def pod(cluster: DevCluster, namespace: str, name: str) -> dict[str, Any] | None:
    result = cluster.kubectl("get", "pod", name, "-n", namespace, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any] | None:
    for c in (obj or {}).get("status", {}).get("conditions", []):
        if c["type"] == kind:
            return c
    return None


def events_for(cluster: DevCluster, namespace: str, name: str) -> list[dict[str, Any]]:
    items = cluster.get_json(
        "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}"
    )["items"]
    return list(items)
