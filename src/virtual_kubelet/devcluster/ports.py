"""Free loopback TCP ports for the dev cluster's components, and who holds a port that is taken.

Asking the kernel for port 0 and closing the socket leaves a window in which another process may take
the port; a claim (claims.py, as controller-runtime's envtest does with reservation files) keeps two
dev clusters started at the same moment from choosing the same one, and keeps a stopped cluster's
ports from being handed to another until it is purged.
"""

from __future__ import annotations

import socket
from pathlib import Path

from ..procnet import port_holder
from . import claims


def free_port(host: str = "127.0.0.1", owner: Path | None = None) -> int:
    """A TCP port on `host` that nothing listens on and no other dev cluster holds; claimed for
    `owner` (a cluster's workdir) for the owner's lifetime, or for two minutes without one."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port: int = s.getsockname()[1]
        if claims.claim(claims.PORTS, str(port), owner):
            return port
    raise RuntimeError(f"could not find a free TCP port on {host}")


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something already listens on `host:port` (or the address cannot be bound)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # As Go's listeners do: connections of a just-killed server (TIME_WAIT) must not count,
        # or a restarted component could never be given its old port back within a minute.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def claim(port: int, owner: Path) -> None:
    """Record `port` as `owner`'s for the owner's lifetime (a fixed or recorded port)."""
    claims.claim(claims.PORTS, str(port), owner, force=True)


def release(port: int, owner: Path | None = None) -> None:
    """Drop `owner`'s claim on `port` (the listener, if any, is not touched)."""
    claims.release(claims.PORTS, str(port), owner)


def holder(port: int) -> str | None:
    """The process listening on `port`, as `pid N (command line)`, if /proc shows it."""
    return port_holder(port)
