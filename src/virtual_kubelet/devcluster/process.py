"""Starting, watching and stopping the dev cluster's component processes.

Each component runs in its own session (process group) with its output in a log file, so it can be
stopped as a group and outlive the Python process when the CLI asks for that. Only processes this
module started, identified by PID *and* kernel start time, are ever signalled.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .errors import StartError

_PR_SET_PDEATHSIG = 1


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None if it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may contain spaces and parentheses; fields after it are plain.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


@dataclass(frozen=True)
class ProcessRecord:
    """Enough to find one started process again, even from another Python process."""

    name: str
    pid: int
    start_ticks: int
    log: str

    def alive(self) -> bool:
        return _start_ticks(self.pid) == self.start_ticks

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProcessRecord:
        return cls(
            name=str(data["name"]),
            pid=int(data["pid"]),
            start_ticks=int(data["start_ticks"]),
            log=str(data["log"]),
        )


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class Component:
    """One running program of the dev cluster."""

    def __init__(self, record: ProcessRecord, popen: subprocess.Popen[bytes] | None = None):
        self.record = record
        self._popen = popen

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def log(self) -> Path:
        return Path(self.record.log)

    @classmethod
    def spawn(
        cls,
        name: str,
        argv: Sequence[str],
        log: Path,
        *,
        env: Mapping[str, str] | None = None,
        detached: bool = False,
    ) -> Component:
        """Start `argv` in a new session with output appended to `log`.

        Unless `detached`, the kernel kills the component if the starting process dies, so a crashed
        test run cannot leave a control plane behind.
        """
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as sink:
            try:
                popen = subprocess.Popen(
                    list(argv),
                    stdin=subprocess.DEVNULL,
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                    env=dict(env) if env is not None else None,
                    start_new_session=True,
                    preexec_fn=None if detached else _die_with_parent,
                )
            except OSError as exc:
                raise StartError(name, f"cannot execute {argv[0]}: {exc}") from exc
        ticks = _start_ticks(popen.pid)
        record = ProcessRecord(name=name, pid=popen.pid, start_ticks=ticks or 0, log=str(log))
        return cls(record, popen)

    def exit_code(self) -> int | None:
        """The exit code if the process has ended, else None."""
        if self._popen is not None:
            return self._popen.poll()
        return None if self.record.alive() else -1

    def running(self) -> bool:
        return self.exit_code() is None

    def wait_ready(
        self, ready: Callable[[], bool], timeout: float, what: str = "ready", interval: float = 0.2
    ) -> None:
        """Poll `ready()` until it is true; fail early if the process exits, or at `timeout`."""
        deadline = time.monotonic() + timeout
        last_error: BaseException | None = None
        while True:
            code = self.exit_code()
            if code is not None:
                raise StartError(self.name, f"exited early with code {code}", self.log)
            try:
                if ready():
                    return
            except Exception as exc:  # connection refused and the like, until the deadline
                last_error = exc
            if time.monotonic() >= deadline:
                detail = f" (last check: {last_error})" if last_error else ""
                raise StartError(self.name, f"not {what} after {timeout:.0f} s{detail}", self.log)
            time.sleep(interval)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the component's process group, then SIGKILL it after `timeout` seconds."""
        if not self.record.alive():
            self._reap()
            return
        self._signal(signal.SIGTERM)
        if not self._wait_gone(timeout):
            self._signal(signal.SIGKILL)
            self._wait_gone(5.0)
        self._reap()

    def _signal(self, sig: signal.Signals) -> None:
        # The PID is ours (start time matched), and it leads its own process group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.record.pid, sig)

    def _wait_gone(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._reap()
            if not self.record.alive():
                return True
            time.sleep(0.05)
        return False

    def _reap(self) -> None:
        if self._popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._popen.wait(timeout=0)
