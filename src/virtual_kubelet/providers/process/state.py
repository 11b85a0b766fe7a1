"""The process provider's on-disk records: what a restarted agent needs to adopt running pods.

Layout under `<state dir>/process/<pod uid>/` (directories 0700, files 0600: the pod record and
the shim specs carry the containers' resolved env, which may hold secrets):

    pod.json                      the pod as given and each container's record (PodRecord)
    <container>/spec.<run>.json   what the shim of run <run> runs (argv, env, cwd, mounts, ...)
    <container>/state.<run>.json  written by that shim at start: shim and container pid, pgid and
                                  /proc start times (the source of truth for adoption)
    <container>/exit.<run>.json   written by that shim at the end: exit code, signal, times
    <container>/<run>.log[.1]     the run's log in CRI format (the current and the previous run
                                  are kept, older ones deleted)
    <container>/shim.log          the shims' own diagnostics
    <container>/termination-log   VK_TERMINATION_MESSAGE_PATH (unless it maps into a volume)
    <container>/stdin             the stdin FIFO of containers with `stdin: true`
    <container>/work/             the default working directory

Records are replaced atomically. This module only reads and writes files; it never starts or
signals a process.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .shim import alive, write_json

log = logging.getLogger(__name__)

RECORD_VERSION = 1


@dataclass
class RunInfo:
    """One started run of a container, as its shim recorded it."""

    run: int
    shim_pid: int
    shim_start: int | None
    pid: int
    pgid: int
    pid_start: int | None
    started_at: float

    def shim_alive(self) -> bool:
        return alive(self.shim_pid, self.shim_start)

    def container_alive(self) -> bool:
        return alive(self.pid, self.pid_start)


@dataclass
class ContainerRecord:
    name: str
    init: bool = False
    image: str = ""
    #: The latest run number (1, 2, ...); 0 before the first start.
    run: int = 0
    restart_count: int = 0
    #: "waiting", "running" or "terminated", with the kubelet's meaning.
    state: str = "waiting"
    reason: str = "ContainerCreating"
    message: str = ""
    started_at: float | None = None
    #: state.terminated (API shape) while state == "terminated".
    terminated: dict[str, Any] | None = None
    #: lastState.terminated and the run it describes (what `logs --previous` shows).
    last_terminated: dict[str, Any] | None = None
    last_run: int = 0
    #: The run whose exit has been accounted for (so an adopted exit is not counted twice).
    processed_run: int = 0
    ready: bool = False
    started: bool = False
    #: The current back-off delay and when it ends (epoch seconds).
    backoff: float = 0.0
    backoff_until: float | None = None
    container_id: str = ""
    cgroups: list[str] = field(default_factory=list)
    #: The current run's shim and container (a copy of its state.<run>.json, for people and
    #: tools reading the record; adoption trusts the shim's own file) and its log file.
    process: dict[str, Any] | None = None
    log_path: str = ""


@dataclass
class PodRecord:
    pod: dict[str, Any]
    start_time: str
    containers: dict[str, ContainerRecord]
    init_done: bool = False
    #: A phase decided for the whole pod (Failed init, deadline exceeded, deleted).
    phase: str | None = None
    reason: str | None = None
    message: str | None = None
    deleting: bool = False
    #: When a deletion's grace period ends (epoch seconds).
    deletion_deadline: float | None = None
    #: Condition type -> [status, lastTransitionTime].
    conditions: dict[str, list[str]] = field(default_factory=dict)
    #: With `network: pod`: the pod's own address, network namespace and host veth (None: the
    #: pod uses the host's network). Kept so a restarted agent adopts the same address.
    pod_ip: str | None = None
    netns: str | None = None
    veth: str | None = None
    version: int = RECORD_VERSION

    @property
    def uid(self) -> str:
        return str(self.pod["metadata"]["uid"])

    @property
    def key(self) -> str:
        meta = self.pod["metadata"]
        return f"{meta['namespace']}/{meta['name']}"


def _fields(cls: type[Any], data: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in data.items() if k in names}


class Layout:
    """Paths of one pod's files."""

    def __init__(self, root: Path, uid: str) -> None:
        if not uid or "/" in uid or uid in (".", ".."):
            raise ValueError(f"invalid pod uid {uid!r}")
        self.dir = root / uid

    @property
    def record(self) -> Path:
        return self.dir / "pod.json"

    def container(self, name: str) -> Path:
        return self.dir / name

    def spec(self, name: str, run: int) -> Path:
        return self.dir / name / f"spec.{run}.json"

    def state(self, name: str, run: int) -> Path:
        return self.dir / name / f"state.{run}.json"

    def exit(self, name: str, run: int) -> Path:
        return self.dir / name / f"exit.{run}.json"

    def log(self, name: str, run: int) -> Path:
        return self.dir / name / f"{run}.log"

    def shim_log(self, name: str) -> Path:
        return self.dir / name / "shim.log"

    def termination(self, name: str) -> Path:
        return self.dir / name / "termination-log"

    def fifo(self, name: str) -> Path:
        return self.dir / name / "stdin"

    def workdir(self, name: str) -> Path:
        return self.dir / name / "work"

    def volume(self, name: str) -> Path:
        """Stand-in directory for a volume the core did not materialise."""
        return self.dir / "volumes" / name

    def create(self, containers: list[str]) -> None:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        for name in containers:
            self.container(name).mkdir(mode=0o700, exist_ok=True)

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def forget_runs_before(self, name: str, run: int) -> None:
        """Delete the files of runs older than `run` (their logs are no longer reachable)."""
        for path in self.container(name).iterdir():
            found = _run_of(path.name)
            if found is not None and found < run:
                path.unlink(missing_ok=True)


def _run_of(filename: str) -> int | None:
    """The run a file belongs to: `<run>.log`, `<run>.log.1`, `spec|state|exit.<run>.json`."""
    parts = filename.split(".")
    if len(parts) >= 2 and parts[0].isdigit() and parts[1] == "log":
        return int(parts[0])
    if len(parts) == 3 and parts[0] in ("spec", "state", "exit") and parts[1].isdigit():
        return int(parts[1]) if parts[2] == "json" else None
    return None


def save(layout: Layout, record: PodRecord) -> None:
    write_json(layout.record, dataclasses.asdict(record))


def load_all(root: Path) -> list[tuple[Layout, PodRecord]]:
    """Every pod record under `root`; unreadable ones are logged and skipped."""
    found: list[tuple[Layout, PodRecord]] = []
    if not root.is_dir():
        return found
    for entry in sorted(root.iterdir()):
        path = entry / "pod.json"
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text())
            containers = {
                name: ContainerRecord(**_fields(ContainerRecord, value))
                for name, value in data["containers"].items()
            }
            data["containers"] = containers
            record = PodRecord(**_fields(PodRecord, data))
            found.append((Layout(root, record.uid), record))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("process provider: cannot read pod record %s: %s", path, exc)
    return found


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_run(layout: Layout, name: str, run: int) -> RunInfo | None:
    data = read_json(layout.state(name, run))
    if data is None:
        return None
    try:
        return RunInfo(**_fields(RunInfo, data))
    except TypeError:
        return None


def ensure_private(path: Path) -> None:
    """`path` exists and only its owner can enter it."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
