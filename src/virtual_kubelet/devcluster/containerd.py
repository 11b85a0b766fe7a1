"""A private containerd with its CRI plugin, for the `cri` provider's tests and for trying it out.

    python -m virtual_kubelet.devcluster.containerd up      # install if missing, start, import images
    python -m virtual_kubelet.devcluster.containerd down    # remove its pods, stop it
    python -m virtual_kubelet.devcluster.containerd status

containerd, runc, the CNI plugins and busybox-static come from Debian (apt-get, only when
missing). Everything else is private under one directory (`~/.cache/virtual-kubelet/cri/<name>`):
the config, root and state, the socket, runc's state, the CNI config (a bridge of its own) and
the log. The settings are the ones that work on machines without CAP_SYS_RESOURCE and with the
hybrid cgroup layout (shared/design/BACKENDS.md section 1): `restrict_oom_score_adj`, runc, a
pause image whose command never exits. No public registry is reached: the images are built here
(oci_images.py) and imported into the `k8s.io` namespace, where the CRI plugin looks.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .oci_images import BUSYBOX, PAUSE, write_layout
from .versions import cache_root
from .waiting import WaitTimeout, wait_until

#: The Debian packages and one file each that shows it is installed.
PACKAGES = {
    "containerd": "/usr/bin/containerd",
    "runc": "/usr/sbin/runc",
    "containernetworking-plugins": "/usr/lib/cni/bridge",
    "iptables": "/usr/sbin/iptables",
    "busybox-static": "/bin/busybox",
}
CNI_BIN_DIR = "/usr/lib/cni"
DEFAULT_SUBNET = "10.244.77.0/24"


class BackendUnavailable(RuntimeError):
    """containerd cannot be installed or started here; the message says why."""


def missing_packages(packages: dict[str, str] = PACKAGES) -> list[str]:
    return [package for package, path in packages.items() if not Path(path).exists()]


def install_packages() -> None:
    install(PACKAGES)


def install(packages: dict[str, str]) -> None:
    """apt-get install those of `packages` (name -> a file it installs) that are missing
    (idempotent; `apt-get update` first if apt knows no candidate for them yet). Raises
    BackendUnavailable with apt's own words."""
    missing = missing_packages(packages)
    if not missing:
        return
    if shutil.which("apt-get") is None:
        raise BackendUnavailable(f"missing {', '.join(missing)} and there is no apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    policy = subprocess.run(
        ["apt-cache", "policy", missing[0]], capture_output=True, text=True, env=env
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
        raise BackendUnavailable(f"apt-get install {' '.join(missing)} failed: {' | '.join(tail)}")


@dataclass(frozen=True)
class Containerd:
    """One private containerd: its directory, socket and CNI bridge."""

    home: Path
    bridge: str = "vkcri0"
    subnet: str = DEFAULT_SUBNET

    @classmethod
    def named(cls, name: str = "default") -> Containerd:
        return cls(cache_root() / "cri" / name)

    @property
    def socket(self) -> Path:
        return self.home / "containerd.sock"

    @property
    def endpoint(self) -> str:
        return f"unix://{self.socket}"

    @property
    def config_file(self) -> Path:
        return self.home / "config.toml"

    @property
    def log_file(self) -> Path:
        return self.home / "containerd.log"

    @property
    def pid_file(self) -> Path:
        return self.home / "containerd.pid"

    def pid(self) -> int | None:
        """containerd's pid if it runs (from its pid file)."""
        try:
            pid = int(self.pid_file.read_text())
            os.kill(pid, 0)
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        return (
            pid if b"containerd" in cmdline and str(self.config_file).encode() in cmdline else None
        )

    def write_config(self) -> None:
        home = self.home
        for sub in ("root", "state", "runc", "cni", "certs.d", "opt"):
            (home / sub).mkdir(parents=True, exist_ok=True)
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        self.config_file.write_text(
            f"""version = 2
root = "{home}/root"
state = "{home}/state"
[grpc]
  address = "{self.socket}"
[ttrpc]
  address = "{self.socket}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{home}/opt"
[{cri}]
  sandbox_image = "{PAUSE}"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
[{cri}.containerd]
  default_runtime_name = "runc"
  snapshotter = "overlayfs"
[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[{cri}.containerd.runtimes.runc.options]
  Root = "{home}/runc"
[{cri}.cni]
  bin_dir = "{CNI_BIN_DIR}"
  conf_dir = "{home}/cni"
[{cri}.registry]
  config_path = "{home}/certs.d"
"""
        )
        conflist = {
            "cniVersion": "1.0.0",
            "name": "vk-cri",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.bridge,
                    "isGateway": True,
                    "ipMasq": False,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": self.subnet}]],
                        "dataDir": str(home / "cni-ipam"),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
                {"type": "loopback"},
            ],
        }
        (home / "cni" / "10-vk-cri.conflist").write_text(json.dumps(conflist, indent=2))

    def ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ctr", "--address", str(self.socket), "--namespace", "k8s.io", *args],
            capture_output=True,
            text=True,
            check=check,
        )

    def up(self, timeout: float = 30.0) -> Containerd:
        """Install what is missing, start containerd unless it runs, import the images unless
        they are there. Idempotent."""
        install_packages()
        if self.pid() is None:
            self.write_config()
            self.socket.unlink(missing_ok=True)
            with self.log_file.open("ab") as log:
                process = subprocess.Popen(
                    ["containerd", "--config", str(self.config_file)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self.pid_file.write_text(str(process.pid))
            try:
                wait_until(
                    lambda: (
                        process.poll() is not None
                        or self.ctr("version", check=False).returncode == 0
                    ),
                    timeout,
                    f"containerd to answer on {self.socket}",
                )
            except WaitTimeout as exc:
                raise BackendUnavailable(f"{exc}; see {self.log_file}") from None
            if process.poll() is not None:
                raise BackendUnavailable(
                    f"containerd exited with status {process.returncode}: "
                    f"{self._log_tail()} (see {self.log_file})"
                )
        self.import_images()
        return self

    def _log_tail(self) -> str:
        try:
            return " | ".join(self.log_file.read_text(errors="replace").splitlines()[-3:])
        except OSError:
            return ""

    def images(self) -> set[str]:
        listed = self.ctr("images", "ls", "-q", check=False)
        return set(listed.stdout.split())

    def import_images(self) -> None:
        if {BUSYBOX, PAUSE} <= self.images():
            return
        layout = write_layout(self.home / "images.tar")
        imported = self.ctr("images", "import", str(layout), check=False)
        if imported.returncode != 0 or not {BUSYBOX, PAUSE} <= self.images():
            raise BackendUnavailable(f"importing {layout} failed: {imported.stderr.strip()}")

    def remove_pods(self) -> None:
        """Stop and remove every pod sandbox (their containers go with them), so that no shim,
        mount or network namespace outlives the daemon."""
        import grpc
        from cri_api.v1 import api_pb2, api_pb2_grpc  # only `down` needs grpc

        with grpc.insecure_channel(self.endpoint) as channel:
            runtime = api_pb2_grpc.RuntimeServiceStub(channel)
            sandboxes = runtime.ListPodSandbox(api_pb2.ListPodSandboxRequest(), timeout=10)
            for sandbox in sandboxes.items:
                runtime.StopPodSandbox(
                    api_pb2.StopPodSandboxRequest(pod_sandbox_id=sandbox.id), timeout=30
                )
                runtime.RemovePodSandbox(
                    api_pb2.RemovePodSandboxRequest(pod_sandbox_id=sandbox.id), timeout=30
                )

    def down(self, timeout: float = 30.0) -> bool:
        """Remove its pods and stop containerd. Whether it was running."""
        if self.pid() is None:
            return False
        try:
            self.remove_pods()
        except Exception as exc:  # stopping matters more than a clean sandbox list
            print(f"warning: could not remove every pod sandbox: {exc}", file=sys.stderr)
        return self.stop_daemon(timeout)

    def stop_daemon(self, timeout: float = 30.0) -> bool:
        """Stop the daemon only (SIGTERM, then SIGKILL): its containers keep running under their
        shims, and a restarted containerd finds them again. Whether it was running."""
        pid = self.pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)
        try:
            wait_until(lambda: self.pid() is None, timeout, "containerd to stop")
        except WaitTimeout:
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda: self.pid() is None, 10, "containerd to be killed")
        self.pid_file.unlink(missing_ok=True)
        return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m virtual_kubelet.devcluster.containerd",
        description="A private containerd (CRI) for the cri provider: up, down or status.",
    )
    parser.add_argument("action", choices=("up", "down", "status"))
    parser.add_argument("--name", default="default", help="which private containerd (default)")
    args = parser.parse_args(argv)
    backend = Containerd.named(args.name)
    try:
        if args.action == "up":
            backend.up()
            print(backend.endpoint)
        elif args.action == "down":
            print("stopped" if backend.down() else "not running")
        else:
            pid = backend.pid()
            print(f"running (pid {pid}) at {backend.endpoint}" if pid else "not running")
            return 0 if pid else 3
    except BackendUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
