"""Driving one pod through the runtime, as a kubelet's pod worker does: the sandbox, then the init
containers one after another, then the app containers; each container's image pulled, created
and started, its exits met with the restartPolicy and the crash-loop back-off (shared with the
process provider through `sdk.restart_policy`), failures shown with the kubelet's waiting
reasons (ErrImagePull, ImagePullBackOff, CreateContainerError, RunContainerError,
CrashLoopBackOff). Stopping honours preStop hooks and the grace period; past the pod's
`activeDeadlineSeconds` every container is stopped that way and the pod is Failed
(DeadlineExceeded). Each run's termination message is read when it exits (termination.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...sdk.probes import Handlers, pod_desc
from ...sdk.restart_policy import BackOffSettings, Restart, RunEnd, decide
from . import probes, termination
from .client import CriClient, CriError, cri
from .spec import container_config, pod_meta, sandbox_config
from .state import ContainerState, PodState
from .status import TERMINAL, nano_time, phase, running, terminated_of

log = logging.getLogger(__name__)

#: How long ErrImagePull shows before ImagePullBackOff (the kubelet shows both in turn).
ERR_IMAGE_PULL_SHOWN = 3.0
PULL_BACKOFF_INITIAL = 10.0
PULL_BACKOFF_MAX = 300.0
DEADLINE_REASON = "DeadlineExceeded"
DEADLINE_MESSAGE = "Pod was active on the node longer than the specified deadline"


@dataclass(frozen=True)
class RunnerSettings:
    node: str
    log_root: Path
    cgroup_parent: str
    poll_interval: float
    pull_timeout: float
    backoff: BackOffSettings
    #: Registry auth for (pod, image) (None: anonymous).
    auth_for: Callable[[Any, str], Awaitable[Any]]
    volume_dir: Callable[[Any, str], Path]
    #: Runs probe handlers (one HTTP client for every pod).
    handlers: Handlers
    #: The cluster's DNS servers (ClusterFirst) and domain.
    cluster_dns: list[str]
    cluster_domain: str


def pull_policy(container: dict[str, Any]) -> str:
    """The container's imagePullPolicy, defaulted as the API server does."""
    if container.get("imagePullPolicy"):
        return str(container["imagePullPolicy"])
    image = str(container.get("image") or "")
    tag = image.rsplit("/", 1)[-1]
    return "Always" if ":" not in tag or tag.endswith(":latest") else "IfNotPresent"


class PodRunner:
    """Reconciles one pod with the runtime every `poll_interval` until stopped."""

    def __init__(
        self,
        state: PodState,
        client: CriClient,
        settings: RunnerSettings,
        changed: Callable[[], None],
    ) -> None:
        self.state = state
        self.client = client
        self.settings = settings
        self.changed = changed
        self._task: asyncio.Task[None] | None = None
        self._kills: set[asyncio.Task[None]] = set()

    @property
    def log_directory(self) -> Path:
        namespace, name, uid = pod_meta(self.state.pod)
        return self.settings.log_root / f"{namespace}_{name}_{uid}"

    def log_path(self, container: str, attempt: int) -> Path:
        return self.log_directory / container / f"{attempt}.log"

    # --- the sandbox ----------------------------------------------------------------------------

    async def ensure_sandbox(self) -> None:
        """RunPodSandbox (once) and read its IP. Raises CriError (the agent retries)."""
        if self.state.sandbox_id is not None:
            return
        with contextlib.suppress(OSError):  # a remote runtime writes its own log directory
            self.log_directory.mkdir(parents=True, exist_ok=True)
        config = sandbox_config(
            self.state.pod,
            node=self.settings.node,
            log_directory=self.log_directory,
            cgroup_parent=self.settings.cgroup_parent,
            cluster_dns=self.settings.cluster_dns,
            cluster_domain=self.settings.cluster_domain,
        )
        reply = await self.client.runtime(
            "RunPodSandbox", cri.RunPodSandboxRequest(config=config), timeout=120
        )
        self.state.sandbox_id = str(reply.pod_sandbox_id)
        await self.read_sandbox()

    async def read_sandbox(self) -> None:
        if self.state.sandbox_id is None:
            return
        reply = await self.client.runtime(
            "PodSandboxStatus", cri.PodSandboxStatusRequest(pod_sandbox_id=self.state.sandbox_id)
        )
        self.state.pod_ip = str(reply.status.network.ip)
        if self.state.start_time is None:
            self.state.start_time = nano_time(reply.status.created_at)
            self.state.started_at = reply.status.created_at / 1e9 or None

    # --- the loop -------------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(
                self._run(), name=f"cri pod {pod_meta(self.state.pod)[1]}"
            )

    async def cancel(self) -> None:
        for container in self.state.containers.values():
            probes.stop(container)
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        namespace, name, _ = pod_meta(self.state.pod)
        last_error = ""
        while True:
            try:
                await self.step()
                error = ""
            except CriError as exc:
                error = str(exc)
                if error != last_error:  # once per new error, not once per poll
                    log.warning("pod %s/%s: %s", namespace, name, error)
            except Exception as exc:
                error = repr(exc)
                if error != last_error:
                    log.exception("pod %s/%s: unexpected error", namespace, name)
            if last_error and not error:
                log.info("pod %s/%s: the runtime answers again", namespace, name)
            last_error = error
            self.changed()
            await asyncio.sleep(self.settings.poll_interval)

    async def step(self) -> None:
        """One look at the runtime and what follows from it."""
        await self.ensure_sandbox()
        for container in self.state.containers.values():
            await self._refresh(container)
            self._probe(container)
        if self.state.failed_reason == DEADLINE_REASON or self._past_deadline():
            await self._end_for_deadline()
            return
        for container in self.state.init_containers:
            if not container.done:
                await self._advance(container)
            if not self._finished(container):
                return  # the next init container waits for this one
            if (container.last_terminated or {}).get("exitCode") != 0:
                self.state.failed_reason = "Failed"
                self.state.failed_message = f"init container {container.name} failed"
                return
        for container in self.state.app_containers:
            if not container.done:
                await self._advance(container)

    def _past_deadline(self) -> bool:
        """The kubelet's pastActiveDeadline: the pod has run (since its start time) longer than
        spec.activeDeadlineSeconds (read each time: an update may shorten it)."""
        seconds = (self.state.pod.get("spec") or {}).get("activeDeadlineSeconds")
        if seconds is None or self.state.started_at is None or self.state.failed_reason:
            return False
        if phase(self.state) in TERMINAL:
            return False
        return time.time() >= self.state.started_at + float(seconds)

    async def _end_for_deadline(self) -> None:
        """Past the deadline: the pod is Failed (DeadlineExceeded) and, as the kubelet's killPod,
        each running container stopped (preStop hook, then StopContainer within the pod's grace
        period), once; then the sandbox. Each exit is the run's last (no restarts)."""
        state = self.state
        if state.failed_reason != DEADLINE_REASON:
            namespace, name, _ = pod_meta(state.pod)
            log.info("pod %s/%s: %s", namespace, name, DEADLINE_MESSAGE)
            state.failed_reason, state.failed_message = DEADLINE_REASON, DEADLINE_MESSAGE
            for container in state.containers.values():
                probes.stop(container)
            self.changed()
            task = asyncio.create_task(self._kill_all())
            self._kills.add(task)
            task.add_done_callback(self._kills.discard)
        for container in state.containers.values():
            status = container.status
            if (
                status is not None
                and status.state == cri.CONTAINER_EXITED
                and container.handled_exit != container.container_id
            ):
                await self._record_exit(container, status)
            if container.last_terminated is not None and not running(container):
                container.done = True  # its last run; a back-off in progress ends here too

    async def _kill_all(self) -> None:
        grace = float((self.state.pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30))
        try:
            await self._stop_containers(grace)
            if self.state.sandbox_id is not None:
                await self.client.runtime(
                    "StopPodSandbox",
                    cri.StopPodSandboxRequest(pod_sandbox_id=self.state.sandbox_id),
                    timeout=60,
                )
        except CriError as exc:  # the next deletion of the pod tries again
            namespace, name, _ = pod_meta(self.state.pod)
            log.warning("pod %s/%s: stopping it past its deadline: %s", namespace, name, exc)

    def _probe(self, container: ContainerState) -> None:
        """Probes follow the current run: started with it, stopped when it ends."""
        if not running(container):
            if container.probes is not None or container.ready:
                probes.stop(container)
            return
        if container.probed_id == container.container_id:
            return
        probes.watch(
            container,
            self.state.spec_of(container.name),
            client=self.client,
            handlers=self.settings.handlers,
            pod_ip=self.state.pod_ip or "127.0.0.1",
            changed=self.changed,
            kill=lambda reason: self._kill(container, reason),
        )

    def replace_run(self, name: str) -> None:
        """Its image changed: stop the current run and start one with the new image at once."""
        if self.state.failed_reason:
            return  # a pod that failed for good runs nothing more
        container = self.state.containers[name]
        # Only the exit this kill causes is forced; a container waiting starts anew anyway.
        container.forced = running(container)
        container.done = False
        container.retry_at = 0.0
        if running(container):
            task = asyncio.create_task(self._kill(container, "its image changed"))
            self._kills.add(task)
            task.add_done_callback(self._kills.discard)
        self.changed()

    async def _kill(self, container: ContainerState, reason: str) -> None:
        """Stop the current run (a failed liveness or startup probe), within the grace period;
        the restartPolicy then decides, as for any exit."""
        container_id = container.container_id
        if container_id is None:
            return
        namespace, name, _ = pod_meta(self.state.pod)
        log.info("pod %s/%s: container %s: %s", namespace, name, container.name, reason)
        grace = int((self.state.pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30))
        try:
            await self.client.runtime(
                "StopContainer",
                cri.StopContainerRequest(container_id=container_id, timeout=grace),
                timeout=grace + 30,
            )
        except CriError as exc:
            log.warning("pod %s/%s: stopping %s: %s", namespace, name, container.name, exc)

    @staticmethod
    def _finished(container: ContainerState) -> bool:
        return container.done

    async def _refresh(self, container: ContainerState) -> None:
        if container.container_id is None:
            return
        try:
            reply = await self.client.runtime(
                "ContainerStatus", cri.ContainerStatusRequest(container_id=container.container_id)
            )
        except CriError as exc:
            if not exc.not_found:
                raise
            container.container_id, container.status = None, None
            return
        container.status = reply.status

    async def _advance(self, container: ContainerState) -> None:
        now = time.monotonic()
        status = container.status
        if status is not None and status.state == cri.CONTAINER_RUNNING:
            return
        if (
            status is not None
            and status.state == cri.CONTAINER_EXITED
            and container.handled_exit != container.container_id
        ):
            await self._exited(container, status)
            return
        if container.waiting_reason == "ErrImagePull" and now >= container.retry_at - max(
            0.0, container.backoff - ERR_IMAGE_PULL_SHOWN
        ):
            container.waiting_reason = "ImagePullBackOff"
            image = self.state.spec_of(container.name).get("image")
            container.waiting_message = f'Back-off pulling image "{image}"'
        if now >= container.retry_at:
            await self._start_run(container)

    async def _record_exit(self, container: ContainerState, status: Any) -> None:
        """The run's exit as its last termination, with its termination message."""
        assert container.container_id is not None
        container.handled_exit = container.container_id
        terminated = terminated_of(status, container.container_id)
        container.last_terminated = terminated
        spec = self.state.spec_of(container.name)
        text = await asyncio.to_thread(
            termination.message,
            spec,
            int(status.exit_code),
            termination.host_file(self.log_directory, container.name, container.attempt),
            self.log_path(container.name, container.attempt),
        )
        termination.add_message(terminated, text)

    async def _exited(self, container: ContainerState, status: Any) -> None:
        await self._record_exit(container, status)
        assert container.last_terminated is not None
        hook_error, container.hook_error = container.hook_error, None
        if hook_error is not None:
            container.last_terminated["message"] = f"PostStartHookError: {hook_error}"
        ran_for = max(0.0, (status.finished_at - status.started_at) / 1e9)
        end = RunEnd(exit_code=int(status.exit_code), ran_for=ran_for, hook_error=hook_error)
        self._decide(container, end)

    def _decide(self, container: ContainerState, end: RunEnd) -> None:
        namespace, name, uid = pod_meta(self.state.pod)
        forced, container.forced = container.forced, False
        decision = decide(
            end,
            container=container.name,
            pod=f"{name}_{namespace}({uid})",
            policy=(self.state.pod.get("spec") or {}).get("restartPolicy") or "Always",
            init=container.init,
            backoff=container.backoff,
            settings=self.settings.backoff,
            forced=forced,
        )
        if isinstance(decision, Restart):
            container.backoff = decision.backoff
            container.retry_at = time.monotonic() + decision.delay
            container.waiting_reason, container.waiting_message = decision.reason, decision.message
        else:
            container.done = True

    # --- one run ----------------------------------------------------------------------------------

    async def _start_run(self, container: ContainerState) -> None:
        spec = self.state.spec_of(container.name)
        if not await self._pull(container, spec):
            return
        attempt = container.attempt + 1 if container.container_id is not None else container.attempt
        message_file: Path | None = termination.host_file(
            self.log_directory, container.name, attempt
        )
        try:
            if message_file is not None:
                termination.prepare(message_file)  # also makes the container's log directory
        except OSError as exc:
            # A remote runtime whose log root is not shared: no message file, as before one.
            log.warning("cannot create %s: %s; no termination message", message_file, exc.strerror)
            message_file = None
        try:
            config = container_config(
                self.state.pod,
                spec,
                attempt=attempt,
                init=container.init,
                volume_dir=lambda volume: self.settings.volume_dir(self.state.pod, volume),
                termination_file=message_file,
            )
        except ValueError as exc:
            self._waiting(container, "CreateContainerConfigError", str(exc), backoff=True)
            return
        assert self.state.sandbox_id is not None
        try:
            created = await self.client.runtime(
                "CreateContainer",
                cri.CreateContainerRequest(
                    pod_sandbox_id=self.state.sandbox_id,
                    config=config,
                    sandbox_config=sandbox_config(
                        self.state.pod,
                        node=self.settings.node,
                        log_directory=self.log_directory,
                        cgroup_parent=self.settings.cgroup_parent,
                        cluster_dns=self.settings.cluster_dns,
                        cluster_domain=self.settings.cluster_domain,
                    ),
                ),
                timeout=60,
            )
        except CriError as exc:
            if exc.unreachable:
                raise
            self._waiting(container, "CreateContainerError", exc.details, backoff=True)
            return
        await self._retire_previous(container)
        if container.container_id is not None:
            container.restart_count += 1
        container.previous_id, container.previous_attempt = (
            container.container_id,
            (container.attempt if container.container_id is not None else None),
        )
        container.container_id, container.attempt = str(created.container_id), attempt
        container.status = None
        container.waiting_reason, container.waiting_message = "ContainerCreating", ""
        try:
            await self.client.runtime(
                "StartContainer",
                cri.StartContainerRequest(container_id=container.container_id),
                timeout=60,
            )
        except CriError as exc:
            if exc.unreachable:
                raise
            # As the kubelet: the run ended before it began (exit 128, StartError).
            container.handled_exit = container.container_id
            container.last_terminated = {
                "exitCode": 128,
                "reason": "StartError",
                "message": exc.details,
                "containerID": f"containerd://{container.container_id}",
            }
            self._decide(
                container,
                RunEnd(exit_code=128, start_error=exc.details, start_reason="RunContainerError"),
            )
            return
        await self._refresh(container)
        if not container.init:
            await self._post_start(container, spec)
            await self._refresh(container)

    async def _retire_previous(self, container: ContainerState) -> None:
        """Keep the current run (it becomes the previous one, for `logs --previous`); remove
        the one before."""
        if container.previous_id is None:
            return
        try:
            await self.client.runtime(
                "RemoveContainer", cri.RemoveContainerRequest(container_id=container.previous_id)
            )
        except CriError as exc:
            if not exc.not_found:
                raise

    def _waiting(
        self, container: ContainerState, reason: str, message: str, *, backoff: bool
    ) -> None:
        container.waiting_reason, container.waiting_message = reason, message
        if backoff:
            delay = container.backoff or self.settings.backoff.initial
            container.retry_at = time.monotonic() + delay
            container.backoff = min(delay * 2, self.settings.backoff.maximum)

    async def _pull(self, container: ContainerState, spec: dict[str, Any]) -> bool:
        """Make sure the image is there, as imagePullPolicy says. False: not yet (the waiting
        reason says why and when the next try is)."""
        image = str(spec["image"])
        policy = pull_policy(spec)
        if policy != "Always":
            found = await self.client.image(
                "ImageStatus", cri.ImageStatusRequest(image=cri.ImageSpec(image=image))
            )
            if found.image.id:
                return True
            if policy == "Never":
                self._waiting(
                    container,
                    "ErrImageNeverPull",
                    f'Container image "{image}" is not present with pull policy of Never',
                    backoff=True,
                )
                return False
        request = cri.PullImageRequest(image=cri.ImageSpec(image=image))
        auth = await self.settings.auth_for(self.state.pod, image)
        if auth is not None:
            request.auth.CopyFrom(auth)
        container.waiting_reason, container.waiting_message = "ContainerCreating", ""
        try:
            await self.client.image("PullImage", request, timeout=self.settings.pull_timeout)
        except CriError as exc:
            if exc.unreachable and exc.code.name == "UNAVAILABLE":
                raise
            container.pull_failures += 1
            delay = min(PULL_BACKOFF_INITIAL * 2 ** (container.pull_failures - 1), PULL_BACKOFF_MAX)
            container.backoff = delay
            container.retry_at = time.monotonic() + delay
            container.waiting_reason = "ErrImagePull"
            container.waiting_message = exc.details
            return False
        container.pull_failures = 0
        return True

    # --- stopping ---------------------------------------------------------------------------------

    async def stop(self, grace: float) -> None:
        """preStop hooks, then StopContainer within what is left of `grace`, then the sandbox
        goes. The containers' log files go with them."""
        await self.cancel()
        for task in list(self._kills):
            task.cancel()
        await self._stop_containers(grace)
        if self.state.sandbox_id is not None:
            for call, request in (
                ("StopPodSandbox", cri.StopPodSandboxRequest(pod_sandbox_id=self.state.sandbox_id)),
                (
                    "RemovePodSandbox",
                    cri.RemovePodSandboxRequest(pod_sandbox_id=self.state.sandbox_id),
                ),
            ):
                try:
                    await self.client.runtime(call, request, timeout=60)
                except CriError as exc:
                    if not exc.not_found:
                        raise
        await asyncio.to_thread(termination.remove_files, self.log_directory)

    async def _stop_containers(self, grace: float) -> None:
        """preStop hooks, then StopContainer within what is left of `grace`."""
        deadline = time.monotonic() + grace
        live = [c for c in self.state.containers.values() if c.container_id is not None]
        await asyncio.gather(*(self._pre_stop(c, grace) for c in live))

        async def stop_one(container: ContainerState) -> None:
            assert container.container_id is not None
            left = max(0, int(deadline - time.monotonic()))
            try:
                await self.client.runtime(
                    "StopContainer",
                    cri.StopContainerRequest(container_id=container.container_id, timeout=left),
                    timeout=left + 30,
                )
            except CriError as exc:
                if not exc.not_found:
                    raise

        await asyncio.gather(*(stop_one(c) for c in live))

    async def _pre_stop(self, container: ContainerState, grace: float) -> None:
        """The container's preStop hook (exec, httpGet, tcpSocket or sleep), bounded by the grace
        period; its failure does not keep the container from stopping, as with the kubelet."""
        if not running(container) or container.container_id is None:
            return
        spec = self.state.spec_of(container.name)
        hook = (spec.get("lifecycle") or {}).get("preStop")
        if not isinstance(hook, dict):
            return
        try:
            async with asyncio.timeout(grace):
                ok, message = await self.settings.handlers.hook(
                    hook,
                    spec,
                    probes.exec_via(self.client, container.container_id),
                    pod=pod_desc(self.state.pod),
                    pod_ip=self.state.pod_ip or "127.0.0.1",
                )
        except TimeoutError:
            ok, message = False, f"did not end within the grace period ({grace:g} s)"
        if not ok:
            log.info(
                "pod %s: preStop hook of %s failed: %s",
                pod_desc(self.state.pod),
                container.name,
                message,
            )

    async def _post_start(self, container: ContainerState, spec: dict[str, Any]) -> None:
        """The postStart hook, run to its end before the pod's worker goes on (as the kubelet's
        does); if it fails the run is stopped, and its termination says why."""
        hook = (spec.get("lifecycle") or {}).get("postStart")
        if not isinstance(hook, dict) or container.container_id is None:
            return
        ok, message = await self.settings.handlers.hook(
            hook,
            spec,
            probes.exec_via(self.client, container.container_id),
            pod=pod_desc(self.state.pod),
            pod_ip=self.state.pod_ip or "127.0.0.1",
        )
        if not ok:
            container.hook_error = message
            await self._kill(container, f"FailedPostStartHook: {message}")
