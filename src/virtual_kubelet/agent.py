"""The running agent: wires client, provider, node, lease, pods and metrics together and runs them.

Start-up order matters and is the promise of this module: the API server must answer, the provider
starts, the pod cache syncs and the provider's pods are reconciled (adopted or removed) *before* the
Node is registered, so nothing is created twice and nothing deleted meanwhile is forgotten. On
SIGTERM/SIGINT the agent stops taking work and exits, leaving pods running in the provider.

With leader election (`--leader-elect`) all of that waits until this agent leads its node: a
standby has only its metrics endpoint and a candidate loop, so adoption happens when it takes over.
A leader that loses its Lease stops serving at once and exits with LeadershipLost.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from . import __version__
from .gcpacing import FullCollectionPacer
from .kube import config as kubeconfig
from .kube.client import KubeClient
from .kube.errors import ApiError
from .kube.events import EventRecorder
from .kubelet_api.certs import ServingIdentity
from .kubelet_api.listener import ListenError, bind_listener, unreachable_reason
from .kubelet_api.service import KubeletApiSettings, KubeletService
from .metrics import LEADER, count_pods_from, watch_gc_pauses
from .node.controller import NodeController, NodeSettings
from .node.health import ProviderHealth
from .node.leader import ElectionSettings, LeaderElector, LeadershipLost
from .node.lease import DURATION_S as LEASE_DURATION_S
from .node.lease import LeaseController
from .pods.controller import PodController
from .pods.resources import ResourceCache
from .pods.settings import PodNode, PodSettings
from .pods.volumes import PodVolumes
from .providers import registry
from .providers.base import ProviderContext
from .sdk import Provider

log = logging.getLogger(__name__)


class StartupError(RuntimeError):
    """The agent could not start; the message says why and what to do."""


@dataclass
class AgentSettings:
    """Everything the command line sets. Each default lives in exactly one place: here, or, for a
    part's own settings, in that part's settings (`pods`, `NodeSettings`, the Lease); the command
    line shows and uses these."""

    node_name: str
    provider: str
    kubeconfig: str | None = None
    provider_config: Path | None = None
    operating_system: str = NodeSettings.operating_system
    internal_ip: str | None = None
    daemon_port: int = NodeSettings.daemon_port
    taints: tuple[dict[str, str], ...] = ()
    state_dir: Path = Path("/var/lib/virtual-kubelet")
    volumes_dir: Path | None = None
    cluster_domain: str = ProviderContext.cluster_domain
    pods: PodSettings = field(default_factory=PodSettings)
    full_resync_period: float = 60.0
    startup_timeout: float = 0.0
    kube_api_qps: float = 1000.0
    kube_api_burst: int = 2000
    event_qps: float = 50.0
    event_burst: int = 100
    metrics_addr: str = "127.0.0.1:10255"
    node_status_interval: float = NodeSettings.status_interval
    lease_duration: int = LEASE_DURATION_S
    extra_labels: dict[str, str] = field(default_factory=dict)
    kubelet_api: KubeletApiSettings | None = field(default_factory=KubeletApiSettings)
    #: `--leader-elect`: agents for the same node elect one that serves it; None = always serve.
    leader_election: ElectionSettings | None = None


def memory_backed(path: Path) -> bool:
    try:
        with open("/proc/self/mounts") as mounts:
            best = ""
            kind = ""
            for line in mounts:
                fields = line.split()
                point = fields[1]
                if str(path).startswith(point.rstrip("/") + "/") and len(point) > len(best):
                    best, kind = point, fields[2]
        return kind == "tmpfs"
    except OSError:
        return False


def default_volumes_dir(node: str, state_dir: Path) -> Path:
    """A memory-backed place for pod volumes, like the kubelet's tmpfs mounts: secrets and tokens
    never reach a disk, and writing them costs microseconds. Falls back to `state_dir/pods`."""
    candidates = []
    if os.environ.get("XDG_RUNTIME_DIR"):
        candidates.append(Path(os.environ["XDG_RUNTIME_DIR"]) / "virtual-kubelet" / node)
    candidates += [
        Path("/run/virtual-kubelet") / node,
        Path(f"/dev/shm/virtual-kubelet-{os.getuid()}") / node,
    ]
    for candidate in candidates:
        if memory_backed(candidate) and os.access(_existing_parent(candidate), os.W_OK):
            return candidate
    return state_dir / "pods"


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _detect_ip(server: str) -> str:
    """The local address the kernel would use to reach the API server."""
    host = urlparse(server).hostname or "127.0.0.1"
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((host, 443))  # UDP connect sends nothing; it only picks a route
            address: str = s.getsockname()[0]
            return address
    except OSError:
        return "127.0.0.1"


class Agent:
    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        self.metrics_port: int | None = None

    async def _wait_for_api(self, client: KubeClient) -> dict[str, Any]:
        """GET /version until it answers; credentials rejected or the deadline passed are fatal."""
        deadline = time.monotonic() + self.settings.startup_timeout
        delay = 0.5
        while True:
            try:
                version: dict[str, Any] = await client.get("/version")
                return version
            except ApiError as exc:
                if exc.status in (401, 403):
                    raise StartupError(
                        f"the API server {client.config.server} rejected our credentials "
                        f"({exc.status} {exc.reason}); check {client.config.source}"
                    ) from None
                if self.settings.startup_timeout and time.monotonic() + delay > deadline:
                    raise StartupError(
                        f"the API server {client.config.server} did not answer within "
                        f"--startup-timeout={self.settings.startup_timeout:g}s: {exc}"
                    ) from None
                log.warning(
                    "API server %s not reachable (%s); retrying in %.1f s",
                    client.config.server,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def run(self) -> None:
        s = self.settings
        try:
            config = kubeconfig.load(s.kubeconfig)
        except kubeconfig.ConfigError as exc:
            raise StartupError(str(exc)) from None
        internal_ip = s.internal_ip or _detect_ip(config.server)
        unreachable = unreachable_reason(internal_ip)
        if unreachable:
            log.warning(
                "the node's InternalIP %s is %s: the API server refuses to proxy to it, so "
                "kubectl logs/exec/port-forward and the node proxy will fail with 'address not "
                "allowed'. Set VKUBELET_POD_IP to an address of this host the API server can "
                "reach (against a dev cluster: VKUBELET_POD_IP=$(virtual-kubelet devcluster "
                "node-address %s))",
                internal_ip,
                unreachable,
                s.node_name,
            )
        context = ProviderContext(
            node_name=s.node_name,
            operating_system=s.operating_system,
            internal_ip=internal_ip,
            daemon_port=s.daemon_port,
            config_path=s.provider_config,
            cluster_domain=s.cluster_domain,
            state_dir=s.state_dir,
            volumes_dir=s.volumes_dir or default_volumes_dir(s.node_name, s.state_dir),
        )
        user_agent = f"virtual-kubelet/{__version__} ({s.node_name})"
        client = KubeClient(
            config,
            name="main",
            qps=s.kube_api_qps,
            burst=s.kube_api_burst,
            max_connections=max(32, s.pods.sync_workers * 2),
            user_agent=user_agent,
        )
        # The lease gets its own connections and no shared rate budget: pod load can't starve it.
        lease_client = KubeClient(config, name="lease", max_connections=2, user_agent=user_agent)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        listener: socket.socket | None = None
        metrics = None
        elector = None
        try:
            version = await self._wait_for_api(client)
            log.info(
                "API server %s (Kubernetes %s) via %s",
                client.config.server,
                version.get("gitVersion"),
                client.config.source,
            )
            provider = registry.create(s.provider, context)  # a bad config fails a standby too
            metrics = await self._start_metrics()
            if s.leader_election is not None:
                elector = LeaderElector(lease_client, s.leader_election)
                if not await _until_stopped(elector.acquire(), stop):
                    return
            else:
                LEADER.set(1)
            listener = self._bind_kubelet_port(internal_ip)
            await provider.start()
            try:
                await self._run(client, lease_client, context, listener, provider, stop, elector)
            finally:
                await provider.stop()
                if elector is not None:
                    # After the provider stopped and the port is free: a standby may start its
                    # own provider on shared state, and bind the same port on the same host.
                    if listener is not None:
                        listener.close()
                    await elector.release()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            if metrics is not None:
                await metrics.cleanup()
            await client.close()
            await lease_client.close()
            if listener is not None:
                listener.close()

    def _bind_kubelet_port(self, internal_ip: str) -> socket.socket | None:
        """Bound before anything registers: a taken port is a start-up error, not a Ready node
        whose kubelet API never answers. (With leader election, once leading: a standby on the
        same host must not hold the leader's port.)"""
        api = self.settings.kubelet_api
        if api is None:
            return None
        try:
            return bind_listener(
                api.listen_address or internal_ip,
                api.port,
                fallback_any=api.listen_address is None,
            )
        except ListenError as exc:
            raise StartupError(str(exc)) from None

    async def _run(
        self,
        client: KubeClient,
        lease_client: KubeClient,
        context: ProviderContext,
        listener: socket.socket | None,
        provider: Provider,
        stop: asyncio.Event,
        elector: LeaderElector | None,
    ) -> None:
        s = self.settings
        lost: list[LeadershipLost] = []
        context.state_dir.mkdir(parents=True, exist_ok=True)
        events = EventRecorder(
            client,
            component="virtual-kubelet",
            host=s.node_name,
            qps=s.event_qps,
            burst=s.event_burst,
        )
        resources = ResourceCache(client)
        health = ProviderHealth(provider.ping)
        node_settings = NodeSettings(
            name=s.node_name,
            provider=s.provider,
            operating_system=s.operating_system,
            internal_ip=context.internal_ip,
            daemon_port=s.daemon_port,
            taints=s.taints,
            labels=s.extra_labels,
            status_interval=s.node_status_interval,
        )
        node = NodeController(client, provider, node_settings, health)
        desired_node = await node.build()
        allocatable = dict(desired_node["status"].get("allocatable", {}))
        volumes = PodVolumes(context.pods_dir, resources, node_allocatable=allocatable)
        pods = PodController(
            client,
            provider,
            events,
            s.pods,
            PodNode(s.node_name, host_ips=[context.internal_ip], allocatable=allocatable),
            resources,
            volumes if provider.wants_volume_files() else None,
        )
        count_pods_from(pods.cached_phases)
        # Every long-lived task of the agent, kept so that shutdown can cancel them all.
        tasks: list[asyncio.Task[None]] = []
        async with asyncio.TaskGroup() as group:

            def start(name: str, run: Callable[[], Awaitable[None]]) -> None:
                tasks.append(group.create_task(supervise(name, run), name=name))

            if elector is not None:
                # Not supervised: a lost Lease is final, everything stops at once.
                tasks.append(
                    group.create_task(_watch_leadership(elector, lost, stop), name="leader")
                )
            start("events", events.run)
            start("gc pacing", FullCollectionPacer().run)
            start("pod reflector", pods.watch)
            await pods.start(timeout=s.startup_timeout or 1e9)
            await node.register()
            log.info("node %s registered; provider %s; serving pods", s.node_name, s.provider)
            lease = LeaseController(
                lease_client, s.node_name, health, node.node_uid, duration=s.lease_duration
            )
            start("pods", pods.run)
            start("node", node.run)
            start("lease", lease.run)
            start("resync", lambda: self._resync(pods))
            if s.kubelet_api is not None and listener is not None:
                api_settings = s.kubelet_api
                if api_settings.client_ca is None and client.config.ca_data:
                    # The API server's kubelet-client certificate is normally issued by the
                    # cluster CA: trust it for client certificates unless told otherwise.
                    api_settings = replace(api_settings, client_ca=client.config.ca_data)
                service = KubeletService(
                    api_settings,
                    client,
                    provider,
                    ServingIdentity(s.node_name, (context.internal_ip,)),
                    pods.cached_pods,
                    context.state_dir / "pki",
                    listener,
                )
                start("kubelet API", service.run)
            await stop.wait()
            if lost:
                log.error("%s; stopping at once (pods keep running in the provider)", lost[0])
            else:
                log.info("shutting down; pods keep running in the provider")
            pods.shutdown()
            for task in tasks:
                task.cancel()
        if lost:
            raise lost[0]

    async def _resync(self, pods: PodController) -> None:
        if self.settings.full_resync_period <= 0:
            return
        while True:
            await asyncio.sleep(self.settings.full_resync_period)
            pods.resync_all()

    async def _start_metrics(self) -> web.AppRunner | None:
        if not self.settings.metrics_addr:
            return None
        host, _, port = self.settings.metrics_addr.rpartition(":")
        watch_gc_pauses()

        async def handle(_: web.Request) -> web.Response:
            return web.Response(
                body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST}
            )

        app = web.Application()
        app.router.add_get("/metrics", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host or "0.0.0.0", int(port))
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise StartupError(
                f"cannot serve metrics on --metrics-addr={self.settings.metrics_addr}: {exc.strerror}"
            ) from None
        self.metrics_port = int(runner.addresses[0][1])
        log.info("metrics on http://%s:%s/metrics", host or "0.0.0.0", self.metrics_port)
        return runner


async def _until_stopped(work: Awaitable[None], stop: asyncio.Event) -> bool:
    """Await `work` unless `stop` is set first (then cancel it); True if `work` finished."""
    done_task = asyncio.ensure_future(work)
    stop_task = asyncio.ensure_future(stop.wait())
    await asyncio.wait({done_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
    stop_task.cancel()
    if done_task.done():
        done_task.result()
        return True
    done_task.cancel()
    return False


async def _watch_leadership(
    elector: LeaderElector, lost: list[LeadershipLost], stop: asyncio.Event
) -> None:
    try:
        await elector.keep_leading()
    except LeadershipLost as exc:
        lost.append(exc)
        stop.set()


async def supervise(
    name: str, run: Callable[[], Awaitable[None]], initial_delay: float = 1.0
) -> None:
    """Run a long-lived loop: if it fails, log why and start it again with backoff, so one broken
    part never silently stops, or takes down, the rest."""
    delay = initial_delay
    while True:
        started = time.monotonic()
        try:
            await run()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s failed; restarting it in %.0f s", name, delay)
        if time.monotonic() - started > 60:
            delay = initial_delay  # it ran fine for a while: start the backoff over
        await asyncio.sleep(delay)
        delay = min(delay * 2, 60.0)
