"""Who listens on a TCP port, read from /proc: for error messages that name the process holding
an address (the kubelet port, the dev cluster's ports). Linux only; anything unreadable is None."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path


def port_holder(port: int, address: str | None = None) -> str | None:
    """'pid N (command line)' of a process listening on TCP `port` (on `address` or on all
    addresses; on any address when `address` is None), if /proc shows one this process may look
    at (the same network namespace, permission to read its file descriptors); None otherwise."""
    wanted = {ipaddress.ip_address(a) for a in (address, "0.0.0.0", "::") if a is not None}
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
            if int(port_hex, 16) == port and (address is None or _proc_address(host) in wanted):
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
