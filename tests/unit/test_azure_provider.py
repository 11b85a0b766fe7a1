"""The azure provider's pure parts: group names within ACI's rules, a pod as a container group,
an instance view as a pod status, the config (with the original chart's key names and targetAKS),
and following a log by polling its tail."""

from __future__ import annotations

import asyncio
import datetime
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from azure.mgmt.containerinstance import models as m

from virtual_kubelet.providers.azure import logs
from virtual_kubelet.providers.azure.config import AzureConfig, from_environment
from virtual_kubelet.providers.azure.naming import group_name
from virtual_kubelet.providers.azure.status import pod_status
from virtual_kubelet.providers.azure.translate import Inputs, container_group
from virtual_kubelet.sdk import InvalidInput, LogOptions

ROOT = Path(__file__).resolve().parents[2]
VALID = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def _config(**extra: Any) -> AzureConfig:
    doc = {
        "subscription_id": "sub",
        "resource_group": "rg",
        "region": "westeurope",
        "tenant_id": "t",
        "client_id": "c",
        "client_secret": "s",
    }
    return AzureConfig.model_validate({**doc, **extra})


def _pod(**spec: Any) -> dict[str, Any]:
    annotations = spec.pop("annotations", {})
    container = {
        "name": "main",
        "image": "busybox",
        "command": ["sh", "-c"],
        "args": ["echo hi"],
        "env": [{"name": "PLAIN", "value": "p"}, {"name": "TOKEN", "value": "s3cret"}],
        **spec.pop("container", {}),
    }
    return {
        "metadata": {"name": "p", "namespace": "ns", "uid": "u-1", "annotations": annotations},
        "spec": {"containers": [container], "restartPolicy": "Never", **spec},
    }


@pytest.mark.parametrize(
    ("namespace", "name"),
    [
        ("default", "web"),
        ("Team.A", "my.pod"),
        ("a" * 63, "b" * 63),
        ("x--y", "-z-"),
        ("ns", "a" * 58),
    ],
)
def test_group_names_follow_aci_rules_and_are_stable(namespace: str, name: str) -> None:
    found = group_name(namespace, name)
    assert VALID.match(found), found
    assert "--" not in found
    assert found == group_name(namespace, name)


def test_readable_names_stay_and_truncated_ones_differ_by_hash() -> None:
    assert group_name("default", "web") == "default-web"
    long_a, long_b = group_name("ns", "a" * 70 + "1"), group_name("ns", "a" * 70 + "2")
    assert long_a != long_b
    assert len(long_a) == 63
    assert group_name("default", "web", hashed=True) != "default-web"


def test_a_pod_becomes_a_linux_group_with_secure_env_resources_and_volumes() -> None:
    pod = _pod(
        container={
            "resources": {
                "requests": {"cpu": "250m", "memory": "1Gi"},
                "limits": {"cpu": "1", "memory": "2Gi"},
            },
            "ports": [{"containerPort": 8080}],
            "volumeMounts": [{"name": "creds", "mountPath": "/etc/creds", "readOnly": True}],
            "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080}},
        },
        volumes=[{"name": "creds", "secret": {"secretName": "x"}}, {"name": "tmp", "emptyDir": {}}],
        imagePullSecrets=[{"name": "pull"}],
    )
    pod["spec"]["containers"][0]["image"] = "myacr.azurecr.io/app:1"
    inputs = Inputs(
        secure_env={"main": {"TOKEN"}},
        volume_files={"creds": {"key": b"value"}},
        registry_auth={"myacr.azurecr.io": ("u", "pw"), "other.io": ("x", "y")},
    )
    group = container_group(pod, _config(), "vk-node", inputs)
    body = m.ContainerGroup.serialize(group)
    props = body["properties"]
    assert props["osType"] == "Linux"
    assert props["restartPolicy"] == "Never"
    (container,) = props["containers"]
    c = container["properties"]
    assert c["command"] == ["sh", "-c", "echo hi"]
    assert c["environmentVariables"] == [
        {"name": "PLAIN", "value": "p"},
        {"name": "TOKEN", "secureValue": "s3cret"},
    ]
    assert c["resources"]["requests"] == {"cpu": 0.25, "memoryInGB": 1.0}
    assert c["resources"]["limits"] == {"cpu": 1.0, "memoryInGB": 2.0}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": 8080, "scheme": "http"}
    assert props["imageRegistryCredentials"] == [
        {"server": "myacr.azurecr.io", "username": "u", "password": "pw"}
    ]
    assert props["volumes"] == [
        {"name": "creds", "secret": {"key": "dmFsdWU="}},
        {"name": "tmp", "emptyDir": {}},
    ]
    assert props["ipAddress"]["ports"] == [{"protocol": "TCP", "port": 8080}]
    assert props["ipAddress"]["type"] == "Public"
    assert body["tags"]["NodeName"] == "vk-node"
    assert (body["tags"]["Namespace"], body["tags"]["PodName"], body["tags"]["UID"]) == (
        "ns",
        "p",
        "u-1",
    )


def test_without_knowing_the_sources_every_env_value_is_secure() -> None:
    group = container_group(_pod(), _config(), "n", Inputs(secure_env=None))
    env = group.containers[0].environment_variables or []
    assert all(e.value is None and e.secure_value for e in env)


def test_gpus_need_a_sku_and_take_it_from_the_annotation() -> None:
    gpu = {"resources": {"limits": {"nvidia.com/gpu": "2"}}}
    with pytest.raises(InvalidInput, match="gpu-sku"):
        container_group(_pod(container=gpu), _config(), "n", Inputs())
    pod = _pod(container=gpu, annotations={"azure.virtual-kubelet.io/gpu-sku": "V100"})
    group = container_group(pod, _config(), "n", Inputs())
    requests = group.containers[0].resources.requests
    assert requests.gpu is not None
    assert (requests.gpu.count, requests.gpu.sku) == (2, "V100")


@pytest.mark.parametrize(
    ("container", "spec", "message"),
    [
        ({"command": None, "args": ["x"]}, {}, "args without a command"),
        ({"readinessProbe": {"tcpSocket": {"port": 80}}}, {}, "exec and httpGet probes only"),
        ({"startupProbe": {"exec": {"command": ["true"]}}}, {}, "startupProbe"),
        ({}, {"volumes": [{"name": "h", "hostPath": {"path": "/"}}]}, "not hostPath"),
        ({"resources": {"requests": {"cpu": "lots"}}}, {}, "cpu"),
    ],
)
def test_what_aci_cannot_run_is_refused_with_the_reason(
    container: dict[str, Any], spec: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        container_group(_pod(container=container, **spec), _config(), "n", Inputs())


def _group(state: str, exit_code: int | None = None, restarts: int = 0) -> m.ContainerGroup:
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    view = m.ContainerPropertiesInstanceView()
    view.current_state = m.ContainerState()
    view.current_state.state = state
    view.current_state.start_time = now
    view.current_state.exit_code = exit_code
    view.current_state.finish_time = now if state == "Terminated" else None
    view.restart_count = restarts
    container = m.Container(
        name="main", image="busybox", resources=m.ResourceRequirements(requests=None)
    )
    container.instance_view = view
    group = m.ContainerGroup(containers=[container], os_type="Linux")
    group.name = "ns-p"
    group.provisioning_state = "Succeeded"
    return group


def test_instance_views_become_pod_statuses() -> None:
    pod = _pod()
    running = pod_status(pod, _group("Running"), None)
    assert running["phase"] == "Running"
    (status,) = running["containerStatuses"]
    assert status["containerID"] == "aci://ns-p/main"
    assert status["ready"] is True
    assert status["state"]["running"]["startedAt"] == "2026-01-01T00:00:00Z"
    failed = pod_status(pod, _group("Terminated", exit_code=3), None)
    assert failed["phase"] == "Failed"
    assert failed["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 3
    done = pod_status(pod, _group("Terminated", exit_code=0), None)
    assert done["phase"] == "Succeeded"
    pending = pod_status(pod, None, None)
    assert (pending["phase"], pending["containerStatuses"][0]["state"]) == (
        "Pending",
        {"waiting": {"reason": "ContainerCreating"}},
    )
    refused = pod_status(pod, None, "ACI could not create the container group: quota")
    assert (refused["phase"], refused["reason"]) == ("Failed", "ProviderFailed")
    assert "quota" in refused["message"]


def test_the_original_chart_keys_and_the_environment_fill_the_config(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", "from-env")
    config = AzureConfig.model_validate(
        from_environment(
            {
                "tenantId": "t",
                "clientId": "c",
                "clientKey": "k",
                "aciResourceGroup": "rg",
                "aciRegion": "westus",
            }
        )
    )
    assert (config.subscription_id, config.resource_group, config.region) == (
        "from-env",
        "rg",
        "westus",
    )
    assert config.auth == "client_secret"
    assert config.secret() == "k"
    assert "k" not in repr(config.client_secret)
    # targetAKS: what is missing comes from the AKS node's cloud config (managed identity here).
    cloud = tmp_path / "azure.json"
    cloud.write_text(
        json.dumps(
            {
                "tenantId": "t2",
                "subscriptionId": "s2",
                "aadClientId": "msi",
                "userAssignedIdentityID": "mi-client",
                "resourceGroup": "mc_rg",
                "location": "northeurope",
            }
        )
    )
    monkeypatch.delenv("AZURE_SUBSCRIPTION_ID")
    aks = AzureConfig.model_validate(
        from_environment({"targetAKS": True, "aks_credential_file": str(cloud)})
    )
    assert (aks.auth, aks.client_id, aks.resource_group, aks.region) == (
        "managed_identity",
        "mi-client",
        "mc_rg",
        "northeurope",
    )


def test_the_example_config_loads_and_every_key_is_documented() -> None:
    example = yaml.safe_load((ROOT / "examples/azure/azure-provider.yaml").read_text())
    AzureConfig.model_validate(example)
    doc = (ROOT / "docs/providers/azure.md").read_text()
    missing = [key for key in AzureConfig.model_fields if f"`{key}`" not in doc]
    assert not missing, missing


def _stamped(*lines: tuple[int, str]) -> str:
    return "".join(f"2026-01-01T00:00:{s:02d}.000000000Z {text}\n" for s, text in lines)


def test_follow_emits_only_new_lines_across_polls_of_the_tail() -> None:
    answers = [
        _stamped((1, "a"), (2, "b")),
        _stamped((1, "a"), (2, "b"), (2, "c")),  # a second line in the same instant
        _stamped((2, "b"), (2, "c"), (3, "d")),  # the tail moved on
        _stamped((3, "d"), (4, "e")),
    ]
    state = {"polls": 0}

    async def fetch(tail: int | None) -> str:
        index = min(state["polls"], len(answers) - 1)
        state["polls"] += 1
        return answers[index]

    async def collect() -> list[bytes]:
        out = []
        running = iter([True, True, False])
        async for chunk in logs.follow_logs(
            fetch, LogOptions(follow=True), lambda: next(running, False), 0
        ):
            out.append(chunk)
        return out

    assert asyncio.run(collect()) == [b"a\n", b"b\n", b"c\n", b"d\n", b"e\n"]


def test_logs_keep_timestamps_only_when_asked_and_honour_since() -> None:
    content = _stamped((1, "old"), (5, "new"))

    async def fetch(tail: int | None) -> str:
        return content

    async def collect(options: LogOptions) -> list[bytes]:
        return [c async for c in logs.follow_logs(fetch, options, lambda: False, 0)]

    since = datetime.datetime(2026, 1, 1, 0, 0, 3, tzinfo=datetime.UTC)
    assert asyncio.run(collect(LogOptions(since_time=since))) == [b"new\n"]
    assert asyncio.run(collect(LogOptions(timestamps=True)))[0] == (
        b"2026-01-01T00:00:01.000000000Z old\n"
    )


def test_a_user_assigned_identity_from_the_annotation() -> None:
    identity = (
        "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/"
        "userAssignedIdentities/app"
    )
    pod = _pod(annotations={"azure.virtual-kubelet.io/managed-identity": identity})
    body = m.ContainerGroup.serialize(container_group(pod, _config(), "n", Inputs()))
    assert body["identity"] == {"type": "UserAssigned", "userAssignedIdentities": {identity: {}}}
    bad = _pod(annotations={"azure.virtual-kubelet.io/managed-identity": "app"})
    with pytest.raises(InvalidInput, match="managed identity"):
        container_group(bad, _config(), "n", Inputs())
