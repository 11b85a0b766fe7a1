"""The README's first command: `./dev demo` brings up a control plane, a virtual node running the
process provider and a web server on it; `./dev down --purge` takes all of it away again."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import urllib.request
from pathlib import Path

import psutil
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
        # `kubectl top`, as printed: metrics-server scrapes the virtual node like any kubelet.
        assert "kubectl top pods -n demo" in demo.stdout

        def web_usage() -> list[str] | None:
            top = subprocess.run(
                [*kubectl, "top", "pods", "--no-headers"], capture_output=True, text=True
            )
            rows = [line.split() for line in top.stdout.splitlines() if line.startswith("web-")]
            # NAME CPU MEMORY: both non-zero (kubectl rounds any CPU use up to 1m).
            if rows and rows[0][1] not in ("0", "0m") and not rows[0][2].startswith("0"):
                return rows[0]
            return None

        wait_until(web_usage, 150, "kubectl top pods to show the web server's CPU and memory")
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


def _demo_processes(state: Path) -> dict[int, str]:
    """The demo's agent, its pod shims and everything they started, by pid: command line."""
    roots = [int((state / "agent.pid").read_text())]
    marker = str(state / "agent")
    for process in psutil.process_iter(["cmdline"]):
        if marker in " ".join(process.info["cmdline"] or []):
            roots.append(process.pid)
    found: dict[int, str] = {}
    for pid in roots:
        try:
            root = psutil.Process(pid)
            for each in [root, *root.children(recursive=True)]:
                found[each.pid] = " ".join(each.cmdline())
        except psutil.NoSuchProcess:
            continue
    return found


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _kill_api_server(state: Path) -> int:
    processes = json.loads((state / "state.json").read_text())["processes"]
    pid = next(p["pid"] for p in processes if p["name"] == "kube-apiserver")
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not _alive(pid), 15, "kube-apiserver to die")
    return int(pid)


@pytest.mark.skipif(os.geteuid() != 0, reason="the demo's node address needs root")
def test_demo_survives_a_killed_api_server_and_dev_down_then_leaves_no_process() -> None:
    suffix = secrets.token_hex(3)
    env = dict(os.environ, VK_DEMO_NAME=f"demo-kill-{suffix}", VK_DEMO_NODE=f"demo-kill-{suffix}")

    def dev(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["./dev", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
        )

    try:
        demo = dev("demo")
        assert demo.returncode == 0, demo.stderr[-3000:]
        kubeconfig = re.search(r"export KUBECONFIG=(\S+)", demo.stdout)
        assert kubeconfig, demo.stdout
        state = Path(kubeconfig.group(1)).parent
        agent_pid = int((state / "agent.pid").read_text())
        # `./dev demo` again after kube-apiserver was killed: it comes back, and the demo with it,
        # without restarting the agent.
        _kill_api_server(state)
        again = dev("demo")
        assert again.returncode == 0, again.stderr[-3000:]
        assert "restarted kube-apiserver" in again.stderr
        assert "already running" in again.stderr  # the virtual node
        assert int((state / "agent.pid").read_text()) == agent_pid
        # Killed again, now for good: the agent cannot reach the API server to delete the pods.
        processes = _demo_processes(state)
        assert agent_pid in processes
        assert any("http.server" in cmdline for cmdline in processes.values()), processes
        _kill_api_server(state)
    finally:
        down = dev("down", "--purge")
    assert down.returncode == 0, down.stderr[-3000:]
    left = {pid: cmdline for pid, cmdline in processes.items() if _alive(pid)}
    assert left == {}, "demo processes survived ./dev down --purge"
    assert not state.exists()
    leftovers = subprocess.run(["pgrep", "-f", env["VK_DEMO_NODE"]], capture_output=True, text=True)
    assert leftovers.stdout.strip() == ""
