"""Long-running kubectl sessions the checks drive: `kubectl attach -i` and `kubectl
port-forward`, with a deadline on every read, so a session that hangs fails the check instead of
the test run.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence

from ..devcluster import DevCluster, kubectl_path

__all__ = ["echo_over_tcp", "kubectl_session", "read_until"]


@contextlib.contextmanager
def kubectl_session(cluster: DevCluster, args: Sequence[str]) -> Iterator[subprocess.Popen[bytes]]:
    """`kubectl ARGS` with pipes on stdin, stdout and stderr; killed when the block ends."""
    process = subprocess.Popen(
        [kubectl_path(), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(os.environ, KUBECONFIG=str(cluster.kubeconfig)),
    )
    try:
        yield process
    finally:
        process.kill()
        process.wait(10)
        for pipe in (process.stdin, process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()


def read_until(process: subprocess.Popen[bytes], needle: bytes, timeout: float) -> bytes:
    """Read the session's stdout until it holds `needle`; fail (quoting stdout and stderr) if
    the session ends or `timeout` seconds pass first."""
    assert process.stdout is not None
    seen = b""
    deadline = time.monotonic() + timeout
    fd = process.stdout.fileno()
    while needle not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(
                f"kubectl printed no {needle!r} within {timeout:.0f} s; stdout: {seen[-2000:]!r}"
                f"{_stderr(process)}"
            )
        ready, _, _ = select.select([fd], [], [], min(left, 1.0))
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            process.wait(10)
            raise AssertionError(
                f"kubectl ended (exit {process.returncode}) before printing {needle!r}; "
                f"stdout: {seen[-2000:]!r}{_stderr(process)}"
            )
        seen += chunk
    return seen


def echo_over_tcp(port: int, payload: bytes, timeout: float) -> bytes:
    """Send `payload` to 127.0.0.1:`port` and read until as many bytes came back (or the peer
    closed, or `timeout` passed)."""
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        conn.sendall(payload)
        while len(received) < len(payload):
            chunk = conn.recv(65536)
            if not chunk:
                break
            received += chunk
    return received


def _stderr(process: subprocess.Popen[bytes]) -> str:
    """What a finished session wrote to stderr (nothing is read from a running one: it could
    block)."""
    if process.poll() is None or process.stderr is None:
        return ""
    return f"; stderr: {process.stderr.read()[-2000:].decode(errors='replace')}"
