"""A local OCI registry on loopback with basic auth (Debian's docker-registry, htpasswd from
apache2-utils), so that the cri provider's PullImage and imagePullSecrets are exercised without
reaching any public registry. The images come from a private containerd (containerd.py), pushed
with `ctr`; that containerd is told to speak plain HTTP to it (a `hosts.toml` in its certs.d).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from .containerd import BackendUnavailable, Containerd, install
from .waiting import WaitTimeout, wait_until

PACKAGES = {"docker-registry": "/usr/bin/docker-registry", "apache2-utils": "/usr/bin/htpasswd"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class LocalRegistry:
    """One registry process under `home`, on 127.0.0.1:`port`, with one user."""

    home: Path
    username: str
    password: str = field(repr=False)
    port: int = field(default_factory=_free_port)
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> LocalRegistry:
        install(PACKAGES)
        self.home.mkdir(parents=True, exist_ok=True)
        htpasswd = self.home / "htpasswd"
        made = subprocess.run(
            ["htpasswd", "-Bbn", self.username, self.password], capture_output=True, text=True
        )
        if made.returncode != 0:
            raise BackendUnavailable(f"htpasswd failed: {made.stderr.strip()}")
        htpasswd.write_text(made.stdout)
        config = self.home / "config.yml"
        config.write_text(
            f"""version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {self.home / "data"}
http:
  addr: {self.host}
auth:
  htpasswd:
    realm: virtual-kubelet-tests
    path: {htpasswd}
"""
        )
        with (self.home / "registry.log").open("ab") as log:
            self.process = subprocess.Popen(
                ["docker-registry", "serve", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_until(self._answers, timeout, f"the registry on {self.host}")
        except WaitTimeout as exc:
            self.stop()
            raise BackendUnavailable(str(exc)) from None
        return self

    def _answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise BackendUnavailable(f"docker-registry exited with {self.process.returncode}")
        try:
            urllib.request.urlopen(f"http://{self.host}/v2/", timeout=2)
        except urllib.error.HTTPError as exc:
            return exc.code == 401  # up, and asking for credentials
        except OSError:
            return False
        return False

    def trust_from(self, containerd: Containerd) -> None:
        """Let `containerd` pull from this registry over plain HTTP."""
        hosts = containerd.home / "certs.d" / self.host / "hosts.toml"
        hosts.parent.mkdir(parents=True, exist_ok=True)
        hosts.write_text(
            f'server = "http://{self.host}"\n\n'
            f'[host."http://{self.host}"]\n  capabilities = ["pull", "resolve", "push"]\n'
        )

    def push(self, containerd: Containerd, local: str, remote_path: str) -> str:
        """Push image `local` of `containerd` as `<host>/<remote_path>`; the new reference."""
        reference = f"{self.host}/{remote_path}"
        pushed = containerd.ctr(
            "images", "push", "--plain-http", "--user", f"{self.username}:{self.password}",
            reference, local, check=False,
        )  # fmt: skip
        if pushed.returncode != 0:
            # ctr's message names neither user nor password.
            raise BackendUnavailable(f"pushing {reference} failed: {pushed.stderr.strip()[-300:]}")
        return reference

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        shutil.rmtree(self.home / "data", ignore_errors=True)
