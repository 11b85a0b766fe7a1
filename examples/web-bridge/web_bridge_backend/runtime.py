"""Pods as local processes: each container is `command` + `args` run in its own session, with the
pod's env, its output kept as timestamped lines (the current run and the previous one), restarted
as `restartPolicy` says (with back-off), stopped with SIGTERM then SIGKILL after the grace period.

Init containers run one after the other before the containers. A container without a command
idles (`sleep infinity`), so a Deployment of any image runs. Every change calls `on_change(pod)`,
which the server turns into a pushed status event.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime
import os
import re
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Lines kept per container run; older ones are dropped.
LOG_LINES_KEPT = 20_000
#: Back-off between restarts: 1 s, doubling, at most this.
MAX_BACKOFF_S = 30.0


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def rfc3339(when: datetime.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


class NotFoundError(LookupError):
    """No such pod or container (HTTP 404)."""


class BadRequest(ValueError):
    """A request that can never succeed (HTTP 400)."""


@dataclass
class Run:
    """One run of a container's process."""

    started: datetime.datetime
    process: asyncio.subprocess.Process | None = None
    finished: datetime.datetime | None = None
    exit_code: int | None = None
    reason: str = ""
    #: (time, stream 1=stdout 2=stderr, line with its newline)
    log: list[tuple[datetime.datetime, int, bytes]] = field(default_factory=list)
    #: Set (and replaced) on every new line and when the run ends: log followers wait on it.
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    output_done: asyncio.Event = field(default_factory=asyncio.Event)
    #: Captures the output and waits for the exit (not cancelled with the pod's supervisor).
    watcher: asyncio.Task[None] | None = None

    def append(self, stream: int, line: bytes) -> None:
        self.log.append((now(), stream, line))
        if len(self.log) > LOG_LINES_KEPT:
            del self.log[: len(self.log) - LOG_LINES_KEPT]
        self.wake()

    def wake(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    @property
    def over(self) -> bool:
        return self.finished is not None and self.output_done.is_set()


@dataclass
class Container:
    spec: dict[str, Any]
    init: bool
    current: Run | None = None
    previous: Run | None = None
    restarts: int = 0
    waiting_reason: str = "ContainerCreating"

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "name": self.name,
            "image": self.spec.get("image", ""),
            "imageID": "",
            "restartCount": self.restarts,
            "ready": False,
            "started": False,
        }
        run = self.current
        if run is None:
            status["state"] = {"waiting": {"reason": self.waiting_reason or "ContainerCreating"}}
        elif run.finished is None:
            status.update(ready=True, started=True, containerID=_container_id(run))
            status["state"] = {"running": {"startedAt": rfc3339(run.started)}}
        elif not self.waiting_reason:
            status["containerID"] = _container_id(run)
            status["state"] = {"terminated": _terminated(run)}
        else:
            status["state"] = {"waiting": {"reason": self.waiting_reason}}
            status["lastState"] = {"terminated": _terminated(run)}
        return status


def _container_id(run: Run) -> str:
    pid = run.process.pid if run.process is not None else 0
    return f"process://{pid}"


def _terminated(run: Run) -> dict[str, Any]:
    return {
        "exitCode": run.exit_code if run.exit_code is not None else 0,
        "reason": run.reason or ("Completed" if run.exit_code == 0 else "Error"),
        "startedAt": rfc3339(run.started),
        "finishedAt": rfc3339(run.finished or now()),
    }


class PodRecord:
    """One pod: its spec (as the agent sent it) and its containers' runs."""

    def __init__(self, pod: dict[str, Any], workdir: Path, pod_ip: str | None) -> None:
        self.pod = copy.deepcopy(pod)
        self.pod.pop("status", None)
        self.workdir = workdir
        self.pod_ip = pod_ip
        spec = pod.get("spec") or {}
        self.init = [Container(c, True) for c in spec.get("initContainers") or []]
        for c in self.init:
            c.waiting_reason = "PodInitializing"
        self.containers = [Container(c, False) for c in spec.get("containers") or []]
        self.created = now()
        self.stopping = False
        self.stopped = False
        self.supervisor: asyncio.Task[None] | None = None
        self.stopper: asyncio.Task[None] | None = None
        #: condition type -> (status, when it last changed)
        self.transitions: dict[str, tuple[str, str]] = {}

    @property
    def key(self) -> str:
        meta = self.pod["metadata"]
        return f"{meta['namespace']}/{meta['name']}"

    @property
    def uid(self) -> str:
        return str(self.pod["metadata"].get("uid", ""))

    def container(self, name: str) -> Container:
        for c in [*self.containers, *self.init]:
            if c.name == name:
                return c
        raise NotFoundError(f"container {name!r} not found in pod {self.key}")

    def phase(self) -> str:
        """The kubelet's phase from the containers: init containers first, then all containers
        done (no restart coming) means Succeeded or Failed, any container started means Running."""

        def done(c: Container) -> bool:
            return c.current is not None and c.current.finished is not None and not c.waiting_reason

        def code(c: Container) -> int | None:
            return c.current.exit_code if c.current is not None else None

        if any(done(c) and code(c) != 0 for c in self.init) and (
            self.stopped or self.pod.get("spec", {}).get("restartPolicy") == "Never"
        ):
            return "Failed"
        if self.stopped:
            ran = [c for c in self.containers if c.current is not None]
            ok = ran and len(ran) == len(self.containers) and all(code(c) == 0 for c in ran)
            return "Succeeded" if ok else "Failed"
        if not all(done(c) and code(c) == 0 for c in self.init):
            return "Pending"
        if any(c.current is None for c in self.containers):
            return "Pending"
        if all(done(c) for c in self.containers):
            return "Succeeded" if all(code(c) == 0 for c in self.containers) else "Failed"
        return "Running"

    def status(self) -> dict[str, Any]:
        phase = self.phase()
        ready = phase == "Running" and all(
            c.current is not None and c.current.finished is None for c in self.containers
        )
        initialized = all(
            c.current is not None and c.current.exit_code == 0 and c.waiting_reason == ""
            for c in self.init
        )

        def condition(kind: str, ok: bool) -> dict[str, Any]:
            value = "True" if ok else "False"
            before = self.transitions.get(kind)
            if before is None or before[0] != value:
                self.transitions[kind] = before = (value, rfc3339(now()))
            return {"type": kind, "status": value, "lastTransitionTime": before[1]}

        status: dict[str, Any] = {
            "phase": phase,
            "startTime": rfc3339(self.created),
            "conditions": [
                condition("PodScheduled", True),
                condition("Initialized", initialized),
                condition("ContainersReady", ready),
                condition("Ready", ready),
            ],
            "containerStatuses": [c.status() for c in self.containers],
        }
        if self.init:
            status["initContainerStatuses"] = [c.status() for c in self.init]
        if self.pod_ip:
            status["podIP"] = self.pod_ip
            status["podIPs"] = [{"ip": self.pod_ip}]
        return status

    def with_status(self) -> dict[str, Any]:
        pod = copy.deepcopy(self.pod)
        pod["status"] = self.status()
        return pod

    def identity_and_status(self) -> dict[str, Any]:
        """What a status event carries: who the pod is, and its status (not the spec, whose env
        may hold Secrets and which the agent already has)."""
        meta = self.pod["metadata"]
        identity = {k: meta[k] for k in ("namespace", "name", "uid") if k in meta}
        return {"metadata": identity, "status": self.status()}


_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: dict[str, str]) -> str:
    """The kubelet's `$(VAR)` expansion of command and args (`$$` is a literal `$`)."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _VAR.sub(replace, text)


def container_env(spec: dict[str, Any]) -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/tmp"}
    for item in spec.get("env") or []:
        env[str(item["name"])] = str(item.get("value", ""))
    return env


def container_argv(spec: dict[str, Any]) -> list[str]:
    env = container_env(spec)
    argv = [expand(str(a), env) for a in [*(spec.get("command") or []), *(spec.get("args") or [])]]
    return argv or ["sleep", "infinity"]


class Runtime:
    """Every pod of the backend, keyed by `namespace/name`."""

    def __init__(
        self, workdir: Path, on_change: Callable[[PodRecord], None], pod_ip: str | None = None
    ) -> None:
        self.workdir = workdir
        self.pods: dict[str, PodRecord] = {}
        self.on_change = on_change
        self.on_removed: Callable[[PodRecord], None] = lambda record: None
        self.pod_ip = pod_ip

    def get(self, namespace: str, name: str) -> PodRecord:
        record = self.pods.get(f"{namespace}/{name}")
        if record is None:
            raise NotFoundError(f"pod {namespace}/{name} not found")
        return record

    # --- lifecycle ------------------------------------------------------------------------------

    def create(self, pod: dict[str, Any]) -> PodRecord:
        meta = pod.get("metadata") or {}
        if not meta.get("namespace") or not meta.get("name"):
            raise BadRequest("the pod has no metadata.namespace or metadata.name")
        key = f"{meta['namespace']}/{meta['name']}"
        existing = self.pods.get(key)
        if existing is not None and existing.uid == str(meta.get("uid", "")):
            return existing  # a retried create: nothing to do
        if existing is not None:
            raise BadRequest(f"pod {key} exists with another uid")
        workdir = self.workdir / str(meta.get("uid") or meta["name"])
        workdir.mkdir(parents=True, exist_ok=True)
        record = PodRecord(pod, workdir, self.pod_ip)
        self.pods[key] = record
        record.supervisor = asyncio.create_task(self._supervise(record))
        self.on_change(record)
        return record

    def update(self, pod: dict[str, Any]) -> None:
        meta = pod.get("metadata") or {}
        record = self.get(str(meta.get("namespace")), str(meta.get("name")))
        for part in ("labels", "annotations"):
            record.pod["metadata"][part] = copy.deepcopy(meta.get(part) or {})
        self.on_change(record)

    async def delete(self, pod: dict[str, Any]) -> None:
        meta = pod.get("metadata") or {}
        record = self.get(str(meta.get("namespace")), str(meta.get("name")))
        if record.stopping:
            return
        record.stopping = True
        grace = meta.get("deletionGracePeriodSeconds")
        if grace is None:
            grace = record.pod.get("spec", {}).get("terminationGracePeriodSeconds", 30)
        record.stopper = asyncio.create_task(self._stop(record, float(grace)))

    async def _stop(self, record: PodRecord, grace: float) -> None:
        if record.supervisor is not None:
            record.supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await record.supervisor
        runs = [
            c.current
            for c in [*record.init, *record.containers]
            if c.current is not None and c.current.finished is None
        ]
        for run in runs:
            _signal(run, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await asyncio.gather(*(_wait(run) for run in runs))
        for run in runs:
            if run.finished is None:
                _signal(run, signal.SIGKILL)
                await _wait(run)
        for c in [*record.init, *record.containers]:
            c.waiting_reason = ""
        record.stopped = True
        self.on_change(record)
        if self.pods.get(record.key) is record:
            del self.pods[record.key]
        self.on_removed(record)

    async def shutdown(self) -> None:
        """Stop every pod at once (the backend is exiting)."""
        await asyncio.gather(
            *(self._stop(record, 2.0) for record in list(self.pods.values())),
            return_exceptions=True,
        )

    # --- running containers ---------------------------------------------------------------------

    async def _supervise(self, record: PodRecord) -> None:
        policy = record.pod.get("spec", {}).get("restartPolicy", "Always")
        for container in record.init:
            while True:
                await self._run_once(record, container)
                assert container.current is not None
                if container.current.exit_code == 0:
                    break
                if policy == "Never":
                    container.waiting_reason = ""
                    self.on_change(record)
                    return
                await self._back_off(record, container)
        for container in record.containers:
            container.waiting_reason = "ContainerCreating"
        await asyncio.gather(*(self._keep(record, c, policy) for c in record.containers))

    async def _keep(self, record: PodRecord, container: Container, policy: str) -> None:
        while True:
            await self._run_once(record, container)
            assert container.current is not None
            code = container.current.exit_code
            if policy == "Never" or (policy == "OnFailure" and code == 0):
                container.waiting_reason = ""
                self.on_change(record)
                return
            await self._back_off(record, container)

    async def _back_off(self, record: PodRecord, container: Container) -> None:
        container.waiting_reason = "CrashLoopBackOff"
        self.on_change(record)
        await asyncio.sleep(min(2.0**container.restarts, MAX_BACKOFF_S))
        container.restarts += 1

    async def _run_once(self, record: PodRecord, container: Container) -> None:
        if container.current is not None:
            container.previous = container.current
        run = Run(started=now())
        container.current = run
        spec = container.spec
        try:
            run.process = await asyncio.create_subprocess_exec(
                *container_argv(spec),
                env=container_env(spec),
                cwd=spec.get("workingDir") or record.workdir,
                stdin=asyncio.subprocess.PIPE if spec.get("stdin") else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            run.append(2, f"cannot start {container_argv(spec)[0]}: {exc}\n".encode())
            run.finished, run.exit_code, run.reason = now(), 128, "StartError"
            run.output_done.set()
            run.wake()
            container.waiting_reason = ""
            self.on_change(record)
            return
        container.waiting_reason = ""
        self.on_change(record)
        run.watcher = asyncio.create_task(_watch(run))
        # Shielded: a pod being stopped cancels its supervisor, but its output is still kept.
        await asyncio.shield(run.watcher)


async def _watch(run: Run) -> None:
    """Keep the run's output until it exits (and a moment more for what is still in the pipes)."""
    assert run.process is not None
    assert run.process.stdout is not None
    assert run.process.stderr is not None
    outputs = asyncio.gather(
        _capture(run, run.process.stdout, 1), _capture(run, run.process.stderr, 2)
    )
    code = await run.process.wait()
    try:
        async with asyncio.timeout(2.0):  # a child that left the session may hold a pipe
            await outputs
    except TimeoutError:
        outputs.cancel()
    run.finished = now()
    run.exit_code = code if code >= 0 else 128 - code
    run.output_done.set()
    run.wake()


async def _wait(run: Run) -> None:
    if run.watcher is not None:
        await asyncio.shield(run.watcher)  # a caller's timeout must not cancel the watcher


def _signal(run: Run, sig: signal.Signals) -> None:
    if run.process is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(run.process.pid, sig)


async def _capture(run: Run, stream: asyncio.StreamReader, number: int) -> None:
    """Split a process's output into timestamped lines (a last line without newline gets one)."""
    partial = b""
    while chunk := await stream.read(65536):
        lines = (partial + chunk).split(b"\n")
        partial = lines.pop()
        for line in lines:
            run.append(number, line + b"\n")
    if partial:
        run.append(number, partial + b"\n")
