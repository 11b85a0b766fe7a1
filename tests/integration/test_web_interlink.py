"""The `web` provider in interLink mode, against the real control plane and a plugin written in
the tests from the interLink contract (tests/integration/interlink_test_plugin.py), reached over a
unix socket with a bearer token: create, status, logs and delete; the ping's resources and taint on
the node; ConfigMap, Secret and projected contents delivered to the plugin (and the Secret never
in the agent's log); and a killed agent that adopts its pod by job id instead of submitting it
again."""

from __future__ import annotations

import http.client
import json
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from virtual_kubelet.devcluster import DevCluster, wait_until

from .conftest import AgentFactory, condition, create, pod, pod_manifest

PLUGIN = Path(__file__).with_name("interlink_test_plugin.py")


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=5)
        self.socket_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(5)
        self.sock.connect(self.socket_path)


class Plugin:
    """The test plugin as a child process on a unix socket (a short path: sun_path is small)."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="il-"))
        self.socket = str(self.dir / "plugin.sock")
        self.token_file = self.dir / "token"
        self.token_file.write_text(secrets.token_hex(16) + "\n")
        self.log_path = self.dir / "plugin.log"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(PLUGIN), self.socket, str(self.token_file)],
                stdout=log,
                stderr=log,
            )
        wait_until(self._answers, 30, "the test plugin to listen")

    def _answers(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"plugin exited:\n{self.log_path.read_text()}")
        try:
            self.state()
        except OSError:
            return False
        return True

    def state(self) -> dict[str, Any]:
        connection = UnixHTTPConnection(self.socket)
        try:
            connection.request("GET", "/_test/state")
            result: dict[str, Any] = json.loads(connection.getresponse().read())
            return result
        finally:
            connection.close()

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def plugin() -> Iterator[Plugin]:
    running = Plugin()
    yield running
    running.stop()


def test_an_interlink_plugin_runs_pods_with_their_data_and_a_restart_adopts_by_job_id(
    devcluster: DevCluster, kube_namespace: str, start_agent: AgentFactory, plugin: Plugin
) -> None:
    config = {
        "mode": "interlink",
        "url": f"unix://{plugin.socket}",
        "token_file": str(plugin.token_file),
        "interlink": {"status_interval": 1},
    }
    agent = start_agent(provider="web", provider_config=config)
    node = agent.wait_ready()
    # The ping's resources and taint are on the node.
    assert node["status"]["capacity"]["cpu"] == "48"
    assert node["status"]["capacity"]["memory"] == "192Gi"
    assert node["status"]["capacity"]["pods"] == "30"
    assert node["status"]["allocatable"]["example.com/fpga"] == "2"
    assert {"key": "interlink.test/site", "value": "hpc", "effect": "PreferNoSchedule"} in node[
        "spec"
    ]["taints"]

    password = f"pw-{secrets.token_hex(8)}"
    devcluster.kubectl(
        "create", "configmap", "app-config", "-n", kube_namespace, "--from-literal=greeting=hello"
    )
    devcluster.kubectl(
        "create",
        "secret",
        "generic",
        "db",
        "-n",
        kube_namespace,
        f"--from-literal=password={password}",
    )
    manifest = pod_manifest("job", agent.node_name)
    volume_mounts = [
        {"name": "config", "mountPath": "/etc/app"},
        {"name": "creds", "mountPath": "/etc/creds"},
    ]
    manifest["spec"]["initContainers"] = [
        {"name": "setup", "image": "registry.invalid/setup:1", "volumeMounts": volume_mounts[:1]}
    ]
    manifest["spec"]["containers"][0].update(
        volumeMounts=volume_mounts,
        env=[
            {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}
        ],
    )
    manifest["spec"]["volumes"] = [
        {"name": "config", "configMap": {"name": "app-config"}},
        {"name": "creds", "secret": {"secretName": "db"}},
    ]
    create(devcluster, kube_namespace, manifest)

    def current() -> dict[str, Any]:
        return pod(devcluster, kube_namespace, "job") or {}

    wait_until(
        lambda: (
            current().get("status", {}).get("phase") == "Running"
            and (condition(current(), "Ready") or {}).get("status") == "True"
        ),
        60,
        "the pod to run in the plugin",
    )
    uid = current()["metadata"]["uid"]
    status = current()["status"]
    assert status["initContainerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    assert status["containerStatuses"][0]["state"]["running"]["startedAt"] == "2026-01-01T00:00:00Z"

    state = plugin.state()
    assert state["creates"] == [uid]
    received = state["pods"][uid]
    assert received["received"]["configMaps"] == {"app-config": {"greeting": "hello"}}
    assert received["received"]["secrets"] == {"db": {"password": password}}
    assert received["env"]["PASSWORD"] == password  # env resolved, as interLink's VK does
    assert "kube-api-access" in " ".join(received["received"]["projected"])  # SA token volume
    jid = received["jid"]

    agent.approve_serving_certificate()
    logs = devcluster.kubectl("logs", "-n", kube_namespace, "job", "--tail=2").stdout
    assert logs.splitlines() == ["main: plugin log line 6", "main: plugin log line 7"]

    # kill -9 and a new agent on the same state: the pod is adopted by its job id, not re-created.
    agent.kill()
    restarted = start_agent(name=agent.node_name, provider="web", provider_config=config)
    polls_before = len(plugin.state()["status_bodies"])
    wait_until(
        lambda: len(plugin.state()["status_bodies"]) > polls_before + 1, 30, "status polls again"
    )
    state = plugin.state()
    assert state["creates"] == [uid]
    assert {"uid": uid, "JobID": jid} in state["status_bodies"][-1]
    assert current()["metadata"]["uid"] == uid
    assert current()["status"]["phase"] == "Running"

    devcluster.kubectl("delete", "pod", "job", "-n", kube_namespace, "--wait=false")
    wait_until(lambda: pod(devcluster, kube_namespace, "job") is None, 60, "the pod to be deleted")
    assert plugin.state()["deletes"] == [uid]
    assert password not in agent.log() + restarted.log()
    journal = restarted.state_dir / f"interlink-{restarted.node_name}.jsonl"
    assert journal.exists()
    assert password.encode() not in journal.read_bytes()
    assert restarted.process is not None
    assert restarted.process.poll() is None
