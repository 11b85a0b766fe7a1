"""What happens to a running container besides its process: the postStart hook and the probes
while it runs, kills (preStop hook, SIGTERM, SIGKILL at a deadline) for failed probes and hooks,
`activeDeadlineSeconds`, and the pod's termination and clean-up when it is deleted.

Status changes go through the `changed` callback; starting and accounting for runs is the
supervisor's job. Signals go only to processes whose start time still matches (RunState).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ...sdk import InvalidInput
from .limits import Cgroups
from .network import remove_pod_network
from .probes import Handlers, pod_desc, probe_loop
from .runtime import (
    Changed,
    PodRuntime,
    finish,
    mark_started,
    post_start_handler,
    signal_group,
    wait_pid,
)
from .shim_protocol import RunState
from .status import TERMINAL, containers_of, timestamp

log = logging.getLogger(__name__)

#: How long past its deletion deadline a pod's supervisor may take to account for the exits
#: before the deletion gives up on it (kills what is left and cancels the supervisor).
TERMINATE_SLACK = 10.0

#: How probes and hooks run a command in one container: (argv, timeout) -> (exit code, output).
ExecFn = Callable[[list[str], float | None], Awaitable[tuple[int, bytes]]]
#: The same for any container: (pod, container name, argv, timeout) -> (exit code, output).
ExecCapture = Callable[[PodRuntime, str, list[str], float | None], Awaitable[tuple[int, bytes]]]


class Lifecycle:
    """Hooks, probes, kills and deletions of the pods' containers."""

    def __init__(
        self,
        handlers: Handlers,
        node_ip: str,
        changed: Changed,
        exec_capture: ExecCapture,
    ) -> None:
        self.handlers = handlers
        self.node_ip = node_ip
        self.changed = changed
        self._exec_capture = exec_capture

    def exec_fn(self, runtime: PodRuntime, name: str) -> ExecFn:
        """How probes and hooks run a command in container `name`."""

        async def run(argv: list[str], timeout: float | None) -> tuple[int, bytes]:
            return await self._exec_capture(runtime, name, argv, timeout)

        return run

    # --- while a container runs -------------------------------------------------------------------

    async def watch(self, runtime: PodRuntime, name: str, run: RunState, post_start: bool) -> None:
        """An app container's run from its start to its exit (the caller cancels this then):
        its postStart hook (on fresh starts), then its probes."""
        container = runtime.container(name)
        hook = post_start_handler(container, False) if post_start else None
        if hook is not None:
            if runtime.halted:
                return
            outcome = await self._run_post_start(runtime, name, hook)
            if outcome is None or runtime.runs.get(name) is not run:
                return  # abandoned: the pod halts, or the run ended meanwhile
            ok, message = outcome
            if not ok:
                self._post_start_failed(runtime, name, run, message)
                return
            mark_started(runtime.record.containers[name], container, False)
            self.changed(runtime)
        probes = self._start_probes(runtime, name, run)
        try:
            if probes:
                await asyncio.wait(probes)
        finally:
            await finish(probes)

    async def _run_post_start(
        self, runtime: PodRuntime, name: str, hook: dict[str, Any]
    ) -> tuple[bool, str] | None:
        """Run the postStart hook to its end; None if it was abandoned (see `PodRuntime.halt`)."""
        task = asyncio.create_task(
            self.handlers.hook(
                hook,
                runtime.container(name),
                self.exec_fn(runtime, name),
                pod=pod_desc(runtime.record.pod),
                pod_ip=runtime.pod_ip(self.node_ip),
            )
        )
        runtime.hooks[name] = task
        try:
            await asyncio.wait([task])
        finally:
            if runtime.hooks.get(name) is task:
                del runtime.hooks[name]
            if not task.done():  # this watch is cancelled: the run ended
                await finish([task])
        return None if task.cancelled() else task.result()

    def _post_start_failed(
        self, runtime: PodRuntime, name: str, run: RunState, message: str
    ) -> None:
        """As the kubelet's startContainer: kill the container (preStop hook and grace period as
        for any kill), then its restartPolicy applies. The kubelet's waiting reason
        PostStartHookError carries the message; so does the terminated state here (the
        kubelet's event, FailedPostStartHook, has no place outside the status)."""
        if runtime.halted or name in runtime.kill_messages:
            return  # being killed already
        # The message may quote the hook's output: not logged, as the kubelet keeps it out of
        # its event.
        log.info(
            "process provider: postStart hook of container %s in %s failed; killing it",
            name,
            runtime.record.key,
        )
        runtime.kill_messages[name] = f"PostStartHookError: {message}"
        runtime.hook_errors[name] = message
        runtime.spawn(self.kill(runtime, name, run, time.time() + runtime.grace()))

    def _start_probes(
        self, runtime: PodRuntime, name: str, run: RunState
    ) -> list[asyncio.Task[None]]:
        container = runtime.container(name)
        record = runtime.record.containers[name]
        startup = container.get("startupProbe")
        readiness = container.get("readinessProbe")
        liveness = container.get("livenessProbe")
        started = asyncio.Event()
        if record.started or not startup:
            started.set()
        exec_fn = self.exec_fn(runtime, name)

        def check(probe: dict[str, Any]) -> Callable[[float], Awaitable[tuple[bool, str]]]:
            async def run_check(timeout: float) -> tuple[bool, str]:
                return await self.handlers.run(
                    probe, container, timeout, exec_fn, pod_ip=runtime.pod_ip(self.node_ip)
                )

            return run_check

        def current() -> bool:
            return runtime.runs.get(name) is run

        def on_startup(ok: bool, message: str) -> None:
            if not current():
                return
            if ok:
                record.started = True
                if not readiness:
                    record.ready = True
                started.set()
                self.changed(runtime)
            else:
                self._probe_kill(runtime, name, run, startup or {}, "startup")

        def on_readiness(ok: bool, message: str) -> None:
            if current() and record.started and record.ready != ok:
                record.ready = ok
                self.changed(runtime)

        def on_liveness(ok: bool, message: str) -> None:
            if current() and not ok:
                self._probe_kill(runtime, name, run, liveness or {}, "liveness")

        async def after_start(probe: dict[str, Any], report: Callable[[bool, str], None]) -> None:
            await started.wait()
            await probe_loop(probe, check(probe), run.started_at, report)

        tasks: list[asyncio.Task[None]] = []
        if startup and not record.started:
            tasks.append(
                asyncio.create_task(
                    probe_loop(
                        startup, check(startup), run.started_at, on_startup, until_success=True
                    )
                )
            )
        if readiness:
            tasks.append(asyncio.create_task(after_start(readiness, on_readiness)))
        if liveness:
            tasks.append(asyncio.create_task(after_start(liveness, on_liveness)))
        return tasks

    def _probe_kill(
        self, runtime: PodRuntime, name: str, run: RunState, probe: dict[str, Any], kind: str
    ) -> None:
        if name in runtime.kill_messages or runtime.halted:
            return
        message = f"Container {name} failed {kind} probe, will be restarted"
        log.info("process provider: pod %s: %s", runtime.record.key, message)
        runtime.kill_messages[name] = message
        grace = probe.get("terminationGracePeriodSeconds")
        seconds = float(grace) if grace is not None else runtime.grace()
        runtime.spawn(self.kill(runtime, name, run, time.time() + seconds))

    # --- kills ------------------------------------------------------------------------------------

    async def kill(self, runtime: PodRuntime, name: str, run: RunState, deadline: float) -> None:
        """preStop hook, SIGTERM to the process group, SIGKILL once `deadline` passed."""
        container = runtime.container(name)
        pre_stop = (container.get("lifecycle") or {}).get("preStop")
        if isinstance(pre_stop, dict) and run.container_alive():
            remaining = deadline - time.time()
            if remaining > 0:
                try:
                    async with asyncio.timeout(remaining):
                        ok, _ = await self.handlers.run(
                            pre_stop,
                            container,
                            remaining,
                            self.exec_fn(runtime, name),
                            pod_ip=runtime.pod_ip(self.node_ip),
                        )
                    if not ok:
                        log.info(
                            "process provider: preStop hook of %s in %s failed",
                            name,
                            runtime.record.key,
                        )
                except TimeoutError:
                    log.info(
                        "process provider: preStop hook of %s in %s did not finish in time",
                        name,
                        runtime.record.key,
                    )
                except InvalidInput:
                    pass  # the container exited meanwhile
        signal_group(run, signal.SIGTERM)
        while run.container_alive() and (remaining := deadline - time.time()) > 0:
            await wait_pid(run.pid, run.pid_start, min(remaining, 1.0))
        if run.container_alive():
            signal_group(run, signal.SIGKILL)

    async def kill_all(self, runtime: PodRuntime, deadline: float) -> None:
        """Kill every running container of the pod (see `kill`), all at once."""
        await asyncio.gather(
            *(self.kill(runtime, name, run, deadline) for name, run in list(runtime.runs.items())),
            return_exceptions=True,
        )

    async def enforce_deadline(self, runtime: PodRuntime, seconds: float) -> None:
        """activeDeadlineSeconds: past it, the pod is killed and Failed (DeadlineExceeded)."""
        record = runtime.record
        started = _epoch(record.start_time)
        await asyncio.sleep(max(started + seconds - time.time(), 0))
        if record.phase is not None or runtime.halted:
            return
        record.phase, record.reason = "Failed", "DeadlineExceeded"
        record.message = "Pod was active on the node longer than the specified deadline"
        runtime.halt()
        self.changed(runtime)
        await self.kill_all(runtime, time.time() + runtime.grace())

    # --- deletion ---------------------------------------------------------------------------------

    async def terminate(self, runtime: PodRuntime) -> None:
        """Graceful deletion up to the final status: no more starts, every container killed by
        the deletion deadline, their exits accounted for by the pod's supervisor (which is
        cancelled if it has not finished TERMINATE_SLACK seconds past the deadline), and the
        pod's phase settled. Forgetting the pod and removing its files is the caller's."""
        record = runtime.record
        runtime.halt()
        deadline = runtime.deletion_deadline()
        await self.kill_all(runtime, deadline)
        if runtime.task is not None:
            try:
                await asyncio.wait_for(
                    asyncio.shield(runtime.task), max(deadline - time.time(), 0) + TERMINATE_SLACK
                )
            except TimeoutError:
                log.warning(
                    "process provider: %s did not stop in time; killing what is left of it",
                    record.key,
                )
                await self._give_up(runtime, runtime.task)
            except Exception:
                log.exception("process provider: supervising %s failed", record.key)
        app = [record.containers[str(c["name"])] for c in containers_of(record.pod, "containers")]
        for container in record.containers.values():
            if container.state == "waiting" and container.last_terminated is not None:
                container.state, container.terminated = "terminated", container.last_terminated
                container.reason = container.message = ""
            container.ready = container.started = False
        if record.phase not in TERMINAL:
            failed = any(
                c.state == "terminated" and (c.terminated or {}).get("exitCode") != 0 for c in app
            )
            record.phase = "Failed" if failed else "Succeeded"

    async def _give_up(self, runtime: PodRuntime, supervisor: asyncio.Task[None]) -> None:
        """The supervisor still waits for exits its shims do not report (a shim stopped or
        stuck): kill those shims and what is left of their containers, cancel the supervisor,
        and report each such run as the kubelet reports a container it lost track of."""
        for run in runtime.runs.values():
            if run.shim_alive():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(run.shim_pid, signal.SIGKILL)
            signal_group(run, signal.SIGKILL)
        await finish([supervisor])
        now = time.time()
        for name, run in list(runtime.runs.items()):
            container = runtime.record.containers[name]
            container.state, container.reason, container.message = "terminated", "", ""
            container.process = None
            container.terminated = {
                "exitCode": 137,
                "reason": "ContainerStatusUnknown",
                "message": "the container's shim did not report its exit in time after the "
                "deletion; it was killed",
                "startedAt": timestamp(run.started_at),
                "finishedAt": timestamp(now),
            }
        runtime.runs.clear()


def clean_up(runtime: PodRuntime, cgroups: Cgroups | None) -> None:
    """Remove what a deleted pod leaves on the host: network, files, cgroups (blocking: run it
    in a thread)."""
    record = runtime.record
    if record.netns and record.veth:
        # Before the record goes: an agent dying in between finds the pod and removes it again.
        remove_pod_network(record.netns, record.veth)
    runtime.layout.remove()
    if cgroups is not None:
        cgroups.remove_pod(record.uid)


def _epoch(stamp: str) -> float:
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
