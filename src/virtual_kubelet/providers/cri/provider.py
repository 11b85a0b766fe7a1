"""The `cri` provider's facade: the SDK's Provider methods over one pod runner per pod, the
runtime's health as the node's, adoption of the pods a previous agent started (sandboxes found
by this node's label, containers by pod UID), logs from the runtime's CRI log files, exec through
`ExecSync` and stats from `ListContainerStats`."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from ...sdk import (
    ContainerIO,
    DuplexStream,
    InvalidInput,
    LogOptions,
    Node,
    NotFound,
    Pod,
    PodCallback,
    Provider,
    ProviderConfigError,
    ProviderContext,
    deep_copy,
    key_of,
    read_mapping,
    rfc3339,
    validate,
)
from ...sdk.cri_log_files import stream_log
from ...sdk.probes import Handlers
from ...sdk.restart_policy import BackOffSettings
from .auth import RegistryAuth
from .client import CriClient, CriError, cri
from .config import CriConfig
from .node import check_status, fill_node, runtime_version
from .runner import PodRunner, RunnerSettings
from .spdy_stream import run_spdy
from .spec import CONTAINER_NAME, NODE_LABEL, POD_ANNOTATION, POD_UID
from .state import PodState
from .status import pod_status, running, terminated_of
from .streaming import forward_port

log = logging.getLogger(__name__)


def load_config(context: ProviderContext) -> CriConfig:
    if context.config_path is None:
        raise ProviderConfigError(
            "the cri provider needs --provider-config with at least runtime_endpoint "
            "(e.g. unix:///run/containerd/containerd.sock)"
        )
    return validate(CriConfig, read_mapping(context.config_path), context.config_path)


class CriProvider(Provider):
    description = "Pods as real containers through a container runtime's CRI API (containerd)."

    def __init__(self, context: ProviderContext) -> None:
        super().__init__(context)
        self.config = load_config(context)
        self.log_root = self.config.log_root or context.state_dir / "cri-logs"
        self._client: CriClient | None = None
        self._runners: dict[str, PodRunner] = {}
        self._callback: PodCallback = lambda pod: None
        self._last_sent: dict[str, Any] = {}
        self._version: Any = None
        self._registry_auth = RegistryAuth(self.config)
        self._handlers = Handlers(context.internal_ip)

    # --- lifecycle ----------------------------------------------------------------------------

    @property
    def client(self) -> CriClient:
        if self._client is None:
            raise RuntimeError("the cri provider is not started")
        return self._client

    async def start(self) -> None:
        self._client = CriClient(self.config)
        try:
            self._version = await runtime_version(self.client)
            log.info(
                "container runtime %s %s (CRI %s) at %s",
                self._version.runtime_name,
                self._version.runtime_version,
                self._version.runtime_api_version,
                self.config.runtime_endpoint,
            )
            await check_status(self.client, self.config.runtime_endpoint)
            await self._ensure_pause_image()
        except Exception as exc:  # the node goes NotReady with this reason; the agent lives on
            log.error("%s", exc)
        try:
            self.log_root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            log.warning("cannot create the log root %s: %s", self.log_root, exc.strerror)
        await self._adopt()

    async def _ensure_pause_image(self) -> None:
        """Pull the configured sandbox image if the runtime lacks it (its own config decides
        which image sandboxes use: this only makes sure that one is there)."""
        image = self.config.pause_image
        if not image:
            return
        spec = cri.ImageSpec(image=image)
        found = await self.client.image("ImageStatus", cri.ImageStatusRequest(image=spec))
        if not found.image.id:
            log.info("pulling the sandbox image %s", image)
            await self.client.image(
                "PullImage",
                cri.PullImageRequest(image=spec),
                timeout=self.config.pull_timeout_seconds,
            )

    async def stop(self) -> None:
        """Pods keep running in the runtime; a restarted agent adopts them."""
        await asyncio.gather(*(r.cancel() for r in self._runners.values()))
        if self._client is not None:
            await self._client.close()
        await self._registry_auth.close()
        await self._handlers.close()

    def _settings(self) -> RunnerSettings:
        return RunnerSettings(
            node=self.context.node_name,
            log_root=self.log_root,
            cgroup_parent=self.config.cgroup_parent,
            poll_interval=self.config.poll_interval_seconds,
            pull_timeout=self.config.pull_timeout_seconds,
            backoff=BackOffSettings(
                initial=self.config.restart_backoff_seconds,
                maximum=self.config.restart_backoff_max_seconds,
                reset_after=self.config.restart_backoff_reset_seconds,
            ),
            auth_for=self._registry_auth.for_image,
            volume_dir=self.context.volume_path,
            handlers=self._handlers,
            cluster_dns=list(self.config.cluster_dns),
            cluster_domain=self.context.cluster_domain,
        )

    def _runner(self, state: PodState) -> PodRunner:
        key = key_of(state.pod)
        runner = PodRunner(state, self.client, self._settings(), lambda: self._push(key))
        self._runners[key] = runner
        return runner

    # --- adoption -----------------------------------------------------------------------------

    async def _adopt(self) -> None:
        """Find the sandboxes a previous agent of this node started and take them over."""
        try:
            sandboxes = await self.client.runtime(
                "ListPodSandbox",
                cri.ListPodSandboxRequest(
                    filter=cri.PodSandboxFilter(label_selector={NODE_LABEL: self.context.node_name})
                ),
            )
        except CriError as exc:
            log.warning("cannot list the runtime's pods to adopt them: %s", exc)
            return
        for sandbox in sandboxes.items:
            try:
                pod = json.loads(sandbox.annotations[POD_ANNOTATION])
            except (KeyError, ValueError):
                continue
            state = PodState.new(pod)
            state.sandbox_id = str(sandbox.id)
            await self._adopt_containers(state)
            runner = self._runner(state)
            try:
                await runner.read_sandbox()
            except CriError as exc:
                log.warning("pod %s: %s", key_of(pod), exc)
            runner.start()
        if self._runners:
            log.info("adopted %d pods from the runtime", len(self._runners))

    async def _adopt_containers(self, state: PodState) -> None:
        assert state.sandbox_id is not None
        listed = await self.client.runtime(
            "ListContainers",
            cri.ListContainersRequest(filter=cri.ContainerFilter(pod_sandbox_id=state.sandbox_id)),
        )
        runs: dict[str, list[Any]] = {}
        for container in listed.containers:
            runs.setdefault(container.labels.get(CONTAINER_NAME, ""), []).append(container)
        for name, found in runs.items():
            record = state.containers.get(name)
            if record is None:
                continue
            found.sort(key=lambda c: c.metadata.attempt)
            current = found[-1]
            record.container_id, record.attempt = str(current.id), int(current.metadata.attempt)
            record.restart_count = (
                len(found) - 1 if len(found) > 1 else int(current.metadata.attempt)
            )
            if len(found) > 1:
                record.previous_id = str(found[-2].id)
                record.previous_attempt = int(found[-2].metadata.attempt)
            if current.state == cri.CONTAINER_EXITED:
                status = await self.client.runtime(
                    "ContainerStatus", cri.ContainerStatusRequest(container_id=current.id)
                )
                record.status = status.status
                if record.init and status.status.exit_code == 0:
                    record.handled_exit = record.container_id
                    record.last_terminated = terminated_of(status.status, record.container_id)
                    record.done = True

    # --- pods ---------------------------------------------------------------------------------

    def notify_pods(self, callback: PodCallback) -> None:
        self._callback = callback

    def _push(self, key: str) -> None:
        runner = self._runners.get(key)
        if runner is None:
            return
        pod = self._with_status(runner)
        if pod["status"] != self._last_sent.get(key):
            self._last_sent[key] = pod["status"]
            self._callback(pod)

    def _with_status(self, runner: PodRunner) -> Pod:
        pod: Pod = deep_copy(runner.state.pod)
        pod["status"] = pod_status(runner.state, self.context.internal_ip)
        return pod

    async def create_pod(self, pod: Pod) -> None:
        key = key_of(pod)
        if key in self._runners:
            return
        if not (pod.get("spec") or {}).get("containers"):
            raise InvalidInput("the pod has no containers")
        for kind in ("initContainers", "containers"):
            for container in (pod.get("spec") or {}).get(kind) or []:
                if not container.get("image"):
                    raise InvalidInput(f"container {container.get('name')!r} has no image")
        state = PodState.new(deep_copy(pod))
        runner = self._runner(state)
        try:
            await runner.ensure_sandbox()
        except CriError as exc:
            del self._runners[key]
            # The agent retries with back-off and shows this as an Event.
            raise RuntimeError(f"RunPodSandbox failed: {exc.details or exc}") from None
        runner.start()
        self._push(key)

    async def update_pod(self, pod: Pod) -> None:
        runner = self._runners.get(key_of(pod))
        if runner is None:
            raise NotFound(key_of(pod))
        state = runner.state
        before = {c.name: state.spec_of(c.name).get("image") for c in state.app_containers}
        state.pod["metadata"] = deep_copy(pod["metadata"])
        state.pod["spec"] = deep_copy(pod["spec"])
        for name, image in before.items():
            # The only container field a pod update may change: as the kubelet, a new image
            # means a new run of that container, whatever the restartPolicy.
            if name in state.containers and state.spec_of(name).get("image") != image:
                runner.replace_run(name)

    async def delete_pod(self, pod: Pod) -> None:
        key = key_of(pod)
        runner = self._runners.get(key)
        if runner is None:
            raise NotFound(key)
        meta = pod.get("metadata") or {}
        grace = meta.get("deletionGracePeriodSeconds")
        if grace is None:
            grace = (pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
        await runner.stop(float(grace))
        self._runners.pop(key, None)
        self._last_sent.pop(key, None)

    async def get_pod(self, namespace: str, name: str) -> Pod | None:
        runner = self._runners.get(f"{namespace}/{name}")
        return None if runner is None else self._with_status(runner)

    async def list_pods(self) -> list[Pod]:
        return [self._with_status(r) for r in self._runners.values()]

    # --- the node -----------------------------------------------------------------------------

    async def configure_node(self, node: Node) -> None:
        fill_node(node, self.config, self._version)

    async def ping(self) -> None:
        await check_status(self.client, self.config.runtime_endpoint)

    # --- kubelet API --------------------------------------------------------------------------

    def _container(self, namespace: str, pod: str, container: str) -> tuple[PodRunner, Any]:
        runner = self._runners.get(f"{namespace}/{pod}")
        if runner is None:
            raise NotFound(f"pod {namespace}/{pod} not found")
        record = runner.state.containers.get(container)
        if record is None:
            raise NotFound(f'container "{container}" not found in pod "{pod}"')
        return runner, record

    async def get_container_logs(
        self, namespace: str, pod: str, container: str, options: LogOptions
    ) -> AsyncIterator[bytes]:
        runner, record = self._container(namespace, pod, container)
        if options.previous:
            if record.previous_attempt is None:
                raise InvalidInput(
                    f'previous terminated container "{container}" in pod "{pod}" not found'
                )
            path = runner.log_path(container, record.previous_attempt)
            alive = lambda: False  # noqa: E731
        else:
            if record.container_id is None:
                raise InvalidInput(
                    f'container "{container}" in pod "{pod}" is waiting to start: '
                    f"{record.waiting_reason or 'ContainerCreating'}"
                )
            path = runner.log_path(container, record.attempt)
            current = record.container_id

            def alive() -> bool:
                return record.container_id == current and (running(record) or record.status is None)

        async for chunk in stream_log(Path(path), options, alive):
            yield chunk

    def _running_id(self, namespace: str, pod: str, container: str) -> str:
        _, record = self._container(namespace, pod, container)
        if record.container_id is None or not running(record):
            raise InvalidInput(f'container "{container}" in pod "{pod}" is not running')
        return str(record.container_id)

    async def _stream_url(self, call: str, request: Any) -> str:
        try:
            reply = await self.client.runtime(call, request)
        except CriError as exc:
            raise InvalidInput(exc.details or str(exc)) from None
        return str(reply.url)

    async def run_in_container(
        self, namespace: str, pod: str, container: str, command: list[str], io: ContainerIO
    ) -> int:
        container_id = self._running_id(namespace, pod, container)
        if io.stdin is None and not io.tty:
            # Nothing to send: one ExecSync call, no streaming server in between.
            try:
                reply = await self.client.runtime(
                    "ExecSync",
                    cri.ExecSyncRequest(container_id=container_id, cmd=command, timeout=0),
                    timeout=24 * 3600,
                )
            except CriError as exc:
                raise InvalidInput(exc.details or str(exc)) from None
            if reply.stdout and io.stdout is not None:
                await io.stdout.write(bytes(reply.stdout))
            if reply.stderr and io.stderr is not None:
                await io.stderr.write(bytes(reply.stderr))
            return int(reply.exit_code)
        url = await self._stream_url(
            "Exec",
            cri.ExecRequest(
                container_id=container_id,
                cmd=command,
                tty=io.tty,
                stdin=io.stdin is not None,
                stdout=io.stdout is not None,
                stderr=io.stderr is not None and not io.tty,
            ),
        )
        code = await run_spdy(url, io, attach=False)
        return 0 if code is None else code

    async def attach_to_container(
        self, namespace: str, pod: str, container: str, io: ContainerIO
    ) -> int | None:
        container_id = self._running_id(namespace, pod, container)
        url = await self._stream_url(
            "Attach",
            cri.AttachRequest(
                container_id=container_id,
                tty=io.tty,
                stdin=io.stdin is not None,
                stdout=io.stdout is not None,
                stderr=io.stderr is not None and not io.tty,
            ),
        )
        return await run_spdy(url, io, attach=True)

    async def port_forward(self, namespace: str, pod: str, port: int, stream: DuplexStream) -> None:
        runner = self._runners.get(f"{namespace}/{pod}")
        if runner is None or runner.state.sandbox_id is None:
            raise NotFound(f"pod {namespace}/{pod} not found")
        url = await self._stream_url(
            "PortForward",
            cri.PortForwardRequest(pod_sandbox_id=runner.state.sandbox_id, port=[port]),
        )
        await forward_port(url, port, stream)

    async def get_stats_summary(self) -> dict[str, Any]:
        stats = await self.client.runtime("ListContainerStats", cri.ListContainerStatsRequest())
        by_id = {s.attributes.id: s for s in stats.stats}
        now = rfc3339()
        pods = []
        for runner in self._runners.values():
            containers: list[dict[str, Any]] = []
            cpu_total = cpu_rate = working_set = usage = 0
            for record in runner.state.containers.values():
                found = by_id.get(record.container_id or "")
                if found is None:
                    continue
                cpu = int(found.cpu.usage_core_nano_seconds.value)
                rate = int(found.cpu.usage_nano_cores.value)
                working = int(found.memory.working_set_bytes.value)
                used = int(found.memory.usage_bytes.value)
                cpu_total, cpu_rate = cpu_total + cpu, cpu_rate + rate
                working_set, usage = working_set + working, usage + used
                containers.append(
                    {
                        "name": record.name,
                        "startTime": runner.state.start_time,
                        "cpu": {"time": now, "usageCoreNanoSeconds": cpu, "usageNanoCores": rate},
                        "memory": {"time": now, "workingSetBytes": working, "usageBytes": used},
                    }
                )
            meta = runner.state.pod["metadata"]
            pods.append(
                {
                    "podRef": {
                        "name": meta["name"],
                        "namespace": meta["namespace"],
                        "uid": meta["uid"],
                    },
                    "startTime": runner.state.start_time,
                    "containers": containers,
                    "cpu": {
                        "time": now,
                        "usageCoreNanoSeconds": cpu_total,
                        "usageNanoCores": cpu_rate,
                    },
                    "memory": {"time": now, "workingSetBytes": working_set, "usageBytes": usage},
                }
            )
        return {"node": {"nodeName": self.context.node_name, "startTime": now}, "pods": pods}


__all__ = ["POD_UID", "CriProvider"]
