"""The cri provider's pure parts: its config, the pod as CRI messages, registry credentials, and
the pod phase from container states."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from virtual_kubelet.providers.cri import termination
from virtual_kubelet.providers.cri.auth import auth_config, auths_of, registry_of
from virtual_kubelet.providers.cri.client import cri
from virtual_kubelet.providers.cri.config import CriConfig, grpc_target
from virtual_kubelet.providers.cri.provider import load_config
from virtual_kubelet.providers.cri.spec import (
    POD_ANNOTATION,
    container_config,
    dns_config,
    redacted,
    sandbox_config,
)
from virtual_kubelet.providers.cri.state import PodState
from virtual_kubelet.providers.cri.status import phase, pod_status
from virtual_kubelet.sdk import ProviderConfigError, ProviderContext

ROOT = Path(__file__).resolve().parents[2]


def _context(tmp_path: Path, config: dict[str, Any] | None) -> ProviderContext:
    path = None
    if config is not None:
        path = tmp_path / "cri.yaml"
        path.write_text(yaml.safe_dump(config))
    return ProviderContext(
        node_name="n", operating_system="linux", internal_ip="10.0.0.1", daemon_port=10250,
        config_path=path, state_dir=tmp_path,
    )  # fmt: skip


def test_the_example_config_loads() -> None:
    doc = yaml.safe_load((ROOT / "examples/cri/cri-provider.yaml").read_text())
    config = CriConfig.model_validate(doc)
    assert config.runtime_endpoint.startswith("unix:///")
    assert config.images_at == config.runtime_endpoint


@pytest.mark.parametrize(
    ("config", "words"),
    [
        (None, "needs --provider-config"),
        ({}, "runtime_endpoint"),
        ({"runtime_endpoint": "containerd.sock"}, "neither unix:///path nor tcp://host:port"),
        ({"runtime_endpoint": "unix://relative.sock"}, "absolute path"),
        ({"runtime_endpoint": "tcp://host:99999"}, "neither"),
        ({"runtime_endpoint": "unix:///x.sock", "poll_interval_seconds": 0}, "poll_interval"),
        ({"runtime_endpoint": "unix:///x.sock", "capacity": {"cpu": "lots"}}, "not a quantity"),
        ({"runtime_endpoint": "unix:///x.sock", "colour": "blue"}, "colour"),
        ({"runtime_endpoint": "unix:///x.sock", "cluster_dns": ["dns.local"]}, "not an IP"),
    ],
)
def test_bad_configs_are_refused_with_the_key(
    tmp_path: Path, config: dict[str, Any] | None, words: str
) -> None:
    with pytest.raises(ProviderConfigError, match=words):
        load_config(_context(tmp_path, config))


def test_registry_passwords_never_show_in_the_config_repr(tmp_path: Path) -> None:
    config = load_config(
        _context(
            tmp_path,
            {
                "runtime_endpoint": "tcp://10.0.0.2:1234",
                "registry_auth": {"r.example:5000": {"username": "u", "password": "hunter2"}},
            },
        )
    )
    assert "hunter2" not in repr(config)
    assert grpc_target(config.runtime_endpoint) == "10.0.0.2:1234"


def _pod(**spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "namespace": "ns", "uid": "u-1", "annotations": {"a": "b"}},
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "image": "localhost/busybox:1.35",
                    "command": ["sh", "-c"],
                    "args": ["echo $(GREETING)"],
                    "env": [{"name": "GREETING", "value": "secret-hello"}],
                    "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}},
                    "securityContext": {
                        "readOnlyRootFilesystem": True,
                        "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]},
                    },
                    "volumeMounts": [
                        {"name": "cfg", "mountPath": "/etc/cfg", "readOnly": True},
                        {"name": "host", "mountPath": "/host", "subPath": "sub"},
                    ],
                    "ports": [{"containerPort": 80, "hostPort": 8080}],
                }
            ],
            "securityContext": {"runAsUser": 1000, "runAsGroup": 2000},
            "volumes": [
                {"name": "cfg", "configMap": {"name": "c"}},
                {"name": "host", "hostPath": {"path": "/srv/data"}},
            ],
            **spec,
        },
    }


def test_a_pod_as_a_sandbox_config(tmp_path: Path) -> None:
    config = sandbox_config(_pod(), node="n", log_directory=tmp_path, cgroup_parent="/vk")
    assert (config.metadata.name, config.metadata.namespace, config.metadata.uid) == (
        "p",
        "ns",
        "u-1",
    )
    assert config.hostname == "p"
    assert config.labels["io.kubernetes.pod.uid"] == "u-1"
    assert config.labels["virtual-kubelet.io/node"] == "n"
    assert [(m.container_port, m.host_port) for m in config.port_mappings] == [(80, 8080)]
    assert config.linux.cgroup_parent == "/vk"
    assert config.linux.security_context.run_as_user.value == 1000
    assert config.linux.security_context.namespace_options.network == cri.POD
    kept = json.loads(config.annotations[POD_ANNOTATION])
    assert "secret-hello" not in config.annotations[POD_ANNOTATION]
    assert kept["spec"]["containers"][0]["env"] == [{"name": "GREETING"}]


def test_host_network_sandboxes_have_no_hostname(tmp_path: Path) -> None:
    config = sandbox_config(
        _pod(hostNetwork=True), node="n", log_directory=tmp_path, cgroup_parent=""
    )
    assert config.hostname == ""
    assert config.linux.security_context.namespace_options.network == cri.NODE


def test_a_container_as_a_container_config(tmp_path: Path) -> None:
    pod = _pod()
    config = container_config(
        pod,
        pod["spec"]["containers"][0],
        attempt=2,
        init=False,
        volume_dir=lambda name: tmp_path / name,
    )
    assert (list(config.command), list(config.args)) == (["sh", "-c"], ["echo secret-hello"])
    assert {kv.key: kv.value for kv in config.envs} == {"GREETING": "secret-hello"}
    assert config.log_path == "main/2.log"
    assert config.metadata.attempt == 2
    resources = config.linux.resources
    assert (resources.cpu_quota, resources.cpu_period) == (50_000, 100_000)
    assert resources.memory_limit_in_bytes == 64 * 1024 * 1024
    security = config.linux.security_context
    assert security.readonly_rootfs
    assert list(security.capabilities.add_capabilities) == ["NET_ADMIN"]
    assert list(security.capabilities.drop_capabilities) == ["ALL"]
    assert (security.run_as_user.value, security.run_as_group.value) == (1000, 2000)
    mounts = {m.container_path: (m.host_path, m.readonly) for m in config.mounts}
    assert mounts == {"/etc/cfg": (str(tmp_path / "cfg"), True), "/host": ("/srv/data/sub", False)}


def test_bad_quantities_are_a_config_error(tmp_path: Path) -> None:
    pod = _pod()
    container = {**pod["spec"]["containers"][0], "resources": {"limits": {"memory": "lots"}}}
    with pytest.raises(ValueError, match="main"):
        container_config(pod, container, attempt=0, init=False, volume_dir=lambda n: tmp_path)


def test_redaction_keeps_names_and_drops_values() -> None:
    kept = redacted(_pod())
    assert kept["metadata"]["uid"] == "u-1"
    assert "secret-hello" not in json.dumps(kept)


@pytest.mark.parametrize(
    ("image", "host"),
    [
        ("busybox", "docker.io"),
        ("library/busybox:1", "docker.io"),
        ("127.0.0.1:5000/vk/busybox:1", "127.0.0.1:5000"),
        ("localhost/busybox:1.35", "localhost"),
        ("ghcr.io/org/app@sha256:abc", "ghcr.io"),
    ],
)
def test_registry_of_an_image(image: str, host: str) -> None:
    assert registry_of(image) == host


def test_docker_config_secrets_give_credentials_by_host() -> None:
    doc = {
        "auths": {
            "https://index.docker.io/v1/": {"auth": base64.b64encode(b"hub:pw1").decode()},
            "127.0.0.1:5000": {"username": "u", "password": "pw2"},
        }
    }
    secret = {"data": {".dockerconfigjson": base64.b64encode(json.dumps(doc).encode()).decode()}}
    found = auths_of(secret)
    assert set(found) == {"docker.io", "127.0.0.1:5000"}
    hub = auth_config(found["docker.io"])
    assert (hub.username, hub.password) == ("hub", "pw1")
    assert auth_config(found["127.0.0.1:5000"]).password == "pw2"
    assert auths_of({"data": {".dockerconfigjson": "not base64!"}}) == {}
    assert auths_of({"data": {"token": "x"}}) == {}


def _exited(code: int) -> Any:
    return cri.ContainerStatus(state=cri.CONTAINER_EXITED, exit_code=code)


def test_the_phase_follows_the_kubelet() -> None:
    state = PodState.new(_pod(restartPolicy="Never"))
    assert phase(state) == "Pending"
    main = state.containers["main"]
    main.container_id, main.status = "c1", cri.ContainerStatus(state=cri.CONTAINER_RUNNING)
    assert phase(state) == "Running"
    assert pod_status(state, "10.0.0.1")["containerStatuses"][0]["ready"] is False  # not probed
    main.probed_id, main.ready, main.started = "c1", True, True  # what probes.watch found
    status = pod_status(state, "10.0.0.1")
    assert status["containerStatuses"][0]["ready"] is True
    assert (condition := status["conditions"][2])["type"] == "Ready"
    assert condition["status"] == "True"
    main.status, main.done = _exited(3), True
    main.last_terminated = {"exitCode": 3, "reason": "Error"}
    assert phase(state) == "Failed"
    main.last_terminated = {"exitCode": 0, "reason": "Completed"}
    assert phase(state) == "Succeeded"
    assert pod_status(state, "10.0.0.1")["containerStatuses"][0]["state"] == {
        "terminated": {"exitCode": 0, "reason": "Completed"}
    }


def test_a_host_network_pod_has_the_nodes_ip_as_the_kubelet_reports_it() -> None:
    host = PodState.new(_pod(hostNetwork=True))
    assert "podIP" not in pod_status(host, "10.0.0.1")  # no sandbox yet
    host.sandbox_id = "s1"  # the runtime reports no address for a host-network sandbox
    status = pod_status(host, "10.0.0.1")
    assert (status["podIP"], status["podIPs"]) == ("10.0.0.1", [{"ip": "10.0.0.1"}])
    bridged = PodState.new(_pod())
    bridged.sandbox_id, bridged.pod_ip = "s2", "10.244.77.5"
    assert pod_status(bridged, "10.0.0.1")["podIP"] == "10.244.77.5"


def test_dns_follows_the_dns_policy() -> None:
    extra = {"nameservers": ["9.9.9.9"], "options": [{"name": "edns0"}]}
    cluster = dns_config(_pod(dnsConfig=extra), ["10.96.0.10"], "cluster.local")
    assert list(cluster.servers) == ["10.96.0.10", "9.9.9.9"]
    assert list(cluster.searches) == ["ns.svc.cluster.local", "svc.cluster.local", "cluster.local"]
    assert list(cluster.options) == ["ndots:5", "edns0"]
    # Without cluster DNS configured ClusterFirst falls back to the host's resolv.conf.
    assert list(dns_config(_pod(), [], "cluster.local").servers) == []
    # hostNetwork pods use the cluster's DNS only with ClusterFirstWithHostNet.
    host = dns_config(_pod(hostNetwork=True), ["10.96.0.10"], "cluster.local")
    assert list(host.servers) == []
    with_net = _pod(hostNetwork=True, dnsPolicy="ClusterFirstWithHostNet")
    assert list(dns_config(with_net, ["10.96.0.10"], "cluster.local").servers) == ["10.96.0.10"]
    only = dns_config(_pod(dnsPolicy="None", dnsConfig=extra), ["10.96.0.10"], "cluster.local")
    assert (list(only.servers), list(only.searches)) == (["9.9.9.9"], [])


def test_each_run_binds_a_fresh_termination_file_at_the_message_path(tmp_path: Path) -> None:
    pod = _pod()
    spec = pod["spec"]["containers"][0]
    host = termination.host_file(tmp_path, "main", 2)
    assert host == tmp_path / "main" / "2.termination-log"
    termination.prepare(host)
    assert host.read_bytes() == b""
    assert host.stat().st_mode & 0o777 == 0o666
    config = container_config(
        pod, spec, attempt=2, init=False, volume_dir=lambda n: tmp_path, termination_file=host
    )
    binds = {m.container_path: m.host_path for m in config.mounts}
    assert binds["/dev/termination-log"] == str(host)  # the API server's default path
    custom = {**spec, "terminationMessagePath": "/tmp/why"}
    config = container_config(
        pod, custom, attempt=2, init=False, volume_dir=lambda n: tmp_path, termination_file=host
    )
    assert {m.container_path: m.host_path for m in config.mounts}["/tmp/why"] == str(host)


def _log(path: Path, *lines: str) -> Path:
    path.write_text("".join(f"2026-01-01T00:00:00.000000000Z stdout F {line}\n" for line in lines))
    return path


def test_termination_messages_follow_the_kubelets_rules(tmp_path: Path) -> None:
    message = tmp_path / "1.termination-log"
    log = _log(tmp_path / "1.log", *(f"line {n}" for n in range(100)))
    file_policy = {"name": "main"}
    fallback = {"name": "main", "terminationMessagePolicy": "FallbackToLogsOnError"}
    message.write_text("")
    assert termination.message(file_policy, 1, message, log) == ""
    assert termination.message(fallback, 0, message, log) == ""  # only on an error
    tail = termination.message(fallback, 1, message, log)
    assert tail.startswith("line 20\n")
    assert tail.endswith("line 99\n")
    message.write_text("x" * 5000 + "the end")
    written = termination.message(fallback, 1, message, log)
    assert len(written) == 4096
    assert written.endswith("the end")
    big = _log(tmp_path / "2.log", *("y" * 100 for _ in range(50)))
    message.write_text("")
    assert len(termination.message(fallback, 2, message, big)) == 2048
    assert termination.message({"terminationMessagePath": ""}, 1, message, log) == ""
    terminated: dict[str, Any] = {"message": "runtime says"}
    termination.add_message(terminated, "app says")
    assert terminated["message"] == "runtime says: app says"


def test_a_pod_past_its_deadline_is_failed_only_once_nothing_runs() -> None:
    state = PodState.new(_pod())
    main = state.containers["main"]
    main.container_id, main.status = "c1", cri.ContainerStatus(state=cri.CONTAINER_RUNNING)
    state.failed_reason, state.failed_message = "DeadlineExceeded", "past its deadline"
    status = pod_status(state, "10.0.0.1")
    assert status["phase"] == "Running"  # being stopped: not terminal yet
    assert "reason" not in status
    main.status, main.done = _exited(143), True
    main.last_terminated = {"exitCode": 143, "reason": "Error"}
    status = pod_status(state, "10.0.0.1")
    assert (status["phase"], status["reason"]) == ("Failed", "DeadlineExceeded")
