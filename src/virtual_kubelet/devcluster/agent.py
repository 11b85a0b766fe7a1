"""Run a virtual-kubelet agent against a dev cluster as a child process (tests, bench, demo).

The agent is started exactly as a user would start it (`python -m virtual_kubelet ...`), with its
log in a file, and stopped with SIGTERM (or killed with SIGKILL to simulate a crash).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..agent import default_volumes_dir
from .cluster import DevCluster
from .ports import free_port
from .waiting import wait_until


class AgentProcess:
    def __init__(
        self,
        cluster: DevCluster,
        node_name: str,
        workdir: Path,
        *,
        provider: str = "mock",
        provider_config: Mapping[str, Any] | None = None,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.cluster = cluster
        self.node_name = node_name
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.state_dir = self.workdir / "state"
        #: Where the agent writes pod volumes (its default: memory-backed when possible).
        self.volumes_dir = default_volumes_dir(node_name, self.state_dir)
        self.log_path = self.workdir / "agent.log"
        self.provider = provider
        self.config_path: Path | None = None
        if provider_config is not None:
            self.config_path = self.workdir / "provider.json"
            self.config_path.write_text(json.dumps(provider_config))
        self.args = list(args)
        self.env = dict(env or {})
        self.process: subprocess.Popen[bytes] | None = None
        #: The kubelet API port (KUBELET_PORT), free at construction time.
        self.kubelet_port = int(self.env.get("KUBELET_PORT") or free_port(cluster.node_ip))
        self.env["KUBELET_PORT"] = str(self.kubelet_port)

    def command(self) -> list[str]:
        argv = [
            sys.executable,
            "-m",
            "virtual_kubelet",
            "--kubeconfig",
            str(self.cluster.kubeconfig),
            "--provider",
            self.provider,
            "--nodename",
            self.node_name,
            "--state-dir",
            str(self.state_dir),
            "--metrics-addr",
            "127.0.0.1:0",
            "--startup-timeout",
            "60s",
        ]
        if self.config_path is not None:
            argv += ["--provider-config", str(self.config_path)]
        return argv + self.args

    def start(self) -> AgentProcess:
        env = {**os.environ, "VKUBELET_POD_IP": self.cluster.node_ip, **self.env}
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            log.write(f"=== starting: {' '.join(self.command())}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                stdin=subprocess.DEVNULL,
            )
        return self

    def wait_ready(self, timeout: float = 60.0) -> dict[str, Any]:
        """Wait until the node is Ready=True (fails early, with the log, if the agent exits)."""

        def ready() -> dict[str, Any] | None:
            code = self.process.poll() if self.process else None
            if code is not None:
                raise AssertionError(f"agent exited with {code}:\n{self.log()[-3000:]}")
            result = self.cluster.kubectl("get", "node", self.node_name, "-o", "json", check=False)
            if result.returncode != 0:
                return None
            node: dict[str, Any] = json.loads(result.stdout)
            conditions = {c["type"]: c["status"] for c in node["status"].get("conditions", [])}
            return node if conditions.get("Ready") == "True" else None

        return wait_until(ready, timeout, f"node {self.node_name} to be Ready")

    def approve_serving_certificate(self, timeout: float = 60.0) -> str:
        """Approve this node's kubelet-serving CSR, as a cluster's approver would, and wait until
        the kubelet API is serving. Returns the CSR's name."""

        def pending() -> str | None:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"agent exited:\n{self.log()[-3000:]}")
            if "kubelet API serving on" in self.log():
                return "(reused an earlier certificate)"
            listing = json.loads(
                self.cluster.kubectl(
                    "get", "csr", "-l", f"virtual-kubelet.io/node={self.node_name}", "-o", "json"
                ).stdout
            )
            for csr in listing["items"]:
                if not csr.get("status", {}).get("conditions"):
                    return str(csr["metadata"]["name"])
            return None

        name = wait_until(pending, timeout, f"a serving CSR from {self.node_name}")
        if name.startswith("("):
            return name
        self.cluster.kubectl("certificate", "approve", name)
        wait_until(
            lambda: "kubelet API serving on" in self.log(), timeout, "the kubelet API to start"
        )
        return name

    def log(self) -> str:
        """What this run of the agent has logged (earlier runs in the same workdir excluded)."""
        if not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as f:
            f.seek(getattr(self, "_log_offset", 0))
            return f.read().decode(errors="replace")

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait; returns the exit code."""
        if self.process is None or self.process.poll() is not None:
            return self.process.poll() if self.process else None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(10)

    def cleanup(self) -> None:
        """Stop the pod processes a process-provider agent left running (pods outlive their agent
        by design) and remove the pod volumes it left behind (they may live outside `workdir`)."""
        if self.provider == "process":
            kill_shims_under(self.state_dir)
        shutil.rmtree(self.volumes_dir, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL: a crash, with no chance to clean up."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def mock_pods(self) -> dict[str, dict[str, Any]]:
        """The pods a persisted mock provider holds now (its journal), by `namespace/name`."""
        journal = self.state_dir / f"mock-{self.node_name}.jsonl"
        pods: dict[str, dict[str, Any]] = {}
        if not journal.exists():
            return pods
        for line in journal.read_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a line being written right now
            if entry["op"] == "put":
                meta = entry["pod"]["metadata"]
                pods[f"{meta['namespace']}/{meta['name']}"] = entry["pod"]
            elif entry["op"] == "del":
                pods.pop(entry["key"], None)
        return pods

    def mock_creations(self) -> list[str]:
        """UIDs in the order the mock provider created them (a persisted mock only)."""
        path = self.state_dir / f"mock-{self.node_name}-creations.log"
        if not path.exists():
            return []
        return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


def _processes() -> dict[int, tuple[int, bytes]]:
    """pid -> (parent pid, command line) of every process we can see."""
    found: dict[int, tuple[int, bytes]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        # The command name in stat may contain spaces and parentheses: split after the last ")".
        found[int(entry.name)] = (int(stat.rsplit(")", 1)[1].split()[1]), cmdline)
    return found


def kill_shims_under(state_dir: Path) -> int:
    """SIGKILL the process-provider shims whose records live under `state_dir`, and the process
    groups of their children (each container process leads its own). Returns how many shims."""
    processes = _processes()
    marker = str(state_dir).encode()
    shims = {
        pid
        for pid, (_, cmdline) in processes.items()
        if b"virtual_kubelet.providers.process.shim" in cmdline and marker in cmdline
    }
    children = [pid for pid, (parent, _) in processes.items() if parent in shims]
    for pid in [*children, *shims]:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            group = os.getpgid(pid)
            if group != os.getpgrp():  # never our own group
                os.killpg(group, signal.SIGKILL)
    return len(shims)
