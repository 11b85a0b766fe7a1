"""Container environment resolution: the exact env a provider receives, the events, the errors."""

from __future__ import annotations

import base64
import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from virtual_kubelet.pods.env import (
    EnvError,
    EnvEvent,
    PodNetwork,
    expand,
    expand_command,
    resolve_container_env,
    resolve_pod_env,
)
from virtual_kubelet.sdk import SECRET_ENV_ANNOTATION, secret_env_names

NS = "team"
ALLOCATABLE = {"cpu": "20", "memory": "100Gi", "ephemeral-storage": "50Gi", "hugepages-2Mi": "1Gi"}
NETWORK = PodNetwork(host_ips=["192.0.2.10", "2001:db8::10"], pod_ips=["10.1.2.3", "fd00::3"])
NO_NETWORK = PodNetwork(host_ips=[], pod_ips=[])


class FakeSources:
    """An in-memory EnvSources."""

    def __init__(self, *objects: dict[str, Any]) -> None:
        self.objects = list(objects)

    def _find(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        for obj in self.objects:
            meta = obj["metadata"]
            if obj["kind"] == kind and meta["namespace"] == namespace and meta["name"] == name:
                return obj
        return None

    def config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._find("ConfigMap", namespace, name)

    def secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._find("Secret", namespace, name)

    def services(self, namespace: str) -> list[dict[str, Any]]:
        return [
            obj
            for obj in self.objects
            if obj["kind"] == "Service" and obj["metadata"]["namespace"] == namespace
        ]


def config_map(
    name: str, data: dict[str, str], namespace: str = NS, **extra: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": data,
        **extra,
    }


def secret(name: str, data: dict[str, str | bytes], namespace: str = NS) -> dict[str, Any]:
    encoded = {
        key: base64.b64encode(value if isinstance(value, bytes) else value.encode()).decode()
        for key, value in data.items()
    }
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": "Opaque",
        "data": encoded,
    }


def service(
    name: str, cluster_ip: str, ports: list[dict[str, Any]], namespace: str = NS
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"clusterIP": cluster_ip, "ports": ports},
    }


KUBERNETES = service(
    "kubernetes", "10.96.0.1", [{"name": "https", "port": 443, "protocol": "TCP"}], "default"
)
KUBERNETES_VARS = {
    "KUBERNETES_PORT": "tcp://10.96.0.1:443",
    "KUBERNETES_PORT_443_TCP": "tcp://10.96.0.1:443",
    "KUBERNETES_PORT_443_TCP_ADDR": "10.96.0.1",
    "KUBERNETES_PORT_443_TCP_PORT": "443",
    "KUBERNETES_PORT_443_TCP_PROTO": "tcp",
    "KUBERNETES_SERVICE_HOST": "10.96.0.1",
    "KUBERNETES_SERVICE_PORT": "443",
    "KUBERNETES_SERVICE_PORT_HTTPS": "443",
}


def make_pod(
    *containers: dict[str, Any], links: bool | None = False, **spec: Any
) -> dict[str, Any]:
    pod_spec: dict[str, Any] = {
        "nodeName": "vk-node",
        "serviceAccountName": "builder",
        "containers": list(containers),
        **spec,
    }
    if links is not None:
        pod_spec["enableServiceLinks"] = links
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "web-0",
            "namespace": NS,
            "uid": "8d3c2b1a-0000-4000-8000-000000000001",
            "labels": {"app": "web", "tier": "front"},
            "annotations": {"note": 'say "hi"\n', "owner": "ops"},
        },
        "spec": pod_spec,
    }


def resolve(
    container: dict[str, Any],
    *objects: dict[str, Any],
    pod: dict[str, Any] | None = None,
    network: PodNetwork = NETWORK,
) -> tuple[list[dict[str, str]], list[EnvEvent]]:
    pod = pod if pod is not None else make_pod(container)
    return resolve_container_env(
        pod, container, FakeSources(*objects), network, node_allocatable=ALLOCATABLE
    )


def env_dict(container: dict[str, Any], *objects: dict[str, Any], **kwargs: Any) -> dict[str, str]:
    env, _ = resolve(container, *objects, **kwargs)
    assert len({item["name"] for item in env}) == len(env), "each name appears once"
    return {item["name"]: item["value"] for item in env}


def ref_var(name: str, **value_from: Any) -> dict[str, Any]:
    return {"name": name, "valueFrom": value_from}


def field(path: str) -> dict[str, Any]:
    return ref_var("V", fieldRef={"apiVersion": "v1", "fieldPath": path})


def resource(resource_name: str, **extra: Any) -> dict[str, Any]:
    return ref_var("V", resourceFieldRef={"resource": resource_name, **extra})


# --- $(VAR) expansion -------------------------------------------------------------------------

LOOKUP = {"A": "alpha", "B": "beta", "EMPTY": ""}.get


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$(A)", "alpha"),
        ("x-$(A)-$(B)-y", "x-alpha-beta-y"),
        ("[$(EMPTY)]", "[]"),
        ("$(MISSING)", "$(MISSING)"),
        ("$(A)$(MISSING)", "alpha$(MISSING)"),
        ("$$(A)", "$(A)"),
        ("a$$b", "a$b"),
        ("$$$(A)", "$alpha"),
        ("$$$$", "$$"),
        ("$(A", "$(A"),
        ("pre $( post", "pre $( post"),
        ("$A", "$A"),
        ("cost: 5$", "cost: 5$"),
        ("$", "$"),
        ("$()", "$()"),
        ("$(A)(B)", "alpha(B)"),
        ("", ""),
    ],
)
def test_expand_follows_kubernetes_rules(text: str, expected: str) -> None:
    assert expand(text, LOOKUP) == expected


@given(st.text().filter(lambda text: "$" not in text))
def test_expand_leaves_text_without_dollar_unchanged(text: str) -> None:
    assert expand(text, lambda name: "boom") == text


@given(st.text(alphabet=st.sampled_from("$()AB x")), st.dictionaries(st.text(), st.text()))
def test_expand_never_raises_and_escaped_text_round_trips(
    text: str, variables: dict[str, str]
) -> None:
    assert isinstance(expand(text, variables.get), str)
    assert expand(text.replace("$", "$$"), variables.get) == text


# --- service links ----------------------------------------------------------------------------


def test_service_links_expose_every_kubelet_variable_sorted_before_explicit_env() -> None:
    db = service(
        "my-db",
        "10.0.0.7",
        [
            {"name": "pg-main", "port": 5432, "protocol": "TCP"},
            {"name": "stats", "port": 9187, "protocol": "UDP"},
        ],
    )
    container = {"name": "app", "env": [{"name": "Z", "value": "$(MY_DB_SERVICE_HOST)"}]}
    env, events = resolve(container, db, KUBERNETES, pod=make_pod(container, links=None))
    expected_db = {
        "MY_DB_SERVICE_HOST": "10.0.0.7",
        "MY_DB_SERVICE_PORT": "5432",
        "MY_DB_SERVICE_PORT_PG_MAIN": "5432",
        "MY_DB_SERVICE_PORT_STATS": "9187",
        "MY_DB_PORT": "tcp://10.0.0.7:5432",
        "MY_DB_PORT_5432_TCP": "tcp://10.0.0.7:5432",
        "MY_DB_PORT_5432_TCP_PROTO": "tcp",
        "MY_DB_PORT_5432_TCP_PORT": "5432",
        "MY_DB_PORT_5432_TCP_ADDR": "10.0.0.7",
        "MY_DB_PORT_9187_UDP": "udp://10.0.0.7:9187",
        "MY_DB_PORT_9187_UDP_PROTO": "udp",
        "MY_DB_PORT_9187_UDP_PORT": "9187",
        "MY_DB_PORT_9187_UDP_ADDR": "10.0.0.7",
    }
    service_vars = sorted({**expected_db, **KUBERNETES_VARS}.items())
    assert env == [{"name": k, "value": v} for k, v in service_vars] + [
        {"name": "Z", "value": "10.0.0.7"}
    ]
    assert events == []


def test_service_port_protocol_defaults_to_tcp() -> None:
    web = service("web", "10.0.0.8", [{"port": 80}])
    env = env_dict({"name": "c"}, web, pod=make_pod({"name": "c"}, links=True))
    assert env == {
        "WEB_SERVICE_HOST": "10.0.0.8",
        "WEB_SERVICE_PORT": "80",
        "WEB_PORT": "tcp://10.0.0.8:80",
        "WEB_PORT_80_TCP": "tcp://10.0.0.8:80",
        "WEB_PORT_80_TCP_PROTO": "tcp",
        "WEB_PORT_80_TCP_PORT": "80",
        "WEB_PORT_80_TCP_ADDR": "10.0.0.8",
    }


def test_services_without_cluster_ip_or_ports_are_skipped() -> None:
    headless = service("headless", "None", [{"port": 80}])
    external = service("external", "", [{"port": 80}])
    portless = service("portless", "10.0.0.9", [])
    env = env_dict(
        {"name": "c"}, headless, external, portless, pod=make_pod({"name": "c"}, links=True)
    )
    assert env == {}


def test_disabled_service_links_still_expose_the_kubernetes_service() -> None:
    web = service("web", "10.0.0.8", [{"port": 80}])
    other_default = service("dns", "10.96.0.10", [{"port": 53}], "default")
    env = env_dict({"name": "c"}, web, other_default, KUBERNETES)
    assert env == KUBERNETES_VARS


def test_pod_in_default_namespace_sees_only_kubernetes_when_links_are_off() -> None:
    other_default = service("dns", "10.96.0.10", [{"port": 53}], "default")
    container = {"name": "c"}
    pod = make_pod(container, links=False)
    pod["metadata"]["namespace"] = "default"
    assert env_dict(container, other_default, KUBERNETES, pod=pod) == KUBERNETES_VARS
    pod["spec"]["enableServiceLinks"] = True
    env = env_dict(container, other_default, KUBERNETES, pod=pod)
    assert env["DNS_SERVICE_HOST"] == "10.96.0.10"
    assert env["KUBERNETES_SERVICE_HOST"] == "10.96.0.1"


def test_other_namespaces_services_are_never_linked() -> None:
    elsewhere = service("web", "10.0.0.8", [{"port": 80}], "other")
    assert env_dict({"name": "c"}, elsewhere, pod=make_pod({"name": "c"}, links=True)) == {}


def test_same_namespace_kubernetes_service_shadows_the_default_one() -> None:
    mine = service("kubernetes", "10.0.0.99", [{"port": 8443}])
    env = env_dict({"name": "c"}, mine, KUBERNETES, pod=make_pod({"name": "c"}, links=True))
    assert env["KUBERNETES_SERVICE_HOST"] == "10.0.0.99"
    assert env["KUBERNETES_SERVICE_PORT"] == "8443"


def test_explicit_env_overrides_service_variable_in_place() -> None:
    container = {"name": "c", "env": [{"name": "KUBERNETES_SERVICE_HOST", "value": "override"}]}
    env, _ = resolve(container, KUBERNETES)
    names = [item["name"] for item in env]
    assert names == sorted(KUBERNETES_VARS)
    assert {"name": "KUBERNETES_SERVICE_HOST", "value": "override"} in env


# --- envFrom ----------------------------------------------------------------------------------


def test_env_from_config_map_and_secret_with_prefix_in_order() -> None:
    container = {
        "name": "c",
        "envFrom": [
            {"configMapRef": {"name": "settings"}, "prefix": "CFG_"},
            {"secretRef": {"name": "creds"}},
        ],
        "env": [{"name": "EXTRA", "value": "1"}],
    }
    env, events = resolve(
        container,
        config_map("settings", {"mode": "fast", "level": "3"}),
        secret("creds", {"PASSWORD": "hunter2", "USER": "svc"}),
    )
    assert env == [
        {"name": "CFG_level", "value": "3"},
        {"name": "CFG_mode", "value": "fast"},
        {"name": "PASSWORD", "value": "hunter2"},
        {"name": "USER", "value": "svc"},
        {"name": "EXTRA", "value": "1"},
    ]
    assert events == []


def test_env_from_ignores_config_map_binary_data() -> None:
    cm = config_map("settings", {"A": "1"}, binaryData={"BLOB": base64.b64encode(b"x").decode()})
    container = {"name": "c", "envFrom": [{"configMapRef": {"name": "settings"}}]}
    assert env_dict(container, cm) == {"A": "1"}


def test_secret_values_are_decoded_as_utf8_with_replacement() -> None:
    container = {"name": "c", "envFrom": [{"secretRef": {"name": "s"}}]}
    env = env_dict(container, secret("s", {"TEXT": "grüße", "BIN": b"\xff\xfeok"}))
    assert env == {"BIN": "\ufffd\ufffdok", "TEXT": "grüße"}


def test_invalid_base64_in_a_secret_names_the_key_not_the_value() -> None:
    broken = secret("s", {"GOOD": "fine"})
    broken["data"]["BAD"] = "s3cr3t-not-base64!"
    only_good = {"name": "c", "env": [ref_var("V", secretKeyRef={"name": "s", "key": "GOOD"})]}
    # Only the referenced key is decoded: a malformed neighbour breaks nothing.
    assert env_dict(only_good, broken) == {"V": "fine"}

    container = {"name": "c", "envFrom": [{"secretRef": {"name": "s"}}]}
    with pytest.raises(EnvError) as caught:
        resolve(container, broken)
    assert caught.value.reason == "InvalidSecretData"
    assert caught.value.message == f'Key "BAD" of Secret {NS}/s is not valid base64'
    assert "s3cr3t" not in f"{caught.value} {caught.value!r}"


def test_later_sources_replace_values_but_keep_first_position() -> None:
    container = {
        "name": "c",
        "envFrom": [
            {"configMapRef": {"name": "first"}},
            {"configMapRef": {"name": "second"}},
        ],
        "env": [
            {"name": "NEW", "value": "n"},
            {"name": "A", "value": "from-env"},
            {"name": "NEW", "value": "n2"},
        ],
    }
    env, _ = resolve(
        container,
        config_map("first", {"A": "1", "B": "1"}),
        config_map("second", {"B": "2", "C": "2"}),
    )
    assert env == [
        {"name": "A", "value": "from-env"},
        {"name": "B", "value": "2"},
        {"name": "C", "value": "2"},
        {"name": "NEW", "value": "n2"},
    ]


def test_invalid_env_from_keys_are_skipped_with_one_event_per_source() -> None:
    container = {
        "name": "c",
        "envFrom": [
            {"configMapRef": {"name": "cfg"}},
            {"secretRef": {"name": "sec"}, "prefix": "S_"},
        ],
    }
    env, events = resolve(
        container,
        config_map("cfg", {"a=b": "1", "tab\tkey": "2", "my.var": "3", "1st": "4", "ok key": "5"}),
        secret("sec", {"x=y": "top-secret", "fine": "v", "grüß": "top-secret"}),
    )
    assert {item["name"]: item["value"] for item in env} == {
        "1st": "4",
        "my.var": "3",
        "ok key": "5",
        "S_fine": "v",
    }
    assert events == [
        EnvEvent(
            "Warning",
            "InvalidEnvironmentVariableNames",
            "Keys [a=b, tab\tkey] from the EnvFrom configMap team/cfg were skipped since they"
            " are considered invalid environment variable names.",
        ),
        EnvEvent(
            "Warning",
            "InvalidEnvironmentVariableNames",
            "Keys [S_grüß, S_x=y] from the EnvFrom secret team/sec were skipped since they"
            " are considered invalid environment variable names.",
        ),
    ]
    assert all("top-secret" not in event.message for event in events)


@pytest.mark.parametrize(
    ("ref_key", "reason"),
    [("configMapRef", "OptionalConfigMapNotFound"), ("secretRef", "OptionalSecretNotFound")],
)
def test_optional_missing_env_from_source_is_skipped_with_a_warning(
    ref_key: str, reason: str
) -> None:
    container = {
        "name": "c",
        "envFrom": [{ref_key: {"name": "gone", "optional": True}}],
        "env": [{"name": "A", "value": "1"}],
    }
    env, events = resolve(container)
    assert env == [{"name": "A", "value": "1"}]
    assert len(events) == 1
    assert events[0].type == "Warning"
    assert events[0].reason == reason
    assert "team/gone" in events[0].message


@pytest.mark.parametrize(
    ("ref_key", "reason"),
    [("configMapRef", "MandatoryConfigMapNotFound"), ("secretRef", "MandatorySecretNotFound")],
)
@pytest.mark.parametrize("optional", [False, None])
def test_mandatory_missing_env_from_source_refuses_the_pod(
    ref_key: str, reason: str, optional: bool | None
) -> None:
    ref: dict[str, Any] = {"name": "gone"}
    if optional is not None:
        ref["optional"] = optional
    with pytest.raises(EnvError) as caught:
        resolve({"name": "c", "envFrom": [{ref_key: ref}]})
    assert caught.value.reason == reason
    assert "team/gone" in caught.value.message


# --- env values and $(VAR) ---------------------------------------------------------------------


def test_values_expand_against_earlier_definitions_only() -> None:
    container = {
        "name": "c",
        "envFrom": [{"configMapRef": {"name": "cfg"}}],
        "env": [
            {"name": "URL", "value": "http://$(HOST):$(PORT)/$(LATER)"},
            {"name": "LATER", "value": "x"},
            {"name": "HOST", "value": "$(HOST).local"},
            {"name": "LITERAL", "value": "$$(HOST) and $(UNDEFINED)"},
            {"name": "EMPTY", "value": ""},
            {"name": "SVC", "value": "$(KUBERNETES_SERVICE_HOST)"},
        ],
    }
    env = env_dict(container, config_map("cfg", {"HOST": "db", "PORT": "5432"}), KUBERNETES)
    assert env["URL"] == "http://db:5432/$(LATER)"
    assert env["HOST"] == "db.local"
    assert env["LITERAL"] == "$(HOST) and $(UNDEFINED)"
    assert env["EMPTY"] == ""
    assert env["SVC"] == "10.96.0.1"


def test_key_refs_resolve_and_are_not_expanded() -> None:
    container = {
        "name": "c",
        "env": [
            {"name": "A", "value": "a"},
            ref_var("FROM_CM", configMapKeyRef={"name": "cfg", "key": "tmpl"}),
            ref_var("FROM_SECRET", secretKeyRef={"name": "sec", "key": "token"}),
        ],
    }
    env, events = resolve(
        container,
        config_map("cfg", {"tmpl": "$(A)"}),
        secret("sec", {"token": "t0k$(A)"}),
    )
    assert env == [
        {"name": "A", "value": "a"},
        {"name": "FROM_CM", "value": "$(A)"},
        {"name": "FROM_SECRET", "value": "t0k$(A)"},
    ]
    assert events == []


def test_literal_value_wins_over_value_from() -> None:
    container = {
        "name": "c",
        "env": [
            {"name": "A", "value": "lit", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
        ],
    }
    assert env_dict(container) == {"A": "lit"}


@pytest.mark.parametrize(
    ("ref_key", "objects", "reason"),
    [
        ("configMapKeyRef", [], "OptionalConfigMapNotFound"),
        ("secretKeyRef", [], "OptionalSecretNotFound"),
        ("configMapKeyRef", [config_map("ref", {"other": "x"})], "OptionalConfigMapKeyNotFound"),
        ("secretKeyRef", [secret("ref", {"other": "hidden"})], "OptionalSecretKeyNotFound"),
    ],
)
def test_optional_missing_key_ref_skips_the_variable_with_a_warning(
    ref_key: str, objects: list[dict[str, Any]], reason: str
) -> None:
    container = {
        "name": "app",
        "envFrom": [{"configMapRef": {"name": "base"}}],
        "env": [
            ref_var("X", **{ref_key: {"name": "ref", "key": "wanted", "optional": True}}),
            {"name": "Y", "value": "y"},
        ],
    }
    env, events = resolve(container, config_map("base", {"X": "kept"}), *objects)
    assert env == [{"name": "X", "value": "kept"}, {"name": "Y", "value": "y"}]
    assert [(event.type, event.reason) for event in events] == [("Warning", reason)]
    assert "team/ref" in events[0].message
    assert '"X"' in events[0].message
    assert "hidden" not in events[0].message


@pytest.mark.parametrize(
    ("ref_key", "objects", "reason"),
    [
        ("configMapKeyRef", [], "MandatoryConfigMapNotFound"),
        ("secretKeyRef", [], "MandatorySecretNotFound"),
        ("configMapKeyRef", [config_map("ref", {"other": "x"})], "MandatoryConfigMapKeyNotFound"),
        ("secretKeyRef", [secret("ref", {"other": "hidden"})], "MandatorySecretKeyNotFound"),
    ],
)
def test_mandatory_missing_key_ref_refuses_the_pod(
    ref_key: str, objects: list[dict[str, Any]], reason: str
) -> None:
    container = {"name": "app", "env": [ref_var("X", **{ref_key: {"name": "ref", "key": "k"}})]}
    with pytest.raises(EnvError) as caught:
        resolve(container, *objects)
    assert caught.value.reason == reason
    assert "team/ref" in caught.value.message
    assert "hidden" not in caught.value.message
    assert "hidden" not in str(caught.value)


def test_env_from_and_key_refs_of_other_namespaces_are_not_visible() -> None:
    container = {"name": "c", "envFrom": [{"configMapRef": {"name": "cfg"}}]}
    with pytest.raises(EnvError) as caught:
        resolve(container, config_map("cfg", {"A": "1"}, namespace="other"))
    assert caught.value.reason == "MandatoryConfigMapNotFound"


# --- fieldRef ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("metadata.name", "web-0"),
        ("metadata.namespace", NS),
        ("metadata.uid", "8d3c2b1a-0000-4000-8000-000000000001"),
        ("metadata.labels", 'app="web"\ntier="front"'),
        ("metadata.annotations", 'note="say \\"hi\\"\\n"\nowner="ops"'),
        ("metadata.labels['tier']", "front"),
        ("metadata.labels['absent']", ""),
        ("metadata.annotations['owner']", "ops"),
        ("metadata.annotations['note']", 'say "hi"\n'),
        ("spec.nodeName", "vk-node"),
        ("spec.serviceAccountName", "builder"),
        ("status.hostIP", "192.0.2.10"),
        ("status.hostIPs", "192.0.2.10,2001:db8::10"),
        ("status.podIP", "10.1.2.3"),
        ("status.podIPs", "10.1.2.3,fd00::3"),
    ],
)
def test_field_refs_resolve_every_supported_path(path: str, expected: str) -> None:
    assert env_dict({"name": "c", "env": [field(path)]}) == {"V": expected}


@pytest.mark.parametrize(
    "path", ["status.hostIP", "status.hostIPs", "status.podIP", "status.podIPs"]
)
def test_network_field_refs_are_empty_when_addresses_are_unknown(path: str) -> None:
    assert env_dict({"name": "c", "env": [field(path)]}, network=NO_NETWORK) == {"V": ""}


def test_field_ref_api_version_defaults_to_v1() -> None:
    container = {"name": "c", "env": [ref_var("V", fieldRef={"fieldPath": "metadata.name"})]}
    assert env_dict(container) == {"V": "web-0"}


def test_whole_map_field_refs_quote_like_go() -> None:
    container = {"name": "c", "env": [field("metadata.annotations")]}
    pod = make_pod(container)
    pod["metadata"]["annotations"] = {"b": "tab\there", "a": "ünï", "c": "\x01\x7f"}
    assert env_dict(container, pod=pod) == {"V": 'a="ünï"\nb="tab\\there"\nc="\\x01\\x7f"'}
    pod["metadata"].pop("annotations")
    assert env_dict(container, pod=pod) == {"V": ""}


@pytest.mark.parametrize(
    ("api_version", "path"),
    [
        ("v1", "status.phase"),
        ("v1", "spec.restartPolicy"),
        ("v1", "metadata.name['x']"),
        ("v2", "metadata.name"),
    ],
)
def test_unsupported_field_paths_refuse_the_pod(api_version: str, path: str) -> None:
    container = {
        "name": "c",
        "env": [ref_var("V", fieldRef={"apiVersion": api_version, "fieldPath": path})],
    }
    with pytest.raises(EnvError) as caught:
        resolve(container)
    assert caught.value.reason == "UnsupportedFieldPath"
    assert path in caught.value.message


# --- resourceFieldRef -------------------------------------------------------------------------


def resources(limits: dict[str, str] | None = None, requests: dict[str, str] | None = None) -> Any:
    out: dict[str, Any] = {}
    if limits is not None:
        out["limits"] = limits
    if requests is not None:
        out["requests"] = requests
    return out


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        (resource("limits.cpu"), "1"),
        (resource("limits.cpu", divisor="1m"), "250"),
        (resource("requests.cpu", divisor="1m"), "100"),
        (resource("requests.cpu"), "1"),
        (resource("limits.memory"), str(64 * 2**20)),
        (resource("limits.memory", divisor="1Mi"), "64"),
        (resource("limits.memory", divisor="1M"), "68"),
        (resource("requests.memory", divisor="1Mi"), "32"),
        (resource("limits.ephemeral-storage", divisor="1Gi"), "2"),
        (resource("requests.ephemeral-storage", divisor="1Mi"), "512"),
        (resource("limits.hugepages-2Mi", divisor="2Mi"), "4"),
        (resource("requests.hugepages-2Mi", divisor="1Mi"), "8"),
        (resource("limits.cpu", divisor="0"), "1"),
    ],
)
def test_resource_field_refs_round_up_by_divisor(ref: dict[str, Any], expected: str) -> None:
    container = {
        "name": "c",
        "resources": resources(
            limits={
                "cpu": "250m",
                "memory": "64Mi",
                "ephemeral-storage": "2Gi",
                "hugepages-2Mi": "8Mi",
            },
            requests={
                "cpu": "100m",
                "memory": "32Mi",
                "ephemeral-storage": "512Mi",
                "hugepages-2Mi": "8Mi",
            },
        ),
        "env": [ref],
    }
    assert env_dict(container) == {"V": expected}


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        (resource("limits.cpu"), "20"),
        (resource("limits.cpu", divisor="1m"), "20000"),
        (resource("limits.memory", divisor="1Gi"), "100"),
        (resource("limits.ephemeral-storage", divisor="1Gi"), "50"),
        # Hugepages are never defaulted from the node: no limit means 0.
        (resource("limits.hugepages-2Mi"), "0"),
        # Requests never fall back to the node; without a limit they are 0.
        (resource("requests.cpu"), "0"),
        (resource("requests.memory"), "0"),
    ],
)
def test_unset_limits_fall_back_to_node_allocatable(ref: dict[str, Any], expected: str) -> None:
    assert env_dict({"name": "c", "env": [ref]}) == {"V": expected}


def test_zero_limit_falls_back_to_node_allocatable() -> None:
    container = {
        "name": "c",
        "resources": resources(limits={"cpu": "0"}),
        "env": [resource("limits.cpu")],
    }
    assert env_dict(container) == {"V": "20"}


def test_unset_request_defaults_to_the_containers_own_limit() -> None:
    container = {
        "name": "c",
        "resources": resources(limits={"cpu": "1500m", "memory": "1Gi"}),
        "env": [
            {**resource("requests.cpu"), "name": "CPU"},
            {**resource("requests.memory", divisor="1Mi"), "name": "MEM"},
        ],
    }
    assert env_dict(container) == {"CPU": "2", "MEM": "1024"}


def test_pod_level_limits_come_before_node_allocatable() -> None:
    container = {"name": "c", "env": [resource("limits.cpu", divisor="1m")]}
    pod = make_pod(container, resources={"limits": {"cpu": "3"}})
    assert env_dict(container, pod=pod) == {"V": "3000"}


def test_resource_field_ref_can_name_another_container() -> None:
    sidecar = {"name": "side", "resources": resources(limits={"memory": "10Mi"})}
    init = {"name": "setup", "resources": resources(limits={"memory": "20Mi"})}
    main = {
        "name": "main",
        "env": [
            {**resource("limits.memory", containerName="side", divisor="1Mi"), "name": "SIDE"},
            {**resource("limits.memory", containerName="setup", divisor="1Mi"), "name": "INIT"},
            {**resource("limits.memory", containerName="main", divisor="1Gi"), "name": "SELF"},
        ],
    }
    pod = make_pod(main, sidecar, initContainers=[init])
    assert env_dict(main, pod=pod) == {"SIDE": "10", "INIT": "20", "SELF": "100"}


@pytest.mark.parametrize(
    "ref",
    [
        resource("limits.cpu", containerName="nope"),
        resource("limits.nvidia.com/gpu"),
        resource("status.cpu"),
        resource("limits.cpu", divisor="lots"),
    ],
)
def test_invalid_resource_field_refs_refuse_the_pod(ref: dict[str, Any]) -> None:
    with pytest.raises(EnvError) as caught:
        resolve({"name": "c", "env": [ref]})
    assert caught.value.reason == "InvalidResourceFieldRef"


# --- whole pods -------------------------------------------------------------------------------


def test_resolve_pod_env_resolves_every_container_and_leaves_input_untouched() -> None:
    init = {"name": "init", "envFrom": [{"configMapRef": {"name": "cfg"}}]}
    main = {
        "name": "main",
        "image": "busybox",
        "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "P_"}],
        "env": [field("metadata.name"), {"name": "W", "value": "$(P_A)"}],
    }
    bare = {"name": "bare"}
    debug = {"name": "debugger", "targetContainerName": "main", "env": [field("spec.nodeName")]}
    pod = make_pod(main, bare, initContainers=[init], ephemeralContainers=[debug])
    original = copy.deepcopy(pod)
    resolved, events = resolve_pod_env(
        pod,
        FakeSources(config_map("cfg", {"A": "1"}), KUBERNETES),
        NETWORK,
        node_allocatable=ALLOCATABLE,
    )
    assert pod == original
    kube = [{"name": k, "value": v} for k, v in sorted(KUBERNETES_VARS.items())]
    spec = resolved["spec"]
    assert spec["initContainers"] == [{"name": "init", "env": [*kube, {"name": "A", "value": "1"}]}]
    assert spec["containers"] == [
        {
            "name": "main",
            "image": "busybox",
            "env": [
                *kube,
                {"name": "P_A", "value": "1"},
                {"name": "V", "value": "web-0"},
                {"name": "W", "value": "1"},
            ],
        },
        {"name": "bare", "env": kube},
    ]
    assert spec["ephemeralContainers"] == [
        {
            "name": "debugger",
            "targetContainerName": "main",
            "env": [*kube, {"name": "V", "value": "vk-node"}],
        }
    ]
    assert events == []
    # Only the marker of Secret-sourced names (none here) is added to the metadata.
    annotations = {**original["metadata"]["annotations"], "virtual-kubelet.io/secret-env": "{}"}
    assert resolved["metadata"] == {**original["metadata"], "annotations": annotations}


def test_resolve_pod_env_deduplicates_events_across_containers() -> None:
    shared = {"configMapRef": {"name": "cfg"}}
    first = {"name": "a", "envFrom": [shared]}
    second = {"name": "b", "envFrom": [shared]}
    _, events = resolve_pod_env(
        make_pod(first, second),
        FakeSources(config_map("cfg", {"bad=key": "1"})),
        NETWORK,
        node_allocatable=ALLOCATABLE,
    )
    assert [event.reason for event in events] == ["InvalidEnvironmentVariableNames"]


def test_resolve_pod_env_concatenates_events_of_all_containers() -> None:
    init = {"name": "init", "envFrom": [{"secretRef": {"name": "s", "optional": True}}]}
    main = {"name": "main", "envFrom": [{"configMapRef": {"name": "c", "optional": True}}]}
    _, events = resolve_pod_env(
        make_pod(main, initContainers=[init]),
        FakeSources(),
        NETWORK,
        node_allocatable=ALLOCATABLE,
    )
    assert [event.reason for event in events] == [
        "OptionalSecretNotFound",
        "OptionalConfigMapNotFound",
    ]


def test_resolve_pod_env_refuses_a_pod_with_a_missing_mandatory_reference() -> None:
    init = {"name": "init", "env": [ref_var("T", secretKeyRef={"name": "creds", "key": "t"})]}
    pod = make_pod({"name": "main"}, initContainers=[init])
    original = copy.deepcopy(pod)
    with pytest.raises(EnvError) as caught:
        resolve_pod_env(pod, FakeSources(), NETWORK, node_allocatable=ALLOCATABLE)
    assert caught.value.reason == "MandatorySecretNotFound"
    assert pod == original


# --- command and args -------------------------------------------------------------------------


def test_expand_command_uses_the_resolved_env() -> None:
    container = {
        "name": "c",
        "command": ["/bin/sh", "-c", "echo $(GREETING) $$(GREETING) $(NOPE)"],
        "args": ["--name=$(POD_NAME)", "$(GREETING)"],
        "env": [
            {"name": "GREETING", "value": "hello"},
            ref_var("POD_NAME", fieldRef={"fieldPath": "metadata.name"}),
        ],
    }
    env, _ = resolve(container)
    assert expand_command(container, env) == (
        ["/bin/sh", "-c", "echo hello $(GREETING) $(NOPE)"],
        ["--name=web-0", "hello"],
    )


def test_expand_command_without_command_or_args() -> None:
    assert expand_command({"name": "c"}, []) == ([], [])


# --- The marker of Secret-sourced names on the pod handed to the provider ----------------------


def test_secret_sourced_names_are_marked_by_container_and_config_map_values_are_not() -> None:
    app = {
        "name": "app",
        "envFrom": [
            {"configMapRef": {"name": "cfg"}, "prefix": "CFG_"},
            {"secretRef": {"name": "creds"}, "prefix": "DB_"},
        ],
        "env": [
            ref_var("TOKEN", secretKeyRef={"name": "api", "key": "token"}),
            ref_var("MODE", configMapKeyRef={"name": "cfg", "key": "mode"}),
            {"name": "PLAIN", "value": "hello"},
            # Expands a Secret's value, so it holds the secret too.
            {"name": "DSN", "value": "postgres://u:$(DB_password)@db"},
            {"name": "GREETING", "value": "$(PLAIN) $(CFG_mode)"},
        ],
    }
    sidecar = {
        "name": "sidecar",
        "env": [ref_var("K", configMapKeyRef={"name": "cfg", "key": "mode"})],
    }
    pod = make_pod(app, sidecar)
    resolved, _ = resolve_pod_env(
        pod,
        FakeSources(
            config_map("cfg", {"mode": "fast"}),
            secret("creds", {"password": "hunter2", "user": "admin"}),
            secret("api", {"token": "s3cr3t"}),
        ),
        NETWORK,
        node_allocatable=ALLOCATABLE,
    )
    assert secret_env_names(resolved) == {
        "app": frozenset({"DB_password", "DB_user", "TOKEN", "DSN"})
    }
    marker = resolved["metadata"]["annotations"][SECRET_ENV_ANNOTATION]
    # Names only, never a value.
    for value in ("hunter2", "admin", "s3cr3t", "fast"):
        assert value not in marker
    # The API object the agent read stays as it was.
    assert SECRET_ENV_ANNOTATION not in pod["metadata"]["annotations"]


def test_a_later_plain_source_unmarks_a_secret_name_and_a_later_secret_marks_it() -> None:
    app = {
        "name": "app",
        "envFrom": [
            {"secretRef": {"name": "creds"}},
            {"configMapRef": {"name": "cfg"}},  # replaces "shared" with a plain value
        ],
        "env": [
            {"name": "password", "value": "literal"},  # replaces the Secret's value
            ref_var("mode", secretKeyRef={"name": "creds", "key": "user"}),
        ],
    }
    resolved, _ = resolve_pod_env(
        make_pod(app),
        FakeSources(
            config_map("cfg", {"shared": "x", "mode": "fast"}),
            secret("creds", {"password": "p", "user": "u", "shared": "s"}),
        ),
        NETWORK,
        node_allocatable=ALLOCATABLE,
    )
    assert secret_env_names(resolved) == {"app": frozenset({"user", "mode"})}


def test_a_user_annotation_cannot_forge_or_hide_the_marker() -> None:
    app = {"name": "app", "env": [ref_var("T", secretKeyRef={"name": "api", "key": "token"})]}
    pod = make_pod(app)
    pod["metadata"]["annotations"][SECRET_ENV_ANNOTATION] = "{}"
    resolved, _ = resolve_pod_env(
        pod, FakeSources(secret("api", {"token": "t"})), NETWORK, node_allocatable=ALLOCATABLE
    )
    assert secret_env_names(resolved) == {"app": frozenset({"T"})}


@pytest.mark.parametrize(
    "annotations",
    [None, {}, {SECRET_ENV_ANNOTATION: "not json"}, {SECRET_ENV_ANNOTATION: '{"a": "B"}'}],
)
def test_no_readable_marker_means_unknown(annotations: dict[str, str] | None) -> None:
    pod: dict[str, Any] = {"metadata": {"name": "p"}}
    if annotations is not None:
        pod["metadata"]["annotations"] = annotations
    assert secret_env_names(pod) is None
