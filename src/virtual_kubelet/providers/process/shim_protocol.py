"""The files the agent and a container's shim exchange, as typed records, and how both sides read
and write them.

    spec.<run>.json    ShimSpec     agent -> shim: what to run, where to log and record (no env)
    launch.<run>.json  LaunchSpec   agent -> shim: argv, env and bind mounts (memory-backed: they
                                    hold or derive from env values, which may be secrets)
    state.<run>.json   RunState     shim -> agent: the shim and container processes, at start
    exit.<run>.json    ExitRecord   shim -> agent: how the run ended (or why it never started)

The JSON keys are the field names and must stay as they are: a restarted agent adopts shims that
an older agent started, and `kubectl exec` runs a new shim on an older spec. Readers ignore keys
they do not know and use the defaults for missing ones.

Standard library only (dataclasses, json, os): the shim imports this module and must start fast
without the agent's dependencies. No logging and no process is started or signalled here.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

#: The shim, as the agent runs it: `python -m SHIM_MODULE run|exec|probe-mounts ...`.
SHIM_MODULE = "virtual_kubelet.providers.process.shim"
#: The exit code reported when the command could not be started (what runc uses).
START_ERROR_CODE = 128

Record = TypeVar("Record")


# --- processes ------------------------------------------------------------------------------------


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/<pid>/stat), or None
    if it does not exist or is a zombie. Together with the pid it identifies a process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2 :].split()
    if len(fields) < 20 or fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])


def alive(pid: int | None, ticks: int | None) -> bool:
    """Whether process `pid` still is the one that started at `ticks` (pid reuse safe)."""
    return bool(pid) and ticks is not None and start_ticks(int(pid or 0)) == ticks


# --- files ----------------------------------------------------------------------------------------


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomically replace `path` (readers see the old or the new file, never half of one)."""
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle)
    os.replace(temporary, path)


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in `path`; None if it is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def from_json(cls: type[Record], data: dict[str, Any]) -> Record:
    """A record of dataclass `cls` from its JSON object; unknown keys are ignored. TypeError if a
    field without a default is missing."""
    assert dataclasses.is_dataclass(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


def write_record(path: Path, record: Any) -> None:
    """Atomically write a dataclass record as its JSON object."""
    write_json(path, dataclasses.asdict(record))


def _read(cls: type[Record], path: Path) -> Record | None:
    data = read_json(path)
    if data is None:
        return None
    try:
        return from_json(cls, data)
    except TypeError:
        return None


# --- the records ----------------------------------------------------------------------------------


@dataclass
class BindMount:
    """One volumeMount as a bind mount in the container's private mount namespace."""

    source: str
    target: str
    read_only: bool = False
    #: The source is a file (an empty file is created at a missing target, not a directory).
    file: bool = False
    #: The source as written in the pod (`subPathExpr` not expanded), for error messages.
    shown: str | None = None
    #: A failure is logged and skipped instead of failing the start (the termination-log file).
    optional: bool = False


@dataclass
class LaunchSpec:
    """launch.<run>.json: what run <run> executes. Held in memory-backed storage only."""

    argv: list[str]
    env: dict[str, str]
    #: None: no mount namespace (`mounts: env`); the volumes are in VK_VOLUME_* env vars.
    mounts: list[BindMount] | None = None

    @classmethod
    def load(cls, path: Path) -> LaunchSpec:
        """Read it (OSError, ValueError or TypeError if it is missing or malformed)."""
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError(f"{path} holds no JSON object")
        launch = from_json(cls, data)
        if launch.mounts is not None:
            launch.mounts = [
                from_json(BindMount, m) if isinstance(m, dict) else m for m in launch.mounts
            ]
        return launch


@dataclass
class ShimSpec:
    """spec.<run>.json: everything the shim of run <run> needs but the launch (see LaunchSpec),
    which `launch_path` names. Also read by `shim exec` (exec sessions, probes and hooks)."""

    run: int
    cwd: str
    log_path: str
    state_path: str
    exit_path: str
    launch_path: str | None = None
    #: argv[0] as written in the pod (before `$(VAR)` expansion), for error messages.
    shown_argv0: str = ""
    #: {"uid", "gid", "groups"} to switch to before exec (None: stay the agent's user).
    user: dict[str, Any] | None = None
    log_max_bytes: int = 10 * 1024 * 1024
    #: The FIFO `kubectl attach` writes the container's stdin to (None: no stdin).
    stdin_fifo: str | None = None
    stdin_once: bool = False
    tty: bool = False
    cgroups: list[str] = field(default_factory=list)
    rlimits: dict[str, int] = field(default_factory=dict)
    #: The pod's network namespace (a path under /var/run/netns), None for the host's network.
    netns: str | None = None
    #: Detach other pods' network namespace mounts in the private mount namespace.
    hide_netns: bool = False

    @classmethod
    def load(cls, path: Path) -> ShimSpec:
        """Read it (OSError, ValueError or TypeError if it is missing or malformed)."""
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError(f"{path} holds no JSON object")
        return from_json(cls, data)

    def load_launch(self) -> LaunchSpec:
        """The LaunchSpec `launch_path` names; LaunchUnavailable (with a message for the user)
        if it is gone, e.g. a reboot emptied the memory-backed storage."""
        if not self.launch_path:
            raise LaunchUnavailable("the container's spec names no launch file")
        try:
            return LaunchSpec.load(Path(self.launch_path))
        except (OSError, ValueError, TypeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "unreadable"
            raise LaunchUnavailable(
                f"cannot read the container's launch file {self.launch_path}: {reason}"
            ) from None


class StartError(Exception):
    """The shim could not start the container's command; the message is shown to the user (it
    becomes the exit record's `error`)."""


class LaunchUnavailable(Exception):
    """The launch file of a spec cannot be read; the message is shown to the user."""


@dataclass
class RunState:
    """state.<run>.json: written by the shim once the container's process exists. The source of
    truth for adoption: pids with their /proc start times, so a reused pid is never mistaken
    for them."""

    run: int
    shim_pid: int
    shim_start: int | None
    pid: int
    pgid: int
    pid_start: int | None
    started_at: float

    @classmethod
    def read(cls, path: Path) -> RunState | None:
        """The record in `path`; None if there is none (yet) or it is unreadable."""
        return _read(cls, path)

    def shim_alive(self) -> bool:
        return alive(self.shim_pid, self.shim_start)

    def container_alive(self) -> bool:
        return alive(self.pid, self.pid_start)


@dataclass
class ExitRecord:
    """exit.<run>.json: how a run ended, written by its shim at the end, or instead of starting
    the container (then `error` says why). The agent makes one up, with `reason` and `message`,
    for a run whose shim died without writing it."""

    run: int = 0
    exit_code: int = 0
    signal: int | None = None
    started_at: float = 0.0
    finished_at: float = 0.0
    #: Why the container could not start (None: it started).
    error: str | None = None
    oom_killed: bool = False
    #: Set by the agent only: the terminated reason and message to show instead of the usual.
    reason: str = ""
    message: str = ""

    @classmethod
    def read(cls, path: Path) -> ExitRecord | None:
        """The record in `path`; None if there is none (yet) or it is unreadable."""
        return _read(cls, path)
