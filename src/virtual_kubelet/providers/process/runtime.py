"""What the process provider keeps in memory per pod (`PodRuntime`: tasks, live runs, pending
kills, beside the pod's record on disk), what it learnt about the host at start (`HostSetup`),
and the small process and task helpers its parts share.

No decisions live here: the supervisor, lifecycle and streaming modules act on a PodRuntime.
Signals only ever go to a process whose /proc start time still matches (see shim_protocol).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

from .limits import Cgroups
from .shim_protocol import RunState, start_ticks
from .state import ContainerRecord, Layout, PodRecord
from .status import containers_of

#: terminationGracePeriodSeconds when the pod sets none.
DEFAULT_GRACE = 30.0


@dataclass
class HostSetup:
    """What `ProcessProvider.start` found out about this host, read by the parts that start
    processes."""

    #: volumeMounts are bind mounts in private mount namespaces (else VK_VOLUME_* env vars).
    bind_mounts: bool = False
    cgroups: Cgroups | None = None
    #: `network: pod`: pods get network namespaces of their own.
    pod_networks: bool = False


class PodRuntime:
    """A pod's record plus what only lives in memory: tasks, live runs, pending kills."""

    def __init__(self, layout: Layout, record: PodRecord) -> None:
        self.layout = layout
        self.record = record
        #: The pod's supervising task (see Supervisor.run_pod) and its deletion, once asked for.
        self.task: asyncio.Task[None] | None = None
        self.deletion: asyncio.Task[None] | None = None
        #: No more starts or restarts (being deleted, or past activeDeadlineSeconds).
        self.halted = False
        self.wake = asyncio.Event()
        self.runs: dict[str, RunState] = {}
        self.kill_messages: dict[str, str] = {}
        self.restart_now: set[str] = set()
        #: Running postStart hooks (cancelled when the pod halts) and, per container, why its
        #: last postStart hook failed (until that run's exit is accounted for).
        self.hooks: dict[str, asyncio.Task[tuple[bool, str]]] = {}
        self.hook_errors: dict[str, str] = {}
        #: Kills, probes and deadlines started for the pod (cancelled when it is forgotten).
        self.tasks: set[asyncio.Task[Any]] = set()
        #: Deleted and forgotten: nothing is reported for it any more.
        self.gone = False
        #: Set while the containers' resolved env is known (in the record's pod); cleared when a
        #: restarted agent did not find it in memory-backed storage, until update_pod brings it.
        self.env_ready = asyncio.Event()
        self.env_ready.set()

    def halt(self) -> None:
        """No more starts or restarts; running postStart hooks are abandoned (the kubelet
        cancels a sync that is waiting for one when the pod is to be terminated)."""
        self.halted = True
        self.wake.set()
        for hook in list(self.hooks.values()):
            hook.cancel()

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run `coroutine` as one of the pod's tasks."""
        task = asyncio.create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def container(self, name: str) -> dict[str, Any]:
        """Container `name` of the pod's spec (init or app)."""
        pod = self.record.pod
        for kind in ("initContainers", "containers"):
            for container in containers_of(pod, kind):
                if container.get("name") == name:
                    return container
        raise KeyError(name)

    def policy(self) -> str:
        return str((self.record.pod.get("spec") or {}).get("restartPolicy") or "Always")

    def grace(self) -> float:
        value = (self.record.pod.get("spec") or {}).get("terminationGracePeriodSeconds")
        return float(value) if value is not None else DEFAULT_GRACE

    def deletion_deadline(self) -> float:
        """When a kill for the pod's deletion turns to SIGKILL (from now, if not deleted)."""
        deadline = self.record.deletion_deadline
        return deadline if deadline is not None else time.time() + self.grace()

    def pod_ip(self, node_ip: str) -> str:
        """Where httpGet and tcpSocket handlers connect: the pod's own address, or the node's."""
        return self.record.pod_ip or node_ip


#: Called whenever a pod's status may have changed (records it and tells the core).
Changed = Callable[[PodRuntime], None]


def post_start_handler(container: dict[str, Any], init: bool) -> dict[str, Any] | None:
    """The container's postStart handler, if it has one (init containers cannot)."""
    hook = (container.get("lifecycle") or {}).get("postStart")
    return hook if isinstance(hook, dict) and not init else None


def mark_started(record: ContainerRecord, container: dict[str, Any], init: bool) -> None:
    """A container that is running (its postStart hook, if any, done): started unless a startup
    probe has to say so, ready unless a readiness probe has to (init containers never are)."""
    record.state, record.reason, record.message = "running", "", ""
    record.started = not container.get("startupProbe")
    record.ready = record.started and not container.get("readinessProbe") and not init


def exit_code(returncode: int) -> int:
    """A shell's exit code for an asyncio returncode (-N: killed by signal N)."""
    return 128 - returncode if returncode < 0 else returncode


def signal_group(run: RunState, number: int) -> None:
    """Signal the container's process group, if its first process is still the one we started."""
    if run.container_alive():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(run.pgid, number)


def resolve(future: asyncio.Future[None]) -> None:
    """Complete `future` unless it is already (a reader or writer callback of the loop)."""
    if not future.done():
        future.set_result(None)


async def wait_pid(pid: int, ticks: int | None, timeout: float) -> None:
    """Until process `pid` (started at `ticks`) exits, or `timeout`; works for non-children."""
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        await asyncio.sleep(min(timeout, 0.2))
        return
    try:
        if start_ticks(pid) != ticks:
            return
        loop = asyncio.get_running_loop()
        exited: asyncio.Future[None] = loop.create_future()
        loop.add_reader(fd, resolve, exited)
        try:
            await asyncio.wait_for(exited, timeout)
        except TimeoutError:
            pass
        finally:
            loop.remove_reader(fd)
    finally:
        os.close(fd)


async def finish(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel `tasks` and wait until each has ended, whatever it raised."""
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
