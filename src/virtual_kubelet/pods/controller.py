"""Pod lifecycle: pods bound to this node -> provider create/update/delete; provider -> pod status.

This module wires the parts together and feeds them: the pod reflector's callbacks, the provider's
status pushes and ConfigMap/Secret changes become keys (`namespace/name`) on three work queues,
each handing a key to one worker at a time:
- `sync` decides what the provider must do for a pod (`reconcile.py`) and carries out graceful
  deletion (`deletion.py`);
- `status` writes the provider's latest status for a pod (`status_writer.py`; coalesced: only the
  newest is written);
- `volumes` refreshes materialised volumes when ConfigMaps/Secrets change or tokens age
  (`volume_sync.py`).
The controller only handles pushes: a provider without `notify_pods` is wrapped in
`polling.PollingProvider`. At start-up it reconciles with what the provider already runs.
"""

from __future__ import annotations

import asyncio
import logging

from ..kube.client import KubeClient, path
from ..kube.events import EventRecorder
from ..kube.packed import PackedStore, Packer
from ..kube.reflector import CallbackHandler, Reflector
from ..kube.workqueue import WorkQueue, run_workers
from ..sdk import Capabilities, Pod, Provider, key_of, uid_of
from .deletion import PodDeletion
from .lifecycle import Op, PodLifecycle, ProviderCalls
from .polling import PolledPod, PollingProvider
from .reconcile import Reconciler
from .resources import ResourceCache
from .settings import PodNode, PodSettings
from .status_writer import StatusWriter
from .tracking import SPEC_HASH, TrackedPod
from .volume_sync import VolumeSync
from .volumes import PodVolumes

__all__ = ["PodController"]

log = logging.getLogger(__name__)

#: One packer (a primed compressor and decompressor) for the pod cache.
_PACKER = Packer()


def _phase(pod: Pod) -> str | None:
    phase = (pod.get("status") or {}).get("phase")
    return str(phase) if phase else None


class PodController:
    def __init__(
        self,
        client: KubeClient,
        provider: Provider,
        events: EventRecorder,
        settings: PodSettings,
        node: PodNode,
        resources: ResourceCache,
        volumes: PodVolumes | None,
    ) -> None:
        self.settings = settings
        self._resources = resources
        self._api_pods = Reflector(
            client,
            path("v1", "pods"),
            name="pods",
            field_selector=f"spec.nodeName={node.name}",
            handler=CallbackHandler(self._on_add, self._on_update, self._on_delete),
            # Thousands of pods held for days: packed, ~300 bytes each instead of ~18 KB of
            # dicts (issue 18); every read unpacks a private copy (~20 µs).
            store=lambda: PackedStore(_PACKER, _phase),
        )
        self._sync_queue = WorkQueue(
            "pod-sync", base_delay=settings.retry_base_delay, max_delay=settings.retry_max_delay
        )
        self._tracked: dict[str, TrackedPod] = {}
        self._calls = ProviderCalls(settings.provider_timeout)
        self._poller: PollingProvider | None = None
        self._lifecycle: PodLifecycle = provider
        if not Capabilities.of(provider).notify_pods:
            self._poller = PollingProvider(
                provider,
                self._calls,
                interval=settings.poll_interval,
                polled=self._in_provider,
                concurrency=settings.status_workers,
            )
            self._lifecycle = self._poller
        self._status = StatusWriter(
            client, self._api_pods.get, node.host_ips, settings.status_workers
        )
        self._volumes = VolumeSync(
            volumes,
            events,
            self._api_pods.get,
            lambda key: (tracked := self._tracked.get(key)) is not None and tracked.in_provider,
        )
        self._deletion = PodDeletion(client, self._lifecycle, self._calls, self._sync_queue, events)
        self._reconciler = Reconciler(
            api_pod=self._api_pods.get,
            tracked=self._tracked,
            sync_queue=self._sync_queue,
            lifecycle=self._lifecycle,
            calls=self._calls,
            settings=settings,
            node=node,
            resources=resources,
            events=events,
            status=self._status,
            deletion=self._deletion,
            volumes=self._volumes,
        )
        resources.on_change = self._on_resource_change

    # --- what the rest of the agent may ask -------------------------------------------------------

    def cached_pods(self) -> list[Pod]:
        """Every pod bound to this node, as last seen from the API server (unpacked: the
        kubelet API's /pods; for counts use `cached_phases`)."""
        return list(self._api_pods.store.values())

    def cached_phases(self) -> list[str | None]:
        """`status.phase` of every pod bound to this node, without unpacking any."""
        store = self._api_pods.store
        assert isinstance(store, PackedStore)
        return list(store.summaries())

    def resync_all(self) -> None:
        """Check every pod against the provider again (the periodic full resync)."""
        for key in list(self._api_pods.store):
            self._sync_queue.add(key)

    # --- informer callbacks (must be quick) -------------------------------------------------------

    def _on_add(self, pod: Pod) -> None:
        self._resources.use(pod["metadata"]["namespace"], key_of(pod))
        self._sync_queue.add(key_of(pod))

    def _on_update(self, old: Pod, new: Pod) -> None:
        self._status.cache_updated(key_of(new), new)
        meta_old, meta_new = old["metadata"], new["metadata"]
        if (
            old.get("spec") != new.get("spec")
            or meta_old.get("deletionTimestamp") != meta_new.get("deletionTimestamp")
            or meta_old.get("labels") != meta_new.get("labels")
            or meta_old.get("annotations") != meta_new.get("annotations")
            or meta_old.get("uid") != meta_new.get("uid")
        ):
            self._sync_queue.add(key_of(new))

    def _on_delete(self, pod: Pod) -> None:
        self._resources.release(pod["metadata"]["namespace"], key_of(pod))
        tracked = self._tracked.get(key_of(pod))
        if tracked is not None and tracked.last_pod is None and uid_of(pod) == tracked.uid:
            tracked.last_pod = pod  # what the provider's delete_pod will be given
        self._sync_queue.add(key_of(pod))

    def _on_provider_pod(self, pod: Pod) -> None:
        """notify_pods callback: remember the newest status and schedule a write; a pod being
        deleted is looked at again. A pod without `status` (the polling adapter's "gone") writes
        nothing."""
        try:
            key = key_of(pod)
        except (KeyError, TypeError):
            log.error("provider reported a pod without metadata.name/namespace; ignored")
            return
        if "status" in pod:
            self._status.report(key, uid_of(pod), pod["status"] or {})
        tracked = self._tracked.get(key)
        if tracked is not None and tracked.delete_requested:
            self._sync_queue.add(key)

    def _on_resource_change(self, kind: str, namespace: str, name: str) -> None:
        self._volumes.source_changed(kind, namespace, name)
        if kind in ("ConfigMap", "Secret"):
            self._reconciler.config_changed(namespace)

    def _in_provider(self) -> list[PolledPod]:
        return [(key, t.uid) for key, t in self._tracked.items() if t.in_provider]

    # --- start-up ---------------------------------------------------------------------------------

    async def watch(self) -> None:
        """Keep the cache of this node's pods (list and watch) until cancelled; `start` needs it
        running."""
        await self._api_pods.run()

    async def start(self, timeout: float) -> None:
        """Wait until the pod cache is filled (`watch`), then reconcile with the provider: adopt
        what it already runs, delete what the API no longer has."""
        async with asyncio.timeout(timeout):
            await self._api_pods.synced.wait()
        self._lifecycle.notify_pods(self._on_provider_pod)
        running = await self._calls(Op.LIST_PODS, self._lifecycle.list_pods())
        dangling = []
        for pod in running:
            key = key_of(pod)
            api_pod = self._api_pods.get(key)
            if api_pod is not None and uid_of(api_pod) == uid_of(pod):
                annotations = pod.get("metadata", {}).get("annotations") or {}
                self._tracked[key] = TrackedPod(
                    uid=uid_of(pod),
                    in_provider=True,
                    spec_hash=annotations.get(SPEC_HASH),
                    last_pod=pod,
                )
                if pod.get("status"):
                    self._status.report(key, uid_of(pod), pod["status"])
                # Rewrite its volumes (tokens are due for renewal after a restart) and
                # re-register which ConfigMaps and Secrets it follows.
                self._volumes.refresh_soon(key)
            else:
                dangling.append(pod)
        if running:
            log.info(
                "provider already runs %d pods: adopted %d, removing %d that the API no longer has",
                len(running),
                len(running) - len(dangling),
                len(dangling),
            )
        limit = asyncio.Semaphore(self.settings.sync_workers)

        async def delete(pod: Pod) -> None:
            async with limit:  # as many at once as pod workers, not thousands
                await self._deletion.delete_dangling(pod)

        await asyncio.gather(*(delete(p) for p in dangling))
        self.resync_all()

    async def run(self) -> None:
        """Work the queues (and poll, for a provider that does not push) until `shutdown`."""
        async with asyncio.TaskGroup() as group:
            group.create_task(
                run_workers(self._sync_queue, self.settings.sync_workers, self._reconciler.sync)
            )
            group.create_task(self._status.run())
            group.create_task(self._volumes.run())
            if self._poller is not None:
                group.create_task(self._poller.run())

    def shutdown(self) -> None:
        """Stop taking work: `run` returns once the workers finished what they hold."""
        self._sync_queue.shutdown()
        self._status.shutdown()
        self._volumes.shutdown()
        if self._poller is not None:
            self._poller.close()
