"""`kubectl top` on a virtual node: the dev cluster's metrics-server (built from its Go module,
behind the API server's aggregation layer) scrapes the agent's `/metrics/resource` exactly as it
scrapes a kubelet's: at the node's InternalIP and kubelet port, the serving certificate checked
against the cluster CA, as its own user, authorised by SubjectAccessReview on `nodes/metrics`.

This module runs its own cluster with metrics-server on (`devcluster up --metrics-server`), so the
session's shared cluster keeps no APIService that other tests would see.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from virtual_kubelet.devcluster import DevCluster, DevClusterError, wait_until
from virtual_kubelet.devcluster.metrics_server import APISERVICE
from virtual_kubelet.devcluster.pytest_plugin import config_for_tests
from virtual_kubelet.devcluster.tools import ensure_metrics_server

from .conftest import TOLERATION, AgentFactory, create

#: Two metric resolutions (15 s each) and then some: metrics-server needs two scrapes of a
#: container, or one and its start time, before it reports a rate.
DEADLINE = 120.0
#: A CPU burner that also holds 64 MiB, touched so it is really resident.
BURN = (
    "import time\n"
    "held = bytearray(64 << 20)\n"
    "for i in range(0, len(held), 4096): held[i] = 1\n"
    "print('holding', len(held), flush=True)\n"
    "while True: sum(range(10000))\n"
)


@pytest.fixture(scope="module")
def devcluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevCluster]:
    """This module's cluster, with metrics-server (replaces the session's for these tests)."""
    try:
        ensure_metrics_server(progress=print)
    except DevClusterError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"metrics-server must build under CI=true: {exc}")
        pytest.skip(f"metrics-server cannot be built here: {exc}")
    cluster = DevCluster(
        tmp_path_factory.mktemp("devcluster-top"), config_for_tests(metrics_server=True)
    )
    try:
        cluster.start()
    except DevClusterError as exc:
        pytest.fail(f"the dev cluster with metrics-server did not start:\n{exc}", pytrace=False)
    try:
        yield cluster
    finally:
        cluster.stop()


def _millicores(text: str) -> int:
    match = re.fullmatch(r"(\d+)m", text)
    if match:
        return int(match.group(1))
    return int(float(text) * 1000)


def _mebibytes(text: str) -> int:
    match = re.fullmatch(r"(\d+)(Ki|Mi|Gi)", text)
    assert match, text
    factor = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024}[match.group(2)]
    return int(int(match.group(1)) * factor)


def _top(cluster: DevCluster, *args: str) -> dict[str, tuple[int, int]]:
    """`kubectl top ARGS --no-headers` as {name: (millicores, MiB)}; {} while metrics are not in."""
    result = cluster.kubectl("top", *args, "--no-headers", check=False)
    if result.returncode != 0:
        return {}
    rows = {}
    for line in result.stdout.splitlines():
        # Pods: NAME CPU MEMORY; nodes: NAME CPU CPU% MEMORY MEMORY%.
        fields = [f for f in line.split() if not f.endswith("%")]
        rows[fields[0]] = (_millicores(fields[1]), _mebibytes(fields[2]))
    return rows


def test_kubectl_top_shows_a_process_pods_cpu_and_memory_and_its_nodes(
    devcluster: DevCluster, kube_namespace: str, start_agent: AgentFactory, tmp_path: Path
) -> None:
    available = devcluster.get_json("apiservice", APISERVICE)
    assert {c["type"]: c["status"] for c in available["status"]["conditions"]}["Available"] == (
        "True"
    )
    agent = start_agent(provider="process", provider_config={})
    # metrics-server verifies the kubelet port's certificate: it must be the CSR-issued one.
    agent.approve_serving_certificate()
    create(
        devcluster,
        kube_namespace,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "burner"},
            "spec": {
                "nodeName": agent.node_name,
                "tolerations": [TOLERATION],
                "containers": [
                    {
                        "name": "burn",
                        "image": "python:3",
                        "command": ["python3", "-c", BURN],
                        "workingDir": str(tmp_path),
                    }
                ],
            },
        },
    )
    devcluster.kubectl(
        "wait", "-n", kube_namespace, "--for=condition=Ready", "pod/burner", "--timeout=90s"
    )

    def pod_usage() -> tuple[int, int] | None:
        usage = _top(devcluster, "pods", "-n", kube_namespace).get("burner")
        return usage if usage and usage[0] > 0 and usage[1] > 0 else None

    cpu, memory = wait_until(pod_usage, DEADLINE, "kubectl top pods to show the burner")
    # A busy loop uses most of a core (at least a tenth of one on a loaded 2-core machine), and
    # the 64 MiB it holds are in its working set.
    assert cpu >= 100, cpu
    assert memory >= 64, memory
    containers = devcluster.kubectl(
        "top", "pod", "burner", "-n", kube_namespace, "--containers", "--no-headers"
    ).stdout.split()
    assert containers[:2] == ["burner", "burn"], containers

    def node_usage() -> tuple[int, int] | None:
        usage = _top(devcluster, "node", agent.node_name).get(agent.node_name)
        return usage if usage and usage[0] > 0 and usage[1] > 0 else None

    node_cpu, node_memory = wait_until(node_usage, DEADLINE, "kubectl top node to show the node")
    # The process provider's node is this machine, and the burner runs on it all the while.
    assert node_cpu >= 100, node_cpu
    assert node_memory >= memory, (node_memory, memory)
