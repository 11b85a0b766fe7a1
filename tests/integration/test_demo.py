"""The README's first command: `./dev demo` brings up a control plane, a virtual node running the
process provider and a web server on it; `./dev down --purge` takes all of it away again."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import urllib.request
from pathlib import Path

import pytest

from virtual_kubelet.devcluster import kubectl_path, wait_until

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(os.geteuid() != 0, reason="the demo's node address needs root")
def test_dev_demo_serves_a_page_and_dev_down_removes_everything() -> None:
    suffix = secrets.token_hex(3)
    env = dict(os.environ, VK_DEMO_NAME=f"demo-test-{suffix}", VK_DEMO_NODE=f"demo-test-{suffix}")
    try:
        demo = subprocess.run(
            ["./dev", "demo"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
        )
        assert demo.returncode == 0, demo.stderr[-3000:]
        assert "The demo is running" in demo.stdout
        kubeconfig = re.search(r"export KUBECONFIG=(\S+)", demo.stdout)
        assert kubeconfig, demo.stdout
        kubectl = [kubectl_path(), "--kubeconfig", kubeconfig.group(1), "-n", "demo"]
        # What the printed instructions promise: port-forward reaches the web server...
        forward = subprocess.Popen(
            [*kubectl, "port-forward", "deploy/web", ":30080"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert forward.stdout is not None
            line = forward.stdout.readline()
            port = re.search(r"127\.0\.0\.1:(\d+)", line)
            assert port, line
            with urllib.request.urlopen(f"http://127.0.0.1:{port.group(1)}/", timeout=10) as r:
                assert "Hello from a process on a virtual node" in r.read().decode()
        finally:
            forward.kill()
            forward.wait(10)
        # ...and its access log is in `kubectl logs`.
        wait_until(
            lambda: (
                "GET / "
                in subprocess.run(
                    [*kubectl, "logs", "deploy/web"], capture_output=True, text=True
                ).stdout
            ),
            30,
            "the request in the web server's log",
        )
    finally:
        down = subprocess.run(
            ["./dev", "down", "--purge"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert down.returncode == 0, down.stderr[-3000:]
    status = subprocess.run(
        [
            str(ROOT / ".venv/bin/virtual-kubelet"),
            "devcluster",
            "status",
            "--name",
            env["VK_DEMO_NAME"],
        ],
        capture_output=True,
        text=True,
    )
    assert status.returncode != 0  # nothing left running under that name
    leftovers = subprocess.run(["pgrep", "-f", env["VK_DEMO_NODE"]], capture_output=True, text=True)
    assert leftovers.stdout.strip() == ""  # no agent, no pod process
