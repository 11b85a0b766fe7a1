"""The kubernetes provider's pure parts: its config errors, names, and the pod rewrite."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from virtual_kubelet.providers.kubernetes.config import PodRewriteConfig, load_config
from virtual_kubelet.providers.kubernetes.naming import (
    OWNER_LABEL,
    SOURCE_NAME,
    SOURCE_NAMESPACE,
    SOURCE_UID,
    NamespaceMapper,
    owner_value,
)
from virtual_kubelet.providers.kubernetes.remote_pods import RemotePods
from virtual_kubelet.providers.kubernetes.rewrite import references, source_view, target_pod
from virtual_kubelet.sdk import SPEC_HASH_ANNOTATION, InvalidInput, ProviderConfigError
from virtual_kubelet.sdk.kube_api import ClientConfig, KubeClient


def _config(tmp_path: Path, doc: dict[str, Any]) -> Path:
    path = tmp_path / "provider.json"
    path.write_text(json.dumps(doc))
    return path


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ProviderConfigError, match="needs --provider-config"):
        load_config(None)
    with pytest.raises(ProviderConfigError, match="target"):
        load_config(_config(tmp_path, {"cluster_id": "home"}))
    with pytest.raises(ProviderConfigError, match="cluster_id"):
        load_config(_config(tmp_path, {"target": {"kubeconfig": "k"}, "cluster_id": "Not OK"}))
    with pytest.raises(ProviderConfigError, match=r"namespaces\.template.*\{namespace\}"):
        load_config(
            _config(
                tmp_path,
                {"target": {"kubeconfig": "k"}, "cluster_id": "a", "namespaces": {"template": "x"}},
            )
        )
    with pytest.raises(ProviderConfigError, match=r"capacity\.cpu"):
        load_config(
            _config(
                tmp_path,
                {
                    "target": {"kubeconfig": "k"},
                    "cluster_id": "a",
                    "capacity": {"cpu": "lots", "memory": "1Gi"},
                },
            )
        )
    with pytest.raises(ProviderConfigError, match="tagret"):
        load_config(
            _config(tmp_path, {"tagret": {}, "target": {"kubeconfig": "k"}, "cluster_id": "a"})
        )


def test_namespace_mapping_same_template_and_explicit_map(tmp_path: Path) -> None:
    config = load_config(
        _config(
            tmp_path,
            {
                "target": {"kubeconfig": "k"},
                "cluster_id": "home",
                "namespaces": {"template": "{namespace}-{cluster}", "map": {"prod": "offloaded"}},
            },
        )
    )
    mapper = NamespaceMapper(config.namespaces, config.cluster_id)
    assert mapper.target("team") == "team-home"
    assert mapper.target("prod") == "offloaded"
    with pytest.raises(InvalidInput, match="not a valid namespace name"):
        mapper.target("n" * 60)
    strict = NamespaceMapper(config.namespaces.model_copy(update={"map_only": True}), "home")
    with pytest.raises(InvalidInput, match="map_only"):
        strict.target("team")


def test_owner_value_is_a_valid_label_value_scoped_to_the_node() -> None:
    assert owner_value("home", "vk-1") == "home.vk-1"
    long = owner_value("home", "n" * 100)
    assert len(long) <= 63
    assert long == owner_value("home", "n" * 100)
    assert long != owner_value("home", "n" * 99)


def _source_pod() -> dict[str, Any]:
    return {
        "metadata": {
            "name": "web-1",
            "namespace": "team",
            "uid": "uid-1",
            "labels": {"app": "web"},
            "annotations": {SPEC_HASH_ANNOTATION: "h1"},
            "ownerReferences": [{"kind": "ReplicaSet", "name": "web"}],
        },
        "spec": {
            "nodeName": "vk-1",
            "serviceAccountName": "default",
            "priorityClassName": "high",
            "nodeSelector": {"kubernetes.io/hostname": "vk-1", "disk": "ssd"},
            "affinity": {"nodeAffinity": {"x": 1}, "podAntiAffinity": {"y": 2}},
            "tolerations": [
                {"key": "virtual-kubelet.io/provider", "operator": "Exists"},
                {"key": "other", "operator": "Exists"},
            ],
            "imagePullSecrets": [{"name": "pull"}],
            "containers": [
                {
                    "name": "main",
                    "image": "app:1",
                    "env": [
                        {
                            "name": "NS",
                            "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
                        },
                        {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                        {
                            "name": "PW",
                            "valueFrom": {"secretKeyRef": {"name": "creds", "key": "pw"}},
                        },
                    ],
                    "envFrom": [{"configMapRef": {"name": "settings"}}],
                    "volumeMounts": [
                        {"name": "conf", "mountPath": "/conf"},
                        {"name": "kube-api-access-x", "mountPath": "/var/run/secrets"},
                    ],
                }
            ],
            "volumes": [
                {"name": "conf", "configMap": {"name": "conf"}},
                {
                    "name": "kube-api-access-x",
                    "projected": {
                        "sources": [
                            {"serviceAccountToken": {"path": "token"}},
                            {"configMap": {"name": "kube-root-ca.crt"}},
                        ]
                    },
                },
            ],
        },
    }


def test_the_target_pod_carries_nothing_that_names_our_node_nor_a_secret_value() -> None:
    original = _source_pod()
    resolved = json.loads(json.dumps(original))
    resolved["spec"]["containers"][0]["env"] = [
        {"name": "NS", "value": "team"},
        {"name": "IP", "value": ""},
        {"name": "PW", "value": "s3cret"},
    ]
    rewrite = PodRewriteConfig(
        tolerations=[{"key": "target-taint", "operator": "Exists"}], node_selector={"pool": "a"}
    )
    pod = target_pod(
        original,
        resolved,
        namespace="team-home",
        owner="home.vk-1",
        cluster_id="home",
        rewrite=rewrite,
    )
    spec = pod["spec"]
    assert pod["metadata"]["namespace"] == "team-home"
    assert "ownerReferences" not in pod["metadata"]
    assert pod["metadata"]["labels"] == {
        "app": "web",
        OWNER_LABEL: "home.vk-1",
        SOURCE_UID: "uid-1",
    }
    assert pod["metadata"]["annotations"][SPEC_HASH_ANNOTATION] == "h1"
    assert "nodeName" not in spec
    assert "priorityClassName" not in spec
    assert "serviceAccountName" not in spec
    assert spec["nodeSelector"] == {"disk": "ssd", "pool": "a"}
    assert spec["affinity"] == {"podAntiAffinity": {"y": 2}}
    assert [t["key"] for t in spec["tolerations"]] == ["other", "target-taint"]
    assert [v["name"] for v in spec["volumes"]] == ["conf"]
    container = spec["containers"][0]
    assert [m["name"] for m in container["volumeMounts"]] == ["conf"]
    env = {e["name"]: e for e in container["env"]}
    assert env["NS"] == {"name": "NS", "value": "team"}  # the source's namespace, not the target's
    assert "fieldRef" in env["IP"]["valueFrom"]  # the target pod's own IP
    assert "secretKeyRef" in env["PW"]["valueFrom"]
    assert "s3cret" not in json.dumps(pod)
    assert references(pod) == {
        ("configmaps", "conf"),
        ("configmaps", "settings"),
        ("secrets", "creds"),
        ("secrets", "pull"),
    }
    none = target_pod(
        original,
        resolved,
        namespace="t",
        owner="o",
        cluster_id="c",
        rewrite=PodRewriteConfig(service_account="none"),
    )
    assert none["spec"]["automountServiceAccountToken"] is False


def test_the_source_view_names_the_source_pod_with_the_remote_status() -> None:
    remote = target_pod(
        _source_pod(),
        _source_pod(),
        namespace="team-home",
        owner="o",
        cluster_id="home",
        rewrite=PodRewriteConfig(),
    )
    remote["metadata"]["uid"] = "remote-uid"
    remote["status"] = {
        "phase": "Running",
        "podIP": "10.0.0.7",
        "hostIP": "192.168.1.1",
        "containerStatuses": [{"name": "main", "restartCount": 2}],
    }
    view = source_view(remote, "10.9.9.9")
    assert view["metadata"] == {
        "namespace": "team",
        "name": "web-1",
        "uid": "uid-1",
        "annotations": {SPEC_HASH_ANNOTATION: "h1"},
    }
    assert view["status"]["podIP"] == "10.0.0.7"
    assert view["status"]["hostIP"] == "10.9.9.9"
    assert view["status"]["containerStatuses"][0]["restartCount"] == 2


def test_a_missing_target_kubeconfig_stops_the_start_naming_the_file(tmp_path: Path) -> None:
    from virtual_kubelet.providers.kubernetes import KubernetesProvider
    from virtual_kubelet.sdk import ProviderContext

    missing = tmp_path / "nowhere.kubeconfig"
    path = _config(tmp_path, {"target": {"kubeconfig": str(missing)}, "cluster_id": "home"})
    context = ProviderContext("vk-1", "linux", "10.0.0.1", 10250, config_path=path)
    with pytest.raises(ProviderConfigError, match=r"nowhere\.kubeconfig"):
        KubernetesProvider(context)


def test_source_tokens_replace_the_projected_volume_and_point_at_the_home_api_server() -> None:
    pod = target_pod(
        _source_pod(),
        _source_pod(),
        namespace="team-home",
        owner="o",
        cluster_id="home",
        rewrite=PodRewriteConfig(service_account="source"),
        home_api=("10.1.2.3", 6443),
    )
    spec = pod["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert pod["metadata"]["annotations"]["offload.virtual-kubelet.io/source-service-account"] == (
        "default"
    )
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["kube-api-access-x"] == {
        "name": "kube-api-access-x",
        "secret": {"secretName": "web-1-vk-sa-token"},
    }
    container = spec["containers"][0]
    assert "kube-api-access-x" in {m["name"] for m in container["volumeMounts"]}
    assert container["env"][:2] == [
        {"name": "KUBERNETES_SERVICE_HOST", "value": "10.1.2.3"},
        {"name": "KUBERNETES_SERVICE_PORT", "value": "6443"},
    ]


def test_the_example_config_loads() -> None:
    example = Path(__file__).parents[2] / "examples" / "kubernetes" / "kubernetes-provider.yaml"
    config = load_config(example)
    assert config.cluster_id == "home"
    assert config.pods.service_account == "source"
    cci = load_config(example.with_name("huawei-cci.yaml"))
    assert cci.mode == "huawei-cci"
    assert cci.cci is not None
    assert cci.cci.network.available_zone == "cn-north-4a"


def test_cci_shapes_round_up_with_requests_equal_to_limits() -> None:
    from decimal import Decimal

    from virtual_kubelet.providers.kubernetes.cci import round_resources
    from virtual_kubelet.sdk import parse_quantity

    def shape(cpu: str, memory: str) -> dict[str, Any]:
        return {
            "name": cpu,
            "image": "x",
            "resources": {"requests": {"cpu": cpu, "memory": memory}},
        }

    pod: dict[str, Any] = {"spec": {"containers": [shape("100m", "100Mi"), shape("1.1", "1Gi")]}}
    round_resources(pod)
    first, second = (c["resources"] for c in pod["spec"]["containers"])
    assert first["requests"] == first["limits"]
    assert parse_quantity(first["limits"]["cpu"]) == Decimal("0.25")
    assert parse_quantity(second["limits"]["cpu"]) == Decimal("1.25")
    total_cpu = Decimal("1.5")
    total_memory = parse_quantity(first["limits"]["memory"]) + parse_quantity(
        second["limits"]["memory"]
    )
    assert total_memory == total_cpu * 2 * 1024**3  # raised to CCI's smallest memory per core
    greedy: dict[str, Any] = {"spec": {"containers": [shape("250m", "16Gi")]}}
    round_resources(greedy)
    assert parse_quantity(greedy["spec"]["containers"][0]["resources"]["limits"]["cpu"]) == 2


def test_cci_mode_needs_its_settings_and_a_capacity(tmp_path: Path) -> None:
    with pytest.raises(ProviderConfigError, match="cci mapping"):
        load_config(_config(tmp_path, {"mode": "huawei-cci", "cluster_id": "a"}))
    with pytest.raises(ProviderConfigError, match=r"cci\.iam_endpoint"):
        load_config(
            _config(
                tmp_path,
                {"mode": "huawei-cci", "cluster_id": "a", "cci": {"api_server": "https://x"}},
            )
        )


def test_the_target_kubeconfig_comes_from_a_file_or_a_secret_not_both(tmp_path: Path) -> None:
    both = {"kubeconfig": "k", "kubeconfig_secret": {"namespace": "n", "name": "s"}}
    with pytest.raises(ProviderConfigError, match="not both"):
        load_config(_config(tmp_path, {"target": both, "cluster_id": "a"}))
    secret = {"kubeconfig_secret": {"namespace": "n", "name": "s"}}
    config = load_config(_config(tmp_path, {"target": secret, "cluster_id": "a"}))
    assert config.target.kubeconfig_secret is not None
    assert config.target.kubeconfig_secret.key == "kubeconfig"


def test_a_broken_kubeconfig_from_a_secret_is_reported_without_its_contents() -> None:
    from virtual_kubelet.providers.kubernetes.provider import _parse_kubeconfig
    from virtual_kubelet.sdk.kube_api import ConfigError

    with pytest.raises(ConfigError) as broken:
        _parse_kubeconfig(b"users:\n- user: {token: s3cret-token\n  bad: [", None)
    assert str(broken.value) == "it is not valid YAML"
    with pytest.raises(ConfigError, match="no current-context") as empty:
        _parse_kubeconfig(b"clusters: []\n", None)
    assert "/vk-target-" not in str(empty.value)


def test_capacity_is_fixed_or_from_a_quota_not_both(tmp_path: Path) -> None:
    doc = {
        "target": {"kubeconfig": "k"},
        "cluster_id": "a",
        "capacity": {"cpu": "1", "memory": "1Gi"},
        "capacity_quota": {"namespace": "n", "name": "q"},
    }
    with pytest.raises(ProviderConfigError, match="not both"):
        load_config(_config(tmp_path, doc))


def _remote_pod(uid: str) -> dict[str, Any]:
    return {
        "metadata": {
            "namespace": "team-kit",
            "name": "web",
            "uid": uid,
            "annotations": {SOURCE_NAMESPACE: "team", SOURCE_NAME: "web"},
        },
        "status": {"phase": "Running"},
    }


def test_the_end_of_our_own_remote_deletion_asks_the_agent_to_look_again() -> None:
    """The agent waits for the provider's word after asking for a deletion; when the remote pod
    leaves the target after the agent's last look, that word must come (a pod without `status`),
    or the source pod lingers until its whole grace period is spent."""
    gone: list[str] = []
    seen: list[dict[str, Any]] = []
    remote = RemotePods(
        KubeClient(ClientConfig(server="http://127.0.0.1:9", source="test")),
        "owner",
        "10.0.0.1",
        gone.append,
    )
    remote.notify(seen.append)
    remote._seen(_remote_pod("r-1"))
    remote.deleting.add("team/web")
    remote._gone(_remote_pod("r-1"))

    assert gone == ["team/web"]
    assert remote.get("team/web") is None
    last = seen[-1]
    assert (last["metadata"]["namespace"], last["metadata"]["name"]) == ("team", "web")
    assert "status" not in last, "a deletion we asked for is not reported as a lost pod"
    assert "team/web" not in remote.deleting


def test_a_remote_pod_deleted_by_someone_else_is_reported_failed() -> None:
    seen: list[dict[str, Any]] = []
    remote = RemotePods(
        KubeClient(ClientConfig(server="http://127.0.0.1:9", source="test")),
        "owner",
        "10.0.0.1",
        lambda key: None,
    )
    remote.notify(seen.append)
    remote._seen(_remote_pod("r-1"))
    remote._gone(_remote_pod("r-1"))

    assert seen[-1]["status"]["phase"] == "Failed"
