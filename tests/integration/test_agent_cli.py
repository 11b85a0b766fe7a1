"""Starting the agent with bad input gives one clear error and a non-zero exit; --help is complete."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from virtual_kubelet.devcluster import DevCluster, wait_until

from .conftest import AgentFactory, create, pod_manifest

CLI = [sys.executable, "-m", "virtual_kubelet"]


def _run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, env=env)


def test_help_documents_flags_and_environment() -> None:
    result = _run("--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for flag in (
        "--kubeconfig",
        "--nodename",
        "--os",
        "--provider",
        "--provider-config",
        "--taint",
        "--disable-taint",
        "--namespace",
        "--pod-sync-workers",
        "--full-resync-period",
        "--startup-timeout",
        "--kube-api-qps",
        "--kube-api-burst",
        "--log-level",
        "--log-format",
        "--metrics-addr",
        "KUBELET_PORT",
        "VKUBELET_POD_IP",
        "VKUBELET_TAINT_KEY",
        "VKUBELET_TAINT_EFFECT",
    ):
        assert flag in text, flag
    assert _run("version").stdout.startswith("virtual-kubelet ")
    listing = _run("providers").stdout.split("\n\n")[0]  # then the original's rows
    names = [line.split()[0] for line in listing.splitlines()]
    assert names == sorted(names)
    assert {"mock", "process", "web", "cri", "kubernetes", "slurm"} <= set(names)


def test_unknown_provider(devcluster: DevCluster) -> None:
    result = _run("--kubeconfig", str(devcluster.kubeconfig), "--provider", "nope")
    assert result.returncode == 2
    available = re.search(r"provider 'nope' not found \(available: ([^)]*)\)", result.stderr)
    assert available, result.stderr
    assert {"cri", "kubernetes", "mock", "process", "slurm", "web"} <= set(
        available.group(1).split(", ")
    )


def test_unreadable_kubeconfig(tmp_path: Path) -> None:
    result = _run("--kubeconfig", str(tmp_path / "missing"), "--provider", "mock")
    assert result.returncode == 1
    assert (
        f"cannot read kubeconfig {tmp_path / 'missing'}: No such file or directory" in result.stderr
    )
    garbage = tmp_path / "garbage"
    garbage.write_text("clusters: [\n")
    result = _run("--kubeconfig", str(garbage), "--provider", "mock")
    assert result.returncode == 1
    assert "is not valid YAML" in result.stderr


def test_unreachable_api_server_retries_then_gives_up(
    devcluster: DevCluster, tmp_path: Path
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    config = json.loads(devcluster.kubeconfig.read_text())
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{closed_port}"
    kubeconfig = tmp_path / "unreachable.kubeconfig"
    kubeconfig.write_text(json.dumps(config))
    started = time.monotonic()
    result = _run(
        "--kubeconfig",
        str(kubeconfig),
        "--provider",
        "mock",
        "--startup-timeout",
        "4s",
        "--state-dir",
        str(tmp_path / "state"),
        "--metrics-addr",
        "",
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 1
    assert result.stderr.count("not reachable") >= 2, result.stderr  # it retried, and said so
    assert "did not answer within --startup-timeout=4s" in result.stderr
    assert elapsed < 30


def test_malformed_provider_config(devcluster: DevCluster, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"cpu": "lots", "colour": "blue"}))
    result = _run(
        "--kubeconfig",
        str(devcluster.kubeconfig),
        "--provider",
        "mock",
        "--provider-config",
        str(bad),
        "--state-dir",
        str(tmp_path / "s"),
        "--metrics-addr",
        "",
    )
    assert result.returncode == 1
    assert f"provider config {bad} is invalid" in result.stderr
    assert "cpu: 'lots' is not a quantity" in result.stderr
    assert "colour: Extra inputs are not permitted" in result.stderr
    missing = _run("--provider", "mock", "--provider-config", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2
    assert "does not exist" in missing.stderr


def test_bad_flags_and_environment(devcluster: DevCluster) -> None:
    base = ["--kubeconfig", str(devcluster.kubeconfig), "--provider", "mock"]
    result = _run(*base, "--os", "Plan9")
    assert result.returncode == 2
    assert "'Plan9'; use Linux or Windows" in result.stderr
    env = dict(__import__("os").environ, VKUBELET_TAINT_EFFECT="Sometimes")
    result = _run(*base, env=env)
    assert result.returncode == 2
    assert "VKUBELET_TAINT_EFFECT='Sometimes'" in result.stderr
    result = _run(*base, "--startup-timeout", "soon")
    assert result.returncode == 2
    assert "'soon' is not a duration" in result.stderr


def test_metrics_endpoint_reports_queue_api_lease_and_pod_metrics(
    start_agent: AgentFactory, devcluster: DevCluster, kube_namespace: str
) -> None:
    agent = start_agent()

    def port() -> int | None:
        match = re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", agent.log())
        return int(match.group(1)) if match else None

    metrics_port = wait_until(port, 30, "the metrics address in the log")

    def scrape() -> str | None:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
            text = r.read().decode()
        return text if 'virtual_kubelet_lease_renewals_total{result="ok"}' in text else None

    text = wait_until(scrape, 30, "a successful lease renewal in the metrics")
    for name in (
        "virtual_kubelet_api_requests_total",
        "virtual_kubelet_workqueue_depth",
        "virtual_kubelet_lease_renewal_age_seconds",
        "virtual_kubelet_sync_duration_seconds",
        "virtual_kubelet_gc_pause_seconds",
    ):
        assert name in text, name
    assert 'virtual_kubelet_pods{phase="Running"} 0.0' in text
    # Pods are counted by phase from the agent's cache.
    create(devcluster, kube_namespace, pod_manifest("counted", agent.node_name))

    def running_counted() -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
            return 'virtual_kubelet_pods{phase="Running"} 1.0' in r.read().decode()

    wait_until(running_counted, 60, "the running pod in virtual_kubelet_pods")
