"""Kubeconfig loading, provider config validation and CLI value parsing."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner

from virtual_kubelet.agent import AgentSettings
from virtual_kubelet.cli import main
from virtual_kubelet.cli.settings import duration, duration_text
from virtual_kubelet.kube import config
from virtual_kubelet.kube.credentials import Credentials
from virtual_kubelet.kube.quantity import QuantityError, format_quantity, parse_quantity
from virtual_kubelet.kubelet_api.service import KubeletApiSettings
from virtual_kubelet.providers.configfile import ProviderConfigError
from virtual_kubelet.providers.mock import load_config


def _kubeconfig(tmp_path: Path, user: dict[str, object], **cluster: object) -> Path:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "c",
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
        "clusters": [{"name": "k", "cluster": {"server": "https://127.0.0.1:6443/", **cluster}}],
        "users": [{"name": "u", "user": user}],
    }
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(doc))
    return path


def test_kubeconfig_with_token_and_relative_ca_file(tmp_path: Path) -> None:
    (tmp_path / "ca.crt").write_text("not really a cert")
    path = _kubeconfig(tmp_path, {"token": "sekrit"}, **{"certificate-authority": "ca.crt"})
    loaded = config.from_kubeconfig(path)
    assert loaded.server == "https://127.0.0.1:6443"
    assert loaded.ca_data == b"not really a cert"
    assert asyncio.run(Credentials(loaded).bearer_token()) == "sekrit"
    assert "sekrit" not in repr(loaded)


def test_kubeconfig_errors_are_specific(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError, match="no context named 'other'"):
        config.from_kubeconfig(_kubeconfig(tmp_path, {}), context="other")
    path = _kubeconfig(tmp_path, {"client-certificate-data": "%%%"})
    with pytest.raises(config.ConfigError, match=r"client-certificate-data .* not valid base64"):
        config.from_kubeconfig(path)


def test_exec_plugin_token(tmp_path: Path) -> None:
    plugin = tmp_path / "plugin.sh"
    credential = {
        "apiVersion": "client.authentication.k8s.io/v1",
        "kind": "ExecCredential",
        "status": {"token": "from-plugin"},
    }
    plugin.write_text(f"#!/bin/sh\necho '{json.dumps(credential)}'\n")
    plugin.chmod(0o755)
    loaded = config.from_kubeconfig(_kubeconfig(tmp_path, {"exec": {"command": str(plugin)}}))
    assert asyncio.run(Credentials(loaded).bearer_token()) == "from-plugin"


def test_load_prefers_explicit_then_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _kubeconfig(tmp_path, {"token": "t"})
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path / 'absent'}:{path}")
    assert config.load().source.startswith(f"kubeconfig {path}")
    with pytest.raises(config.ConfigError, match="cannot read kubeconfig"):
        config.load(str(tmp_path / "absent"))


def test_in_cluster_needs_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(config.ConfigError, match="not running in a cluster"):
        config.in_cluster()


def test_mock_config_formats_and_errors(tmp_path: Path) -> None:
    upstream = tmp_path / "upstream.json"
    upstream.write_text(json.dumps({"vk": {"cpu": "2", "memory": "32Gi", "pods": "128"}}))
    assert load_config(upstream, "vk").memory == "32Gi"
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("cpu: '4'\nothers:\n  nvidia.com/gpu: '1'\n")
    assert load_config(yaml_file, "vk").others == {"nvidia.com/gpu": "1"}
    yaml_file.write_text("others:\n  nvidia.com/gpu: one\n")
    with pytest.raises(
        ProviderConfigError, match=r"others: nvidia.com/gpu: 'one' is not a quantity"
    ):
        load_config(yaml_file, "vk")
    with pytest.raises(ProviderConfigError, match="cannot read provider config"):
        load_config(tmp_path / "nope", "vk")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0", 0), ("90", 90), ("90s", 90), ("5m", 300), ("1h", 3600), ("1m30s", 90), ("250ms", 0.25)],
)
def test_durations(text: str, seconds: float) -> None:
    assert duration(text, "--x") == seconds


@pytest.mark.parametrize("text", ["soon", "5x", "m", "1m5"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(click.BadParameter):
        duration(text, "--x")


@pytest.mark.parametrize("seconds", [0, 0.25, 30, 60, 90, 3600, 4 * 3600])
def test_defaults_are_shown_as_durations_the_option_reads_back(seconds: float) -> None:
    assert duration(duration_text(seconds), "--x") == seconds


def test_option_defaults_are_the_settings_defaults() -> None:
    agent = AgentSettings(node_name="n", provider="p")
    api = KubeletApiSettings()
    defaults = {param.name: param.default for param in main.params}
    assert defaults["pod_sync_workers"] == agent.pods.sync_workers
    assert defaults["provider_retry_limit"] == agent.pods.retry_limit
    for name in ("kube_api_qps", "kube_api_burst", "event_qps", "event_burst", "metrics_addr"):
        assert defaults[name] == getattr(agent, name), name
    assert defaults["cluster_domain"] == agent.cluster_domain
    assert str(defaults["operating_system"]).lower() == agent.operating_system
    assert defaults["authorization_mode"] == api.authorization_mode
    durations = {
        "full_resync_period": agent.full_resync_period,
        "startup_timeout": agent.startup_timeout,
        "node_status_update_frequency": agent.node_status_interval,
        "stream_idle_timeout": api.stream_idle_timeout,
        "stream_creation_timeout": api.stream_creation_timeout,
    }
    for name, seconds in durations.items():
        assert duration(str(defaults[name]), name) == seconds, name

    shown = " ".join(CliRunner().invoke(main, ["--help"]).output.split())
    assert f"Pods handled concurrently. [default: {agent.pods.sync_workers};" in shown
    assert "(0 = never). [default: 1m]" in shown
    assert f"default {agent.daemon_port})" in shown  # KUBELET_PORT in the epilog


def test_quantities() -> None:
    assert parse_quantity("1.5Gi") == 1610612736
    assert parse_quantity("250m") * 1000 == 250
    assert parse_quantity("1e3") == 1000
    assert format_quantity(parse_quantity("0.5")) == "500m"
    with pytest.raises(QuantityError):
        parse_quantity("12 cores")


def test_the_mock_example_config_loads_and_names_every_setting() -> None:
    from virtual_kubelet.providers.mock import MockConfig

    example = Path(__file__).resolve().parents[2] / "examples/mock/mock-provider.yaml"
    config = load_config(example, "vk-1")
    assert config.persist is True
    documented = yaml.safe_load(example.read_text())
    fields = {f.alias or name for name, f in MockConfig.model_fields.items()}
    assert set(documented) <= fields
    docs = (Path(__file__).resolve().parents[2] / "docs/providers/mock.md").read_text()
    assert all(f"`{name}`" in docs for name in fields), fields
