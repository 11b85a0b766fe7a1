"""Errors of the dev cluster, each naming the component at fault and the tail of its log.

A person reading one of these should know which program failed, why, and where the full log is.
"""

from __future__ import annotations

from pathlib import Path


def tail_of(path: Path | None, lines: int = 20) -> str:
    """The last `lines` lines of a log file, or a note that there is none."""
    if path is None:
        return ""
    try:
        with path.open("rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return f"(no log at {path})"
    return "\n".join(data.splitlines()[-lines:])


class DevClusterError(RuntimeError):
    """Something about one component of the dev cluster went wrong."""

    def __init__(self, component: str, message: str, log: Path | None = None) -> None:
        self.component = component
        self.message = message
        self.log = log
        text = f"{component}: {message}"
        if log is not None:
            text += f"\n--- last lines of {log} ---\n{tail_of(log)}"
        super().__init__(text)


class BuildError(DevClusterError):
    """A component could not be built from its Go modules."""


class StartError(DevClusterError):
    """A component did not start, or exited, or never became ready."""


class AlreadyRunningError(DevClusterError):
    """Every component of the cluster already runs: there is nothing to start."""
