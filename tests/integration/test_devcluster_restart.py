"""A dev cluster comes back where it was: `up` restarts only what died, on the ports (and node
addresses) the cluster has had since it was made, so running agents and loaded kubeconfigs carry on.
`node-address` hands hand-started agents usable, per-node addresses."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from virtual_kubelet.devcluster import DevCluster, kubectl_path, wait_until
from virtual_kubelet.devcluster.agent import AgentProcess
from virtual_kubelet.kube.timefmt import now, parse

from .conftest import create, pod, pod_manifest

CLI = [sys.executable, "-m", "virtual_kubelet", "devcluster"]
APISERVER = "kube-apiserver"


def _cli(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*CLI, *map(str, args)], capture_output=True, text=True, timeout=300, check=False
    )
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def _status(workdir: Path) -> dict[str, object]:
    info: dict[str, object] = json.loads(_cli("status", "--dir", workdir, "--json").stdout)
    return info


def _pids(workdir: Path) -> dict[str, int]:
    state = json.loads((workdir / "state.json").read_text())
    return {p["name"]: p["pid"] for p in state["processes"]}


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _readyz(kubeconfig: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [kubectl_path(), "--kubeconfig", str(kubeconfig), "get", "--raw", "/readyz"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.fixture
def cli_cluster(tmp_path: Path) -> Iterator[Path]:
    """The workdir of a cluster to be started with the CLI; purged afterwards, whatever ran."""
    workdir = tmp_path / "cluster"
    yield workdir
    if (workdir / "state.json").exists():
        _cli("down", "--dir", workdir, "--purge", check=False)


def test_killed_api_server_comes_back_on_its_port_and_the_same_agent_carries_on(
    cli_cluster: Path, tmp_path: Path
) -> None:
    _cli("up", "--dir", cli_cluster, "--node-monitor-grace-period", "20s")
    cluster = DevCluster.attach(cli_cluster)
    port = cluster.ports[APISERVER]
    agent = AgentProcess(cluster, "vk-comeback", tmp_path / "agent").start()
    try:
        agent.wait_ready()
        assert agent.process is not None
        agent_pid = agent.process.pid
        before = _pids(cli_cluster)

        os.kill(before[APISERVER], signal.SIGKILL)
        wait_until(lambda: not _alive(before[APISERVER]), 15, "kube-apiserver to die")
        assert _readyz(cluster.kubeconfig).returncode != 0

        up = _cli("up", "--dir", cli_cluster)
        restarted_at = now()
        assert "restarted kube-apiserver; the other components kept running" in up.stderr
        assert up.stdout.strip() == str(cluster.kubeconfig)
        after = _pids(cli_cluster)
        assert after[APISERVER] != before[APISERVER]
        untouched = {name: pid for name, pid in before.items() if name != APISERVER}
        assert {name: after[name] for name in untouched} == untouched
        assert all(_alive(pid) for pid in untouched.values())
        cluster = DevCluster.attach(cli_cluster)
        assert cluster.ports[APISERVER] == port
        assert _readyz(cluster.kubeconfig).stdout == "ok"

        # The very same agent process finds the API server again: its Lease is renewed...
        def renewed() -> bool:
            lease = cluster.get_json("lease", agent.node_name, "-n", "kube-node-lease")
            return parse(lease["spec"]["renewTime"]) > restarted_at

        wait_until(renewed, 60, "the agent to renew its Lease after the restart")
        assert agent.process.poll() is None
        assert agent.process.pid == agent_pid
        # ...and it runs a pod created after the restart.
        create(cluster, "default", pod_manifest("after-restart", node=agent.node_name))
        wait_until(
            lambda: (
                (pod(cluster, "default", "after-restart") or {}).get("status", {}).get("phase")
                == "Running"
            ),
            60,
            "the new pod to be Running",
        )
        assert agent.process.pid == agent_pid
    finally:
        agent.stop()
        agent.cleanup()


def test_down_then_up_keeps_the_ports_so_a_loaded_kubeconfig_keeps_working(
    cli_cluster: Path, tmp_path: Path
) -> None:
    kubeconfig = Path(_cli("up", "--dir", cli_cluster, "--no-node-address").stdout.strip())
    # What a user or an agent loaded once and never reads again.
    loaded = tmp_path / "loaded.kubeconfig"
    shutil.copy(kubeconfig, loaded)
    first = _status(cli_cluster)
    ports = DevCluster.attach(cli_cluster).ports

    _cli("down", "--dir", cli_cluster)
    assert _readyz(loaded).returncode != 0
    again = _cli("up", "--dir", cli_cluster)
    assert again.stdout.strip() == str(kubeconfig)
    assert _status(cli_cluster)["server"] == first["server"]
    assert DevCluster.attach(cli_cluster).ports == ports
    assert _readyz(loaded).stdout == "ok"
    assert loaded.read_bytes() == kubeconfig.read_bytes()

    # `up` on a running cluster changes nothing and says so.
    pids = _pids(cli_cluster)
    noop = _cli("up", "--dir", cli_cluster)
    assert "already running" in noop.stderr
    assert noop.stdout.strip() == str(kubeconfig)
    assert _pids(cli_cluster) == pids

    # A kept port that someone else took by now: one clear error naming port and process.
    _cli("down", "--dir", cli_cluster)
    api_port = ports[APISERVER]
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", api_port))
        squatter.listen()
        refused = _cli("up", "--dir", cli_cluster, check=False)
    assert refused.returncode == 1
    message = refused.stderr
    assert f"kube-apiserver: port {api_port} on 127.0.0.1 is already in use" in message
    assert f"by pid {os.getpid()} (" in message
    assert "down --purge" in message
    assert not [pid for pid in _pids(cli_cluster).values() if _alive(pid)]
    # Once the port is free again, the cluster comes back on it.
    _cli("up", "--dir", cli_cluster)
    assert _readyz(loaded).stdout == "ok"

    # This cluster has no node addresses to hand out, and says why.
    no_address = _cli("node-address", "vk-1", "--dir", cli_cluster, check=False)
    assert no_address.returncode == 1
    assert "has no node address" in no_address.stderr


def _configured_addresses() -> set[str]:
    return {
        a.address
        for addresses in psutil.net_if_addrs().values()
        for a in addresses
        if a.family == socket.AF_INET
    }


@pytest.mark.skipif(os.geteuid() != 0, reason="node addresses need root")
def test_node_address_is_usable_stable_per_node_distinct_and_gone_after_down(
    cli_cluster: Path,
) -> None:
    _cli("up", "--dir", cli_cluster, "--node-address")

    def address(*node: str) -> str:
        return _cli("node-address", *node, "--dir", cli_cluster).stdout.strip()

    primary = address()
    vk1 = address("vk-1")
    vk2 = address("vk-2")
    assert address("vk-1") == vk1
    assert len({primary, vk1, vk2}) == 3
    for each in (primary, vk1, vk2):
        ip = ipaddress.ip_address(each)
        assert not ip.is_loopback
        assert not ip.is_link_local
    assert {primary, vk1, vk2} <= _configured_addresses()
    # Each is this machine's: an agent can listen on 10250 there, one per node.
    with socket.socket() as one, socket.socket() as two:
        one.bind((vk1, 10250))
        two.bind((vk2, 10250))
    assert _status(cli_cluster)["node_addresses"] == {"vk-1": vk1, "vk-2": vk2}

    _cli("down", "--dir", cli_cluster)
    assert not {primary, vk1, vk2} & _configured_addresses()
    stopped = _cli("node-address", "vk-1", "--dir", cli_cluster, check=False)
    assert stopped.returncode == 1
    assert "is not running" in stopped.stderr

    # The cluster keeps its addresses until it is purged: the same node gets the same one back.
    _cli("up", "--dir", cli_cluster)
    assert address("vk-1") == vk1
    assert address() == primary
    assert {primary, vk1, vk2} <= _configured_addresses()
    _cli("down", "--dir", cli_cluster, "--purge")
    assert not {primary, vk1, vk2} & _configured_addresses()
