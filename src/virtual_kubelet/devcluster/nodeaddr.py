"""A private, non-loopback local IPv4 address for virtual nodes of the dev cluster.

The API server refuses to proxy `nodes/<name>/proxy/...` to loopback addresses ("address not
allowed"), while logs and exec to 127.0.0.1 work. So the dev cluster can give its nodes an address
from 198.18.0.0/15 (RFC 2544's benchmarking range, never routed on the Internet) on a veth interface
it creates and removes itself, with one more address per node name on request (agents started by
hand). Traffic to them is local delivery; it never leaves this machine. A cluster keeps its
addresses (claims.py) until it is purged, so a restarted cluster's nodes keep theirs. Needs
CAP_NET_ADMIN (root) and the veth driver; the `ip` command comes from iproute2.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import shutil
import subprocess
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from . import claims
from .errors import StartError
from .versions import cache_root

_NETWORK = ipaddress.ip_network("198.18.0.0/16")
COMPONENT = "node address"
_ALIAS = "vk-devcluster"


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


def _configured() -> dict[str, str]:
    """Every IPv4 address configured on this machine, with its interface."""
    found = {}
    for line in _ip("-o", "-4", "addr", "show").stdout.splitlines():
        fields = line.split()
        if "inet" in fields:
            address = ipaddress.IPv4Interface(fields[fields.index("inet") + 1]).ip
            found[str(address)] = fields[1]
    return found


def interface_for(workdir: Path) -> str:
    """The name of the node-address interface of the cluster in `workdir`."""
    return "vkdc" + hashlib.sha256(str(workdir).encode()).hexdigest()[:8]


@contextlib.contextmanager
def allocation_lock() -> Iterator[None]:
    """Held while choosing and configuring addresses, so two clusters never pick the same one."""
    lock = cache_root() / "node-address.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _allocate(workdir: Path, configured: Mapping[str, str]) -> str:
    # Skip addresses other clusters keep for their lifetime, even while they are stopped.
    for candidate in _NETWORK.hosts():
        address = str(candidate)
        if address not in configured and claims.claim(claims.ADDRESSES, address, workdir):
            return address
    raise StartError(COMPONENT, f"no free address left in {_NETWORK}")


@dataclass(frozen=True)
class NodeAddress:
    """An address on a veth interface that this dev cluster owns."""

    interface: str
    address: str

    @classmethod
    def create(
        cls, workdir: Path, address: str | None = None, extra: Iterable[str] = ()
    ) -> NodeAddress:
        """Create the interface for `workdir` (replacing a stale one) with `address`, else a free
        one, and the `extra` addresses: a cluster coming back gets back the ones it had."""
        interface = interface_for(workdir)
        with allocation_lock():
            _ip("link", "del", interface, check=False)
            remove_stale()
            configured = _configured()
            wanted = [address, *extra] if address is not None else []
            for kept in wanted:
                if kept in configured:
                    raise StartError(
                        COMPONENT,
                        f"{kept}, this cluster's node address, is now configured on "
                        f"{configured[kept]}; remove it there, or run `virtual-kubelet devcluster "
                        "down --purge` to start afresh with a new address",
                    )
                claims.claim(claims.ADDRESSES, kept, workdir, force=True)
            if address is None:
                address = _allocate(workdir, configured)
                wanted = [address]
            _ip("link", "add", interface, "type", "veth", "peer", "name", interface + "p")
            try:
                # Who owns it, so a later cluster can remove it if its owner died without doing so.
                _ip("link", "set", interface, "alias", f"{_ALIAS} {os.getpid()} {workdir}"[:255])
                for each in wanted:
                    _ip("addr", "add", f"{each}/32", "dev", interface)
                _ip("link", "set", interface, "up")
            except StartError:
                _ip("link", "del", interface, check=False)
                raise
        return cls(interface, address)

    def present(self, extra: Iterable[str] = ()) -> bool:
        """Whether the interface exists and carries this address and the `extra` ones."""
        result = _ip("-o", "-4", "addr", "show", "dev", self.interface, check=False)
        if result.returncode != 0:
            return False
        have = {
            str(ipaddress.IPv4Interface(f[f.index("inet") + 1]).ip)
            for f in (line.split() for line in result.stdout.splitlines())
            if "inet" in f
        }
        return {self.address, *extra} <= have

    def add(self, workdir: Path) -> str:
        """Configure one more free address on the interface (call under `allocation_lock()`)."""
        address = _allocate(workdir, _configured())
        try:
            _ip("addr", "add", f"{address}/32", "dev", self.interface)
        except StartError:
            claims.release(claims.ADDRESSES, address, workdir)
            raise
        return address

    def remove(self) -> None:
        """Delete the interface (its peer and addresses go with it); a missing one is fine. The
        addresses stay claimed for the cluster, which gets them back when it starts again."""
        _ip("link", "del", self.interface, check=False)


def _cluster_alive(workdir: Path) -> bool:
    """Whether any component recorded in `workdir/state.json` still runs."""
    from .process import ProcessRecord  # here: process.py does not need this module

    try:
        state = json.loads((workdir / "state.json").read_text())
    except (OSError, ValueError):
        return False
    return any(ProcessRecord.from_json(r).alive() for r in state.get("processes", []))


def remove_stale() -> list[str]:
    """Delete node-address interfaces whose creator has exited and whose cluster runs no
    component any more (a cluster killed with SIGKILL cannot remove its own). Only interfaces
    carrying our alias are considered; returns the names removed."""
    removed = []
    for line in _ip("-o", "link", "show", "type", "veth").stdout.splitlines():
        fields = line.split()
        if "alias" not in fields:
            continue
        name = fields[1].rstrip(":").split("@")[0]
        alias = line.split(" alias ", 1)[1].split(" ", 2)
        if len(alias) < 3 or alias[0] != _ALIAS or not alias[1].isdigit():
            continue
        if Path(f"/proc/{alias[1]}").exists() or _cluster_alive(Path(alias[2].strip())):
            continue
        _ip("link", "del", name, check=False)
        removed.append(name)
    return removed
