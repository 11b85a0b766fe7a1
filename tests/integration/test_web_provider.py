"""The `web` provider in its original mode, against the real control plane and a backend written
in the tests only from the protocol table (tests/integration/web_table_backend.py: stdlib
http.server, no /getPod, /updatePod as POST, Flask's `404 NOT FOUND`, pods in memory).

What a user sees: a Deployment runs, `kubectl logs --tail` works, scaling down deletes in the
backend, the node shows the backend's capacity, conditions and addresses, a restarted backend
loses no pods, and a backend that answers 500s, garbage or nothing produces Events, node
conditions and retries, never a crash of the agent.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from virtual_kubelet.devcluster import DevCluster, wait_until

from .conftest import TOLERATION, AgentFactory, condition, create, events_for, pod, pod_manifest

BACKEND = Path(__file__).with_name("web_table_backend.py")
#: Quick reactions, so faults show within seconds.
CONFIG = {
    "request_timeout": 3,
    "retry_max_elapsed": 15,
    "node_refresh_interval": 1,
    "node_failure_threshold": 2,
}


class TableBackend:
    """The test backend as a child process on a fixed loopback port (so it can be restarted)."""

    def __init__(self, workdir: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.log_path = workdir / "backend.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> TableBackend:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(BACKEND), str(self.port)], stdout=log, stderr=log
            )
        wait_until(self._answers, 30, "the table backend to listen")
        return self

    def _answers(self) -> bool:
        try:
            self.pods()
        except OSError:
            return False
        return True

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def pods(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/_test/pods", timeout=5) as answer:
            result: dict[str, Any] = json.loads(answer.read())
            return result

    def fault(self, route: str, mode: str, times: int = 0) -> None:
        body = json.dumps({"route": route, "mode": mode, "times": times}).encode()
        request = urllib.request.Request(f"{self.url}/_test/fault", data=body, method="POST")
        with urllib.request.urlopen(request, timeout=5):
            pass


@pytest.fixture
def backend(tmp_path: Path) -> Any:
    server = TableBackend(tmp_path).start()
    yield server
    server.kill()


def _deployment(name: str, node: str, replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "nodeSelector": {"kubernetes.io/hostname": node},
                    "tolerations": [TOLERATION],
                    "containers": [{"name": "web", "image": "registry.invalid/web:1"}],
                },
            },
        },
    }


def _running(cluster: DevCluster, namespace: str, selector: str) -> list[dict[str, Any]]:
    pods = cluster.get_json("pods", "-n", namespace, "-l", selector)["items"]
    return [
        p
        for p in pods
        if p["status"].get("phase") == "Running"
        and (condition(p, "Ready") or {}).get("status") == "True"
        and not p["metadata"].get("deletionTimestamp")
    ]


def _ours(backend: TableBackend, namespace: str) -> dict[str, Any]:
    return {k: v for k, v in backend.pods().items() if k.startswith(namespace + "/")}


def test_a_backend_from_the_table_runs_a_deployment_and_survives_its_own_restart(
    devcluster: DevCluster, kube_namespace: str, start_agent: AgentFactory, backend: TableBackend
) -> None:
    # The URL through WEB_ENDPOINT_URL, as the original read it; its path is dropped.
    agent = start_agent(
        provider="web",
        provider_config=CONFIG,
        env={"WEB_ENDPOINT_URL": f"{backend.url}/this/path/is/dropped/"},
    )
    node = agent.wait_ready()
    status = node["status"]
    assert status["capacity"] == {"cpu": "20", "memory": "100Gi", "pods": "20"}
    assert status["allocatable"] == status["capacity"]
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Ready"]["reason"] == "BackendReady"
    assert conditions["TableBackend"]["status"] == "True"
    assert status["addresses"][0] == {"type": "InternalIP", "address": devcluster.node_ip}
    assert {"type": "ExternalIP", "address": "203.0.113.7"} in status["addresses"]

    create(devcluster, kube_namespace, _deployment("table", agent.node_name, 3))
    wait_until(
        lambda: len(_running(devcluster, kube_namespace, "app=table")) == 3,
        90,
        "3 replicas Running and Ready",
    )
    api_pods = {
        f"{kube_namespace}/{p['metadata']['name']}": p["metadata"]["uid"]
        for p in _running(devcluster, kube_namespace, "app=table")
    }
    in_backend = _ours(backend, kube_namespace)
    assert {k: v["metadata"]["uid"] for k, v in in_backend.items()} == api_pods

    agent.approve_serving_certificate()
    first = sorted(api_pods)[0].split("/")[1]
    logs = devcluster.kubectl("logs", "-n", kube_namespace, first, "--tail=2").stdout
    assert logs.splitlines() == [
        "web: line 9 of the backend's log",
        "web: line 10 of the backend's log",
    ]

    devcluster.kubectl("scale", "deployment", "table", "-n", kube_namespace, "--replicas=1")
    wait_until(lambda: len(_ours(backend, kube_namespace)) == 1, 60, "deletes in the backend")
    wait_until(
        lambda: (
            len(devcluster.get_json("pods", "-n", kube_namespace, "-l", "app=table")["items"]) == 1
        ),
        60,
        "the API to keep one replica",
    )
    (survivor,) = _running(devcluster, kube_namespace, "app=table")

    # The backend restarts and forgets everything (state in memory): the agent gives it back.
    backend.kill()
    backend.start()
    assert _ours(backend, kube_namespace) == {}
    wait_until(
        lambda: list(_ours(backend, kube_namespace).values()),
        60,
        "the pod to be created again in the restarted backend",
    )
    (again,) = _ours(backend, kube_namespace).values()
    assert again["metadata"]["uid"] == survivor["metadata"]["uid"]
    (still,) = _running(devcluster, kube_namespace, "app=table")
    assert still["metadata"]["uid"] == survivor["metadata"]["uid"]
    assert agent.process is not None
    assert agent.process.poll() is None


def test_a_failing_backend_gives_events_conditions_and_retries_never_a_crash(
    devcluster: DevCluster, kube_namespace: str, start_agent: AgentFactory, backend: TableBackend
) -> None:
    agent = start_agent(provider="web", provider_config={"url": backend.url, **CONFIG})
    node = agent.node_name

    def phase(name: str) -> str | None:
        return (pod(devcluster, kube_namespace, name) or {}).get("status", {}).get("phase")

    def warnings(name: str, reason: str) -> list[str]:
        return [
            e["message"]
            for e in events_for(devcluster, kube_namespace, name)
            if e["type"] == "Warning" and e["reason"] == reason
        ]

    # 500s on create: Warning Events quoting the answer, then the agent's retry succeeds.
    backend.fault("/createPod", "500", times=2)
    create(devcluster, kube_namespace, pod_manifest("flaky", node))
    wait_until(lambda: phase("flaky") == "Running", 60, "flaky to run after two 500s")
    messages = warnings("flaky", "ProviderCreateFailed")
    assert messages
    assert "POST /createPod answered 500 Internal Server Error" in messages[0]

    # A create that hangs: timed out (not sent twice by the transport), reported, retried.
    backend.fault("/createPod", "hang", times=1)
    create(devcluster, kube_namespace, pod_manifest("slow", node))
    wait_until(lambda: phase("slow") == "Running", 60, "slow to run after a hung create")
    assert any("timed out" in m for m in warnings("slow", "ProviderCreateFailed"))

    # Garbage from the status endpoint: logged and polled again; the pods keep their status.
    backend.fault("/getPodStatus", "garbage")
    wait_until(
        lambda: "GET /getPodStatus answered 200 with a body that is not JSON" in agent.log(),
        30,
        "the garbage status to be noticed",
    )
    backend.fault("/getPodStatus", "ok")
    assert phase("flaky") == "Running"

    # Node endpoints failing: last good values kept, Ready False with the reason, then back.
    backend.fault("/capacity", "500")
    backend.fault("/nodeConditions", "garbage")

    def ready() -> dict[str, Any]:
        return condition(devcluster.get_json("node", node), "Ready") or {}

    wait_until(lambda: ready().get("status") == "False", 30, "the node to turn NotReady")
    message = ready()["message"]
    assert ready()["reason"] == "BackendNodeStatusFailed"
    assert "GET /capacity failed" in message
    assert "answered 500" in message
    assert "GET /nodeConditions answered 200 with a body that is not JSON" in message
    assert devcluster.get_json("node", node)["status"]["capacity"]["cpu"] == "20"
    backend.fault("/capacity", "ok")
    backend.fault("/nodeConditions", "ok")
    wait_until(lambda: ready().get("status") == "True", 30, "the node to be Ready again")

    # A backend without /deletePod: the deletion is not wedged, and the pod says why.
    backend.fault("/deletePod", "missing")
    devcluster.kubectl("delete", "pod", "flaky", "-n", kube_namespace, "--wait=false")
    wait_until(lambda: pod(devcluster, kube_namespace, "flaky") is None, 30, "flaky removed")
    (warning,) = warnings("flaky", "ProviderDeleteFailed")
    assert "could not be told to delete the pod" in warning
    assert f"{kube_namespace}/flaky" in backend.pods()  # the backend was never told

    assert agent.process is not None
    assert agent.process.poll() is None
    assert "Traceback" not in agent.log()
