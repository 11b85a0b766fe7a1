"""The azure provider end to end: a real API server and kubectl, the agent signing in to a loopback
Microsoft Entra ID and driving a loopback ARM that speaks ACI's REST API (tests/integration/
aci_server.py; no Azure is reachable from here). What a user of the original's workshop does:
a Deployment on the virtual node runs, logs and exec work, deletion removes the container group;
and what broke for the original's users: throttling, restarts, bad credentials, leaked secrets."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from virtual_kubelet.devcluster import DevCluster, wait_until
from virtual_kubelet.devcluster.access import kubectl_path
from virtual_kubelet.devcluster.agent import AgentProcess
from virtual_kubelet.providers.azure.naming import group_name

from .aci_server import AciServer, running, secret_volume_files
from .conftest import AgentFactory, create, events_for, pod
from .terminal import terminal

RESOURCE_GROUP = "vk-aci-test"
AZURE_TOLERATION = {
    "key": "virtual-kubelet.io/provider",
    "operator": "Equal",
    "value": "azure",
    "effect": "NoSchedule",
}


@pytest.fixture(scope="module")
def aci(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AciServer]:
    with running(tmp_path_factory.mktemp("aci")) as server:
        yield server


def azure_config(server: AciServer, devcluster: DevCluster, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "subscription_id": server.subscription,
        "resource_group": RESOURCE_GROUP,
        "region": "westeurope",
        "tenant_id": server.tenant,
        "client_id": server.client_id,
        "client_secret": server.client_secret,
        "authority_host": server.url,
        "arm_endpoint": server.url,
        "ca_file": str(server.ca_file),
        "kubeconfig": str(devcluster.kubeconfig),
        "poll_seconds": 1,
        "lro_poll_seconds": 1,
        "retry_backoff_seconds": 0.3,
    }
    config.update(overrides)
    return config


def _agent(
    start_agent: AgentFactory, server: AciServer, devcluster: DevCluster, **kwargs: Any
) -> AgentProcess:
    config = azure_config(server, devcluster, **kwargs.pop("settings", {}))
    ready = kwargs.pop("ready", True)
    agent = start_agent(provider="azure", provider_config=config, ready=ready, **kwargs)
    if ready:
        agent.approve_serving_certificate()  # kubectl logs and exec go through the kubelet API
    return agent


def _status(cluster: DevCluster, namespace: str, name: str) -> dict[str, Any]:
    return (pod(cluster, namespace, name) or {}).get("status", {})


def _group_of(server: AciServer, namespace: str, name: str) -> str:
    """The pod's group name (the test namespaces are long: truncated and hashed)."""
    found = group_name(namespace, name)
    assert len(found) <= 63
    return found


def _pod(name: str, node: str, script: str | None, **spec: Any) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "main", "image": "docker.io/library/busybox:1.36"}
    if script is not None:
        container["command"] = ["sh", "-c", script]
    container.update(spec.pop("container", {}))
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeName": node,
            "tolerations": [AZURE_TOLERATION],
            "terminationGracePeriodSeconds": 5,
            "containers": [container],
            **spec,
        },
    }


def test_the_workshop_deployment_runs_logs_execs_and_is_deleted(
    devcluster: DevCluster, kube_namespace: str, start_agent: AgentFactory, aci: AciServer
) -> None:
    agent = _agent(start_agent, aci, devcluster)
    node = devcluster.get_json("node", agent.node_name)
    assert node["metadata"]["labels"]["type"] == "virtual-kubelet"
    assert node["status"]["capacity"]["pods"] == "5k"  # 5000, as the API server writes it
    assert {"key": "virtual-kubelet.io/provider", "value": "azure", "effect": "NoSchedule"} in [
        {k: t.get(k) for k in ("key", "value", "effect")} for t in node["spec"]["taints"]
    ]
    # The original's workshop Deployment (its nodeSelector and toleration), pinned to this test's
    # node because other virtual nodes may share the cluster.
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "helloworld"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "helloworld"}},
            "template": {
                "metadata": {"labels": {"app": "helloworld"}},
                "spec": {
                    "containers": [
                        {
                            "name": "helloworld",
                            "image": "mcr.microsoft.com/azuredocs/aci-helloworld",
                            "ports": [{"containerPort": 80}],
                            "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}},
                        }
                    ],
                    "nodeSelector": {
                        "type": "virtual-kubelet",
                        "kubernetes.io/hostname": agent.node_name,
                    },
                    "tolerations": [AZURE_TOLERATION],
                },
            },
        },
    }
    create(devcluster, kube_namespace, deployment)
    devcluster.kubectl(
        "rollout",
        "status",
        "-n",
        kube_namespace,
        "deployment/helloworld",
        "--timeout=90s",
        timeout=120,
    )
    (item,) = devcluster.get_json("pods", "-n", kube_namespace, "-l", "app=helloworld")["items"]
    name = item["metadata"]["name"]
    status = item["status"]
    assert status["phase"] == "Running"
    assert status["podIP"] == "127.0.0.1"  # the public IP the loopback ARM gives the group
    (container,) = status["containerStatuses"]
    group = _group_of(aci, kube_namespace, name)
    assert container["containerID"] == f"aci://{group}/helloworld"
    assert container["ready"] is True
    assert "startedAt" in container["state"]["running"]
    # What ARM was asked for: a Linux group with the container's resources, port and our tags.
    (body,) = [b for b in aci.received if b["tags"]["PodName"] == name]
    props = body["properties"]
    assert props["osType"] == "Linux"
    assert props["restartPolicy"] == "Always"
    assert props["ipAddress"]["type"] == "Public"
    assert props["ipAddress"]["ports"] == [{"protocol": "TCP", "port": 80}]
    resources = props["containers"][0]["properties"]["resources"]["requests"]
    assert (resources["cpu"], resources["memoryInGB"]) == (0.25, 0.3)
    assert body["tags"]["NodeName"] == agent.node_name
    assert body["tags"]["UID"] == item["metadata"]["uid"]

    logs = devcluster.kubectl("logs", "-n", kube_namespace, name)
    assert "listening on port 80" in logs.stdout
    shown = devcluster.kubectl("exec", "-n", kube_namespace, name, "--", "echo", "from-exec")
    assert shown.stdout == "from-exec\n"
    events = {e["reason"] for e in events_for(devcluster, kube_namespace, name)}
    assert {"Pulling", "Pulled", "Started"} <= events, events

    devcluster.kubectl("delete", "-n", kube_namespace, "deployment/helloworld", "--wait=false")
    wait_until(lambda: group not in aci.group_names(), 60, "the container group to be deleted")
    wait_until(
        lambda: pod(devcluster, kube_namespace, name) is None, 60, "the pod to leave the API"
    )


def test_exit_codes_secrets_and_registry_credentials(
    devcluster: DevCluster, kube_namespace: str, start_agent: AgentFactory, aci: AciServer
) -> None:
    secret_value = f"seeded-{time.monotonic_ns()}"
    registry_password = f"registry-{time.monotonic_ns()}"
    dockerconfig = {
        "auths": {"myregistry.azurecr.io": {"username": "puller", "password": registry_password}}
    }
    for obj in (
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "app"},
            "stringData": {"token": secret_value, "file.txt": "secret file"},
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "settings"},
            "data": {"mode": "fast"},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "pull"},
            "type": "kubernetes.io/dockerconfigjson",
            "data": {
                ".dockerconfigjson": base64.b64encode(json.dumps(dockerconfig).encode()).decode()
            },
        },
    ):
        create(devcluster, kube_namespace, obj)
    agent = _agent(start_agent, aci, devcluster)
    manifest = _pod(
        "fails",
        agent.node_name,
        'echo "plain=$PLAIN"; [ "$TOKEN" = "$EXPECTED_LEN" ] || echo token-set; exit 3',
        restartPolicy="Never",
        imagePullSecrets=[{"name": "pull"}],
        volumes=[
            {"name": "creds", "secret": {"secretName": "app"}},
            {"name": "settings", "configMap": {"name": "settings"}},
            {"name": "scratch", "emptyDir": {}},
        ],
        container={
            "image": "myregistry.azurecr.io/team/app:1",
            "envFrom": [
                {"secretRef": {"name": "app"}, "prefix": "S_"},
                {"configMapRef": {"name": "settings"}, "prefix": "C_"},
            ],
            "env": [
                {"name": "PLAIN", "value": "visible"},
                {
                    "name": "TOKEN",
                    "valueFrom": {"secretKeyRef": {"name": "app", "key": "token"}},
                },
                {"name": "EXPECTED_LEN", "value": "none"},
            ],
            "volumeMounts": [
                {"name": "creds", "mountPath": "/etc/creds"},
                {"name": "settings", "mountPath": "/etc/settings"},
                {"name": "scratch", "mountPath": "/scratch"},
            ],
        },
    )
    create(devcluster, kube_namespace, manifest)
    wait_until(
        lambda: _status(devcluster, kube_namespace, "fails").get("phase") == "Failed",
        90,
        "the pod to fail with its container",
    )
    (container,) = _status(devcluster, kube_namespace, "fails")["containerStatuses"]
    assert container["state"]["terminated"]["exitCode"] == 3
    assert devcluster.kubectl("logs", "-n", kube_namespace, "fails").stdout == (
        "plain=visible\ntoken-set\n"
    )
    (body,) = [b for b in aci.received if b["tags"]["PodName"] == "fails"]
    env = {
        e["name"]: e
        for e in body["properties"]["containers"][0]["properties"]["environmentVariables"]
    }
    assert env["PLAIN"] == {"name": "PLAIN", "value": "visible"}
    assert env["TOKEN"] == {"name": "TOKEN", "secureValue": secret_value}
    # envFrom: the Secret's keys (with their prefix) secure, the ConfigMap's plain.
    assert env["S_token"] == {"name": "S_token", "secureValue": secret_value}
    assert env["C_mode"] == {"name": "C_mode", "value": "fast"}
    # The agent's marker of those names travels only to the provider, never to the API.
    annotations = devcluster.get_json("pod", "-n", kube_namespace, "fails")["metadata"].get(
        "annotations"
    )
    assert "virtual-kubelet.io/secret-env" not in (annotations or {})
    assert body["properties"]["imageRegistryCredentials"] == [
        {"server": "myregistry.azurecr.io", "username": "puller", "password": registry_password}
    ]
    assert secret_volume_files(body, "creds") == {
        "token": secret_value.encode(),
        "file.txt": b"secret file",
    }
    assert secret_volume_files(body, "settings") == {"mode": b"fast"}
    volumes = {v["name"]: v for v in body["properties"]["volumes"]}
    assert volumes["scratch"] == {"name": "scratch", "emptyDir": {}}
    # ARM never shows secure values back, and the agent never says them.
    group = aci.group(_group_of(aci, kube_namespace, "fails"))
    assert group is not None
    shown = json.dumps(group.document(aci.subscription, RESOURCE_GROUP, True))
    assert secret_value not in shown
    everything = agent.log() + json.dumps(events_for(devcluster, kube_namespace, "fails"))
    for seeded in (secret_value, registry_password, aci.client_secret):
        assert seeded not in everything
    assert "Request URL" not in agent.log()  # the SDK's per-request logging stays quiet


def test_logs_follow_new_lines(
    devcluster: DevCluster, kube_namespace: str, start_agent: AgentFactory, aci: AciServer
) -> None:
    agent = _agent(start_agent, aci, devcluster)
    script = "i=0; while true; do i=$((i+1)); echo line-$i; sleep 0.3; done"
    create(devcluster, kube_namespace, _pod("counter", agent.node_name, script))
    wait_until(
        lambda: _status(devcluster, kube_namespace, "counter").get("phase") == "Running",
        60,
        "the pod to run",
    )
    follow = subprocess.Popen(
        [
            kubectl_path(),
            "--kubeconfig",
            str(devcluster.kubeconfig),
            "logs",
            "-f",
            "-n",
            kube_namespace,
            "counter",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    seen: list[str] = []

    def read() -> None:
        assert follow.stdout is not None
        for line in follow.stdout:
            seen.append(line.strip())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        wait_until(lambda: len(seen) >= 25, 60, "25 lines from kubectl logs -f")
    finally:
        follow.kill()
        follow.wait()
        reader.join(10)
    numbers = [int(s.removeprefix("line-")) for s in seen]
    # In order, none twice, none skipped: new lines only, across several polls of the tail.
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
    assert len(numbers) >= 25


def test_a_restarted_agent_adopts_its_groups_without_creating_them_again(
    devcluster: DevCluster, kube_namespace: str, start_agent: AgentFactory, aci: AciServer
) -> None:
    agent = _agent(start_agent, aci, devcluster)
    create(devcluster, kube_namespace, _pod("steady", agent.node_name, "echo up; exec sleep 300"))
    wait_until(
        lambda: _status(devcluster, kube_namespace, "steady").get("phase") == "Running",
        60,
        "the pod to run",
    )
    first = _status(devcluster, kube_namespace, "steady")["containerStatuses"][0]
    group = _group_of(aci, kube_namespace, "steady")
    assert aci.count("PUT", f"/containerGroups/{group}") == 1
    agent.kill()
    _agent(start_agent, aci, devcluster, name=agent.node_name)
    create(devcluster, kube_namespace, _pod("newcomer", agent.node_name, "exec sleep 300"))
    wait_until(
        lambda: _status(devcluster, kube_namespace, "newcomer").get("phase") == "Running",
        60,
        "a pod created after the restart to run",
    )
    status = _status(devcluster, kube_namespace, "steady")
    assert status["phase"] == "Running"
    assert status["containerStatuses"][0]["containerID"] == first["containerID"]
    assert status["containerStatuses"][0]["state"] == first["state"]
    assert aci.count("PUT", f"/containerGroups/{group}") == 1
    assert devcluster.kubectl("logs", "-n", kube_namespace, "steady").stdout == "up\n"


def test_throttling_and_server_errors_are_retried_and_shown_as_events(
    devcluster: DevCluster, kube_namespace: str, start_agent: AgentFactory, aci: AciServer
) -> None:
    agent = _agent(start_agent, aci, devcluster)
    group = _group_of(aci, kube_namespace, "throttled")
    aci.inject("PUT", f"/containerGroups/{group}", 429, count=2, retry_after=1)
    # azure-aci #132: a 503 answered after ARM had done the work.
    aci.inject("PUT", f"/containerGroups/{group}", 503, count=1, after_applying=True)
    create(devcluster, kube_namespace, _pod("throttled", agent.node_name, "exec sleep 300"))
    wait_until(
        lambda: _status(devcluster, kube_namespace, "throttled").get("phase") == "Running",
        90,
        "the throttled pod to run",
    )
    assert aci.count("PUT", f"/containerGroups/{group}", 429) == 2
    assert aci.count("PUT", f"/containerGroups/{group}", 503) == 1
    assert len(aci.group_names()) == len(set(aci.group_names()))

    def reasons() -> set[str]:
        return {e["reason"] for e in events_for(devcluster, kube_namespace, "throttled")}

    wait_until(
        lambda: {"ARMThrottled", "ARMServerError"} <= reasons(),
        30,
        "throttling and the 5xx answer as Events",
    )
    throttled = [
        e
        for e in events_for(devcluster, kube_namespace, "throttled")
        if e["reason"] == "ARMThrottled"
    ]
    assert "429 TooManyRequests" in throttled[0]["message"]
    assert "retrying in 1 s" in throttled[0]["message"]

    # A create that keeps failing past the SDK's retries is said on the pod, not left Pending.
    failing = _group_of(aci, kube_namespace, "unlucky")
    aci.inject("PUT", f"/containerGroups/{failing}", 503, count=1000)
    create(devcluster, kube_namespace, _pod("unlucky", agent.node_name, "exec sleep 300"))

    def failing_condition() -> dict[str, Any] | None:
        for c in _status(devcluster, kube_namespace, "unlucky").get("conditions") or []:
            if c.get("reason") == "ProviderCreateFailed":
                return dict(c)
        return None

    found = wait_until(failing_condition, 90, "the failing create as a pod condition")
    assert "503" in found["message"]
    assert "ServerTimeout" in found["message"]


def test_bad_credentials_make_the_node_not_ready_with_the_reason(
    devcluster: DevCluster, kube_namespace: str, start_agent: AgentFactory, aci: AciServer
) -> None:
    wrong = f"wrong-{time.monotonic_ns()}"
    agent = _agent(start_agent, aci, devcluster, ready=False, settings={"client_secret": wrong})

    def not_ready() -> dict[str, Any] | None:
        shown = devcluster.kubectl("get", "node", agent.node_name, "-o", "json", check=False)
        node = json.loads(shown.stdout) if shown.returncode == 0 else {}
        for c in ((node or {}).get("status") or {}).get("conditions") or []:
            if c["type"] == "Ready" and c["status"] == "False" and c.get("message"):
                return dict(c)
        return None

    condition = wait_until(not_ready, 90, "the node to be NotReady with a reason")
    assert condition["reason"] == "ProviderUnhealthy"
    assert "Entra ID refused the agent's credentials" in condition["message"]
    assert "AADSTS7000215" in condition["message"]
    assert wrong not in agent.log()
    assert wrong not in json.dumps(condition)


def test_config_errors_are_clear(tmp_path: Path, devcluster: DevCluster) -> None:
    def refused(doc: dict[str, Any]) -> str:
        config = tmp_path / "azure.json"
        config.write_text(json.dumps(doc))
        argv = [sys.executable, "-m", "virtual_kubelet", "--provider", "azure"]
        argv += ["--provider-config", str(config), "--kubeconfig", str(devcluster.kubeconfig)]
        result = subprocess.run(
            [*argv, "--nodename", "vk-bad-config"],
            capture_output=True,
            text=True,
            timeout=60,
            env={k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "ACI_"))},
        )
        assert result.returncode != 0
        return result.stderr

    assert "resource_group: Field required" in refused({"subscription_id": "s", "region": "r"})
    base = {"subscription_id": "s", "region": "westeurope", "resource_group": "rg"}
    shown = refused({**base, "auth": "client_secret", "client_secret": "hunter2-seeded"})
    assert "auth client_secret needs tenant_id, client_id" in shown
    assert "hunter2-seeded" not in shown
    assert "must be an https:// URL" in refused({**base, "arm_endpoint": "http://x"})


def test_a_group_aci_refuses_or_fails_to_provision_fails_the_pod_with_the_reason(
    devcluster: DevCluster, kube_namespace: str, start_agent: AgentFactory, aci: AciServer
) -> None:
    agent = _agent(start_agent, aci, devcluster)
    create(
        devcluster,
        kube_namespace,
        _pod("no-image", agent.node_name, "true", container={"image": "registry.invalid/x:1"}),
    )
    big = {"resources": {"requests": {"cpu": "8"}}}
    create(devcluster, kube_namespace, _pod("too-big", agent.node_name, "true", container=big))
    for name, words in (
        ("no-image", ["InaccessibleImage", "registry.invalid/x:1"]),
        ("too-big", ["ServiceUnavailable", "not available in the location"]),
    ):
        status = wait_until(
            lambda name=name: (
                _status(devcluster, kube_namespace, name)
                if _status(devcluster, kube_namespace, name).get("phase") == "Failed"
                else None
            ),
            90,
            f"{name} to fail",
        )
        assert status["reason"] == "ProviderFailed"
        for word in words:
            assert word in status["message"], status
    reasons = {e["reason"] for e in events_for(devcluster, kube_namespace, "too-big")}
    assert "ProviderFailed" in reasons


def test_exec_with_a_terminal_sends_its_size_and_carries_typed_input(
    devcluster: DevCluster, kube_namespace: str, start_agent: AgentFactory, aci: AciServer
) -> None:
    agent = _agent(start_agent, aci, devcluster)
    create(devcluster, kube_namespace, _pod("shell", agent.node_name, "exec sleep 300"))
    wait_until(
        lambda: _status(devcluster, kube_namespace, "shell").get("phase") == "Running",
        60,
        "the shell pod to run",
    )
    command = (
        f"KUBECONFIG={devcluster.kubeconfig} {kubectl_path()} exec -it shell "
        f"-n {kube_namespace} -- cat; sleep 30"
    )
    with terminal(command, width=100, height=30) as tty:
        wait_until(
            lambda: any(r.get("command") == "cat" for r in aci.exec_requests),
            30,
            "the executeCommand call",
        )
        (request,) = [r for r in aci.exec_requests if r.get("command") == "cat"]
        # The size kubectl sent first: ACI takes it with the request, and only then.
        assert request["terminalSize"] == {"rows": 30, "cols": 100}
        tty.type("typed-into-aci")
        # kubectl puts the terminal in raw mode: what shows is what came back from the
        # container (the loopback's `cat` has no terminal of its own, so nothing echoes twice).
        wait_until(
            lambda: "typed-into-aci" in tty.screen() or None,
            30,
            "the typed line sent back by cat through the exec WebSocket",
        )
