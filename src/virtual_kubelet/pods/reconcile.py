"""Reconciling one pod with the provider: what the sync queue's workers do with a key.

A pod gone from the API is deleted from the provider and forgotten; a pod being deleted goes to
`deletion.py`; otherwise the pod is prepared (env resolved, IPs assigned, volumes written) and
created or updated in the provider when its spec hash changed. Provider failures are retried with
backoff, reported as Events and a pod condition, never turn a running pod back to Pending, and end
in phase Failed once the retry budget of a create is spent. A missing mandatory ConfigMap or Secret
keeps the pod Pending (CreateContainerConfigError / ContainerCreating) until it appears.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..kube.events import EventRecorder
from ..kube.objects import split_key
from ..kube.workqueue import WorkQueue
from ..sdk import InvalidInput, NotFound, Pod, uid_of
from .deletion import PodDeletion
from .env import EnvError, PodNetwork, resolve_pod_env
from .lifecycle import Op, PodLifecycle, ProviderCalls
from .resources import ResourceCache
from .settings import PodNode, PodSettings
from .status import (
    TERMINAL,
    failed_patch,
    has_failing_sync_condition,
    sync_condition,
    waiting_patch,
)
from .status_writer import StatusWriter
from .tracking import SPEC_HASH, TrackedPod, spec_hash
from .volume_sync import VolumeSync
from .volumes import VolumeError

__all__ = ["Reconciler"]

log = logging.getLogger(__name__)


class Reconciler:
    """Brings the provider in line with the API for one pod at a time (`sync`)."""

    def __init__(
        self,
        *,
        api_pod: Callable[[str], Pod | None],
        tracked: dict[str, TrackedPod],
        sync_queue: WorkQueue,
        lifecycle: PodLifecycle,
        calls: ProviderCalls,
        settings: PodSettings,
        node: PodNode,
        resources: ResourceCache,
        events: EventRecorder,
        status: StatusWriter,
        deletion: PodDeletion,
        volumes: VolumeSync,
    ) -> None:
        self._api_pod = api_pod
        self._tracked = tracked
        self._sync_queue = sync_queue
        self._lifecycle = lifecycle
        self._calls = calls
        self._settings = settings
        self._node = node
        self._resources = resources
        self._events = events
        self._status = status
        self._deletion = deletion
        self._volumes = volumes
        #: namespace -> keys of pods waiting for a ConfigMap or Secret there
        self._waiting_for_config: dict[str, set[str]] = {}

    def config_changed(self, namespace: str) -> None:
        """A ConfigMap or Secret of `namespace` changed: retry the pods waiting for one."""
        for key in self._waiting_for_config.get(namespace, ()):
            self._sync_queue.add(key)

    async def sync(self, key: str) -> None:
        pod = self._api_pod(key)
        tracked = self._tracked.get(key)
        if pod is None:
            await self._gone_from_api(key, tracked)
            return
        uid = uid_of(pod)
        if tracked is not None and tracked.uid != uid:
            # Same name, new pod: the old one must go from the provider first.
            await self._gone_from_api(key, tracked)
            tracked = None
        if tracked is None:
            tracked = self._tracked[key] = TrackedPod(uid=uid)
        if pod["metadata"].get("deletionTimestamp"):
            await self._deletion.sync(key, pod, tracked)
            return
        if pod.get("status", {}).get("phase") in TERMINAL or tracked.gave_up:
            return
        await self._sync_running(key, pod, tracked)

    async def _gone_from_api(self, key: str, tracked: TrackedPod | None) -> None:
        self._tracked.pop(key, None)
        self._status.forget(key)
        self._volumes.forget(key)
        self._stop_waiting(key)
        self._sync_queue.forget(key)
        if tracked is not None and tracked.in_provider:
            namespace, name = split_key(key)
            # The last object seen (kept by the controller's delete callback), or the provider's
            # copy if adopted.
            final = tracked.last_pod or {
                "metadata": {"namespace": namespace, "name": name, "uid": tracked.uid}
            }
            try:
                await self._calls(Op.DELETE_POD, self._lifecycle.delete_pod(final))
            except NotFound:
                pass
            except InvalidInput as exc:  # it can never be deleted there: nothing left to do
                log.warning("%s: the provider cannot delete it: %s", key, exc)
        if tracked is not None:
            await self._volumes.remove(tracked.uid)

    def _stop_waiting(self, key: str) -> None:
        for waiting in self._waiting_for_config.values():
            waiting.discard(key)

    async def _prepare(self, pod: Pod) -> Pod:
        """The pod as the provider receives it: env resolved, IPs assigned, volumes written."""
        namespace = pod["metadata"]["namespace"]
        await self._resources.ensure(namespace)
        ips: list[str] = [i["ip"] for i in pod.get("status", {}).get("podIPs", []) if i.get("ip")]
        if not ips:
            assigned = await self._calls(Op.ASSIGN_POD_IPS, self._lifecycle.assign_pod_ips(pod))
            ips = assigned or []
        host_ips = self._node.host_ips
        network = PodNetwork(host_ips=host_ips, pod_ips=ips)
        desired, env_events = resolve_pod_env(
            pod, self._resources, network, node_allocatable=self._node.allocatable
        )
        for event in env_events:
            self._events.emit(pod, event.type, event.reason, event.message)
        await self._volumes.write(pod)
        status = desired.setdefault("status", {})
        if ips:
            status["podIP"] = ips[0]
            status["podIPs"] = [{"ip": ip} for ip in ips]
        status["hostIP"] = host_ips[0]
        status["hostIPs"] = [{"ip": ip} for ip in host_ips]
        desired["metadata"].setdefault("annotations", {})[SPEC_HASH] = spec_hash(pod)
        return desired

    async def _sync_running(self, key: str, pod: Pod, tracked: TrackedPod) -> None:
        wanted = spec_hash(pod)
        if tracked.in_provider and tracked.spec_hash in (None, wanted):
            return
        try:
            desired = await self._prepare(pod)
        except EnvError as exc:
            await self._waiting_on_config(
                key, pod, tracked, exc.reason, exc.message, "CreateContainerConfigError"
            )
            return
        except VolumeError as exc:
            # As with a kubelet: while mounts fail, the containers stay in ContainerCreating.
            await self._waiting_on_config(
                key, pod, tracked, exc.reason, exc.message, "ContainerCreating"
            )
            return
        self._waiting_for_config.get(pod["metadata"]["namespace"], set()).discard(key)
        creating = not tracked.in_provider
        op = Op.CREATE_POD if creating else Op.UPDATE_POD
        apply = self._lifecycle.create_pod if creating else self._lifecycle.update_pod
        try:
            await self._calls(op, apply(desired))
        except InvalidInput as exc:
            await self._give_up(key, pod, tracked, op, f"provider rejected the pod: {exc}")
            return
        except NotFound as exc:
            if creating:
                await self._provider_failed(key, pod, tracked, op, exc)
                return
            tracked.in_provider = False  # it vanished from the provider: create it again
            self._sync_queue.add(key)
            return
        except Exception as exc:
            await self._provider_failed(key, pod, tracked, op, exc)
            return
        tracked.in_provider = True
        tracked.spec_hash = wanted
        had_failures = tracked.failures > 0 or tracked.waiting_reason is not None
        tracked.failures = 0
        tracked.waiting_reason = None
        self._sync_queue.forget(key)
        if had_failures or has_failing_sync_condition(pod):
            await self._status.patch(
                pod,
                {
                    "metadata": {"uid": tracked.uid},
                    "status": {"conditions": [sync_condition(True, "ProviderSynced", "")]},
                },
            )
        if creating:
            self._events.emit(pod, "Normal", "ProviderCreated", "Pod created in the provider")

    async def _waiting_on_config(
        self, key: str, pod: Pod, tracked: TrackedPod, reason: str, message: str, waiting: str
    ) -> None:
        """A mandatory ConfigMap/Secret is missing: stay Pending, say why, retry when it appears."""
        self._events.emit(pod, "Warning", reason, message)
        self._waiting_for_config.setdefault(pod["metadata"]["namespace"], set()).add(key)
        if not tracked.in_provider and tracked.waiting_reason != message:
            tracked.waiting_reason = message
            await self._status.patch(pod, waiting_patch(pod, waiting, message))
        self._sync_queue.add_rate_limited(key)

    async def _provider_failed(
        self, key: str, pod: Pod, tracked: TrackedPod, op: Op, exc: Exception
    ) -> None:
        tracked.failures += 1
        reason = "ProviderCreateFailed" if op is Op.CREATE_POD else "ProviderUpdateFailed"
        message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if tracked.failures >= self._settings.retry_limit:
            if op is Op.CREATE_POD:
                await self._give_up(
                    key,
                    pod,
                    tracked,
                    op,
                    f"gave up after {tracked.failures} failed attempts: {message}",
                )
            else:
                # Never regress a running pod: stop retrying the update, keep its status.
                tracked.gave_up = True
                self._events.emit(
                    pod,
                    "Warning",
                    reason,
                    f"gave up updating the pod after {tracked.failures} attempts: {message}",
                )
            return
        delay = self._sync_queue.add_rate_limited(key)
        self._events.emit(pod, "Warning", reason, message)
        log.warning(
            "%s failed for %s (attempt %d/%d, retrying in %.0f s): %s",
            op.value,
            key,
            tracked.failures,
            self._settings.retry_limit,
            delay,
            message,
            extra={"pod": key},
        )
        await self._status.patch(
            pod,
            {
                "metadata": {"uid": tracked.uid},
                "status": {"conditions": [sync_condition(False, reason, message)]},
            },
        )

    async def _give_up(self, key: str, pod: Pod, tracked: TrackedPod, op: Op, message: str) -> None:
        tracked.gave_up = True
        self._sync_queue.forget(key)
        self._events.emit(pod, "Warning", "ProviderFailed", message)
        log.error("%s: %s", key, message, extra={"pod": key})
        if op is Op.CREATE_POD:
            await self._status.patch(pod, failed_patch(pod, "ProviderFailed", message))
