"""The `web` provider in `mode: extended`, against the real control plane, real kubectl and the
reference backend (examples/web-bridge: pods as local processes), with bearer-token auth.

What a user sees: pod status arrives pushed (nothing polls `/getPodStatus`), `kubectl logs -f`
(and --previous), `kubectl exec` with stdin, stderr and exit codes, `kubectl exec -it` with
resize, `kubectl attach`, `kubectl port-forward`, `/stats/summary` through the node proxy, node
capacity pushed when the backend's changes, and a wrong token refused by the backend and reported
by the agent without the token.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from virtual_kubelet.devcluster import DevCluster, kubectl_path, wait_until
from virtual_kubelet.devcluster.agent import AgentProcess

from .conftest import AgentFactory, create, pod, pod_manifest
from .terminal import terminal

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "web-bridge"

#: A container that echoes every connection on the port given as its argument.
ECHO_SERVER = """
import socket, sys, threading
server = socket.create_server(("127.0.0.1", int(sys.argv[1])))
print("echo server ready", flush=True)
def serve(conn):
    with conn:
        while data := conn.recv(65536):
            conn.sendall(data)
while True:
    threading.Thread(target=serve, args=(server.accept()[0],), daemon=True).start()
"""


class ReferenceBackend:
    """`python -m web_bridge_backend` as a child process, on a port it chose."""

    def __init__(self, workdir: Path, token: str, port: int = 0) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = port
        self.token_file = workdir / "backend-token"
        self.token_file.write_text(token + "\n")
        self.node_file = workdir / "node.json"
        self.node_file.write_text(json.dumps({"capacity": {"cpu": "8", "memory": "16Gi"}}))
        self.log_path = workdir / "backend.log"
        self.workdir = workdir
        self.process: subprocess.Popen[str] | None = None
        self.url = ""

    def start(self) -> ReferenceBackend:
        log = self.log_path.open("a")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "web_bridge_backend",
                "--listen",
                f"127.0.0.1:{self.port}",
                "--token-file",
                str(self.token_file),
                "--node-file",
                str(self.node_file),
                "--workdir",
                str(self.workdir / "pods"),
                "--heartbeat",
                "2",
            ],
            cwd=EXAMPLE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line.startswith("listening on "), self.log_path.read_text()
        self.url = line.split()[-1]
        self.port = int(self.url.rsplit(":", 1)[1])
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def get(self, path: str, token: str | None) -> tuple[int, bytes]:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        request = urllib.request.Request(self.url + path, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status, answer.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def requests(self, token: str) -> dict[str, int]:
        status, body = self.get("/debug/requests", token)
        assert status == 200
        counts: dict[str, int] = json.loads(body)
        return counts


@dataclass
class BridgeNode:
    agent: AgentProcess
    backend: ReferenceBackend
    token: str
    namespace: str
    cluster: DevCluster

    def kubectl(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return self.cluster.kubectl("-n", self.namespace, *args, **kwargs)

    def run_pod(self, name: str, command: list[str], **spec: Any) -> dict[str, Any]:
        manifest = pod_manifest(name, self.agent.node_name, **spec)
        manifest["spec"]["containers"][0]["command"] = command
        create(self.cluster, self.namespace, manifest)
        return manifest

    def phase(self, name: str) -> str | None:
        return (pod(self.cluster, self.namespace, name) or {}).get("status", {}).get("phase")

    def shell(self) -> str:
        """The long-running pod the exec tests share, created by whichever test needs it first."""
        if pod(self.cluster, self.namespace, "shell") is None:
            self.run_pod("shell", ["sleep", "3600"], annotations={})
        wait_until(lambda: self.phase("shell") == "Running", 60, "the shell pod to run")
        return "shell"


@pytest.fixture(scope="module")
def bridge(
    devcluster: DevCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BridgeNode]:
    workdir = tmp_path_factory.mktemp("web-extended")
    token = secrets.token_urlsafe(24)
    backend = ReferenceBackend(workdir / "backend", token).start()
    agent_token = workdir / "agent-token"
    agent_token.write_text(token)
    name = f"vk-webx-{secrets.token_hex(3)}"
    agent = AgentProcess(
        devcluster,
        name,
        workdir / "agent",
        provider="web",
        provider_config={
            "mode": "extended",
            "url": backend.url,
            "token_file": str(agent_token),
            "node_refresh_interval": 3600,  # the node is pushed on the stream: no polling needed
        },
    )
    namespace = f"web-extended-{secrets.token_hex(3)}"
    try:
        agent.start()
        agent.wait_ready()
        agent.approve_serving_certificate()
        devcluster.kubectl("create", "namespace", namespace)
        yield BridgeNode(agent, backend, token, namespace, devcluster)
    finally:
        agent.stop()
        agent.cleanup()
        devcluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        devcluster.kubectl("delete", "node", name, "--wait=false", check=False)
        backend.stop()


# --- status --------------------------------------------------------------------------------------------


def test_status_is_pushed_not_polled(bridge: BridgeNode) -> None:
    bridge.run_pod("short", ["sh", "-c", "echo started; sleep 2; echo done"], restartPolicy="Never")
    wait_until(lambda: bridge.phase("short") == "Running", 60, "the pod to run")
    wait_until(lambda: bridge.phase("short") == "Succeeded", 60, "the pod to finish")
    finished = pod(bridge.cluster, bridge.namespace, "short")
    assert finished is not None
    (state,) = [c["state"] for c in finished["status"]["containerStatuses"]]
    assert state["terminated"]["exitCode"] == 0
    counts = bridge.backend.requests(bridge.token)
    assert counts.get("/getPodStatus", 0) == 0, counts  # every status came on the stream
    assert counts.get("/watch", 0) >= 1
    assert "polling every" not in bridge.agent.log()


def test_node_capacity_follows_the_backend(bridge: BridgeNode) -> None:
    node = bridge.cluster.get_json("node", bridge.agent.node_name)
    assert node["status"]["capacity"]["cpu"] == "8"
    bridge.backend.node_file.write_text(
        json.dumps(
            {
                "capacity": {"cpu": "12", "memory": "32Gi", "pods": "50"},
                "conditions": [{"type": "Ready", "status": "True", "reason": "BackendReady"}],
            }
        )
    )

    def capacity() -> bool:
        status = bridge.cluster.get_json("node", bridge.agent.node_name)["status"]
        return status["capacity"].get("cpu") == "12" and status["capacity"].get("pods") == "50"

    wait_until(capacity, 30, "the pushed capacity on the Node")


def test_a_restarted_backend_is_resynced_and_gets_its_pods_back(
    devcluster: DevCluster, start_agent: AgentFactory, kube_namespace: str, tmp_path: Path
) -> None:
    """The reference backend keeps pods in memory: restarted, it has none. The agent's status
    stream reconnects, its snapshot shows the pod missing, and the agent creates it again."""
    token = secrets.token_urlsafe(16)
    backend = ReferenceBackend(tmp_path / "backend", token).start()
    try:
        (tmp_path / "token").write_text(token)
        agent = start_agent(
            provider="web",
            provider_config={
                "mode": "extended",
                "url": backend.url,
                "token_file": str(tmp_path / "token"),
            },
        )
        manifest = pod_manifest("survivor", agent.node_name)
        manifest["spec"]["containers"][0]["command"] = ["sleep", "3600"]
        create(devcluster, kube_namespace, manifest)

        def running_in_backend() -> bool:
            status, body = backend.get("/getPods", token)
            return status == 200 and [p["metadata"]["name"] for p in json.loads(body)] == [
                "survivor"
            ]

        wait_until(running_in_backend, 60, "the pod in the backend")
        # Restart the backend under a pod that is Running: the re-created pod goes Running,
        # Pending, Running within milliseconds, faster than the agent's pod cache sees its own
        # status writes (the ordering tests/unit/test_status_writer.py pins down).
        wait_until(
            lambda: (
                (pod(devcluster, kube_namespace, "survivor") or {}).get("status", {}).get("phase")
                == "Running"
            ),
            60,
            "the pod Running before the backend restarts",
        )
        backend.stop()  # its pods stop with it
        backend.start()  # same port, no pods
        wait_until(running_in_backend, 60, "the pod given back to the restarted backend")
        assert "creating it there again" in agent.log()
        seen: list[Any] = [None]

        def running_again() -> bool:
            seen[0] = (pod(devcluster, kube_namespace, "survivor") or {}).get("status")
            return bool(seen[0]) and seen[0].get("phase") == "Running"

        try:
            wait_until(running_again, 60, "the pod Running again")
        except AssertionError:
            raise AssertionError(f"pod status {seen}; agent log:\n{agent.log()[-4000:]}") from None
        assert backend.requests(token).get("/getPodStatus", 0) == 0
    finally:
        backend.stop()


# --- logs ------------------------------------------------------------------------------------------------


def test_logs_follow_tail_timestamps_and_previous(bridge: BridgeNode) -> None:
    bridge.run_pod(
        "ticker", ["sh", "-c", "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.3; done"]
    )
    wait_until(lambda: "tick 3" in bridge.kubectl("logs", "ticker").stdout, 60, "a few ticks")
    tail = bridge.kubectl("logs", "ticker", "--tail=2", "--timestamps").stdout.splitlines()
    assert len(tail) == 2
    assert all(line.split()[1] == "tick" for line in tail)
    assert tail[0].split()[0].endswith("Z")  # an RFC 3339 timestamp first
    env = dict(os.environ, KUBECONFIG=str(bridge.cluster.kubeconfig))
    follower = subprocess.Popen(
        [kubectl_path(), "logs", "-f", "ticker", "-n", bridge.namespace, "--tail=0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        assert follower.stdout is not None
        started = time.monotonic()
        lines = [follower.stdout.readline().decode() for _ in range(3)]
        elapsed = time.monotonic() - started
        numbers = [int(line.split()[1]) for line in lines]
        assert numbers == list(range(numbers[0], numbers[0] + 3))  # live, in order, none missed
        assert elapsed >= 0.5  # they arrived as they were written, not as history
    finally:
        follower.kill()
        follower.wait(10)

    bridge.run_pod("crasher", ["sh", "-c", "echo run at $(date +%s%N); sleep 0.5; exit 1"])

    def restarted() -> bool:
        found = pod(bridge.cluster, bridge.namespace, "crasher") or {}
        statuses = found.get("status", {}).get("containerStatuses") or [{}]
        return int(statuses[0].get("restartCount", 0)) >= 1

    wait_until(restarted, 60, "the crashing container to restart")
    previous = bridge.kubectl("logs", "crasher", "--previous").stdout
    assert previous.startswith("run at ")


# --- exec and port-forward -----------------------------------------------------------------------------


def test_exec_stdin_stderr_and_exit_code(bridge: BridgeNode) -> None:
    bridge.shell()
    result = bridge.kubectl(
        "exec", "shell", "--", "sh", "-c", "echo out; echo err >&2; exit 3", check=False
    )
    assert result.returncode == 3
    assert result.stdout == "out\n"
    assert result.stderr.startswith("err\n")  # then kubectl's "command terminated with ..."
    payload = "".join(f"line {i}\n" for i in range(5000))
    echoed = bridge.kubectl("exec", "-i", "shell", "--", "cat", input=payload)
    assert echoed.stdout == payload  # cat ends only when stdin ends: EOF went through
    missing = bridge.kubectl("exec", "shell", "--", "no-such-command-here", check=False)
    assert missing.returncode == 127


def test_exec_with_tty_and_resize(bridge: BridgeNode) -> None:
    bridge.shell()
    script = "stty size; trap 'stty size' WINCH; while true; do sleep 0.2; done"
    command = (
        f"KUBECONFIG={bridge.cluster.kubeconfig} {kubectl_path()} exec -it shell "
        f'-n {bridge.namespace} -- sh -c "{script}"; sleep 30'
    )
    with terminal(command) as tty:
        wait_until(lambda: "24 80" in tty.screen(), 30, "the terminal size in the pod")
        tty.resize(120, 40)
        wait_until(lambda: "40 120" in tty.screen(), 30, "the resize to reach the pod's terminal")


def test_attach_reaches_the_main_process(bridge: BridgeNode) -> None:
    manifest = pod_manifest("console", bridge.agent.node_name)
    manifest["spec"]["containers"][0].update(command=["cat"], stdin=True)
    create(bridge.cluster, bridge.namespace, manifest)
    wait_until(lambda: bridge.phase("console") == "Running", 60, "the console pod to run")
    marker = f"attached-{secrets.token_hex(3)}"
    env = dict(os.environ, KUBECONFIG=str(bridge.cluster.kubeconfig))
    attached = subprocess.Popen(
        [kubectl_path(), "attach", "-i", "console", "-n", bridge.namespace],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        assert attached.stdin is not None
        assert attached.stdout is not None
        attached.stdin.write(f"{marker}\n".encode())
        attached.stdin.flush()
        seen = b""
        while marker.encode() not in seen:  # cat echoed our line: it went in and came out
            line = attached.stdout.readline()
            assert line, "attach ended before the echo"
            seen += line
    finally:
        attached.kill()
        attached.wait(10)
    assert marker in bridge.kubectl("logs", "console").stdout


def test_port_forward_carries_data_both_ways(bridge: BridgeNode) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        pod_port = probe.getsockname()[1]
    bridge.run_pod("echo", [sys.executable, "-c", ECHO_SERVER, str(pod_port)])
    wait_until(
        lambda: "echo server ready" in bridge.kubectl("logs", "echo", check=False).stdout,
        60,
        "the echo server to listen",
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        local = probe.getsockname()[1]
    env = dict(os.environ, KUBECONFIG=str(bridge.cluster.kubeconfig))
    forwarder = subprocess.Popen(
        [kubectl_path(), "port-forward", "-n", bridge.namespace, "pod/echo", f"{local}:{pod_port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        assert forwarder.stdout is not None
        assert b"Forwarding from" in forwarder.stdout.readline()
        results: dict[int, bool] = {}

        def roundtrip(index: int, size: int) -> None:
            data = os.urandom(size)
            received = bytearray()
            with socket.create_connection(("127.0.0.1", local), timeout=60) as conn:
                reader = threading.Thread(target=_read_exactly, args=(conn, size, received))
                reader.start()
                conn.sendall(data)
                reader.join(120)
            results[index] = hashlib.sha256(received).digest() == hashlib.sha256(data).digest()

        threads = [threading.Thread(target=roundtrip, args=(0, 4 * 1024 * 1024))]
        threads += [threading.Thread(target=roundtrip, args=(i, 64 * 1024)) for i in (1, 2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(180)
        assert results == {0: True, 1: True, 2: True}
    finally:
        forwarder.kill()
        forwarder.wait(10)


def _read_exactly(conn: socket.socket, size: int, into: bytearray) -> None:
    while len(into) < size:
        chunk = conn.recv(1 << 20)
        if not chunk:
            return
        into.extend(chunk)


# --- stats ------------------------------------------------------------------------------------------------


def test_stats_summary_through_the_node_proxy(bridge: BridgeNode) -> None:
    bridge.shell()
    node = bridge.agent.node_name
    summary = json.loads(
        bridge.cluster.kubectl("get", "--raw", f"/api/v1/nodes/{node}/proxy/stats/summary").stdout
    )
    assert summary["node"]["nodeName"] == node
    by_name = {p["podRef"]["name"]: p for p in summary["pods"]}
    shell = by_name["shell"]
    assert shell["podRef"]["namespace"] == bridge.namespace
    (container,) = shell["containers"]
    assert container["name"] == "main"
    assert container["memory"]["workingSetBytes"] > 1024 * 1024  # a real process's memory
    assert container["cpu"]["usageNanoCores"] > 0


# --- authentication -------------------------------------------------------------------------------------


def test_wrong_token_is_refused_and_reported_without_the_token(
    bridge: BridgeNode, start_agent: AgentFactory, tmp_path: Path
) -> None:
    status, _ = bridge.backend.get("/capabilities", None)
    assert status == 401
    wrong = "wrong-" + secrets.token_urlsafe(16)
    status, body = bridge.backend.get("/getPods", wrong)
    assert status == 401
    assert wrong.encode() not in body
    token_file = tmp_path / "wrong-token"
    token_file.write_text(wrong)
    agent = start_agent(
        ready=False,
        provider="web",
        provider_config={
            "mode": "extended",
            "url": bridge.backend.url,
            "token_file": str(token_file),
        },
    )
    assert agent.process is not None
    assert agent.process.wait(60) == 1
    log = agent.log()
    assert "refused the agent's credentials" in log
    assert "401 Unauthorized" in log
    assert str(token_file) in log
    assert wrong not in log
    assert wrong not in bridge.backend.log_path.read_text()
