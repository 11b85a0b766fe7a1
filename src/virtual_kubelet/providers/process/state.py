"""The process provider's records: what a restarted agent needs to adopt running pods.

No resolved env value, and nothing derived from one, is ever written under the state directory:
env values may come from Secrets. Those live in memory-backed storage next to the pod's volumes
(the context's `pods_dir`, a tmpfs unless the agent had to fall back to a disk), which survives
an agent restart but not a reboot.

Under `<pods dir>/<pod uid>/process/` (directories 0700, files 0600):

    env.json                      the resolved `env` of every container, by container name
    <container>/launch.<run>.json argv, env and mounts of run <run> (`$(VAR)` expanded, so derived
                                  from env values), merged by its shim into spec.<run>.json

Under `<state dir>/process/<pod uid>/` (directories 0700, files 0600):

    pod.json                      the pod as given, each container's `env` reduced to the names,
                                  and each container's record (PodRecord)
    <container>/spec.<run>.json   what the shim of run <run> runs, but for launch.<run>.json: cwd,
                                  user, log and record paths, stdin, cgroups, rlimits, netns
    <container>/state.<run>.json  written by that shim at start: shim and container pid, pgid and
                                  /proc start times (the source of truth for adoption)
    <container>/exit.<run>.json   written by that shim at the end: exit code, signal, times
    <container>/<run>.log[.1]     the run's log in CRI format (the current and the previous run
                                  are kept, older ones deleted)
    <container>/shim.log          the shims' own diagnostics
    <container>/termination-log   VK_TERMINATION_MESSAGE_PATH (unless it maps into a volume)
    <container>/stdin             the stdin FIFO of containers with `stdin: true`
    <container>/work/             the default working directory

The shim's own files (spec, launch, state and exit records) are typed in `shim_protocol.py`.
Records are replaced atomically. This module only reads and writes files; it never starts or
signals a process, and never logs a file's contents.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .shim_protocol import LaunchSpec, read_json, write_json, write_record

log = logging.getLogger(__name__)

RECORD_VERSION = 1


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
    #: The GPUs the current run holds (gpus.py), kept so a restarted agent does not give them
    #: to another container.
    gpus: list[str] = field(default_factory=list)


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

    @classmethod
    def new(cls, pod: dict[str, Any], start_time: str) -> PodRecord:
        """The record of a pod just created (`pod` is kept, not copied): every container
        waiting, the app containers behind the init containers."""
        spec = pod.get("spec") or {}
        init = [c for c in spec.get("initContainers") or [] if isinstance(c, dict)]
        app = [c for c in spec.get("containers") or [] if isinstance(c, dict)]
        waiting = "PodInitializing" if init else "ContainerCreating"
        containers = {
            str(c["name"]): ContainerRecord(
                name=str(c["name"]),
                init=True,
                image=str(c.get("image") or ""),
                reason="PodInitializing",
            )
            for c in init
        }
        for c in app:
            name = str(c["name"])
            containers[name] = ContainerRecord(
                name=name, image=str(c.get("image") or ""), reason=waiting
            )
        return cls(pod=pod, start_time=start_time, containers=containers, init_done=not init)

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
    """Paths of one pod's files: `dir` under the state directory, `private` in the memory-backed
    pods directory (the values that must not reach a disk)."""

    def __init__(self, root: Path, uid: str, pods_dir: Path) -> None:
        if not uid or "/" in uid or uid in (".", ".."):
            raise ValueError(f"invalid pod uid {uid!r}")
        self.dir = root / uid
        self.pods_dir = pods_dir
        self.private = pods_dir / uid / "process"

    @property
    def record(self) -> Path:
        return self.dir / "pod.json"

    @property
    def env(self) -> Path:
        return self.private / "env.json"

    def launch(self, name: str, run: int) -> Path:
        return self.private / name / f"launch.{run}.json"

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
        self.create_private()
        for name in containers:
            self.container(name).mkdir(mode=0o700, exist_ok=True)
            (self.private / name).mkdir(mode=0o700, exist_ok=True)

    def create_private(self) -> None:
        # The same modes as the core's volume writer, whichever of the two comes first.
        if not self.pods_dir.is_dir():
            self.pods_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.private.parent.mkdir(mode=0o750, exist_ok=True)
        self.private.mkdir(mode=0o700, exist_ok=True)

    def remove(self) -> None:
        # The values first: an agent dying in between finds the record and removes the rest.
        shutil.rmtree(self.private, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.private.parent.rmdir()  # unless the core's volumes are still there
        shutil.rmtree(self.dir, ignore_errors=True)

    def forget_runs_before(self, name: str, run: int) -> None:
        """Delete the files of runs older than `run` (their logs are no longer reachable)."""
        for directory in (self.container(name), self.private / name):
            with contextlib.suppress(FileNotFoundError):
                for path in directory.iterdir():
                    found = _run_of(path.name)
                    if found is not None and found < run:
                        path.unlink(missing_ok=True)


def _run_of(filename: str) -> int | None:
    """The run a file belongs to: `<run>.log`, `<run>.log.1`, `<kind>.<run>.json` (RUN_FILES)."""
    parts = filename.split(".")
    if len(parts) >= 2 and parts[0].isdigit() and parts[1] == "log":
        return int(parts[0])
    if len(parts) == 3 and parts[0] in RUN_FILES and parts[1].isdigit():
        return int(parts[1]) if parts[2] == "json" else None
    return None


RUN_FILES = ("spec", "state", "exit", "launch")
CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")


def _containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod.get("spec") or {}
    return [c for kind in CONTAINER_LISTS for c in spec.get(kind) or [] if isinstance(c, dict)]


def without_env_values(pod: dict[str, Any]) -> dict[str, Any]:
    """A copy of `pod` whose containers' env entries keep their names only (what pod.json
    holds)."""
    spec = pod.get("spec") or {}
    copied = {**pod, "spec": {**spec}}
    for kind in CONTAINER_LISTS:
        if isinstance(spec.get(kind), list):
            copied["spec"][kind] = [
                {**c, "env": [{"name": e.get("name")} for e in c["env"] if isinstance(e, dict)]}
                if isinstance(c, dict) and isinstance(c.get("env"), list)
                else c
                for c in spec[kind]
            ]
    return copied


def save(layout: Layout, record: PodRecord) -> None:
    data = dataclasses.asdict(record)
    data["pod"] = without_env_values(record.pod)
    write_json(layout.record, data)


def save_env(layout: Layout, pod: dict[str, Any]) -> None:
    """Keep the resolved env of `pod`'s containers in the memory-backed pods directory."""
    layout.create_private()
    env = {str(c.get("name")): c.get("env") or [] for c in _containers(pod)}
    write_json(layout.env, {"containers": env})


def save_launch(layout: Layout, name: str, run: int, launch: LaunchSpec) -> Path:
    """Keep what run `run` of container `name` executes (argv, env, mounts) in the memory-backed
    pods directory; its path, for the shim's spec."""
    path = layout.launch(name, run)
    if not path.parent.is_dir():  # emptied by a reboot since the pod was created
        layout.create_private()
        path.parent.mkdir(mode=0o700, exist_ok=True)
    write_record(path, launch)
    return path


def restore_env(layout: Layout, pod: dict[str, Any]) -> bool:
    """Put the env values kept by `save_env` back into `pod` (loaded from pod.json); False if
    they are gone (the machine restarted, the pods directory moved) or incomplete."""
    data = read_json(layout.env)
    kept = (data or {}).get("containers")
    if not isinstance(kept, dict):
        return False
    containers = _containers(pod)
    if any(not isinstance(kept.get(str(c.get("name"))), list) for c in containers):
        return False
    for container in containers:
        env = kept[str(container.get("name"))]
        if env:
            container["env"] = env
        else:
            container.pop("env", None)
    return True


def memory_backed(path: Path) -> bool:
    """Whether `path` (or where it would be created) is on a tmpfs, by the longest mount point
    that contains it."""
    target = os.path.realpath(path)
    best, kind = "", ""
    try:
        with open("/proc/self/mounts") as mounts:
            for line in mounts:
                fields = line.split()
                point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), fields[1])
                inside = target == point or target.startswith(point.rstrip("/") + "/")
                if inside and len(point) >= len(best):
                    best, kind = point, fields[2]
    except (OSError, IndexError):
        return False
    return kind in ("tmpfs", "ramfs")


def load_all(root: Path, pods_dir: Path) -> list[tuple[Layout, PodRecord]]:
    """Every pod record under `root` (env values not restored: see `restore_env`); unreadable
    ones are logged and skipped."""
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
            found.append((Layout(root, record.uid, pods_dir), record))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("process provider: cannot read pod record %s: %s", path, exc)
    return found


def ensure_private(path: Path) -> None:
    """`path` exists and only its owner can enter it."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
