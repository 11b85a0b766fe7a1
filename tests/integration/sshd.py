"""A real OpenSSH server on loopback for the slurm provider's ssh tests (Debian's
openssh-server, installed when missing): a free port, a host key and a client key generated
for the test, the client's key the only one authorized, and a ForceCommand that records each
remote command line before running it, as the login node's shell would. Stopped afterwards."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from virtual_kubelet.devcluster import wait_until
from virtual_kubelet.devcluster.ports import free_port, port_in_use
from virtual_kubelet.devcluster.slurm import SlurmUnavailable, install_packages


@dataclass(frozen=True)
class Sshd:
    port: int
    client_key: Path
    known_hosts: Path
    commands: Path  # each remote command line, one a line
    log: Path

    def lines(self) -> list[str]:
        return self.commands.read_text().splitlines() if self.commands.exists() else []


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Sshd]:
    try:
        install_packages({"openssh-server": "/usr/sbin/sshd"})
    except SlurmUnavailable as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"openssh-server is required under CI=true: {exc}")
        pytest.skip(f"no sshd here: {exc}")
    home = tmp_path / "sshd"
    home.mkdir()
    for key in ("host", "client"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(home / key)], check=True
        )
    shutil.copy(home / "client.pub", home / "authorized_keys")
    commands = home / "commands"
    wrapper = home / "record"
    wrapper.write_text(
        f'#!/bin/sh\nprintf "%s\\n" "$SSH_ORIGINAL_COMMAND" >> {commands}\n'
        'exec /bin/sh -c "$SSH_ORIGINAL_COMMAND"\n'
    )
    wrapper.chmod(0o755)
    port = free_port()
    config = home / "sshd_config"
    config.write_text(
        f"""Port {port}
ListenAddress 127.0.0.1
HostKey {home}/host
PidFile {home}/sshd.pid
AuthorizedKeysFile {home}/authorized_keys
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
MaxStartups 100
MaxSessions 100
ForceCommand {wrapper}
"""
    )
    host_key = (home / "host.pub").read_text().split()
    known_hosts = home / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    log = home / "sshd.log"
    process = subprocess.Popen(
        ["/usr/sbin/sshd", "-D", "-f", str(config), "-E", str(log)],
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_until(lambda: process.poll() is not None or port_in_use(port), 30, "sshd to listen")
        assert process.poll() is None, log.read_text() if log.exists() else "sshd exited"
        yield Sshd(port, home / "client", known_hosts, commands, log)
    finally:
        # sshd and its per-connection children: the process group it leads.
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
