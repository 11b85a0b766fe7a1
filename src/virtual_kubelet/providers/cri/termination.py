"""Termination messages, as the kubelet makes them: each run of a container gets a fresh, empty host
file bind-mounted at its `terminationMessagePath` (default /dev/termination-log); when the run
has exited, the file's last 4 KiB are its `state.terminated.message`, or, for
`terminationMessagePolicy: FallbackToLogsOnError`, an empty file and a non-zero exit code, the
last 80 lines (at most 2 KiB) of its log. The files live beside the run's CRI log, under the log
root, so a remote runtime needs that directory shared (as it does for the logs)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from ...sdk.cri_log_files import tail_message
from .client import cri

DEFAULT_PATH = "/dev/termination-log"
#: The kubelet's limit on a message read from the file (its last bytes are kept).
MAX_MESSAGE = 4096
SUFFIX = ".termination-log"


def container_path(spec: dict[str, Any]) -> str:
    """Where the container writes its message ("" for none); the API server's default when the
    field is absent."""
    path = spec.get("terminationMessagePath", DEFAULT_PATH)
    return str(path or "")


def host_file(log_directory: Path, container: str, attempt: int) -> Path:
    return log_directory / container / f"{attempt}{SUFFIX}"


def prepare(path: Path) -> None:
    """An empty file any user of the container can write (the kubelet's 0666). Raises OSError."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb"):
        pass
    os.chmod(path, 0o666)


def mount(spec: dict[str, Any], host: Path) -> Any:
    """The bind mount of `host` at the container's terminationMessagePath (None: no path)."""
    target = container_path(spec)
    if not target:
        return None
    return cri.Mount(container_path=target, host_path=str(host))


def _read_tail(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - MAX_MESSAGE))
            data = handle.read(MAX_MESSAGE)
    except OSError:
        return ""
    return data.decode("utf-8", "replace")


def message(spec: dict[str, Any], exit_code: int, host: Path, log: Path) -> str:
    """The run's termination message (blocking: reads files)."""
    text = _read_tail(host) if container_path(spec) else ""
    policy = str(spec.get("terminationMessagePolicy") or "File")
    if not text and exit_code != 0 and policy == "FallbackToLogsOnError":
        text = tail_message(log)
    return text


def add_message(terminated: dict[str, Any], text: str) -> None:
    """As the kubelet: the runtime's message (if any), then ": ", then the container's."""
    if not text:
        return
    existing = terminated.get("message")
    terminated["message"] = f"{existing}: {text}" if existing else text


def remove_files(log_directory: Path) -> None:
    """The pod's termination files (its logs are the runtime's to remove)."""
    for path in log_directory.glob(f"*/*{SUFFIX}"):
        with contextlib.suppress(OSError):
            path.unlink()
