"""Starting and stopping dev clusters leaves nothing behind, and bad input fails clearly."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from virtual_kubelet.devcluster import (
    BuildError,
    DevCluster,
    StartError,
    VersionError,
    Versions,
    ensure_binaries,
)
from virtual_kubelet.devcluster.pytest_plugin import config_for_tests

CLI = [sys.executable, "-m", "virtual_kubelet"]


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _listening(ports: set[int]) -> set[int]:
    return {
        c.laddr.port
        for c in psutil.net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr.port in ports
    }


def test_start_stop_twice_leaves_no_process_port_or_interface(tmp_path: Path) -> None:
    for round_ in range(2):
        cluster = DevCluster(tmp_path / f"round{round_}", config_for_tests())
        with cluster:
            pids = {c.record.pid for c in cluster.components.values()}
            ports = set(cluster.ports.values())
            assert len(pids) == 4
            assert all(_alive(p) for p in pids)
            assert _listening(ports) >= {cluster.ports["etcd"], cluster.ports["kube-apiserver"]}
            assert cluster.kubectl("get", "--raw", "/readyz").stdout == "ok"
            interface = cluster.node_address.interface if cluster.node_address else None
        assert not [p for p in pids if _alive(p)], "components survived stop()"
        assert not _listening(ports), "ports still listening after stop()"
        if interface is not None:
            assert interface not in psutil.net_if_addrs()


@pytest.mark.skipif(os.geteuid() != 0, reason="node addresses need root")
def test_node_address_of_a_killed_cluster_is_removed_by_the_next_one(tmp_path: Path) -> None:
    from virtual_kubelet.devcluster.nodeaddr import NodeAddress

    # A process creates a node address and dies without removing it (as under SIGKILL).
    created = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path;"
            "from virtual_kubelet.devcluster.nodeaddr import NodeAddress;"
            "print(NodeAddress.create(Path(sys.argv[1])).interface)",
            str(tmp_path / "killed"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    orphan = created.stdout.strip()
    assert orphan in psutil.net_if_addrs()
    # The next cluster's address creation removes it; its own stays until it is removed.
    mine = NodeAddress.create(tmp_path / "next")
    try:
        assert orphan not in psutil.net_if_addrs()
        assert mine.interface in psutil.net_if_addrs()
    finally:
        mine.remove()
    assert mine.interface not in psutil.net_if_addrs()


def test_cli_up_status_down(tmp_path: Path) -> None:
    workdir = tmp_path / "cli"
    up = subprocess.run(
        [*CLI, "devcluster", "up", "--dir", str(workdir)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert up.returncode == 0, up.stderr
    kubeconfig = up.stdout.strip()
    try:
        status = subprocess.run(
            [*CLI, "devcluster", "status", "--dir", str(workdir), "--json"],
            capture_output=True,
            text=True,
            check=True,
        )
        info = json.loads(status.stdout)
        assert info["readyz"] == "ok"
        assert info["kubeconfig"] == kubeconfig
        assert all(c["running"] for c in info["components"].values())
        printed = subprocess.run(
            [*CLI, "devcluster", "kubeconfig", "--dir", str(workdir)],
            capture_output=True,
            text=True,
            check=True,
        )
        assert printed.stdout.strip() == kubeconfig
        # The components outlived `up`: they belong to the cluster, not to the command.
        pids = [c["pid"] for c in info["components"].values()]
        assert all(_alive(p) for p in pids)
    finally:
        down = subprocess.run(
            [*CLI, "devcluster", "down", "--dir", str(workdir), "--purge"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert down.returncode == 0, down.stderr
    assert not [p for p in pids if _alive(p)]
    assert not workdir.exists()


# --- bad input -------------------------------------------------------------------------------


def test_missing_go_toolchain_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    monkeypatch.setenv("VK_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("VK_CONTROLPLANE_BIN", raising=False)
    with pytest.raises(BuildError) as err:
        ensure_binaries(Versions())
    assert err.value.component == "go toolchain"
    assert "`go` is not on PATH" in str(err.value)


def test_malformed_version_pin_is_rejected_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(VersionError, match="not a release tag"):
        Versions(kubernetes="1.36")
    result = subprocess.run(
        [*CLI, "devcluster", "up", "--dir", str(tmp_path), "--kubernetes-version", "latest"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "'latest' is not a release tag" in result.stderr
    assert not (tmp_path / "state.json").exists()


def test_unpublished_version_pin_names_component_and_go_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VK_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("VK_CONTROLPLANE_BIN", raising=False)
    with pytest.raises(BuildError) as err:
        ensure_binaries(Versions(kubernetes="v1.36.99"))
    message = str(err.value)
    assert message.startswith("kubernetes v1.36.99: cannot download k8s.io/kubernetes@v1.36.99")
    assert "not available" in message
    assert "k8s.io/kubernetes@v1.36.99" in message  # the tail of go's own log
    assert not (tmp_path / "cache" / "kubernetes-v1.36.99" / "bin").exists()


def test_port_in_use_names_the_component(tmp_path: Path) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        cluster = DevCluster(tmp_path, config_for_tests(ports={"kube-apiserver": port}))
        with pytest.raises(StartError) as err:
            cluster.start()
    assert err.value.component == "kube-apiserver"
    assert f"port {port} on 127.0.0.1 is already in use" in str(err.value)
    assert cluster.running_components() == []


def test_component_exiting_early_names_it_shows_its_log_and_stops_the_rest(
    tmp_path: Path,
) -> None:
    config = config_for_tests(extra_args={"kube-controller-manager": ["--no-such-flag"]})
    cluster = DevCluster(tmp_path, config)
    with pytest.raises(StartError) as err:
        cluster.start()
    assert err.value.component == "kube-controller-manager"
    message = str(err.value)
    assert "exited early with code" in message
    assert "unknown flag: --no-such-flag" in message  # from the component's own log
    # etcd and the API server had started; they must be gone again, as must the node address.
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["processes"] == []
    assert cluster.running_components() == []
    assert not [
        n for n in psutil.net_if_addrs() if n.startswith("vkdc") and os.fspath(tmp_path) in n
    ]


def test_install_go_fetches_a_verified_toolchain_when_none_is_on_path(tmp_path: Path) -> None:
    env = dict(
        os.environ,
        PATH=f"{Path(sys.executable).parent}:/usr/bin:/bin",  # no /usr/local/go/bin
        VK_CACHE_DIR=str(tmp_path / "cache"),
    )
    env.pop("VK_CONTROLPLANE_BIN", None)
    # Without the flag: one clear error that says how to get Go.
    plain = subprocess.run([*CLI, "devcluster", "build"], env=env, capture_output=True, text=True)
    assert plain.returncode == 1
    assert "--install-go" in plain.stderr
    from virtual_kubelet.devcluster.gotoolchain import GO_VERSION

    go = tmp_path / "cache" / f"go{GO_VERSION}" / "bin" / "go"
    fetched = subprocess.run(
        [*CLI, "devcluster", "build", "--install-go", "--kubernetes-version", "v1.36.99"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    # The toolchain arrived and works; the build then fails on the unpublished release, with
    # the fetched Go doing the talking.
    assert f"Go {GO_VERSION} ready" in fetched.stderr, fetched.stderr
    version = subprocess.run([go, "version"], capture_output=True, text=True, check=True)
    assert f"go{GO_VERSION}" in version.stdout
    assert fetched.returncode == 1
    assert "cannot download k8s.io/kubernetes@v1.36.99" in fetched.stderr
