"""A private single-node Slurm (munged, slurmctld, slurmd) for the `slurm` provider's tests and
for trying it out.

    python -m virtual_kubelet.devcluster.slurm up       # install if missing, start, wait for idle
    python -m virtual_kubelet.devcluster.slurm down     # cancel its jobs, stop the daemons
    python -m virtual_kubelet.devcluster.slurm status
    python -m virtual_kubelet.devcluster.slurm env      # export SLURM_CONF=... for a shell
    python -m virtual_kubelet.devcluster.slurm up --rest  # and slurmrestd on a unix socket

slurm-wlm and munge come from Debian (apt-get, only when missing). Everything else is private
under one directory (`~/.cache/virtual-kubelet/slurm/<name>`): the munge key and socket, the
slurm.conf, state, spool, pid and log files (shared/design/BACKENDS.md section 3). One node,
`localhost`, with the machine's CPUs and 4000 MiB; memory is enforced by polling
(`jobacct_gather/linux` with `OverMemoryKill`), because the machine has no cgroup plugin set up
for Slurm. The Slurm CLI finds this cluster through `SLURM_CONF` (see `env()`).

`rest_up()` adds slurmrestd (Debian's `slurmrestd`, OpenAPI plugin v0.0.38) listening on a unix
socket in that directory with `rest_auth/local`: a client is the user it connects as. slurmrestd
refuses to run as root, and the dev cluster runs as root, so it is started with
`SLURMRESTD_SECURITY=disable_user_check` (a dev-only shortcut; a real site runs it as its own
user, with `rest_auth/jwt`). `down` stops it with the rest.
"""

from __future__ import annotations

import argparse
import http.client
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .versions import cache_root
from .waiting import WaitTimeout, wait_until

#: The Debian packages and one file each that shows it is installed.
PACKAGES = {
    "slurm-wlm": "/usr/sbin/slurmctld",
    "munge": "/usr/sbin/munged",
}
#: slurmctld and slurmd ports (Slurm's defaults plus 10000, so a system Slurm is not disturbed).
CTLD_PORT = 16817
SLURMD_PORT = 16818
PARTITION = "debug"
NODE_MEMORY_MB = 4000


#: slurmrestd, only for `rest_up`.
REST_PACKAGES = {"slurmrestd": "/usr/sbin/slurmrestd"}
REST_API_VERSION = "v0.0.38"


class SlurmUnavailable(RuntimeError):
    """Slurm cannot be installed or started here; the message says why."""


def missing_packages(packages: dict[str, str] = PACKAGES) -> list[str]:
    return [package for package, path in packages.items() if not Path(path).exists()]


def install_packages(packages: dict[str, str] = PACKAGES) -> None:
    """apt-get install what is missing (idempotent; `apt-get update` first if apt knows nothing
    about slurm-wlm yet). Raises SlurmUnavailable with apt's own words."""
    missing = missing_packages(packages)
    if not missing:
        return
    if shutil.which("apt-get") is None:
        raise SlurmUnavailable(f"missing {', '.join(missing)} and there is no apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    policy = subprocess.run(
        ["apt-cache", "policy", "slurm-wlm"], capture_output=True, text=True, env=env
    )
    if "Candidate:" not in policy.stdout or "Candidate: (none)" in policy.stdout:
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, env=env)
    done = subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
        capture_output=True,
        text=True,
        env=env,
    )
    if done.returncode != 0 or missing_packages(packages):
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise SlurmUnavailable(f"apt-get install {' '.join(missing)} failed: {' | '.join(tail)}")


@dataclass(frozen=True)
class SlurmCluster:
    """One private single-node Slurm: its directory, config and daemons."""

    home: Path
    ctld_port: int = CTLD_PORT
    slurmd_port: int = SLURMD_PORT

    @classmethod
    def named(cls, name: str = "default") -> SlurmCluster:
        """The cluster `name`; "default" on ports 16817/16818, any other name on a pair derived
        from it, so that two of them (two checkouts' test runs) can run side by side."""
        if name == "default":
            return cls(cache_root() / "slurm" / name)
        port = 17000 + 2 * (zlib.crc32(name.encode()) % 1000)
        return cls(cache_root() / "slurm" / name, ctld_port=port, slurmd_port=port + 1)

    @property
    def config_file(self) -> Path:
        return self.home / "slurm.conf"

    @property
    def munge_socket(self) -> Path:
        return self.home / "munge-run" / "munge.sock"

    @property
    def rest_socket(self) -> Path:
        return self.home / "slurmrestd.sock"

    @property
    def rest_url(self) -> str:
        """What the slurm provider's `rest_url` takes."""
        return f"unix:{self.rest_socket}"

    def env(self) -> dict[str, str]:
        """What the Slurm CLI needs to talk to this cluster."""
        return {"SLURM_CONF": str(self.config_file)}

    def _pid(self, daemon: str) -> int | None:
        try:
            pid = int((self.home / f"{daemon}.pid").read_text())
            os.kill(pid, 0)
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        # A reused pid must not be taken for ours: the command line names our files.
        return pid if daemon.encode() in cmdline and str(self.home).encode() in cmdline else None

    def pids(self) -> dict[str, int | None]:
        return {daemon: self._pid(daemon) for daemon in ("munged", "slurmctld", "slurmd")}

    def running(self) -> bool:
        return all(self.pids().values())

    def write_config(self) -> None:
        home = self.home
        for sub, mode in (
            ("munge-key", 0o700),
            ("munge-run", 0o755),
            ("state", 0o755),
            ("spool", 0o755),
            ("log", 0o755),
        ):
            (home / sub).mkdir(parents=True, exist_ok=True)
            (home / sub).chmod(mode)
        home.chmod(0o755)
        key = home / "munge-key" / "munge.key"
        if not key.exists():
            key.write_bytes(secrets.token_bytes(1024))
        key.chmod(0o400)
        cpus = os.cpu_count() or 1
        self.config_file.write_text(
            f"""# Written by python -m virtual_kubelet.devcluster.slurm; rewritten on every `up`.
ClusterName=vkdev
SlurmctldHost=localhost
SlurmctldPort={self.ctld_port}
SlurmdPort={self.slurmd_port}
AuthType=auth/munge
AuthInfo=socket={self.munge_socket}
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation={home}/state
SlurmdSpoolDir={home}/spool/slurmd-%n
SlurmctldPidFile={home}/slurmctld.pid
SlurmdPidFile={home}/slurmd.pid
SlurmctldLogFile={home}/log/slurmctld.log
SlurmdLogFile={home}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=1
JobAcctGatherParams=OverMemoryKill
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=100
MpiDefault=none
ReturnToService=2
# One node, no backfill to plan: the builtin scheduler, run at least every second, starts
# queued jobs soonest (about 2 jobs a second on 2 cores).
SchedulerType=sched/builtin
SchedulerParameters=sched_min_interval=0,sched_interval=1
MinJobAge=300
KillWait=5
InactiveLimit=0
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={NODE_MEMORY_MB} State=UNKNOWN
# FORCE:8: up to 8 jobs share each CPU, so that a test's handful of sleeping pods all run on a
# 2-core machine (a real cluster would say OverSubscribe=NO).
PartitionName={PARTITION} Nodes=localhost Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:8
# A partition that takes jobs but never starts them (tests of Pending with Slurm's reason).
PartitionName=closed Nodes=localhost MaxTime=INFINITE State=DOWN
"""
        )

    def _start(
        self, daemon: str, argv: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        with (self.home / "log" / f"{daemon}.out").open("ab") as log:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, **self.env(), **(env or {})},
            )
        # munged writes its own pid file; slurmctld/slurmd in the foreground write theirs too, but
        # only once they are up: ours, written now, lets `down` stop a daemon stuck starting.
        (self.home / f"{daemon}.pid").write_text(str(process.pid))
        return process

    def cli(self, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **self.env()},
        )

    def up(self, timeout: float = 60.0) -> SlurmCluster:
        """Install what is missing, start each daemon unless it runs, wait for the node to be
        idle. Idempotent."""
        install_packages()
        if not self.running():
            self.down()
            try:
                self._start_daemons(timeout)
            except SlurmUnavailable:
                self.down()  # leave nothing half-started behind
                raise
        else:
            self._wait(self._idle, None, "the node to be idle", timeout)
        return self

    def _start_daemons(self, timeout: float) -> None:
        """munged, then slurmctld and slurmd, each waited for."""
        self.write_config()
        key_dir, run_dir = self.home / "munge-key", self.home / "munge-run"
        munged = self._start(
            "munged",
            [
                "munged",
                "--foreground",
                "--force",
                f"--key-file={key_dir}/munge.key",
                f"--socket={self.munge_socket}",
                f"--pid-file={run_dir}/munged.pid",
                f"--log-file={self.home}/log/munged.log",
                f"--seed-file={key_dir}/seed",
            ],
        )
        self._wait(lambda: self.munge_socket.exists(), munged, "munged", timeout)
        conf = str(self.config_file)
        ctld = self._start("slurmctld", ["slurmctld", "-D", "-f", conf])
        slurmd = self._start("slurmd", ["slurmd", "-D", "-N", "localhost", "-f", conf])
        self._wait(self._answers, ctld, "slurmctld", timeout)
        self._wait(self._idle, slurmd, "the node to be idle", timeout)

    def _answers(self) -> bool:
        return self.cli("scontrol", "ping").returncode == 0

    def _idle(self) -> bool:
        shown = self.cli("sinfo", "--noheader", "--format=%T")
        states = shown.stdout.split()
        if any(state.startswith(("down", "drain")) for state in states):
            self.cli("scontrol", "update", "NodeName=localhost", "State=RESUME")
        return (
            shown.returncode == 0
            and bool(states)
            and all(state.rstrip("*") in ("idle", "mixed", "allocated") for state in states)
        )

    def _wait(
        self,
        ready: Callable[[], bool],
        process: subprocess.Popen[bytes] | None,
        what: str,
        timeout: float,
    ) -> None:
        try:
            wait_until(
                lambda: (process is not None and process.poll() is not None) or bool(ready()),
                timeout,
                what,
            )
        except WaitTimeout as exc:
            raise SlurmUnavailable(f"{exc}; see {self.home / 'log'}") from None
        if process is not None and process.poll() is not None:
            raise SlurmUnavailable(
                f"{what} exited with status {process.returncode}: {self._log_tail(what)}"
                f" (see {self.home / 'log'})"
            )

    def _log_tail(self, daemon: str) -> str:
        try:
            text = (self.home / "log" / f"{daemon}.out").read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(text.splitlines()[-3:])

    def _stop(self, daemon: str, pid: int, timeout: float) -> None:
        def gone() -> bool:
            return self._pid(daemon) is None

        os.kill(pid, signal.SIGTERM)
        try:
            wait_until(gone, timeout, f"{daemon} to stop")
        except WaitTimeout:
            os.kill(pid, signal.SIGKILL)
            wait_until(gone, 10, f"{daemon} to be killed")

    def rest_ping(self) -> bool:
        """Whether slurmrestd answers GET ping on its socket (and slurmctld through it)."""
        connection = _UnixHTTPConnection(str(self.rest_socket))
        try:
            connection.request("GET", f"/slurm/{REST_API_VERSION}/ping")
            answer = connection.getresponse()
            return answer.status == 200 and b'"UP"' in answer.read()
        except OSError:
            return False
        finally:
            connection.close()

    def rest_up(self, timeout: float = 60.0) -> SlurmCluster:
        """slurmrestd on `rest_socket` (installed if missing), unless it runs. Idempotent; the
        cluster must be up."""
        install_packages(REST_PACKAGES)
        if self._pid("slurmrestd") is not None and self.rest_ping():
            return self
        self.rest_down()
        self.rest_socket.unlink(missing_ok=True)
        env = {"SLURMRESTD_SECURITY": "disable_user_check"} if os.geteuid() == 0 else {}
        process = self._start(
            "slurmrestd",
            [
                "slurmrestd",
                "-f",
                str(self.config_file),
                "-a",
                "rest_auth/local",
                "-s",
                f"openapi/{REST_API_VERSION}",
                f"unix:{self.rest_socket}",
            ],
            env,
        )
        try:
            self._wait(self.rest_ping, process, "slurmrestd", timeout)
        except SlurmUnavailable:
            self.rest_down()
            raise
        return self

    def rest_down(self, timeout: float = 30.0) -> bool:
        """Stop slurmrestd; whether it was running."""
        pid = self._pid("slurmrestd")
        if pid is not None:
            self._stop("slurmrestd", pid, timeout)
        (self.home / "slurmrestd.pid").unlink(missing_ok=True)
        self.rest_socket.unlink(missing_ok=True)
        return pid is not None

    def down(self, timeout: float = 30.0) -> bool:
        """Stop slurmrestd, cancel every job, stop slurmd, slurmctld and munged (SIGTERM, then
        SIGKILL). Whether anything was running."""
        rest_stopped = self.rest_down(timeout)
        pids = self.pids()
        if pids["slurmctld"] is not None:
            self.cli("scancel", "--full", "--user=root", timeout=10)
        stopped = False
        for daemon in ("slurmd", "slurmctld", "munged"):
            pid = self._pid(daemon)
            if pid is None:
                continue
            stopped = True
            self._stop(daemon, pid, timeout)
        for daemon in ("slurmd", "slurmctld", "munged"):
            (self.home / f"{daemon}.pid").unlink(missing_ok=True)
        return stopped or rest_stopped


class _UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a unix socket (slurmrestd's), for the readiness check."""

    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=5)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(5)
        self.sock.connect(self.path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m virtual_kubelet.devcluster.slurm",
        description="A private single-node Slurm for the slurm provider: up, down, status, env.",
    )
    parser.add_argument("action", choices=("up", "down", "status", "env"))
    parser.add_argument("--name", default="default", help="which private Slurm (default)")
    parser.add_argument(
        "--rest", action="store_true", help="up: start slurmrestd too (on a unix socket)"
    )
    args = parser.parse_args(argv)
    cluster = SlurmCluster.named(args.name)
    try:
        if args.action == "up":
            cluster.up()
            print(f"export SLURM_CONF={cluster.config_file}")
            if args.rest:
                cluster.rest_up()
                print(f"# slurmrestd: rest_url: {cluster.rest_url}")
        elif args.action == "down":
            print("stopped" if cluster.down() else "not running")
        elif args.action == "env":
            print(f"export SLURM_CONF={cluster.config_file}")
        else:
            pids = cluster.pids()
            shown = {**pids, "slurmrestd": cluster._pid("slurmrestd")}
            print(" ".join(f"{d}={p or 'stopped'}" for d, p in shown.items()))
            return 0 if all(pids.values()) else 3
    except SlurmUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
