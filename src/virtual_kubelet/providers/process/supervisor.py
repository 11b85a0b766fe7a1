"""The supervisor of each pod: init containers one after another, then every app container in a
loop of its own: back off, start a run through a shim, wait for the shim's exit record, account
for the exit, and restart per restartPolicy (see restarts.py).

All state that matters is in the pod's record and the shims' files, so a restarted agent resumes
where the old one stopped: `adopt` takes over the runs whose shims still live, and a run whose
shim died meanwhile is accounted for from its files. Runs are started by shim_start.py (files
prepared in threads, a shim too slow to start killed before the next run); nothing here blocks
the event loop on a process.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import time
from pathlib import Path
from typing import Any

from ...sdk import ProviderContext
from .config import ProcessConfig
from .gpus import GpuPool, requested_gpus
from .launch import ConfigError, LaunchError, container_id
from .lifecycle import Lifecycle
from .logs import fallback_message
from .network import remove_pod_network
from .probes import pod_desc
from .restarts import BackOffSettings, RunEnd, Terminate, decide
from .runtime import (
    Changed,
    HostSetup,
    PodRuntime,
    finish,
    mark_started,
    post_start_handler,
    signal_group,
    wait_pid,
)
from .shim_protocol import (
    START_ERROR_CODE,
    ExitRecord,
    RunState,
    read_json,
)
from .shim_start import RunStarter, ShimStartTimeout
from .state import ContainerRecord, save
from .status import TERMINAL, containers_of, timestamp
from .status import phase as pod_phase

log = logging.getLogger(__name__)

#: The kubelet's limit on termination messages read from the file.
MAX_TERMINATION_MESSAGE = 4096


class Supervisor:
    """Runs every pod's containers through shims and keeps their records current."""

    def __init__(
        self,
        config: ProcessConfig,
        context: ProviderContext,
        host: HostSetup,
        lifecycle: Lifecycle,
        changed: Changed,
        gpus: GpuPool | None = None,
    ) -> None:
        self.config = config
        self.gpus = gpus if gpus is not None else GpuPool([])
        self.context = context
        self.host = host
        self.lifecycle = lifecycle
        self.changed = changed
        self.starter = RunStarter(config, context, host)
        self.backoff = BackOffSettings(
            initial=config.restart_backoff_seconds,
            maximum=config.max_restart_backoff_seconds,
            reset_after=config.backoff_reset_seconds,
        )

    def adopt(self, runtime: PodRuntime) -> None:
        """A restarted agent: take over the runs of the pod whose shims are still alive."""
        for name, record in runtime.record.containers.items():
            if record.run <= record.processed_run:
                continue
            run = RunState.read(runtime.layout.state(name, record.run))
            if run is not None and run.shim_alive():
                runtime.runs[name] = run
                if record.gpus:
                    record.gpus = self.gpus.restore(_owner(runtime, name), record.gpus)
                if record.state != "running":
                    # Started just before the old agent died, or it died while the postStart
                    # hook ran (never run again, as a restarted kubelet does not): it runs, so
                    # say so.
                    mark_started(record, runtime.container(name), record.init)
                record.started_at = run.started_at
                record.process = dataclasses.asdict(run)

    def start(self, runtime: PodRuntime) -> None:
        """Start supervising the pod (its task is `runtime.task`)."""
        runtime.task = asyncio.create_task(self.run_pod(runtime))

    async def run_pod(self, runtime: PodRuntime) -> None:
        await self._run_containers(runtime)
        record = runtime.record
        if record.netns and not record.deleting and pod_phase(record) in TERMINAL:
            await self._release_network(runtime)

    async def _release_network(self, runtime: PodRuntime) -> None:
        """A pod that ended (Succeeded, Failed) needs no network namespace any more, as a
        kubelet removes a finished pod's sandbox. Its status keeps showing the address; another
        pod may get it from now on."""
        record = runtime.record
        netns, veth = record.netns, record.veth
        record.netns = record.veth = None
        self.changed(runtime)
        if netns and veth:
            await asyncio.to_thread(remove_pod_network, netns, veth)

    async def _run_containers(self, runtime: PodRuntime) -> None:
        record = runtime.record
        spec = record.pod.get("spec") or {}
        deadline = spec.get("activeDeadlineSeconds")
        if deadline is not None and record.phase is None and not record.deleting:
            runtime.spawn(self.lifecycle.enforce_deadline(runtime, float(deadline)))
        if not record.init_done:
            for container in containers_of(record.pod, "initContainers"):
                name = str(container["name"])
                if not _succeeded(record.containers[name]):
                    await self._supervise(runtime, name, init=True)
                if runtime.halted:
                    return
                if not _succeeded(record.containers[name]):
                    record.phase = "Failed"  # restartPolicy Never and an init container failed
                    self.changed(runtime)
                    return
            record.init_done = True
            for container in containers_of(record.pod, "containers"):
                app = record.containers[str(container["name"])]
                if app.state == "waiting" and app.reason == "PodInitializing":
                    app.reason = "ContainerCreating"
            self.changed(runtime)
        await asyncio.gather(
            *(
                self._supervise(runtime, str(c["name"]), init=False)
                for c in containers_of(record.pod, "containers")
            )
        )

    async def _supervise(self, runtime: PodRuntime, name: str, *, init: bool) -> None:
        record = runtime.record.containers[name]
        while (record.state != "terminated" and not runtime.halted) or name in runtime.runs:
            try:
                run = runtime.runs.get(name)
                if run is None and record.run > record.processed_run:
                    # A run started before the agent restarted whose shim is gone.
                    result = await self._collect_exit(runtime, name, record.run)
                    self._account(runtime, name, init, result)
                    continue
                fresh = run is None
                if run is None:
                    await self._back_off(runtime, record)
                    await _env_ready(runtime)
                    if runtime.halted or not await self._take_gpus(runtime, name):
                        continue
                    run = await self._start_run(runtime, name, init)
                    if run is None:
                        continue
                    if _halted(runtime):  # deleted while it was starting
                        deadline = runtime.deletion_deadline()
                        runtime.spawn(self.lifecycle.kill(runtime, name, run, deadline))
                elif record.state != "running":
                    record.state, record.started_at = "running", run.started_at
                    self.changed(runtime)
                # An adopted run (the agent restarted) had its postStart hook run already.
                watch = (
                    []
                    if init
                    else [asyncio.create_task(self.lifecycle.watch(runtime, name, run, fresh))]
                )
                try:
                    result = await self._wait_exit(runtime, name, run)
                finally:
                    await finish(watch)
                self._account(runtime, name, init, result)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception(
                    "process provider: supervising container %s of %s failed",
                    name,
                    runtime.record.key,
                )
                record.state, record.reason = "waiting", "RunContainerError"
                record.message = "internal error of the process provider (see the agent's log)"
                record.backoff_until = time.time() + self.config.restart_backoff_seconds
                self.changed(runtime)
                await self._back_off(runtime, record)

    async def _take_gpus(self, runtime: PodRuntime, name: str) -> bool:
        """The GPUs the container asks for, waiting (WaitingForGPU) until enough are free;
        False if the pod was halted meanwhile."""
        count = requested_gpus(runtime.container(name))
        record = runtime.record.containers[name]
        if count == 0:
            return True
        owner = _owner(runtime, name)
        while not runtime.halted:
            devices = self.gpus.acquire(owner, count)
            if devices is not None:
                record.gpus = devices
                return True
            reason, message = "WaitingForGPU", self.gpus.shortage(count)
            if (record.reason, record.message) != (reason, message):
                record.state, record.reason, record.message = "waiting", reason, message
                self.changed(runtime)
            freed = asyncio.create_task(self.gpus.wait_freed())
            woken = asyncio.create_task(runtime.wake.wait())
            await asyncio.wait({freed, woken}, return_when=asyncio.FIRST_COMPLETED)
            await finish([freed, woken])
        return False

    def _free_gpus(self, runtime: PodRuntime, name: str) -> None:
        record = runtime.record.containers[name]
        self.gpus.release(_owner(runtime, name))
        record.gpus = []

    async def _back_off(self, runtime: PodRuntime, record: ContainerRecord) -> None:
        if record.backoff_until is None:
            return
        remaining = record.backoff_until - time.time()
        if remaining > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(runtime.wake.wait(), remaining)

    # --- starting a run ---------------------------------------------------------------------------

    async def _start_run(self, runtime: PodRuntime, name: str, init: bool) -> RunState | None:
        """Start the next run of a container; None if it could not start (then accounted for)."""
        record = runtime.record.containers[name]
        container = runtime.container(name)
        layout = runtime.layout
        record.run += 1
        run = record.run
        record.restart_count = run - 1
        record.image = str(container.get("image") or "")
        record.backoff_until = None
        save(layout, runtime.record)  # a crash from here on finds run `run` and its files
        try:
            launch = await asyncio.to_thread(self.starter.build, runtime, container, run)
        except ConfigError as exc:
            self._start_failed(
                runtime, name, init, run, str(exc), time.time(), "CreateContainerConfigError"
            )
            return None
        except (LaunchError, OSError) as exc:
            self._start_failed(runtime, name, init, run, str(exc), time.time())
            return None
        spec, shim_log = await asyncio.to_thread(
            self.starter.write_files, runtime, container, run, launch
        )
        record.cgroups = spec.cgroups
        began = time.time()
        try:
            with shim_log:
                returncode = await self.starter.run_shim(layout, name, run, shim_log)
        except ShimStartTimeout as exc:
            message = f"{exc} (see {layout.shim_log(name)})"
            self._start_failed(runtime, name, init, run, message, began)
            return None
        except OSError as exc:
            self._start_failed(runtime, name, init, run, f"cannot start the shim: {exc}", began)
            return None
        info = RunState.read(layout.state(name, run))
        if info is None:
            ended = ExitRecord.read(layout.exit(name, run))
            message = (
                ended.error
                if ended is not None and ended.error
                else f"the shim exited with code {returncode} before starting the container "
                f"(see {layout.shim_log(name)})"
            )
            self._start_failed(runtime, name, init, run, message, began)
            return None
        runtime.runs[name] = info
        record.process = dataclasses.asdict(info)
        record.log_path = str(layout.log(name, run))
        record.started_at = info.started_at
        record.container_id = container_id(runtime.record.uid, name, run, info.started_at)
        if post_start_handler(container, init) is None:
            mark_started(record, container, init)
        else:
            # As with the kubelet, whose status shows the container as still being created
            # until its postStart hook returned: not running, started nor ready yet.
            record.state, record.reason, record.message = "waiting", "ContainerCreating", ""
            record.started = record.ready = False
        self.changed(runtime)
        return info

    def _start_failed(
        self,
        runtime: PodRuntime,
        name: str,
        init: bool,
        run: int,
        message: str,
        began: float,
        reason: str = "RunContainerError",
    ) -> None:
        terminated = {
            "exitCode": START_ERROR_CODE,
            "reason": "StartError",
            "message": message,
            "startedAt": timestamp(began),
            "finishedAt": timestamp(time.time()),
        }
        record = runtime.record.containers[name]
        record.processed_run = run
        record.container_id = ""
        record.process = None
        runtime.runs.pop(name, None)
        log.info(
            "process provider: container %s of %s could not start: %s",
            name,
            runtime.record.key,
            message,
        )
        end = RunEnd(exit_code=START_ERROR_CODE, start_error=message, start_reason=reason)
        self._after_exit(runtime, name, init, terminated, run, end)

    # --- exits ------------------------------------------------------------------------------------

    async def _wait_exit(self, runtime: PodRuntime, name: str, run: RunState) -> ExitRecord:
        exit_path = runtime.layout.exit(name, run.run)
        while True:
            result = await asyncio.to_thread(ExitRecord.read, exit_path)
            if result is not None:
                return result
            if not run.shim_alive():
                result = await asyncio.to_thread(ExitRecord.read, exit_path)
                return result if result is not None else await self._orphaned(runtime, name, run)
            await wait_pid(run.shim_pid, run.shim_start, 5.0)

    async def _collect_exit(self, runtime: PodRuntime, name: str, run: int) -> ExitRecord:
        """How a run ended whose shim is gone (adoption after an agent restart)."""
        result = ExitRecord.read(runtime.layout.exit(name, run))
        if result is not None:
            return result
        info = RunState.read(runtime.layout.state(name, run))
        if info is None:
            return ExitRecord(
                run=run,
                exit_code=START_ERROR_CODE,
                error="the agent stopped while starting the container",
                started_at=time.time(),
                finished_at=time.time(),
            )
        return await self._orphaned(runtime, name, info)

    async def _orphaned(self, runtime: PodRuntime, name: str, run: RunState) -> ExitRecord:
        """The shim died without an exit record: kill what is left of the container."""
        log.warning(
            "process provider: the shim of container %s of %s died; killing the container",
            name,
            runtime.record.key,
        )
        signal_group(run, signal.SIGKILL)
        for _ in range(50):
            if not run.container_alive():
                break
            await asyncio.sleep(0.02)
        return ExitRecord(
            run=run.run,
            exit_code=137,
            signal=signal.SIGKILL,
            started_at=run.started_at,
            finished_at=time.time(),
            reason="ContainerStatusUnknown",
            message="the container's shim ended without recording how the container exited",
        )

    def _account(self, runtime: PodRuntime, name: str, init: bool, result: ExitRecord) -> None:
        """Record how a run ended and decide what comes next."""
        record = runtime.record.containers[name]
        run = int(result.run or record.run)
        started = float(result.started_at or time.time())
        finished = float(result.finished_at or time.time())
        runtime.runs.pop(name, None)
        record.process = None
        hook_error = runtime.hook_errors.pop(name, None)
        if result.error:
            runtime.kill_messages.pop(name, None)
            self._start_failed(runtime, name, init, run, str(result.error), started)
            return
        code = int(result.exit_code or 0)
        container = runtime.container(name)
        reason = result.reason or (
            "OOMKilled" if result.oom_killed else "Completed" if code == 0 else "Error"
        )
        message = runtime.kill_messages.pop(name, None) or result.message
        if not message:
            message = self._termination_message(runtime, name, container, run, code)
        terminated: dict[str, Any] = {
            "exitCode": code,
            "reason": reason,
            "startedAt": timestamp(started),
            "finishedAt": timestamp(finished),
        }
        if result.signal:
            terminated["signal"] = int(result.signal)
        if message:
            terminated["message"] = message
        if record.container_id:
            terminated["containerID"] = f"process://{record.container_id}"
        record.processed_run = run
        end = RunEnd(exit_code=code, ran_for=finished - started, hook_error=hook_error)
        self._after_exit(runtime, name, init, terminated, run, end)

    def _termination_message(
        self, runtime: PodRuntime, name: str, container: dict[str, Any], run: int, code: int
    ) -> str:
        layout = runtime.layout
        launch = read_json(layout.launch(name, run)) or {}
        env = launch.get("env") or {}
        path = Path(str(env.get("VK_TERMINATION_MESSAGE_PATH") or layout.termination(name)))
        try:
            with path.open("rb") as handle:
                data = handle.read(MAX_TERMINATION_MESSAGE)
        except OSError:
            data = b""
        message = data.decode("utf-8", "replace")
        policy = container.get("terminationMessagePolicy") or "File"
        if not message.strip() and code != 0 and policy == "FallbackToLogsOnError":
            message = fallback_message(layout.log(name, run))
        return message

    def _after_exit(
        self,
        runtime: PodRuntime,
        name: str,
        init: bool,
        terminated: dict[str, Any],
        run: int,
        end: RunEnd,
    ) -> None:
        """Apply the restart decision (restarts.py) to the container's record."""
        self._free_gpus(runtime, name)
        record = runtime.record.containers[name]
        forced = name in runtime.restart_now
        runtime.restart_now.discard(name)
        decision = decide(
            end,
            container=name,
            pod=pod_desc(runtime.record.pod),
            policy=runtime.policy(),
            init=init,
            backoff=record.backoff,
            settings=self.backoff,
            halted=runtime.halted,
            forced=forced,
        )
        record.ready = record.started = False
        if isinstance(decision, Terminate):
            record.state, record.terminated = "terminated", terminated
            record.reason = record.message = ""
            record.ready = init and end.exit_code == 0
            self.changed(runtime)
            return
        record.last_terminated, record.last_run = terminated, run
        record.backoff = decision.backoff
        record.backoff_until = time.time() + decision.delay if decision.delay > 0 else None
        record.state = "waiting"
        record.reason, record.message = decision.reason, decision.message
        self.changed(runtime)


def _owner(runtime: PodRuntime, name: str) -> str:
    return f"{runtime.record.uid}/{name}"


def _halted(runtime: PodRuntime) -> bool:
    # A function call, so mypy does not keep `runtime.halted` narrowed across an await.
    return runtime.halted


async def _env_ready(runtime: PodRuntime) -> None:
    """Until the containers' env is known again (see the provider's docstring) or the pod halts."""
    if runtime.env_ready.is_set():
        return
    waits = [asyncio.create_task(e.wait()) for e in (runtime.env_ready, runtime.wake)]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        await finish(waits)


def _succeeded(record: ContainerRecord) -> bool:
    return record.state == "terminated" and (record.terminated or {}).get("exitCode") == 0
