"""The kubelet port as clients this project did not write use it: the official Python client's
WebSocket port-forward through the API server, Go-style proxy paths without a trailing slash, and a
node whose InternalIP the API server will not proxy to."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.stream import portforward

from virtual_kubelet.devcluster import DevCluster, wait_until

from .conftest import TOLERATION, AgentFactory, create, pod


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _core_api(cluster: DevCluster) -> k8s.CoreV1Api:
    return k8s.CoreV1Api(k8s_config.new_client_from_config(config_file=str(cluster.kubeconfig)))


def _read_to_eof(sock: socket.socket, deadline_s: float) -> bytes:
    """Everything until the peer closes; fails (instead of hanging) if it never does."""
    sock.settimeout(1.0)
    received = b""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        if not chunk:
            return received
        received += chunk
    raise AssertionError(f"no end of stream after {deadline_s} s; received {received[:200]!r}")


def test_official_client_websocket_port_forward_ends_when_the_pod_closes(
    devcluster: DevCluster, kube_namespace: str, start_agent: AgentFactory, tmp_path: Path
) -> None:
    """`GET / HTTP/1.0` to a server that answers and closes: the client sees the whole answer and
    then the end of the stream (it used to hang until killed); a port nobody listens on is
    reported on the error channel."""
    agent = start_agent(provider="process")
    agent.approve_serving_certificate()
    port = _free_port()
    (tmp_path / "index.html").write_text("closing after this\n")
    create(
        devcluster,
        kube_namespace,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "web"},
            "spec": {
                "nodeName": agent.node_name,
                "tolerations": [TOLERATION],
                "containers": [
                    {
                        "name": "http",
                        "image": "python:3",
                        "command": [
                            "python3",
                            "-m",
                            "http.server",
                            str(port),
                            "--bind",
                            "0.0.0.0",
                        ],
                        "workingDir": str(tmp_path),
                        "readinessProbe": {"tcpSocket": {"port": port}, "periodSeconds": 1},
                    }
                ],
            },
        },
    )
    wait_until(
        lambda: any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in (pod(devcluster, kube_namespace, "web") or {})
            .get("status", {})
            .get("conditions", [])
        ),
        60,
        "the web server to be ready",
    )
    api = _core_api(devcluster)
    forward = portforward(
        api.connect_get_namespaced_pod_portforward, "web", kube_namespace, ports=str(port)
    )
    sock = forward.socket(port)
    sock.sendall(b"GET /index.html HTTP/1.0\r\n\r\n")
    answer = _read_to_eof(sock, 30)
    assert answer.startswith(b"HTTP/1.0 200"), answer[:200]
    assert answer.endswith(b"closing after this\n")
    wait_until(lambda: not forward.connected, 10, "the WebSocket to be closed")
    assert forward.error(port) is None
    sock.close()

    nobody = _free_port()
    failed = portforward(
        api.connect_get_namespaced_pod_portforward, "web", kube_namespace, ports=str(nobody)
    )
    dead = failed.socket(nobody)
    assert _read_to_eof(dead, 30) == b""
    wait_until(lambda: failed.error(nobody) is not None, 10, "the dial error")
    assert f"error forwarding port {nobody}" in failed.error(nobody)
    assert "cannot connect" in failed.error(nobody)
    dead.close()


def test_proxy_paths_without_the_trailing_slash(
    devcluster: DevCluster, kube_namespace: str, start_agent: AgentFactory
) -> None:
    """Go clients join paths with `path.Join`, which drops a trailing slash: both forms answer."""
    agent = start_agent()
    agent.approve_serving_certificate()
    create(
        devcluster,
        kube_namespace,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p"},
            "spec": {
                "nodeName": agent.node_name,
                "tolerations": [TOLERATION],
                "containers": [{"name": "main", "image": "registry.invalid/app:1"}],
            },
        },
    )
    wait_until(
        lambda: (
            (pod(devcluster, kube_namespace, "p") or {}).get("status", {}).get("phase") == "Running"
        ),
        60,
        "the pod to run",
    )
    base = f"/api/v1/nodes/{agent.node_name}/proxy"

    def raw(route: str) -> str:
        return devcluster.kubectl("get", "--raw", f"{base}/{route}").stdout

    for route in ("runningpods", "runningpods/", "pods", "pods/"):
        listed = json.loads(raw(route))
        assert listed["kind"] == "PodList", route
        assert "p" in [p["metadata"]["name"] for p in listed["items"]], route
    for route in ("stats/summary", "stats/summary/"):
        assert json.loads(raw(route))["node"]["nodeName"] == agent.node_name, route
    for route in ("metrics/resource", "metrics/resource/"):
        assert "container_cpu_usage_seconds_total{" in raw(route), route
    assert raw(f"containerLogs/{kube_namespace}/p/main/") == raw(
        f"containerLogs/{kube_namespace}/p/main"
    )


def test_a_loopback_node_address_is_warned_about_at_start_up(start_agent: AgentFactory) -> None:
    agent = start_agent(env={"VKUBELET_POD_IP": "127.0.0.1"}, args=["--disable-kubelet-api"])
    wait_until(lambda: "InternalIP 127.0.0.1 is a loopback address" in agent.log(), 30, "warning")
    log = agent.log()
    assert "address not allowed" in log
    assert f"devcluster node-address {agent.node_name}" in log
