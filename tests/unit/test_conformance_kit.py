"""The conformance kit's own pieces that need no cluster: the default workloads do what they say
on this machine, and a provider's capabilities are read as the agent would read them."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from virtual_kubelet.devcluster import wait_until
from virtual_kubelet.testing import ProcessWorkloads, Workloads
from virtual_kubelet.testing.capabilities_probe import main as probe_capabilities


def test_exit_workload_exits_with_its_code() -> None:
    workload = Workloads().exits(3)
    assert workload is not None
    assert subprocess.run(workload.container["command"], timeout=10).returncode == 3


@pytest.mark.parametrize("bind_mounted", [True, False])
def test_process_workloads_find_volume_files_bind_mounted_or_in_env(
    tmp_path: Path, bind_mounted: bool
) -> None:
    """With bind mounts the file is at the mount path; without, under VK_VOLUME_<MOUNTPATH>."""
    (tmp_path / "key").write_text("value")
    mount = str(tmp_path) if bind_mounted else "/nowhere/config"
    env = {"PATH": "/usr/bin:/bin"}
    if not bind_mounted:
        env["VK_VOLUME_NOWHERE_CONFIG"] = str(tmp_path)
    command = ProcessWorkloads().read_command(mount, "key")
    assert command is not None
    assert subprocess.run(command, env=env, capture_output=True, text=True).stdout == "value"


def test_serving_workload_echoes_tcp() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    workload = Workloads().serves(port)
    assert workload is not None
    command = [
        sys.executable if part == "python3" else part for part in workload.container["command"]
    ]
    server = subprocess.Popen(command)
    try:
        conn = wait_until(
            lambda: socket.create_connection(("127.0.0.1", port), timeout=5), 10, "the server"
        )
        with conn:
            conn.sendall(b"ping\n")
            assert conn.recv(100) == b"ping\n"
    finally:
        server.kill()
        server.wait(10)


def test_capabilities_are_the_providers_own_for_its_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "mock.json"
    config.write_text(json.dumps({"push": False}))
    assert probe_capabilities(["mock", str(config)]) == 0
    table = json.loads(capsys.readouterr().out)
    assert table["notify_pods"] is False  # the mock's config turned it off
    assert table["run_in_container"] is True
