"""A private, non-loopback local IPv4 address for virtual nodes of the dev cluster.

The API server refuses to proxy `nodes/<name>/proxy/...` to loopback addresses ("address not
allowed"), while logs and exec to 127.0.0.1 work. So the dev cluster can give its nodes an address
from 198.18.0.0/15 (RFC 2544's benchmarking range, never routed on the Internet) on a veth interface
it creates and removes itself. Traffic to it is local delivery; it never leaves this machine.
Needs CAP_NET_ADMIN (root) and the veth driver; the `ip` command comes from iproute2.
"""

from __future__ import annotations

import fcntl
import hashlib
import ipaddress
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .errors import StartError
from .versions import cache_root

_NETWORK = ipaddress.ip_network("198.18.0.0/16")
COMPONENT = "node address"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("ip")
    if tool is None:
        raise StartError(COMPONENT, "the `ip` command (iproute2) is not installed")
    result = subprocess.run([tool, *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise StartError(
            COMPONENT,
            f"`ip {' '.join(args)}` failed: {result.stderr.strip()} "
            "(creating a node address needs root or CAP_NET_ADMIN and the veth driver)",
        )
    return result


def _used_addresses() -> set[ipaddress.IPv4Address]:
    used = set()
    for line in _ip("-o", "-4", "addr", "show").stdout.splitlines():
        fields = line.split()
        if "inet" in fields:
            used.add(ipaddress.IPv4Interface(fields[fields.index("inet") + 1]).ip)
    return used


@dataclass(frozen=True)
class NodeAddress:
    """An address on a veth interface that this dev cluster owns."""

    interface: str
    address: str

    @classmethod
    def create(cls, workdir: Path) -> NodeAddress:
        """Create the interface for `workdir` (replacing a stale one) with a free address."""
        interface = "vkdc" + hashlib.sha256(str(workdir).encode()).hexdigest()[:8]
        lock = cache_root() / "node-address.lock"
        lock.parent.mkdir(parents=True, exist_ok=True)
        with lock.open("a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)  # two clusters starting together pick different addresses
            _ip("link", "del", interface, check=False)
            used = _used_addresses()
            address = next(str(a) for a in _NETWORK.hosts() if a not in used)
            _ip("link", "add", interface, "type", "veth", "peer", "name", interface + "p")
            try:
                _ip("addr", "add", f"{address}/32", "dev", interface)
                _ip("link", "set", interface, "up")
            except StartError:
                _ip("link", "del", interface, check=False)
                raise
        return cls(interface, address)

    def remove(self) -> None:
        """Delete the interface (its peer and address go with it); a missing one is fine."""
        _ip("link", "del", self.interface, check=False)
