"""The kubelet port's listening socket, bound at start-up so a port that is taken stops the agent
with one clear message (naming the address and, where /proc tells, the process holding it)
instead of a Ready node whose kubelet API never answers.

The default address is the node's InternalIP, not 0.0.0.0: several agents on one host (two
virtual nodes, a demo next to a test run) then each own `<their address>:10250`, and the API
server's requests for one node cannot reach another node's agent.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import socket
from pathlib import Path

log = logging.getLogger(__name__)

ANY_ADDRESS = "0.0.0.0"


class ListenError(RuntimeError):
    """The kubelet port could not be bound; the message says which address and why."""


def bind_listener(address: str, port: int, *, fallback_any: bool = False) -> socket.socket:
    """A listening TCP socket on `address:port` (SO_REUSEADDR, non-blocking).

    With `fallback_any`, an address that is not assigned to this host (e.g. a NAT address given
    as the node's InternalIP) falls back to all addresses, with a warning, instead of failing."""
    try:
        return _bind(address, port)
    except OSError as exc:
        if fallback_any and exc.errno == errno.EADDRNOTAVAIL:
            log.warning(
                "the node address %s is not an address of this host; the kubelet API listens on "
                "%s:%d instead (set --kubelet-listen-address to choose)",
                address,
                ANY_ADDRESS,
                port,
            )
            return bind_listener(ANY_ADDRESS, port)
        raise ListenError(_explain(address, port, exc)) from None


def _bind(address: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _explain(address: str, port: int, exc: OSError) -> str:
    where = f"{address}:{port}"
    if exc.errno == errno.EADDRINUSE:
        holder = port_holder(address, port)
        by = f" by {holder}" if holder else " by another process"
        return (
            f"cannot listen on {where} for the kubelet API: the port is already in use{by}. "
            "Another agent on this host? Give each agent its own node address (VKUBELET_POD_IP) "
            "or its own KUBELET_PORT, or set --kubelet-listen-address"
        )
    if exc.errno == errno.EACCES:
        return f"cannot listen on {where} for the kubelet API: permission denied (a port < 1024?)"
    return f"cannot listen on {where} for the kubelet API: {exc.strerror or exc}"


def port_holder(address: str, port: int) -> str | None:
    """'pid N (command line)' of a process listening on `address:port` (or on all addresses
    at that port), if /proc shows one this process may look at; None otherwise."""
    wanted = {ipaddress.ip_address(a) for a in (address, "0.0.0.0", "::")}
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) <= 9 or fields[3] != "0A":  # 0A: LISTEN
                continue
            host, _, port_hex = fields[1].rpartition(":")
            if int(port_hex, 16) == port and _proc_address(host) in wanted:
                inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd) in inodes:
                    return f"pid {entry.name} ({_command(entry)})"
        except OSError:
            continue  # gone, or not ours to look at
    return None


def _proc_address(hex_address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An address as /proc/net/tcp{,6} prints it: 32-bit words in host (little-endian) order."""
    raw = bytes.fromhex(hex_address)
    host_order = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return ipaddress.ip_address(host_order)


def _command(proc: Path) -> str:
    try:
        argv = (proc / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    text = " ".join(" ".join(a.decode(errors="replace") for a in argv if a).split())
    return text if len(text) <= 120 else text[:117] + "..."


def unreachable_reason(address: str) -> str | None:
    """Why the API server will not proxy to `address` (loopback, link-local, unspecified), or None."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_unspecified:
        return "the unspecified address"
    return None
