"""The process provider itself: pod lifecycle, restarts, probes, deletion, and the kubelet API
(logs, exec, attach, port-forward, stats) on top of the shims (see the package docstring).

Each pod has one supervising task: init containers one after another, then every app container
in its own loop (start through a shim, wait for the exit record, account for it, back off,
restart per restartPolicy). All state that matters survives in the pod record and the shims'
files, so a restarted agent resumes where the old one stopped. Resolved env values (they may come
from Secrets) are kept in memory-backed storage only (see state.py); if they are gone when the
agent adopts a pod, the pod is reported with a stale spec hash, so the core resolves its env again
and passes it back through `update_pod`, and its containers wait for that before (re)starting.
It must never block the event loop on a process (subprocesses are asyncio's, file scans run in
threads), never signal a pid whose start time it has not checked, and never log container env
values, nor write them under the state directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import datetime
import errno
import fcntl
import ipaddress
import logging
import os
import shutil
import signal
import socket
import struct
import sys
import tempfile
import termios
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from ... import __version__
from ...errors import InvalidInput, NotFound
from ...kube.objects import key_of, uid_of
from ...kube.timefmt import rfc3339
from ...kubelet_api.logs import LogOptions
from ...pods.controller import SPEC_HASH
from ...streams import ContainerIO, DuplexStream, InputStream, OutputStream
from ..base import Node, Pod, PodCallback, PodStatus, Provider, ProviderContext
from .config import ProviderConfigError, load_config
from .launch import ConfigError, LaunchError, build, container_id
from .limits import Cgroups
from .logs import Follower, fallback_message, stream_log
from .network import NETNS_DIR, Bridge, NetworkError, remove_pod_network
from .probes import Handlers, pod_desc, probe_loop
from .shim import START_ERROR_CODE, enter_network_namespace, start_ticks, write_json
from .state import (
    ContainerRecord,
    Layout,
    PodRecord,
    RunInfo,
    ensure_private,
    load_all,
    memory_backed,
    read_json,
    read_run,
    restore_env,
    save,
    save_env,
    save_launch,
)
from .stats import ContainerRef, PodRef, Stats, memory_total
from .status import TERMINAL, containers_of, go_duration, pod_status, timestamp
from .status import phase as pod_phase

log = logging.getLogger(__name__)

SHIM = "virtual_kubelet.providers.process.shim"
DEFAULT_GRACE = 30.0
#: The kubelet's limit on termination messages read from the file.
MAX_TERMINATION_MESSAGE = 4096
#: How long exec output may keep coming after the command exited (background children).
DRAIN_SECONDS = 1.0
#: A shim that has not started its container by then is considered failed.
SHIM_START_TIMEOUT = 60.0
#: How long an address handed out by assign_pod_ips is kept for a pod that is not created yet.
RESERVATION_SECONDS = 3600.0
#: The spec hash reported for a pod whose env values were lost (see the module docstring): any
#: value but the real hash (and None, which counts as current) makes the core send it again.
ENV_LOST_HASH = "env-lost"


class _Pod:
    """A pod's record plus what only lives in memory: tasks, live runs, pending kills."""

    def __init__(self, layout: Layout, record: PodRecord) -> None:
        self.layout = layout
        self.record = record
        self.task: asyncio.Task[None] | None = None
        self.deletion: asyncio.Task[None] | None = None
        #: No more starts or restarts (being deleted, or past activeDeadlineSeconds).
        self.halted = False
        self.wake = asyncio.Event()
        self.runs: dict[str, RunInfo] = {}
        self.kill_messages: dict[str, str] = {}
        self.restart_now: set[str] = set()
        #: Running postStart hooks (cancelled when the pod halts) and, per container, why its
        #: last postStart hook failed (until that run's exit is accounted for).
        self.hooks: dict[str, asyncio.Task[tuple[bool, str]]] = {}
        self.hook_errors: dict[str, str] = {}
        self.tasks: set[asyncio.Task[Any]] = set()
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
        task = asyncio.create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def container(self, name: str) -> dict[str, Any]:
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


def _post_start(container: dict[str, Any], init: bool) -> dict[str, Any] | None:
    """The container's postStart handler, if it has one (init containers cannot)."""
    hook = (container.get("lifecycle") or {}).get("postStart")
    return hook if isinstance(hook, dict) and not init else None


def _mark_started(record: ContainerRecord, container: dict[str, Any], init: bool) -> None:
    """A container that is running (its postStart hook, if any, done): started unless a startup
    probe has to say so, ready unless a readiness probe has to (init containers never are)."""
    record.state, record.reason, record.message = "running", "", ""
    record.started = not container.get("startupProbe")
    record.ready = record.started and not container.get("readinessProbe") and not init


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def _signal_group(run: RunInfo, number: int) -> None:
    """Signal the container's process group, if its first process is still the one we started."""
    if run.container_alive():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(run.pgid, number)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _wait_pid(pid: int, ticks: int | None, timeout: float) -> None:
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
        loop.add_reader(fd, _resolve, exited)
        try:
            await asyncio.wait_for(exited, timeout)
        except TimeoutError:
            pass
        finally:
            loop.remove_reader(fd)
    finally:
        os.close(fd)


async def _read_fd(fd: int) -> bytes:
    """Read a non-blocking fd from the event loop; b"" at EOF (EIO on a pty counts as EOF)."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            return os.read(fd, 65536)
        except BlockingIOError:
            pass
        except OSError as exc:
            if exc.errno == errno.EIO:
                return b""
            raise
        ready: asyncio.Future[None] = loop.create_future()
        loop.add_reader(fd, _resolve, ready)
        try:
            await ready
        finally:
            loop.remove_reader(fd)


async def _write_fd(fd: int, data: bytes) -> None:
    loop = asyncio.get_running_loop()
    while data:
        try:
            data = data[os.write(fd, data) :]
            continue
        except BlockingIOError:
            pass
        ready: asyncio.Future[None] = loop.create_future()
        loop.add_writer(fd, _resolve, ready)
        try:
            await ready
        finally:
            loop.remove_writer(fd)


async def _copy_out(reader: asyncio.StreamReader, output: OutputStream) -> None:
    while chunk := await reader.read(65536):
        await output.write(chunk)


async def _feed(source: InputStream, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await source.read(65536):
            writer.write(data)
            await writer.drain()
    except (BrokenPipeError, ConnectionResetError):
        return  # the command closed its stdin
    finally:
        writer.close()


async def _finish(tasks: list[asyncio.Task[Any]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


class ProcessProvider(Provider):
    description = (
        "Containers run as local process trees under small shims that survive agent restarts."
    )

    def __init__(self, context: ProviderContext) -> None:
        super().__init__(context)
        self.config = load_config(context.config_path)
        self.root = context.state_dir / "process"
        #: Whether volumeMounts are bind mounts in private mount namespaces (else env vars).
        self.bind = False
        self.cgroups: Cgroups | None = None
        self.handlers = Handlers(context.internal_ip)
        self.stats = Stats(context.state_dir)
        self._stats_lock = asyncio.Lock()
        self._pods: dict[str, _Pod] = {}
        self._notify: PodCallback | None = None
        #: `network: pod`: the bridge, addresses promised to pods not created yet (uid ->
        #: address, when), addresses of deleted pods whose namespace is still being removed,
        #: and the address handed out last (the next search starts after it).
        self.bridge: Bridge | None = None
        self._reserved: dict[str, tuple[str, float]] = {}
        self._releasing: set[str] = set()
        self._last_ip: str | None = None

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
        self.bind = await self._detect_mounts()
        if self.config.network == "pod":
            await self._start_network()
        self.cgroups = await asyncio.to_thread(
            Cgroups, self.config.cgroups, self.config.cgroup_parent
        )
        records = await asyncio.to_thread(load_all, self.root, self.context.pods_dir)
        for layout, record in records:
            pod = _Pod(layout, record)
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
                await self._adopt_network(record)
            for name, state in record.containers.items():
                if state.run > state.processed_run:
                    info = read_run(layout, name, state.run)
                    if info is not None and info.shim_alive():
                        pod.runs[name] = info
                        if state.state != "running":
                            # Started just before the old agent died, or it died while the
                            # postStart hook ran (never run again, as a restarted kubelet does
                            # not): it runs, so say so.
                            _mark_started(state, pod.container(name), state.init)
                        state.started_at = info.started_at
                        state.process = dataclasses.asdict(info)
            pod.task = asyncio.create_task(self._run_pod(pod))
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
        await _finish(tasks)
        await self.handlers.close()
        if self.bridge is not None:
            if not self._pods and not self._releasing:
                # Nothing uses it: leave the host as it was found. Pods left running keep it.
                log.info("process provider: no pods left; removing bridge %s", self.bridge.name)
                await asyncio.to_thread(self.bridge.remove)
            self.bridge.close()
            self.bridge = None

    async def _start_network(self) -> None:
        bridge = Bridge(self.config.bridge, self.config.pod_cidr)
        try:
            await asyncio.to_thread(bridge.start)
        except NetworkError as exc:
            raise ProviderConfigError(f"network: pod is not possible on this host: {exc}") from None
        self.bridge = bridge
        log.info(
            "process provider: pods get network namespaces with addresses from %s on bridge %s "
            "(gateway %s; no NAT, no forwarding: they reach this machine only)",
            bridge.network,
            bridge.name,
            bridge.gateway,
        )

    async def _adopt_network(self, record: PodRecord) -> None:
        """A restarted agent: the pod keeps its address; its namespace is re-created if it went
        missing (a reboot), so its containers can start again."""
        if self.bridge is None:
            log.warning(
                "process provider: pod %s has network namespace %s but `network` is not `pod` "
                "any more; its containers stay in that namespace until the pod is deleted",
                record.key,
                record.netns,
            )
            return
        pod_ip = str(record.pod_ip)
        if self._last_ip is None or _ip_key(pod_ip) > _ip_key(self._last_ip):
            self._last_ip = pod_ip
        if record.deleting or pod_phase(record) in TERMINAL:
            return  # being removed, or ended: its namespace goes (see _run_pod)
        try:
            await asyncio.to_thread(self.bridge.set_up, record.uid, pod_ip, fresh=False)
        except NetworkError as exc:
            log.error("process provider: cannot restore the network of pod %s: %s", record.key, exc)

    async def _detect_mounts(self) -> bool:
        if self.config.mounts == "env":
            log.info("process provider: volumeMounts as VK_VOLUME_* env vars (mounts: env)")
            return False
        if os.geteuid() != 0:
            reason = "the agent does not run as root"
        else:
            scratch = await asyncio.to_thread(tempfile.mkdtemp, dir=self.root)
            try:
                probe = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    SHIM,
                    "probe-mounts",
                    scratch,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.PIPE,
                )
                _, err = await probe.communicate()
            finally:
                await asyncio.to_thread(_remove_tree, Path(scratch))
            if probe.returncode == 0:
                log.info("process provider: volumeMounts as bind mounts in private namespaces")
                return True
            reason = err.decode(errors="replace").strip() or f"exit code {probe.returncode}"
        if self.config.mounts == "bind":
            raise ProviderConfigError(f"mounts: bind is not possible on this host: {reason}")
        log.warning(
            "process provider: bind mounts are not possible (%s); volumeMounts are passed as "
            "VK_VOLUME_* env vars instead",
            reason,
        )
        return False

    # --- pods -----------------------------------------------------------------------------------

    def notify_pods(self, callback: PodCallback) -> None:
        self._notify = callback

    async def assign_pod_ips(self, pod: Pod) -> list[str] | None:
        if self.bridge is None or _host_network(pod):
            return [self.context.internal_ip]
        uid = uid_of(pod)
        existing = self._pods.get(uid)
        if existing is not None:  # created already (perhaps before `network: pod` was set)
            return [existing.record.pod_ip or self.context.internal_ip]
        try:
            return [self._reserve(uid, None)]
        except NetworkError as exc:
            log.warning("process provider: no address for pod %s: %s", key_of(pod), exc)
            return None  # create_pod says why

    def _used_ips(self, uid: str) -> set[str]:
        """Addresses other pods hold: live records, pods being removed, fresh reservations."""
        now = time.time()
        for other, (_, since) in list(self._reserved.items()):
            if now - since > RESERVATION_SECONDS:
                del self._reserved[other]  # assigned to a pod that was never created
        used = {p.record.pod_ip for p in self._pods.values() if p.record.netns and p.record.pod_ip}
        used.update(ip for other, (ip, _) in self._reserved.items() if other != uid)
        return used | self._releasing

    def _reserve(self, uid: str, wanted: str | None) -> str:
        """The address of pod `uid`: its reservation, else `wanted` if free, else a new one."""
        assert self.bridge is not None
        used = self._used_ips(uid)
        if uid in self._reserved:
            address = self._reserved[uid][0]
        elif wanted is not None and self.bridge.contains(wanted) and wanted not in used:
            address = wanted
        else:
            address = self.bridge.allocate(used, self._last_ip)
            self._last_ip = address
        self._reserved[uid] = (address, time.time())
        return address

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
        containers.update(
            {
                str(c["name"]): ContainerRecord(
                    name=str(c["name"]), image=str(c.get("image") or ""), reason=waiting
                )
                for c in app
            }
        )
        record = PodRecord(
            pod=copy.deepcopy(pod),
            start_time=rfc3339(),
            containers=containers,
            init_done=not init,
        )
        if self.bridge is not None and not _host_network(pod):
            await self._create_network(record)
        try:
            await asyncio.to_thread(layout.create, names)
            await asyncio.to_thread(save_env, layout, record.pod)
        except BaseException:
            if record.netns and record.veth:
                await asyncio.to_thread(remove_pod_network, record.netns, record.veth)
            raise
        finally:
            self._reserved.pop(uid, None)
        state = _Pod(layout, record)
        self._pods[uid] = state
        self._changed(state)
        state.task = asyncio.create_task(self._run_pod(state))

    async def _create_network(self, record: PodRecord) -> None:
        """The new pod's namespace and address (the one assign_pod_ips promised, if any)."""
        assert self.bridge is not None
        given = (record.pod.get("status") or {}).get("podIP")
        try:
            address = self._reserve(record.uid, str(given) if given else None)
            network = await asyncio.to_thread(self.bridge.set_up, record.uid, address, fresh=True)
        except NetworkError as exc:
            raise RuntimeError(f"cannot set up the pod's network: {exc}") from None
        record.pod_ip, record.netns, record.veth = network.ip, network.netns, network.veth
        status = record.pod.setdefault("status", {})
        status["podIP"], status["podIPs"] = network.ip, [{"ip": network.ip}]

    async def update_pod(self, pod: Pod) -> None:
        state = self._pods.get(uid_of(pod))
        if state is None or state.gone:
            raise NotFound(f"pod {key_of(pod)} is not running in the process provider")
        old_images = {
            str(c.get("name")): c.get("image")
            for c in containers_of(state.record.pod, "containers")
        }
        state.record.pod = copy.deepcopy(pod)
        await asyncio.to_thread(save_env, state.layout, state.record.pod)
        if not state.env_ready.is_set():
            log.info("process provider: pod %s has its resolved env again", state.record.key)
            state.env_ready.set()
        for container in containers_of(pod, "containers"):
            name = str(container.get("name"))
            run = state.runs.get(name)
            if old_images.get(name) != container.get("image") and run is not None:
                # As the kubelet: a changed image means a new container (restarted at once).
                state.restart_now.add(name)
                state.kill_messages.setdefault(
                    name, f"Container {name} definition changed, will be restarted"
                )
                state.spawn(self._kill(state, name, run, time.time() + state.grace()))
        self._changed(state)

    async def delete_pod(self, pod: Pod) -> None:
        state = self._pods.get(uid_of(pod))
        if state is None or state.gone:
            raise NotFound(f"pod {key_of(pod)} is not running in the process provider")
        if state.deletion is not None:
            return
        meta = pod.get("metadata") or {}
        grace = meta.get("deletionGracePeriodSeconds")
        seconds = float(grace) if grace is not None else state.grace()
        state.record.deleting = True
        state.record.deletion_deadline = time.time() + seconds
        save(state.layout, state.record)
        state.deletion = asyncio.create_task(self._terminate(state))

    async def get_pod(self, namespace: str, name: str) -> Pod | None:
        state = self._by_name(namespace, name)
        return None if state is None else self._public(state)

    async def get_pod_status(self, namespace: str, name: str) -> PodStatus | None:
        state = self._by_name(namespace, name)
        return None if state is None else self._public(state)["status"]

    async def list_pods(self) -> list[Pod]:
        return [self._public(p) for p in self._pods.values() if not p.gone]

    # --- helpers --------------------------------------------------------------------------------

    def _by_name(self, namespace: str, name: str) -> _Pod | None:
        found = [
            p for p in self._pods.values() if not p.gone and p.record.key == f"{namespace}/{name}"
        ]
        found.sort(key=lambda p: p.record.deleting)
        return found[0] if found else None

    def _public(self, state: _Pod) -> Pod:
        pod: Pod = copy.deepcopy(state.record.pod)
        pod["status"] = pod_status(state.record, self.context.internal_ip)
        if not state.env_ready.is_set():
            # Not the pod the core gave us any more: it resolves the env again (update_pod).
            pod["metadata"].setdefault("annotations", {})[SPEC_HASH] = ENV_LOST_HASH
        return pod

    def _pod_ip(self, state: _Pod) -> str:
        """Where httpGet and tcpSocket handlers connect: the pod's own address, or the node's."""
        return state.record.pod_ip or self.context.internal_ip

    def _changed(self, state: _Pod) -> None:
        if state.gone:
            return
        public = self._public(state)  # also settles condition transition times
        try:
            save(state.layout, state.record)
        except OSError as exc:
            log.error("process provider: cannot save the record of %s: %s", state.record.key, exc)
        if self._notify is not None:
            self._notify(public)

    def _container(self, namespace: str, pod: str, container: str) -> tuple[_Pod, ContainerRecord]:
        state = self._by_name(namespace, pod)
        if state is None:
            raise NotFound(f"pod {namespace}/{pod} not found")
        record = state.record.containers.get(container)
        if record is None:
            raise NotFound(f'container "{container}" not found in pod "{namespace}/{pod}"')
        return state, record

    # --- supervision ----------------------------------------------------------------------------

    async def _run_pod(self, state: _Pod) -> None:
        await self._run_containers(state)
        record = state.record
        if record.netns and not record.deleting and pod_phase(record) in TERMINAL:
            await self._release_network(state)

    async def _release_network(self, state: _Pod) -> None:
        """A pod that ended (Succeeded, Failed) needs no network namespace any more, as a
        kubelet removes a finished pod's sandbox. Its status keeps showing the address; another
        pod may get it from now on."""
        record = state.record
        netns, veth = record.netns, record.veth
        record.netns = record.veth = None
        self._changed(state)
        if netns and veth:
            await asyncio.to_thread(remove_pod_network, netns, veth)

    async def _run_containers(self, state: _Pod) -> None:
        record = state.record
        spec = record.pod.get("spec") or {}
        deadline = spec.get("activeDeadlineSeconds")
        if deadline is not None and record.phase is None and not record.deleting:
            state.spawn(self._deadline(state, float(deadline)))
        if not record.init_done:
            for container in containers_of(record.pod, "initContainers"):
                name = str(container["name"])
                if not _succeeded(record.containers[name]):
                    await self._supervise(state, name, init=True)
                if state.halted:
                    return
                if not _succeeded(record.containers[name]):
                    record.phase = "Failed"  # restartPolicy Never and an init container failed
                    self._changed(state)
                    return
            record.init_done = True
            for container in containers_of(record.pod, "containers"):
                app = record.containers[str(container["name"])]
                if app.state == "waiting" and app.reason == "PodInitializing":
                    app.reason = "ContainerCreating"
            self._changed(state)
        await asyncio.gather(
            *(
                self._supervise(state, str(c["name"]), init=False)
                for c in containers_of(record.pod, "containers")
            )
        )

    async def _supervise(self, state: _Pod, name: str, *, init: bool) -> None:
        record = state.record.containers[name]
        while (record.state != "terminated" and not state.halted) or name in state.runs:
            try:
                run = state.runs.get(name)
                if run is None and record.run > record.processed_run:
                    # A run started before the agent restarted whose shim is gone.
                    result = await self._collect_exit(state, name, record.run)
                    self._account(state, name, init, result)
                    continue
                fresh = run is None
                if run is None:
                    await self._back_off(state, record)
                    await self._env_ready(state)
                    if state.halted:
                        continue
                    run = await self._start_run(state, name, init)
                    if run is None:
                        continue
                    if self._halted(state):  # deleted while it was starting
                        deadline = self._deletion_deadline(state)
                        state.spawn(self._kill(state, name, run, deadline))
                elif record.state != "running":
                    record.state, record.started_at = "running", run.started_at
                    self._changed(state)
                # An adopted run (the agent restarted) had its postStart hook run already.
                watch = [] if init else [asyncio.create_task(self._watch(state, name, run, fresh))]
                try:
                    result = await self._wait_exit(state, name, run)
                finally:
                    await _finish(watch)
                self._account(state, name, init, result)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception(
                    "process provider: supervising container %s of %s failed",
                    name,
                    state.record.key,
                )
                record.state, record.reason = "waiting", "RunContainerError"
                record.message = "internal error of the process provider (see the agent's log)"
                record.backoff_until = time.time() + self.config.restart_backoff_seconds
                self._changed(state)
                await self._back_off(state, record)

    @staticmethod
    def _halted(state: _Pod) -> bool:
        return state.halted

    @staticmethod
    async def _env_ready(state: _Pod) -> None:
        """Until the containers' env is known again (see the module docstring) or the pod halts."""
        if state.env_ready.is_set():
            return
        waits = [asyncio.create_task(e.wait()) for e in (state.env_ready, state.wake)]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await _finish(waits)

    async def _back_off(self, state: _Pod, record: ContainerRecord) -> None:
        if record.backoff_until is None:
            return
        remaining = record.backoff_until - time.time()
        if remaining > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(state.wake.wait(), remaining)

    async def _start_run(self, state: _Pod, name: str, init: bool) -> RunInfo | None:
        """Start the next run of a container; None if it could not start (then accounted for)."""
        record = state.record.containers[name]
        container = state.container(name)
        layout = state.layout
        record.run += 1
        run = record.run
        record.restart_count = run - 1
        record.image = str(container.get("image") or "")
        record.backoff_until = None
        save(layout, state.record)  # a crash from here on finds run `run` and its files
        await asyncio.to_thread(layout.forget_runs_before, name, run - 1)
        pod = state.record.pod
        try:
            launch = await asyncio.to_thread(
                build,
                pod,
                container,
                config=self.config,
                layout=layout,
                volume_dir=lambda volume: self.context.volume_path(pod, volume),
                bind=self.bind,
            )
        except ConfigError as exc:
            self._start_failed(
                state, name, init, run, str(exc), time.time(), "CreateContainerConfigError"
            )
            return None
        except (LaunchError, OSError) as exc:
            self._start_failed(state, name, init, run, str(exc), time.time())
            return None
        cgroups = self.cgroups.prepare(state.record.uid, name, container) if self.cgroups else []
        spec_path = layout.spec(name, run)
        # What holds or derives from env values ($(VAR) in argv, subPathExpr in mount sources)
        # goes to memory-backed storage; the shim merges it into the spec.
        launch_path = save_launch(
            layout, name, run, {"argv": launch.argv, "env": launch.env, "mounts": launch.mounts}
        )
        write_json(
            spec_path,
            {
                "run": run,
                "launch_path": str(launch_path),
                "shown_argv0": launch.shown_argv0,
                "cwd": launch.cwd,
                "user": launch.user,
                "log_path": str(layout.log(name, run)),
                "log_max_bytes": self.config.log_max_bytes,
                "state_path": str(layout.state(name, run)),
                "exit_path": str(layout.exit(name, run)),
                "stdin_fifo": str(layout.fifo(name)) if container.get("stdin") else None,
                "stdin_once": bool(container.get("stdinOnce")),
                "tty": bool(container.get("tty")),
                "cgroups": cgroups,
                "rlimits": self.config.rlimits,
                "netns": str(NETNS_DIR / state.record.netns) if state.record.netns else None,
                "hide_netns": self.bridge is not None,
            },
        )
        if launch.termination_path == layout.termination(name):
            layout.termination(name).write_bytes(b"")  # a fresh message for each run
        record.cgroups = cgroups
        began = time.time()
        try:
            with layout.shim_log(name).open("ab") as shim_log:
                shim = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    SHIM,
                    "run",
                    str(spec_path),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=shim_log,
                    cwd=layout.container(name),
                    start_new_session=True,
                )
            async with asyncio.timeout(SHIM_START_TIMEOUT):
                await shim.wait()
        except (OSError, TimeoutError) as exc:
            self._start_failed(state, name, init, run, f"cannot start the shim: {exc}", began)
            return None
        info = read_run(layout, name, run)
        if info is None:
            result = read_json(layout.exit(name, run)) or {}
            message = str(
                result.get("error")
                or f"the shim exited with code {shim.returncode} before starting the container "
                f"(see {layout.shim_log(name)})"
            )
            self._start_failed(state, name, init, run, message, began)
            return None
        state.runs[name] = info
        record.process = dataclasses.asdict(info)
        record.log_path = str(layout.log(name, run))
        record.started_at = info.started_at
        record.container_id = container_id(state.record.uid, name, run, info.started_at)
        if _post_start(container, init) is None:
            _mark_started(record, container, init)
        else:
            # As with the kubelet, whose status shows the container as still being created
            # until its postStart hook returned: not running, started nor ready yet.
            record.state, record.reason, record.message = "waiting", "ContainerCreating", ""
            record.started = record.ready = False
        self._changed(state)
        return info

    def _start_failed(
        self,
        state: _Pod,
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
        record = state.record.containers[name]
        record.processed_run = run
        record.container_id = ""
        record.process = None
        state.runs.pop(name, None)
        log.info(
            "process provider: container %s of %s could not start: %s",
            name,
            state.record.key,
            message,
        )
        self._after_exit(
            state, name, init, terminated, run, 0.0, start_error=message, start_reason=reason
        )

    async def _wait_exit(self, state: _Pod, name: str, run: RunInfo) -> dict[str, Any]:
        exit_path = state.layout.exit(name, run.run)
        while True:
            result = await asyncio.to_thread(read_json, exit_path)
            if result is not None:
                return result
            if not run.shim_alive():
                result = await asyncio.to_thread(read_json, exit_path)
                return result if result is not None else await self._orphaned(state, name, run)
            await _wait_pid(run.shim_pid, run.shim_start, 5.0)

    async def _collect_exit(self, state: _Pod, name: str, run: int) -> dict[str, Any]:
        """How a run ended whose shim is gone (adoption after an agent restart)."""
        result = read_json(state.layout.exit(name, run))
        if result is not None:
            return result
        info = read_run(state.layout, name, run)
        if info is None:
            return {
                "run": run,
                "exit_code": START_ERROR_CODE,
                "error": "the agent stopped while starting the container",
                "started_at": time.time(),
                "finished_at": time.time(),
            }
        return await self._orphaned(state, name, info)

    async def _orphaned(self, state: _Pod, name: str, run: RunInfo) -> dict[str, Any]:
        """The shim died without an exit record: kill what is left of the container."""
        log.warning(
            "process provider: the shim of container %s of %s died; killing the container",
            name,
            state.record.key,
        )
        _signal_group(run, signal.SIGKILL)
        for _ in range(50):
            if not run.container_alive():
                break
            await asyncio.sleep(0.02)
        return {
            "run": run.run,
            "exit_code": 137,
            "signal": signal.SIGKILL,
            "started_at": run.started_at,
            "finished_at": time.time(),
            "reason": "ContainerStatusUnknown",
            "message": "the container's shim ended without recording how the container exited",
        }

    def _account(self, state: _Pod, name: str, init: bool, result: dict[str, Any]) -> None:
        """Record how a run ended and decide what comes next."""
        record = state.record.containers[name]
        run = int(result.get("run") or record.run)
        started = float(result.get("started_at") or time.time())
        finished = float(result.get("finished_at") or time.time())
        state.runs.pop(name, None)
        record.process = None
        hook_error = state.hook_errors.pop(name, None)
        if result.get("error"):
            state.kill_messages.pop(name, None)
            self._start_failed(state, name, init, run, str(result["error"]), started)
            return
        code = int(result.get("exit_code") or 0)
        container = state.container(name)
        reason = str(result.get("reason") or "")
        if not reason:
            reason = (
                "OOMKilled" if result.get("oom_killed") else "Completed" if code == 0 else "Error"
            )
        message = state.kill_messages.pop(name, None) or str(result.get("message") or "")
        if not message:
            message = self._termination_message(state, name, container, run, code)
        terminated: dict[str, Any] = {
            "exitCode": code,
            "reason": reason,
            "startedAt": timestamp(started),
            "finishedAt": timestamp(finished),
        }
        if result.get("signal"):
            terminated["signal"] = int(result["signal"])
        if message:
            terminated["message"] = message
        if record.container_id:
            terminated["containerID"] = f"process://{record.container_id}"
        record.processed_run = run
        self._after_exit(
            state, name, init, terminated, run, finished - started, hook_error=hook_error
        )

    def _termination_message(
        self, state: _Pod, name: str, container: dict[str, Any], run: int, code: int
    ) -> str:
        launch = read_json(state.layout.launch(name, run)) or {}
        env = launch.get("env") or {}
        path = Path(str(env.get("VK_TERMINATION_MESSAGE_PATH") or state.layout.termination(name)))
        try:
            with path.open("rb") as handle:
                data = handle.read(MAX_TERMINATION_MESSAGE)
        except OSError:
            data = b""
        message = data.decode("utf-8", "replace")
        policy = container.get("terminationMessagePolicy") or "File"
        if not message.strip() and code != 0 and policy == "FallbackToLogsOnError":
            message = fallback_message(state.layout.log(name, run))
        return message

    def _after_exit(
        self,
        state: _Pod,
        name: str,
        init: bool,
        terminated: dict[str, Any],
        run: int,
        ran_for: float,
        start_error: str | None = None,
        hook_error: str | None = None,
        start_reason: str = "RunContainerError",
    ) -> None:
        record = state.record.containers[name]
        code = int(terminated["exitCode"])
        policy = state.policy()
        forced = name in state.restart_now
        state.restart_now.discard(name)
        if state.halted:
            restart = False
        elif forced:
            restart = True
        elif init:
            restart = code != 0 and policy != "Never"
        else:
            restart = policy == "Always" or (policy == "OnFailure" and code != 0)
        record.ready = record.started = False
        if not restart:
            record.state, record.terminated = "terminated", terminated
            record.reason = record.message = ""
            record.ready = init and code == 0
            self._changed(state)
            return
        record.last_terminated, record.last_run = terminated, run
        base = self.config.restart_backoff_seconds
        if forced:
            delay = 0.0
        else:
            if ran_for >= self.config.backoff_reset_seconds:
                record.backoff = 0.0
            # As the kubelet: the first restart is immediate, then 10 s, 20 s, ... up to 300 s.
            delay = record.backoff
            record.backoff = (
                base if delay == 0 else min(delay * 2, self.config.max_restart_backoff_seconds)
            )
        record.backoff_until = time.time() + delay if delay > 0 else None
        record.state = "waiting"
        if start_error is not None:
            record.reason, record.message = start_reason, start_error
        elif delay > 0:
            meta = state.record.pod["metadata"]
            record.reason = "CrashLoopBackOff"
            record.message = (
                f"back-off {go_duration(delay)} restarting failed container={name} "
                f"pod={meta['name']}_{meta['namespace']}({meta['uid']})"
            )
        elif hook_error is not None:
            # The kubelet's waiting reason until the next start (its SyncPod error).
            record.reason, record.message = "PostStartHookError", hook_error
        else:
            record.reason, record.message = "ContainerCreating", ""
        self._changed(state)

    # --- probes and killing -----------------------------------------------------------------------

    def _exec_fn(
        self, state: _Pod, name: str
    ) -> Callable[[list[str], float | None], Awaitable[tuple[int, bytes]]]:
        async def run(argv: list[str], timeout: float | None) -> tuple[int, bytes]:
            return await self._exec_capture(state, name, argv, timeout)

        return run

    async def _watch(self, state: _Pod, name: str, run: RunInfo, post_start: bool) -> None:
        """An app container's run from its start to its exit (the caller cancels this then):
        its postStart hook (on fresh starts), then its probes."""
        container = state.container(name)
        hook = _post_start(container, False) if post_start else None
        if hook is not None:
            if state.halted:
                return
            outcome = await self._run_post_start(state, name, run, hook)
            if outcome is None or state.runs.get(name) is not run:
                return  # abandoned: the pod halts, or the run ended meanwhile
            ok, message = outcome
            if not ok:
                self._post_start_failed(state, name, run, message)
                return
            _mark_started(state.record.containers[name], container, False)
            self._changed(state)
        probes = self._start_probes(state, name, run)
        try:
            if probes:
                await asyncio.wait(probes)
        finally:
            await _finish(probes)

    async def _run_post_start(
        self, state: _Pod, name: str, run: RunInfo, hook: dict[str, Any]
    ) -> tuple[bool, str] | None:
        """Run the postStart hook to its end; None if it was abandoned (see `_Pod.halt`)."""
        task = asyncio.create_task(
            self.handlers.hook(
                hook,
                state.container(name),
                self._exec_fn(state, name),
                pod=pod_desc(state.record.pod),
                pod_ip=self._pod_ip(state),
            )
        )
        state.hooks[name] = task
        try:
            await asyncio.wait([task])
        finally:
            if state.hooks.get(name) is task:
                del state.hooks[name]
            if not task.done():  # this watch is cancelled: the run ended
                await _finish([task])
        return None if task.cancelled() else task.result()

    def _post_start_failed(self, state: _Pod, name: str, run: RunInfo, message: str) -> None:
        """As the kubelet's startContainer: kill the container (preStop hook and grace period as
        for any kill), then its restartPolicy applies. The kubelet's waiting reason
        PostStartHookError carries the message; so does the terminated state here (the
        kubelet's event, FailedPostStartHook, has no place outside the status)."""
        if state.halted or name in state.kill_messages:
            return  # being killed already
        # The message may quote the hook's output: not logged, as the kubelet keeps it out of
        # its event.
        log.info(
            "process provider: postStart hook of container %s in %s failed; killing it",
            name,
            state.record.key,
        )
        state.kill_messages[name] = f"PostStartHookError: {message}"
        state.hook_errors[name] = message
        state.spawn(self._kill(state, name, run, time.time() + state.grace()))

    def _start_probes(self, state: _Pod, name: str, run: RunInfo) -> list[asyncio.Task[None]]:
        container = state.container(name)
        record = state.record.containers[name]
        startup = container.get("startupProbe")
        readiness = container.get("readinessProbe")
        liveness = container.get("livenessProbe")
        started = asyncio.Event()
        if record.started or not startup:
            started.set()
        exec_fn = self._exec_fn(state, name)

        def check(probe: dict[str, Any]) -> Callable[[float], Awaitable[tuple[bool, str]]]:
            async def run_check(timeout: float) -> tuple[bool, str]:
                return await self.handlers.run(
                    probe, container, timeout, exec_fn, pod_ip=self._pod_ip(state)
                )

            return run_check

        def current() -> bool:
            return state.runs.get(name) is run

        def on_startup(ok: bool, message: str) -> None:
            if not current():
                return
            if ok:
                record.started = True
                if not readiness:
                    record.ready = True
                started.set()
                self._changed(state)
            else:
                self._probe_kill(state, name, run, startup or {}, "startup")

        def on_readiness(ok: bool, message: str) -> None:
            if current() and record.started and record.ready != ok:
                record.ready = ok
                self._changed(state)

        def on_liveness(ok: bool, message: str) -> None:
            if current() and not ok:
                self._probe_kill(state, name, run, liveness or {}, "liveness")

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
        self, state: _Pod, name: str, run: RunInfo, probe: dict[str, Any], kind: str
    ) -> None:
        if name in state.kill_messages or state.halted:
            return
        message = f"Container {name} failed {kind} probe, will be restarted"
        log.info("process provider: pod %s: %s", state.record.key, message)
        state.kill_messages[name] = message
        grace = probe.get("terminationGracePeriodSeconds")
        seconds = float(grace) if grace is not None else state.grace()
        state.spawn(self._kill(state, name, run, time.time() + seconds))

    async def _kill(self, state: _Pod, name: str, run: RunInfo, deadline: float) -> None:
        """preStop hook, SIGTERM to the process group, SIGKILL once `deadline` passed."""
        container = state.container(name)
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
                            self._exec_fn(state, name),
                            pod_ip=self._pod_ip(state),
                        )
                    if not ok:
                        log.info(
                            "process provider: preStop hook of %s in %s failed",
                            name,
                            state.record.key,
                        )
                except TimeoutError:
                    log.info(
                        "process provider: preStop hook of %s in %s did not finish in time",
                        name,
                        state.record.key,
                    )
                except InvalidInput:
                    pass  # the container exited meanwhile
        _signal_group(run, signal.SIGTERM)
        while run.container_alive() and (remaining := deadline - time.time()) > 0:
            await _wait_pid(run.pid, run.pid_start, min(remaining, 1.0))
        if run.container_alive():
            _signal_group(run, signal.SIGKILL)

    def _deletion_deadline(self, state: _Pod) -> float:
        deadline = state.record.deletion_deadline
        return deadline if deadline is not None else time.time() + state.grace()

    async def _terminate(self, state: _Pod) -> None:
        """Graceful deletion: stop everything, report the final status, forget the pod."""
        record = state.record
        state.halt()
        deadline = self._deletion_deadline(state)
        await asyncio.gather(
            *(self._kill(state, name, run, deadline) for name, run in list(state.runs.items())),
            return_exceptions=True,
        )
        if state.task is not None:
            try:
                await asyncio.wait_for(
                    asyncio.shield(state.task), max(deadline - time.time(), 0) + 10
                )
            except TimeoutError:
                log.warning("process provider: %s did not stop in time; forgetting it", record.key)
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
        public = self._public(state)
        state.gone = True
        if record.pod_ip:
            self._releasing.add(record.pod_ip)  # not handed out again before the netns is gone
        self._pods.pop(record.uid, None)
        await _finish(list(state.tasks))
        if self._notify is not None:
            self._notify(public)
        try:
            await asyncio.to_thread(self._clean_up, state)
        finally:
            if record.pod_ip:
                self._releasing.discard(record.pod_ip)

    def _clean_up(self, state: _Pod) -> None:
        record = state.record
        if record.netns and record.veth:
            # Before the record goes: an agent dying in between finds the pod and removes it again.
            remove_pod_network(record.netns, record.veth)
        state.layout.remove()
        if self.cgroups is not None:
            self.cgroups.remove_pod(record.uid)

    async def _deadline(self, state: _Pod, seconds: float) -> None:
        """activeDeadlineSeconds: past it, the pod is killed and Failed (DeadlineExceeded)."""
        record = state.record
        started = _epoch(record.start_time)
        await asyncio.sleep(max(started + seconds - time.time(), 0))
        if record.phase is not None or state.halted:
            return
        record.phase, record.reason = "Failed", "DeadlineExceeded"
        record.message = "Pod was active on the node longer than the specified deadline"
        state.halt()
        self._changed(state)
        deadline = time.time() + state.grace()
        await asyncio.gather(
            *(self._kill(state, name, run, deadline) for name, run in list(state.runs.items())),
            return_exceptions=True,
        )

    # --- exec -------------------------------------------------------------------------------------

    async def _exec_process(
        self,
        state: _Pod,
        name: str,
        argv: list[str],
        *,
        stdin: Any,
        stdout: Any,
        stderr: Any,
        tty: bool = False,
    ) -> asyncio.subprocess.Process:
        """Start `argv` in the container's env, working directory, mounts and cgroups."""
        run = state.runs.get(name)
        if run is None or not run.container_alive():
            raise InvalidInput(f'container "{name}" is not running')
        if not state.layout.launch(name, run.run).exists():
            raise InvalidInput(
                f'the environment of container "{name}" is gone from memory-backed storage; '
                "it gets it back when it restarts"
            )
        args = [sys.executable, "-m", SHIM, "exec", str(state.layout.spec(name, run.run))]
        fds: list[int] = []
        try:
            if self.bind:
                try:
                    fds.append(os.open(f"/proc/{run.pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC))
                except OSError:
                    raise InvalidInput(f'container "{name}" is not running') from None
                if not run.container_alive():  # the pid was reused between the checks
                    raise InvalidInput(f'container "{name}" is not running')
                args += ["--ns-fd", str(fds[0])]
            if tty:
                args.append("--tty")
            args += ["--", *argv]
            return await asyncio.create_subprocess_exec(
                *args,
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
                pass_fds=fds,
            )
        finally:
            for fd in fds:
                os.close(fd)

    async def _exec_capture(
        self, state: _Pod, name: str, argv: list[str], timeout: float | None
    ) -> tuple[int, bytes]:
        """Run a probe or hook command; its exit code and combined output. TimeoutError if it
        takes longer than `timeout` (it is killed then; None: no limit, but it is killed if the
        caller is cancelled)."""
        process = await self._exec_process(
            state,
            name,
            argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            async with asyncio.timeout(timeout):
                output, _ = await process.communicate()
        finally:
            await _reap(process)
        return _exit_code(process.returncode or 0), output

    async def run_in_container(
        self, namespace: str, pod: str, container: str, command: list[str], io: ContainerIO
    ) -> int:
        state, _ = self._container(namespace, pod, container)
        if not command:
            raise InvalidInput("empty command")
        if io.tty:
            return await self._exec_tty(state, container, command, io)
        pipe, devnull = asyncio.subprocess.PIPE, asyncio.subprocess.DEVNULL
        process = await self._exec_process(
            state,
            container,
            command,
            stdin=pipe if io.stdin is not None else devnull,
            stdout=pipe if io.stdout is not None else devnull,
            stderr=pipe if io.stderr is not None else devnull,
        )
        tasks: list[asyncio.Task[Any]] = []
        try:
            pumps = []
            if io.stdout is not None and process.stdout is not None:
                pumps.append(asyncio.create_task(_copy_out(process.stdout, io.stdout)))
            if io.stderr is not None and process.stderr is not None:
                pumps.append(asyncio.create_task(_copy_out(process.stderr, io.stderr)))
            tasks.extend(pumps)
            if io.stdin is not None and process.stdin is not None:
                tasks.append(asyncio.create_task(_feed(io.stdin, process.stdin)))
            code = await process.wait()
            if pumps:
                await asyncio.wait(pumps, timeout=DRAIN_SECONDS)
            for pump in pumps:
                if pump.done() and not pump.cancelled() and (error := pump.exception()):
                    raise error
            return _exit_code(code)
        finally:
            await _finish(tasks)
            await _reap(process)

    async def _exec_tty(self, state: _Pod, name: str, command: list[str], io: ContainerIO) -> int:
        master, slave = os.openpty()
        try:
            try:
                process = await self._exec_process(
                    state, name, command, stdin=slave, stdout=slave, stderr=slave, tty=True
                )
            finally:
                os.close(slave)
        except BaseException:
            os.close(master)
            raise
        os.set_blocking(master, False)
        output = io.stdout or io.stderr

        async def pump_out() -> None:
            while data := await _read_fd(master):
                if output is not None:
                    await output.write(data)

        async def pump_in() -> None:
            assert io.stdin is not None
            while data := await io.stdin.read(65536):
                await _write_fd(master, data)

        async def resize() -> None:
            assert io.resize is not None
            async for size in io.resize:
                winsize = struct.pack("HHHH", size.height, size.width, 0, 0)
                fcntl.ioctl(master, termios.TIOCSWINSZ, winsize)

        reader = asyncio.create_task(pump_out())
        tasks = [reader]
        if io.stdin is not None:
            tasks.append(asyncio.create_task(pump_in()))
        if io.resize is not None:
            tasks.append(asyncio.create_task(resize()))
        try:
            code = await process.wait()
            await asyncio.wait([reader], timeout=DRAIN_SECONDS)
            return _exit_code(code)
        finally:
            await _finish(tasks)
            await _reap(process)
            os.close(master)

    # --- attach, logs, port-forward ---------------------------------------------------------------

    async def attach_to_container(
        self, namespace: str, pod: str, container: str, io: ContainerIO
    ) -> int | None:
        state, _ = self._container(namespace, pod, container)
        run = state.runs.get(container)
        if run is None:
            raise InvalidInput(f'container "{container}" is not running')
        wants_stdin = bool(state.container(container).get("stdin"))
        follower = Follower.at_end(state.layout.log(container, run.run))

        async def show() -> None:
            while True:
                ended = state.runs.get(container) is not run
                for stream, data in follower.read_raw():
                    target = io.stdout
                    if stream == b"stderr" and io.stderr is not None:
                        target = io.stderr
                    if target is not None:
                        await target.write(data)
                if ended:
                    return
                await asyncio.sleep(0.1)

        async def feed() -> None:
            assert io.stdin is not None
            if not wants_stdin:
                while await io.stdin.read(65536):
                    pass  # the container has no stdin: what is typed goes nowhere
                return
            writer = await _open_fifo(state.layout.fifo(container))
            await _feed(io.stdin, writer)

        viewer = asyncio.create_task(show())
        tasks: list[asyncio.Task[None]] = [viewer]
        if io.stdin is not None:
            tasks.append(asyncio.create_task(feed()))
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if (error := task.exception()) is not None:
                    raise error
        finally:
            await _finish(tasks)
            follower.close()
        if state.runs.get(container) is run:
            return None
        result = read_json(state.layout.exit(container, run.run)) or {}
        code = result.get("exit_code")
        return int(code) if code is not None else None

    async def get_container_logs(
        self, namespace: str, pod: str, container: str, options: LogOptions
    ) -> AsyncIterator[bytes]:
        state, record = self._container(namespace, pod, container)
        if options.previous:
            run = record.last_run
            if not run or not state.layout.log(container, run).exists():
                raise InvalidInput(
                    f'previous terminated container "{container}" in pod "{pod}" not found'
                )
        elif (record.state in ("running", "terminated") or container in state.runs) and record.run:
            run = record.run  # (a run whose postStart hook runs is "waiting" but has a log)
        elif record.last_run:
            run = record.last_run
        else:
            raise InvalidInput(
                f'container "{container}" in pod "{pod}" is waiting to start: '
                f"{record.reason or 'ContainerCreating'}"
            )

        def running() -> bool:
            live = state.runs.get(container)
            return not state.gone and live is not None and live.run == run

        async for chunk in stream_log(state.layout.log(container, run), options, running):
            yield chunk

    async def port_forward(self, namespace: str, pod: str, port: int, stream: DuplexStream) -> None:
        state = self._by_name(namespace, pod)
        if state is None:
            raise NotFound(f"pod {namespace}/{pod} not found")
        # As a kubelet dialling localhost inside the pod's network namespace: loopback first
        # (a server may listen there only), then the pod IP. Without a namespace of its own the
        # pod shares the host's network, whose loopback and address (the node's) these are.
        netns = str(NETNS_DIR / state.record.netns) if state.record.netns else None
        reader = writer = None
        errors = []
        for host in dict.fromkeys(("127.0.0.1", self._pod_ip(state))):
            try:
                if netns is None:
                    reader, writer = await asyncio.open_connection(host, port)
                else:
                    reader, writer = await _connect_in(netns, host, port)
                break
            except OSError as exc:
                errors.append(f"{host}:{port}: {exc.strerror or exc}")
        if reader is None or writer is None:
            raise RuntimeError(
                f"cannot connect to port {port} of pod {namespace}/{pod} ({'; '.join(errors)})"
            )

        async def upstream() -> None:
            while data := await stream.read(65536):
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()

        sender = asyncio.create_task(upstream())
        try:
            while data := await reader.read(65536):
                await stream.write(data)
            await stream.close()
        finally:
            await _finish([sender])
            writer.close()

    # --- stats and the node -----------------------------------------------------------------------

    async def get_stats_summary(self) -> dict[str, Any]:
        refs = []
        for state in list(self._pods.values()):
            if state.gone:
                continue
            meta = state.record.pod["metadata"]
            containers = [
                ContainerRef(name, run.pgid, run.started_at, f"{state.record.uid}/{name}/{run.run}")
                for name, run in state.runs.items()
            ]
            refs.append(
                PodRef(
                    name=str(meta["name"]),
                    namespace=str(meta["namespace"]),
                    uid=state.record.uid,
                    start_time=state.record.start_time,
                    containers=containers,
                )
            )
        async with self._stats_lock:
            return await asyncio.to_thread(self.stats.sample, self.context.node_name, refs)

    async def configure_node(self, node: Node) -> None:
        details = await asyncio.to_thread(_host_details, self.context.state_dir)
        resources = {
            "cpu": str(os.cpu_count() or 1),
            "memory": f"{details['memory'] // 1024}Ki",
            "pods": str(self.config.pods),
            "ephemeral-storage": f"{details['storage'] // 1024}Ki",
        }
        status = node.setdefault("status", {})
        status["capacity"] = dict(resources)
        status["allocatable"] = dict(resources)
        info = status.setdefault("nodeInfo", {})
        info["containerRuntimeVersion"] = f"process://{__version__}"
        info["kernelVersion"] = os.uname().release
        info["osImage"] = details["os_image"]
        for key in ("machineID", "bootID"):
            if details.get(key):
                info[key] = details[key]


def _socket_in(netns: str) -> socket.socket:
    """A TCP socket of network namespace `netns` (a path under /var/run/netns). A socket stays
    in the namespace it was created in, so a short-lived thread of its own enters the namespace
    (setns moves only the calling thread), creates the socket and ends: no thread of the agent
    ever changes namespace."""
    created: list[socket.socket] = []
    failed: list[OSError] = []

    def work() -> None:
        try:
            enter_network_namespace(netns)
            created.append(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        except OSError as exc:
            failed.append(exc)

    thread = threading.Thread(target=work, name="vk-netns-socket", daemon=True)
    thread.start()
    thread.join()
    if failed:
        raise failed[0]
    return created[0]


async def _connect_in(
    netns: str, host: str, port: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to host:port from inside the pod's network namespace."""
    sock = _socket_in(netns)
    try:
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
    except BaseException:
        sock.close()
        raise
    return await asyncio.open_connection(sock=sock)


async def _reap(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)  # our own child: its pid cannot be reused yet
        await process.wait()


async def _open_fifo(path: Path) -> asyncio.StreamWriter:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno in (errno.ENXIO, errno.ENOENT):
            raise InvalidInput("the container is not reading its stdin") from None
        raise
    loop = asyncio.get_running_loop()
    pipe = os.fdopen(fd, "wb", buffering=0)
    transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, pipe)
    return asyncio.StreamWriter(transport, protocol, None, loop)


def _host_network(pod: Pod) -> bool:
    return bool((pod.get("spec") or {}).get("hostNetwork"))


def _ip_key(address: str) -> int:
    try:
        return int(ipaddress.IPv4Address(address))
    except ValueError:
        return -1


def _succeeded(record: ContainerRecord) -> bool:
    return record.state == "terminated" and (record.terminated or {}).get("exitCode") == 0


def _epoch(stamp: str) -> float:
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _host_details(state_dir: Path) -> dict[str, Any]:
    details: dict[str, Any] = {"memory": memory_total(), "storage": 0, "os_image": "Linux"}
    target = state_dir if state_dir.exists() else Path("/")
    with contextlib.suppress(OSError):
        fs = os.statvfs(target)
        details["storage"] = fs.f_blocks * fs.f_frsize
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                details["os_image"] = line.split("=", 1)[1].strip().strip('"')
    for key, path in (
        ("machineID", "/etc/machine-id"),
        ("bootID", "/proc/sys/kernel/random/boot_id"),
    ):
        with contextlib.suppress(OSError):
            details[key] = Path(path).read_text().strip()
    return details
