"""Free loopback TCP ports for the dev cluster's components, reserved against parallel test runs.

Asking the kernel for port 0 and closing the socket leaves a window in which another process may take
the port; a short-lived reservation file per port (as controller-runtime's envtest does) keeps two
dev clusters started at the same moment from choosing the same one.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from pathlib import Path

from .versions import cache_root

_RESERVATION_S = 120.0


def _reservations() -> Path:
    path = cache_root() / "port-reservations"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _reserve(port: int) -> bool:
    marker = _reservations() / str(port)
    with contextlib.suppress(FileNotFoundError):
        if time.time() - marker.stat().st_mtime > _RESERVATION_S:
            marker.unlink(missing_ok=True)
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that nothing listens on and no other dev cluster has just picked."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port: int = s.getsockname()[1]
        if _reserve(port):
            return port
    raise RuntimeError(f"could not find a free TCP port on {host}")


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something already listens on `host:port` (or the address cannot be bound)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def release(port: int) -> None:
    """Drop this process's reservation of `port` (the listener, if any, is not touched)."""
    (_reservations() / str(port)).unlink(missing_ok=True)
