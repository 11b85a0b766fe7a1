"""The process provider itself: the Provider interface over the parts that do the work (see the
package docstring for what a pod gets).

- supervisor.py: each pod's task: runs (started by shim_start.py), exits, restarts;
- restarts.py: the restart and back-off decision (pure);
- lifecycle.py: postStart hooks, probes, kills, activeDeadlineSeconds, deletion;
- streaming.py: exec, attach, port-forward;
- ipam.py: pod addresses with `network: pod`; host.py: mounts check and node capacity;
- shim_protocol.py: the files agent and shim exchange; shim.py (with shim_stdio.py and
  syscalls.py): the shim itself;
- state.py: the records a restarted agent adopts pods from.

This module keeps the pods by UID, turns their records into the pods the core sees, and routes
each call. Resolved env values (they may come from Secrets) are kept in memory-backed storage only
(see state.py); if they are gone when the agent adopts a pod, the pod is reported with a stale spec
hash, so the core resolves its env again and passes it back through `update_pod`, and its
containers wait for that before (re)starting. Nothing here blocks the event loop on a process or
logs container env values.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from ...sdk import (
    SPEC_HASH_ANNOTATION,
    ContainerIO,
    DuplexStream,
    InvalidInput,
    LogOptions,
    Node,
    NotFound,
    Pod,
    PodCallback,
    PodStatus,
    Provider,
    ProviderContext,
    deep_copy,
    key_of,
    rfc3339,
    uid_of,
)
from . import streaming
from .accelerators import Accelerators
from .config import load_config
from .gpus import GPU_RESOURCE, GpuPool, discover_nvml
from .host import describe_node, detect_bind_mounts
from .ipam import PodAddresses
from .lifecycle import Lifecycle, clean_up
from .limits import Cgroups
from .logs import run_to_show, stream_log
from .network import NetworkError, remove_pod_network
from .probes import Handlers
from .runtime import HostSetup, PodRuntime, finish
from .state import (
    ContainerRecord,
    Layout,
    PodRecord,
    ensure_private,
    load_all,
    memory_backed,
    restore_env,
    save,
    save_env,
)
from .stats import ContainerRef, PodRef, Stats
from .status import containers_of, pod_status
from .supervisor import Supervisor

log = logging.getLogger(__name__)

#: The spec hash reported for a pod whose env values were lost (see the module docstring): any
#: value but the real hash (and None, which counts as current) makes the core send it again.
ENV_LOST_HASH = "env-lost"


class ProcessProvider(Provider):
    description = (
        "Containers run as local process trees under small shims that survive agent restarts."
    )

    def __init__(self, context: ProviderContext) -> None:
        super().__init__(context)
        self.config = load_config(context.config_path)
        self.root = context.state_dir / "process"
        self.host = HostSetup()
        self.handlers = Handlers(context.internal_ip)
        self.stats = Stats(context.state_dir, Accelerators(self.config.gpu_model))
        self._stats_lock = asyncio.Lock()
        self._pods: dict[str, PodRuntime] = {}
        self._notify: PodCallback | None = None
        self.addresses = PodAddresses(self.config, self._held_addresses)
        self.lifecycle = Lifecycle(
            self.handlers, context.internal_ip, self._changed, self._exec_capture
        )
        self.gpus = GpuPool(self.config.gpus or [])
        self.supervisor = Supervisor(
            self.config, context, self.host, self.lifecycle, self._changed, self.gpus
        )

    # --- provider lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(ensure_private, self.root)
        if not await asyncio.to_thread(memory_backed, self.context.pods_dir):
            log.warning(
                "process provider: the pods directory %s is not memory-backed: the containers' "
                "resolved env (secret values included) is kept there on disk, as the secret "
                "volumes are; give the agent a --volumes-dir on a tmpfs to keep them off disk",
                self.context.pods_dir,
            )
        if self.config.gpus is None:
            self.gpus.devices = await asyncio.to_thread(discover_nvml)
        if self.gpus.devices:
            log.info("process provider: GPUs %s", ", ".join(self.gpus.devices))
        self.host.bind_mounts = await detect_bind_mounts(self.config, self.root)
        if self.config.network == "pod":
            await self.addresses.start()
            self.host.pod_networks = True
        self.host.cgroups = await asyncio.to_thread(
            Cgroups, self.config.cgroups, self.config.cgroup_parent
        )
        records = await asyncio.to_thread(load_all, self.root, self.context.pods_dir)
        for layout, record in records:
            pod = PodRuntime(layout, record)
            pod.halted = record.phase is not None or record.deleting
            self._pods[record.uid] = pod
            if not await asyncio.to_thread(restore_env, layout, record.pod):
                pod.env_ready.clear()
                if not pod.halted:
                    log.info(
                        "process provider: the resolved env of pod %s is not in %s (the machine "
                        "restarted?); its containers start again once it has been resolved anew",
                        record.key,
                        layout.private,
                    )
            if record.netns and record.pod_ip:
                await self.addresses.adopt(record)
            self.supervisor.adopt(pod)
            self.supervisor.start(pod)
            if record.deleting:
                pod.deletion = asyncio.create_task(self._terminate(pod))
        if records:
            live = sum(len(p.runs) for p in self._pods.values())
            log.info(
                "process provider: adopted %d pods with %d running containers",
                len(records),
                live,
            )

    async def stop(self) -> None:
        """Stop supervising; the containers keep running for the next agent to adopt."""
        tasks: list[asyncio.Task[Any]] = []
        for pod in self._pods.values():
            tasks.extend(t for t in (pod.task, pod.deletion) if t is not None)
            tasks.extend(pod.tasks)
        await finish(tasks)
        await self.handlers.close()
        await self.addresses.stop(pods_left=bool(self._pods))
        async with self._stats_lock:
            await asyncio.to_thread(self.stats.accelerators.close)

    # --- pods -----------------------------------------------------------------------------------

    def notify_pods(self, callback: PodCallback) -> None:
        self._notify = callback

    async def assign_pod_ips(self, pod: Pod) -> list[str] | None:
        if not self.addresses.active or _host_network(pod):
            return [self.context.internal_ip]
        uid = uid_of(pod)
        existing = self._pods.get(uid)
        if existing is not None:  # created already (perhaps before `network: pod` was set)
            return [existing.record.pod_ip or self.context.internal_ip]
        try:
            return [self.addresses.reserve(uid)]
        except NetworkError as exc:
            log.warning("process provider: no address for pod %s: %s", key_of(pod), exc)
            return None  # create_pod says why

    async def create_pod(self, pod: Pod) -> None:
        uid = uid_of(pod)
        existing = self._pods.get(uid)
        if existing is not None and not existing.gone:
            await self.update_pod(pod)
            return
        init = containers_of(pod, "initContainers")
        app = containers_of(pod, "containers")
        if not app:
            raise InvalidInput("the pod has no containers")
        names = [str(c.get("name") or "") for c in init + app]
        bad = [n for n in names if not n or "/" in n or n.startswith(".")]
        if bad or len(set(names)) != len(names):
            raise InvalidInput(f"invalid or duplicate container names: {names}")
        try:
            layout = Layout(self.root, uid, self.context.pods_dir)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        record = PodRecord.new(deep_copy(pod), start_time=rfc3339())
        if self.addresses.active and not _host_network(pod):
            await self.addresses.set_up(record)
        try:
            await asyncio.to_thread(layout.create, names)
            await asyncio.to_thread(save_env, layout, record.pod)
        except BaseException:
            if record.netns and record.veth:
                await asyncio.to_thread(remove_pod_network, record.netns, record.veth)
            raise
        finally:
            self.addresses.forget_reservation(uid)
        runtime = PodRuntime(layout, record)
        self._pods[uid] = runtime
        self._changed(runtime)
        self.supervisor.start(runtime)

    async def update_pod(self, pod: Pod) -> None:
        runtime = self._pods.get(uid_of(pod))
        if runtime is None or runtime.gone:
            raise NotFound(f"pod {key_of(pod)} is not running in the process provider")
        old_images = {
            str(c.get("name")): c.get("image")
            for c in containers_of(runtime.record.pod, "containers")
        }
        runtime.record.pod = deep_copy(pod)
        await asyncio.to_thread(save_env, runtime.layout, runtime.record.pod)
        if not runtime.env_ready.is_set():
            log.info("process provider: pod %s has its resolved env again", runtime.record.key)
            runtime.env_ready.set()
        for container in containers_of(pod, "containers"):
            name = str(container.get("name"))
            run = runtime.runs.get(name)
            if old_images.get(name) != container.get("image") and run is not None:
                # As the kubelet: a changed image means a new container (restarted at once).
                runtime.restart_now.add(name)
                runtime.kill_messages.setdefault(
                    name, f"Container {name} definition changed, will be restarted"
                )
                deadline = time.time() + runtime.grace()
                runtime.spawn(self.lifecycle.kill(runtime, name, run, deadline))
        self._changed(runtime)

    async def delete_pod(self, pod: Pod) -> None:
        runtime = self._pods.get(uid_of(pod))
        if runtime is None or runtime.gone:
            raise NotFound(f"pod {key_of(pod)} is not running in the process provider")
        if runtime.deletion is not None:
            return
        meta = pod.get("metadata") or {}
        grace = meta.get("deletionGracePeriodSeconds")
        seconds = float(grace) if grace is not None else runtime.grace()
        runtime.record.deleting = True
        runtime.record.deletion_deadline = time.time() + seconds
        save(runtime.layout, runtime.record)
        runtime.deletion = asyncio.create_task(self._terminate(runtime))

    async def get_pod(self, namespace: str, name: str) -> Pod | None:
        runtime = self._by_name(namespace, name)
        return None if runtime is None else self._public(runtime)

    async def get_pod_status(self, namespace: str, name: str) -> PodStatus | None:
        runtime = self._by_name(namespace, name)
        return None if runtime is None else self._public(runtime)["status"]

    async def list_pods(self) -> list[Pod]:
        return [self._public(p) for p in self._pods.values() if not p.gone]

    async def _terminate(self, runtime: PodRuntime) -> None:
        """Graceful deletion: stop everything, report the final status, forget the pod, remove
        what it left on the host."""
        record = runtime.record
        await self.lifecycle.terminate(runtime)
        public = self._public(runtime)
        runtime.gone = True
        # Its address is not handed out again before its network namespace is gone.
        with self.addresses.releasing(record.pod_ip):
            self._pods.pop(record.uid, None)
            await finish(list(runtime.tasks))
            if self._notify is not None:
                self._notify(public)
            await asyncio.to_thread(clean_up, runtime, self.host.cgroups)

    # --- helpers --------------------------------------------------------------------------------

    def _by_name(self, namespace: str, name: str) -> PodRuntime | None:
        found = [
            p for p in self._pods.values() if not p.gone and p.record.key == f"{namespace}/{name}"
        ]
        found.sort(key=lambda p: p.record.deleting)
        return found[0] if found else None

    def _held_addresses(self) -> set[str]:
        """The addresses of pods with network namespaces of their own (see PodAddresses)."""
        return {p.record.pod_ip for p in self._pods.values() if p.record.netns and p.record.pod_ip}

    def _public(self, runtime: PodRuntime) -> Pod:
        pod: Pod = deep_copy(runtime.record.pod)
        pod["status"] = pod_status(runtime.record, self.context.internal_ip)
        if not runtime.env_ready.is_set():
            # Not the pod the core gave us any more: it resolves the env again (update_pod).
            pod["metadata"].setdefault("annotations", {})[SPEC_HASH_ANNOTATION] = ENV_LOST_HASH
        return pod

    def _changed(self, runtime: PodRuntime) -> None:
        if runtime.gone:
            return
        public = self._public(runtime)  # also settles condition transition times
        try:
            save(runtime.layout, runtime.record)
        except OSError as exc:
            log.error("process provider: cannot save the record of %s: %s", runtime.record.key, exc)
        if self._notify is not None:
            self._notify(public)

    def _container(
        self, namespace: str, pod: str, container: str
    ) -> tuple[PodRuntime, ContainerRecord]:
        runtime = self._by_name(namespace, pod)
        if runtime is None:
            raise NotFound(f"pod {namespace}/{pod} not found")
        record = runtime.record.containers.get(container)
        if record is None:
            raise NotFound(f'container "{container}" not found in pod "{namespace}/{pod}"')
        return runtime, record

    async def _exec_capture(
        self, runtime: PodRuntime, name: str, argv: list[str], timeout: float | None
    ) -> tuple[int, bytes]:
        """How probes and hooks run commands in containers (see streaming.exec_capture)."""
        return await streaming.exec_capture(
            runtime, name, argv, timeout, bind_mounts=self.host.bind_mounts
        )

    # --- the kubelet API ------------------------------------------------------------------------

    async def run_in_container(
        self, namespace: str, pod: str, container: str, command: list[str], io: ContainerIO
    ) -> int:
        runtime, _ = self._container(namespace, pod, container)
        return await streaming.run_in_container(
            runtime, container, command, io, bind_mounts=self.host.bind_mounts
        )

    async def attach_to_container(
        self, namespace: str, pod: str, container: str, io: ContainerIO
    ) -> int | None:
        runtime, _ = self._container(namespace, pod, container)
        return await streaming.attach(runtime, container, io)

    async def port_forward(self, namespace: str, pod: str, port: int, stream: DuplexStream) -> None:
        runtime = self._by_name(namespace, pod)
        if runtime is None:
            raise NotFound(f"pod {namespace}/{pod} not found")
        await streaming.port_forward(
            runtime, port, stream, runtime.pod_ip(self.context.internal_ip)
        )

    async def get_container_logs(
        self, namespace: str, pod: str, container: str, options: LogOptions
    ) -> AsyncIterator[bytes]:
        runtime, record = self._container(namespace, pod, container)
        run = run_to_show(
            record,
            live=container in runtime.runs,
            previous=options.previous,
            log_exists=lambda run: runtime.layout.log(container, run).exists(),
            pod=pod,
        )

        def running() -> bool:
            live = runtime.runs.get(container)
            return not runtime.gone and live is not None and live.run == run

        async for chunk in stream_log(runtime.layout.log(container, run), options, running):
            yield chunk

    async def get_stats_summary(self) -> dict[str, Any]:
        refs = []
        for runtime in list(self._pods.values()):
            if runtime.gone:
                continue
            meta = runtime.record.pod["metadata"]
            uid = runtime.record.uid
            records = runtime.record.containers
            containers = [
                ContainerRef(
                    name,
                    run.pgid,
                    run.started_at,
                    f"{uid}/{name}/{run.run}",
                    tuple(records[name].gpus) if name in records else (),
                )
                for name, run in runtime.runs.items()
            ]
            refs.append(
                PodRef(
                    name=str(meta["name"]),
                    namespace=str(meta["namespace"]),
                    uid=uid,
                    start_time=runtime.record.start_time,
                    containers=containers,
                )
            )
        async with self._stats_lock:
            return await asyncio.to_thread(self.stats.sample, self.context.node_name, refs)

    async def configure_node(self, node: Node) -> None:
        await describe_node(node, self.config.pods, self.context.state_dir)
        if self.gpus.devices:
            for kind in ("capacity", "allocatable"):
                node["status"][kind][GPU_RESOURCE] = str(len(self.gpus.devices))


def _host_network(pod: Pod) -> bool:
    return bool((pod.get("spec") or {}).get("hostNetwork"))
