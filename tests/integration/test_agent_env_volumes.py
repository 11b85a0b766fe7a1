"""What a provider receives: resolved env (every source) and materialised, up-to-date volumes."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from virtual_kubelet.agent import memory_backed
from virtual_kubelet.devcluster import DevCluster, wait_until

from .conftest import AgentFactory, create, events_for, pod, pod_manifest

PERSIST = {"persist": True, "memory": "100Gi", "volumes": True}


def _setup_sources(cluster: DevCluster, namespace: str) -> None:
    create(
        cluster,
        namespace,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "cfg"},
            "data": {"greeting": "hello", "COLOR": "blue"},
        },
    )
    create(
        cluster,
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "creds"},
            "data": {"password": base64.b64encode(b"s3cret").decode()},
        },
    )
    create(
        cluster,
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "backend"},
            "spec": {"ports": [{"name": "http", "port": 8080}], "selector": {"app": "none"}},
        },
    )


def _env_of(cluster: DevCluster, namespace: str, name: str) -> dict[str, str]:
    """The env the provider gave the container, in order, as `kubectl exec -- env` shows it (the
    mock's journal keeps env names only: values may be Secrets)."""
    out = cluster.kubectl("exec", "-n", namespace, name, "--", "env").stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def _running(cluster: DevCluster, namespace: str, name: str) -> dict[str, Any]:
    return wait_until(
        lambda: (
            (p := pod(cluster, namespace, name)) and p["status"].get("phase") == "Running" and p
        ),
        60,
        f"{name} Running",
    )


def test_every_env_source_resolves_for_the_provider(
    devcluster: DevCluster, kube_namespace: str, start_agent: AgentFactory
) -> None:
    agent = start_agent(provider_config=PERSIST)
    agent.approve_serving_certificate()
    _setup_sources(devcluster, kube_namespace)
    field = lambda path: {"valueFrom": {"fieldRef": {"fieldPath": path}}}  # noqa: E731
    resource = lambda res, divisor: {  # noqa: E731
        "valueFrom": {"resourceFieldRef": {"resource": res, "divisor": divisor}}
    }
    env = [
        {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "greeting"}}},
        {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
        {"name": "POD_NAME", **field("metadata.name")},
        {"name": "POD_NAMESPACE", **field("metadata.namespace")},
        {"name": "POD_UID", **field("metadata.uid")},
        {"name": "APP", **field("metadata.labels['app']")},
        {"name": "NODE", **field("spec.nodeName")},
        {"name": "SERVICE_ACCOUNT", **field("spec.serviceAccountName")},
        {"name": "POD_IP", **field("status.podIP")},
        {"name": "POD_IPS", **field("status.podIPs")},
        {"name": "HOST_IP", **field("status.hostIP")},
        {"name": "CPU_MILLIS", **resource("limits.cpu", "1m")},
        {"name": "MEM_REQUEST_MI", **resource("requests.memory", "1Mi")},
        {"name": "MEM_LIMIT", **resource("limits.memory", "1Gi")},
        {"name": "EXPANDED", "value": "$(POD_NAME) says $(GREETING) $$(NOT_EXPANDED)"},
    ]
    manifest = pod_manifest("envy", agent.node_name, labels={"app": "envy"})
    container = manifest["spec"]["containers"][0]
    container["env"] = env
    container["envFrom"] = [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}]
    container["resources"] = {
        "limits": {"cpu": "250m"},
        "requests": {"cpu": "250m", "memory": "64Mi"},
    }
    create(devcluster, kube_namespace, manifest)
    api_pod = _running(devcluster, kube_namespace, "envy")

    received = agent.mock_pods()[f"{kube_namespace}/envy"]
    values = _env_of(devcluster, kube_namespace, "envy")
    assert "envFrom" not in received["spec"]["containers"][0]
    assert values["GREETING"] == "hello"
    assert values["PASSWORD"] == "s3cret"
    assert values["CFG_greeting"] == "hello"
    assert values["CFG_COLOR"] == "blue"
    assert values["POD_NAME"] == "envy"
    assert values["POD_NAMESPACE"] == kube_namespace
    assert values["POD_UID"] == api_pod["metadata"]["uid"]
    assert values["APP"] == "envy"
    assert values["NODE"] == agent.node_name
    assert values["SERVICE_ACCOUNT"] == "default"
    assert values["POD_IP"] == api_pod["status"]["podIP"]  # known before the pod started
    assert values["POD_IPS"] == api_pod["status"]["podIP"]
    assert values["HOST_IP"] == devcluster.node_ip == api_pod["status"]["hostIP"]
    assert values["CPU_MILLIS"] == "250"
    assert values["MEM_REQUEST_MI"] == "64"
    assert values["MEM_LIMIT"] == "100"  # no limit: the node's allocatable, like a kubelet
    assert values["EXPANDED"] == "envy says hello $(NOT_EXPANDED)"
    # Service links, and the API server's own `kubernetes` service.
    assert values["BACKEND_SERVICE_PORT"] == "8080"
    assert values["BACKEND_SERVICE_PORT_HTTP"] == "8080"
    assert values["BACKEND_SERVICE_HOST"].startswith("10.0.0.")
    assert values["KUBERNETES_SERVICE_HOST"] == "10.0.0.1"
    # Definition order is kept (upstream scrambles it through a map).
    names = [e["name"] for e in received["spec"]["containers"][0]["env"]]
    assert names == list(values)
    assert names.index("CFG_COLOR") < names.index("GREETING") < names.index("EXPANDED")
    # The secret's value went to the provider, never into Events.
    assert all("s3cret" not in e["message"] for e in events_for(devcluster, kube_namespace, "envy"))


def test_missing_mandatory_secret_keeps_pod_out_of_provider_until_it_exists(
    devcluster: DevCluster, kube_namespace: str, start_agent: AgentFactory
) -> None:
    agent = start_agent(provider_config=PERSIST)
    agent.approve_serving_certificate()
    manifest = pod_manifest("needs-secret", agent.node_name)
    manifest["spec"]["containers"][0]["env"] = [
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "later", "key": "token"}}}
    ]
    create(devcluster, kube_namespace, manifest)

    def reported() -> list[dict[str, Any]] | None:
        events = [
            e
            for e in events_for(devcluster, kube_namespace, "needs-secret")
            if e["reason"] == "MandatorySecretNotFound"
        ]
        return events or None

    (event, *_) = wait_until(reported, 30, "the MandatorySecretNotFound event")
    assert "later" in event["message"]
    waiting = wait_until(
        lambda: (
            (p := pod(devcluster, kube_namespace, "needs-secret"))
            and p["status"].get("containerStatuses")
            and p
        ),
        30,
        "the waiting reason in the pod status",
    )
    assert waiting["status"]["phase"] == "Pending"
    state = waiting["status"]["containerStatuses"][0]["state"]["waiting"]
    assert state["reason"] == "CreateContainerConfigError"
    assert f"{kube_namespace}/needs-secret" not in agent.mock_pods()

    create(
        devcluster,
        kube_namespace,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "later"},
            "data": {"token": base64.b64encode(b"t0k3n").decode()},
        },
    )
    _running(devcluster, kube_namespace, "needs-secret")
    assert _env_of(devcluster, kube_namespace, "needs-secret")["TOKEN"] == "t0k3n"


def test_missing_optional_configmap_is_reported_and_the_pod_runs(
    devcluster: DevCluster, kube_namespace: str, start_agent: AgentFactory
) -> None:
    agent = start_agent(provider_config=PERSIST)
    manifest = pod_manifest("relaxed", agent.node_name)
    manifest["spec"]["containers"][0]["envFrom"] = [
        {"configMapRef": {"name": "absent", "optional": True}}
    ]
    create(devcluster, kube_namespace, manifest)
    _running(devcluster, kube_namespace, "relaxed")
    reasons = [e["reason"] for e in events_for(devcluster, kube_namespace, "relaxed")]
    assert "OptionalConfigMapNotFound" in reasons
    assert f"{kube_namespace}/relaxed" in agent.mock_pods()


def test_configmap_volume_follows_edits_and_service_account_token_is_projected(
    devcluster: DevCluster, kube_namespace: str, start_agent: AgentFactory
) -> None:
    agent = start_agent(provider_config=PERSIST)
    agent.approve_serving_certificate()
    _setup_sources(devcluster, kube_namespace)
    manifest = pod_manifest("mounted", agent.node_name)
    manifest["spec"]["volumes"] = [
        {"name": "config", "configMap": {"name": "cfg"}},
        {"name": "scratch", "emptyDir": {}},
    ]
    create(devcluster, kube_namespace, manifest)
    api_pod = _running(devcluster, kube_namespace, "mounted")
    volumes = agent.volumes_dir / api_pod["metadata"]["uid"] / "volumes"
    if Path("/dev/shm").is_dir():  # secrets and tokens live in memory, never on a disk
        assert memory_backed(agent.volumes_dir), agent.volumes_dir
    greeting = volumes / "config" / "greeting"
    assert greeting.read_text() == "hello"
    assert (volumes / "scratch").is_dir()

    # The ServiceAccount admission plugin added the standard kube-api-access volume.
    (access,) = [
        v["name"] for v in api_pod["spec"]["volumes"] if v["name"].startswith("kube-api-access")
    ]
    token = (volumes / access / "token").read_text()
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header["alg"] in ("RS256", "ES256")
    assert (volumes / access / "namespace").read_text() == kube_namespace
    assert "BEGIN CERTIFICATE" in (volumes / access / "ca.crt").read_text()

    devcluster.kubectl(
        "patch",
        "configmap",
        "cfg",
        "-n",
        kube_namespace,
        "--type=merge",
        "-p",
        json.dumps({"data": {"greeting": "bonjour"}}),
    )
    wait_until(lambda: greeting.read_text() == "bonjour", 30, "the volume file to follow the edit")
