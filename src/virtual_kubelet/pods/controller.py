"""Pod lifecycle: pods bound to this node -> provider create/update/delete; provider -> pod status.

Three work queues, keyed `namespace/name`, each handing a key to one worker at a time:
- `sync` decides what the provider must do for a pod (create, update, delete, nothing) and carries
  out graceful deletion: provider delete when deletionTimestamp appears, API object removed once the
  provider reports the pod gone or the grace period ends;
- `status` writes the provider's latest status for a pod (coalesced: only the newest is written);
- `volumes` refreshes materialised volumes when ConfigMaps/Secrets change or tokens age.
Provider failures are retried with backoff, reported as Events and a pod condition, never turn a
running pod back to Pending, and end in phase Failed once the retry budget is spent.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..errors import InvalidInput, NotFound
from ..kube.client import KubeClient, path
from ..kube.errors import ApiError
from ..kube.events import EventRecorder
from ..kube.objects import key_of, split_key, uid_of
from ..kube.reflector import CallbackHandler, Reflector
from ..kube.timefmt import parse
from ..kube.workqueue import WorkQueue, run_workers
from ..metrics import PROVIDER_CALLS
from ..providers.base import Pod, Provider, implements
from .env import EnvError, PodNetwork, resolve_pod_env
from .resources import ResourceCache
from .status import (
    TERMINAL,
    failed_patch,
    has_failing_sync_condition,
    status_patch,
    sync_condition,
    waiting_patch,
)
from .volumes import PodVolumes, VolumeError

log = logging.getLogger(__name__)

SPEC_HASH = "virtual-kubelet.io/spec-hash"
_SPEC_FIELDS = (
    "containers",
    "initContainers",
    "ephemeralContainers",
    "activeDeadlineSeconds",
    "tolerations",
)


#: Time a provider gets beyond the grace period to report a pod gone before the API object is
#: removed regardless (its processes may still be in their final SIGKILL).
DELETION_SLACK_S = 2.0


def deletion_deadline(pod: Pod, now: float) -> float:
    """Like a kubelet, the grace period counts from when the deletion is seen here, not from
    deletionTimestamp: that has whole-second precision and may already be partly spent by the
    time the watch delivers it, and the provider counts from its own delete call."""
    meta = pod["metadata"]
    stamp = parse(meta["deletionTimestamp"]).timestamp()
    grace = meta.get("deletionGracePeriodSeconds")
    observed = now + float(grace) if grace is not None else stamp
    return max(stamp, observed) + DELETION_SLACK_S


def spec_hash(pod: Pod) -> str:
    """What, when changed, makes the provider's copy stale (status never counts)."""
    meta = pod.get("metadata", {})
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k != SPEC_HASH}
    relevant = {
        "spec": {k: pod.get("spec", {}).get(k) for k in _SPEC_FIELDS},
        "labels": meta.get("labels") or {},
        "annotations": annotations,
    }
    return hashlib.sha256(orjson.dumps(relevant, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


@dataclass
class PodSettings:
    node_name: str
    host_ips: list[str]
    node_allocatable: dict[str, str] = field(default_factory=dict)
    sync_workers: int = 32
    status_workers: int = 16
    #: Failed provider calls for one pod before giving up (create: the pod becomes Failed).
    retry_limit: int = 10
    retry_base_delay: float = 1.0
    retry_max_delay: float = 60.0
    #: Seconds between status polls for providers without notify_pods.
    poll_interval: float = 5.0
    #: Bound on how long a single provider call may take.
    provider_timeout: float = 120.0


@dataclass
class _Tracked:
    """What we know about one pod in the provider."""

    uid: str
    in_provider: bool = False
    spec_hash: str | None = None
    failures: int = 0
    gave_up: bool = False
    delete_requested: bool = False
    #: When the API object goes even if the provider still reports the pod, and the grace period
    #: it was computed from (a shortened grace period, e.g. a second `kubectl delete`, resets it).
    deletion_deadline: float | None = None
    deletion_grace: Any = None
    last_pod: Pod | None = None
    waiting_reason: str | None = None


class PodController:
    def __init__(
        self,
        client: KubeClient,
        provider: Provider,
        events: EventRecorder,
        settings: PodSettings,
        resources: ResourceCache,
        volumes: PodVolumes | None,
    ) -> None:
        self.client = client
        self.provider = provider
        self.events = events
        self.settings = settings
        self.resources = resources
        self.volumes = volumes
        self.pods = Reflector(
            client,
            path("v1", "pods"),
            name="pods",
            field_selector=f"spec.nodeName={settings.node_name}",
            handler=CallbackHandler(self._on_add, self._on_update, self._on_delete),
        )
        self.sync_queue = WorkQueue(
            "pod-sync", base_delay=settings.retry_base_delay, max_delay=settings.retry_max_delay
        )
        self.status_queue = WorkQueue("pod-status", base_delay=0.1, max_delay=10.0)
        self.volume_queue = WorkQueue("pod-volumes", base_delay=1.0, max_delay=60.0)
        self.tracked: dict[str, _Tracked] = {}
        self._provider_status: dict[str, tuple[str, dict[str, Any]]] = {}
        self._references: dict[tuple[str, str, str], set[str]] = {}
        self._waiting_for_config: dict[str, set[str]] = {}  # namespace -> pod keys
        resources.on_change = self._on_resource_change
        self.push = implements(provider, "notify_pods")

    # --- informer callbacks (must be quick) -------------------------------------------------------

    def _on_add(self, pod: Pod) -> None:
        self.resources.use(pod["metadata"]["namespace"], key_of(pod))
        self.sync_queue.add(key_of(pod))

    def _on_update(self, old: Pod, new: Pod) -> None:
        meta_old, meta_new = old["metadata"], new["metadata"]
        if (
            old.get("spec") != new.get("spec")
            or meta_old.get("deletionTimestamp") != meta_new.get("deletionTimestamp")
            or meta_old.get("labels") != meta_new.get("labels")
            or meta_old.get("annotations") != meta_new.get("annotations")
            or meta_old.get("uid") != meta_new.get("uid")
        ):
            self.sync_queue.add(key_of(new))

    def _on_delete(self, pod: Pod) -> None:
        self.resources.release(pod["metadata"]["namespace"], key_of(pod))
        tracked = self.tracked.get(key_of(pod))
        if tracked is not None and tracked.last_pod is None and uid_of(pod) == tracked.uid:
            tracked.last_pod = pod  # what the provider's delete_pod will be given
        self.sync_queue.add(key_of(pod))

    def _on_provider_pod(self, pod: Pod) -> None:
        """notify_pods callback: remember the newest status and schedule a write."""
        try:
            key = key_of(pod)
        except (KeyError, TypeError):
            log.error("provider reported a pod without metadata.name/namespace; ignored")
            return
        self._provider_status[key] = (uid_of(pod), pod.get("status") or {})
        self.status_queue.add(key)
        tracked = self.tracked.get(key)
        if tracked is not None and tracked.delete_requested:
            self.sync_queue.add(key)

    def _on_resource_change(self, kind: str, namespace: str, name: str) -> None:
        for key in self._references.get((kind, namespace, name), ()):
            self.volume_queue.add(key)
        if kind in ("ConfigMap", "Secret"):
            for key in self._waiting_for_config.get(namespace, ()):
                self.sync_queue.add(key)

    # --- start-up ---------------------------------------------------------------------------------

    async def start(self, timeout: float) -> asyncio.Task[None]:
        """Fill the pod cache, then reconcile with the provider: adopt what it already runs, delete
        what the API no longer has. Returns the reflector's task."""
        task = asyncio.create_task(self.pods.run(), name="pod-reflector")
        async with asyncio.timeout(timeout):
            await self.pods.synced.wait()
        if self.push:
            try:
                self.provider.notify_pods(self._on_provider_pod)
            except NotImplementedError:
                self.push = False  # the provider decided at run time that it wants polling
        if not self.push:
            log.info(
                "provider does not push pod status; polling every %.0f s",
                self.settings.poll_interval,
            )
        running = await self._call("list_pods", self.provider.list_pods())
        dangling = []
        for pod in running:
            key = key_of(pod)
            api_pod = self.pods.get(key)
            if api_pod is not None and uid_of(api_pod) == uid_of(pod):
                annotations = pod.get("metadata", {}).get("annotations") or {}
                self.tracked[key] = _Tracked(
                    uid=uid_of(pod),
                    in_provider=True,
                    spec_hash=annotations.get(SPEC_HASH),
                    last_pod=pod,
                )
                if pod.get("status"):
                    self._provider_status[key] = (uid_of(pod), pod["status"])
                    self.status_queue.add(key)
                # Rewrite its volumes (tokens are due for renewal after a restart) and
                # re-register which ConfigMaps and Secrets it follows.
                self.volume_queue.add(key)
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
                await self._delete_dangling(pod)

        await asyncio.gather(*(delete(p) for p in dangling))
        for key in list(self.pods.store):
            self.sync_queue.add(key)
        return task

    async def _delete_dangling(self, pod: Pod) -> None:
        try:
            await self._call("delete_pod", self.provider.delete_pod(pod))
        except NotFound:
            pass
        except Exception as exc:
            log.warning("could not delete dangling provider pod %s: %s", key_of(pod), exc)

    async def run(self) -> None:
        s = self.settings
        async with asyncio.TaskGroup() as group:
            group.create_task(run_workers(self.sync_queue, s.sync_workers, self._sync))
            group.create_task(run_workers(self.status_queue, s.status_workers, self._write_status))
            group.create_task(run_workers(self.volume_queue, 4, self._refresh_volumes))
            if not self.push:
                group.create_task(self._poll())

    def shutdown(self) -> None:
        for queue in (self.sync_queue, self.status_queue, self.volume_queue):
            queue.shutdown()

    # --- provider calls ---------------------------------------------------------------------------

    async def _call(self, method: str, call: Awaitable[Any]) -> Any:
        try:
            async with asyncio.timeout(self.settings.provider_timeout):
                result = await call
        except NotFound:
            PROVIDER_CALLS.labels(method, "not_found").inc()
            raise
        except TimeoutError:
            PROVIDER_CALLS.labels(method, "timeout").inc()
            raise TimeoutError(
                f"provider {method} did not return within {self.settings.provider_timeout:.0f} s"
            ) from None
        except Exception:
            PROVIDER_CALLS.labels(method, "error").inc()
            raise
        PROVIDER_CALLS.labels(method, "ok").inc()
        return result

    # --- sync -------------------------------------------------------------------------------------

    async def _sync(self, key: str) -> None:
        pod = self.pods.get(key)
        tracked = self.tracked.get(key)
        if pod is None:
            await self._gone_from_api(key, tracked)
            return
        uid = uid_of(pod)
        if tracked is not None and tracked.uid != uid:
            # Same name, new pod: the old one must go from the provider first.
            await self._gone_from_api(key, tracked)
            tracked = None
        if tracked is None:
            tracked = self.tracked[key] = _Tracked(uid=uid)
        if pod["metadata"].get("deletionTimestamp"):
            await self._sync_deletion(key, pod, tracked)
            return
        if pod.get("status", {}).get("phase") in TERMINAL or tracked.gave_up:
            return
        await self._sync_running(key, pod, tracked)

    async def _gone_from_api(self, key: str, tracked: _Tracked | None) -> None:
        self.tracked.pop(key, None)
        self._provider_status.pop(key, None)
        self._forget_references(key)
        self.sync_queue.forget(key)
        if tracked is not None and tracked.in_provider:
            namespace, name = split_key(key)
            # The last object seen (kept by _on_delete), or the provider's copy if adopted.
            final = tracked.last_pod or {
                "metadata": {"namespace": namespace, "name": name, "uid": tracked.uid}
            }
            with contextlib.suppress(NotFound):
                await self._call("delete_pod", self.provider.delete_pod(final))
        if tracked is not None and self.volumes is not None:
            await self.volumes.remove(tracked.uid)

    async def _prepare(self, pod: Pod, tracked: _Tracked) -> Pod:
        """The pod as the provider receives it: env resolved, IPs assigned, volumes written."""
        namespace = pod["metadata"]["namespace"]
        await self.resources.ensure(namespace)
        ips = [i["ip"] for i in pod.get("status", {}).get("podIPs", []) if i.get("ip")]
        if not ips:
            ips = await self._call("assign_pod_ips", self.provider.assign_pod_ips(pod)) or []
        network = PodNetwork(host_ips=self.settings.host_ips, pod_ips=ips)
        desired, env_events = resolve_pod_env(
            pod, self.resources, network, node_allocatable=self.settings.node_allocatable
        )
        for event in env_events:
            self.events.emit(pod, event.type, event.reason, event.message)
        if self.volumes is not None:
            result = await self.volumes.materialise(pod)
            for volume_event in result.events:
                self.events.emit(pod, volume_event.type, volume_event.reason, volume_event.message)
            self._track_references(key_of(pod), self.volumes.references(pod))
            if result.refresh_at is not None:
                self.volume_queue.add_after(key_of(pod), max(0.0, result.refresh_at - time.time()))
        status = desired.setdefault("status", {})
        if ips:
            status["podIP"] = ips[0]
            status["podIPs"] = [{"ip": ip} for ip in ips]
        status["hostIP"] = self.settings.host_ips[0]
        status["hostIPs"] = [{"ip": ip} for ip in self.settings.host_ips]
        desired["metadata"].setdefault("annotations", {})[SPEC_HASH] = spec_hash(pod)
        return desired

    async def _sync_running(self, key: str, pod: Pod, tracked: _Tracked) -> None:
        wanted = spec_hash(pod)
        if tracked.in_provider and tracked.spec_hash in (None, wanted):
            return
        try:
            desired = await self._prepare(pod, tracked)
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
        method = "create_pod" if creating else "update_pod"
        try:
            await self._call(method, getattr(self.provider, method)(desired))
        except InvalidInput as exc:
            await self._give_up(key, pod, tracked, method, f"provider rejected the pod: {exc}")
            return
        except NotFound as exc:
            if creating:
                await self._provider_failed(key, pod, tracked, method, exc)
                return
            tracked.in_provider = False  # it vanished from the provider: create it again
            self.sync_queue.add(key)
            return
        except Exception as exc:
            await self._provider_failed(key, pod, tracked, method, exc)
            return
        tracked.in_provider = True
        tracked.spec_hash = wanted
        had_failures = tracked.failures > 0 or tracked.waiting_reason is not None
        tracked.failures = 0
        tracked.waiting_reason = None
        self.sync_queue.forget(key)
        if had_failures or has_failing_sync_condition(pod):
            await self._patch_status(
                pod,
                {
                    "metadata": {"uid": tracked.uid},
                    "status": {"conditions": [sync_condition(True, "ProviderSynced", "")]},
                },
            )
        if creating:
            self.events.emit(pod, "Normal", "ProviderCreated", "Pod created in the provider")
        if not self.push:
            self.status_queue.add_after(key, 0.05)

    async def _waiting_on_config(
        self, key: str, pod: Pod, tracked: _Tracked, reason: str, message: str, waiting: str
    ) -> None:
        """A mandatory ConfigMap/Secret is missing: stay Pending, say why, retry when it appears."""
        self.events.emit(pod, "Warning", reason, message)
        self._waiting_for_config.setdefault(pod["metadata"]["namespace"], set()).add(key)
        if not tracked.in_provider and tracked.waiting_reason != message:
            tracked.waiting_reason = message
            await self._patch_status(pod, waiting_patch(pod, waiting, message))
        self.sync_queue.add_rate_limited(key)

    async def _provider_failed(
        self, key: str, pod: Pod, tracked: _Tracked, method: str, exc: Exception
    ) -> None:
        tracked.failures += 1
        reason = "ProviderCreateFailed" if method == "create_pod" else "ProviderUpdateFailed"
        message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if tracked.failures >= self.settings.retry_limit:
            if method == "create_pod":
                await self._give_up(
                    key,
                    pod,
                    tracked,
                    method,
                    f"gave up after {tracked.failures} failed attempts: {message}",
                )
            else:
                # Never regress a running pod: stop retrying the update, keep its status.
                tracked.gave_up = True
                self.events.emit(
                    pod,
                    "Warning",
                    reason,
                    f"gave up updating the pod after {tracked.failures} attempts: {message}",
                )
            return
        delay = self.sync_queue.add_rate_limited(key)
        self.events.emit(pod, "Warning", reason, message)
        log.warning(
            "%s failed for %s (attempt %d/%d, retrying in %.0f s): %s",
            method,
            key,
            tracked.failures,
            self.settings.retry_limit,
            delay,
            message,
            extra={"pod": key},
        )
        await self._patch_status(
            pod,
            {
                "metadata": {"uid": tracked.uid},
                "status": {"conditions": [sync_condition(False, reason, message)]},
            },
        )

    async def _give_up(
        self, key: str, pod: Pod, tracked: _Tracked, method: str, message: str
    ) -> None:
        tracked.gave_up = True
        self.sync_queue.forget(key)
        self.events.emit(pod, "Warning", "ProviderFailed", message)
        log.error("%s: %s", key, message, extra={"pod": key})
        if method == "create_pod":
            await self._patch_status(pod, failed_patch(pod, "ProviderFailed", message))

    # --- deletion ---------------------------------------------------------------------------------

    async def _sync_deletion(self, key: str, pod: Pod, tracked: _Tracked) -> None:
        grace = pod["metadata"].get("deletionGracePeriodSeconds")
        if tracked.deletion_deadline is None or grace != tracked.deletion_grace:
            computed = deletion_deadline(pod, time.time())
            if tracked.deletion_deadline is not None:
                computed = min(computed, tracked.deletion_deadline)
            tracked.deletion_deadline, tracked.deletion_grace = computed, grace
        deadline = tracked.deletion_deadline
        if tracked.in_provider and not tracked.delete_requested:
            try:
                await self._call("delete_pod", self.provider.delete_pod(pod))
            except NotFound:
                tracked.in_provider = False
            tracked.delete_requested = True
            remaining = deadline - time.time()
            if tracked.in_provider and remaining > 0:
                self.sync_queue.add_after(key, remaining + 0.1)
        if tracked.in_provider:
            current = await self._call("get_pod", self.provider.get_pod(*split_key(key)))
            if (
                current is None
                or uid_of(current) != tracked.uid
                or current.get("status", {}).get("phase") in TERMINAL
            ):
                tracked.in_provider = False
        if tracked.in_provider and time.time() < deadline:
            if not self.push:
                self.sync_queue.add_after(
                    key, min(self.settings.poll_interval, deadline - time.time())
                )
            return  # wait for the provider (or the grace period)
        if tracked.in_provider:
            log.warning("%s: grace period over while the provider still runs it; removing it", key)
        await self._remove_from_api(pod)

    async def _remove_from_api(self, pod: Pod) -> None:
        namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": uid_of(pod)},
        }
        try:
            await self.client.delete(path("v1", "pods", namespace, name), body)
        except ApiError as exc:
            if not (exc.not_found or exc.conflict):
                raise

    # --- status -----------------------------------------------------------------------------------

    async def _write_status(self, key: str) -> None:
        entry = self._provider_status.pop(key, None)
        if entry is None:
            if self.push:
                return
            tracked = self.tracked.get(key)
            if tracked is None or not tracked.in_provider:
                return
            status = await self._call(
                "get_pod_status", self.provider.get_pod_status(*split_key(key))
            )
            if status is None:
                return
            entry = (tracked.uid, status)
        uid, status = entry
        pod = self.pods.get(key)
        if pod is None or (uid and uid_of(pod) != uid):
            return
        if pod.get("status", {}).get("phase") in TERMINAL:
            return  # a finished pod never starts again
        if (
            status.get("phase") in TERMINAL
            and pod["metadata"].get("deletionTimestamp")
            and not pod["metadata"].get("finalizers")
        ):
            # The object is about to be removed and nothing can read its last status (with a
            # finalizer, e.g. a Job's, it stays and the final phase is written like a kubelet).
            return
        patch = status_patch(pod, status, self.settings.host_ips)
        if patch is None:
            return
        try:
            await self._patch_status(pod, patch, raise_errors=True)
        except ApiError as exc:
            if exc.retryable:
                self._provider_status.setdefault(key, entry)
                raise
            log.debug("status of %s not written: %s", key, exc)

    async def _patch_status(
        self, pod: Pod, patch: dict[str, Any], *, raise_errors: bool = False
    ) -> None:
        namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        try:
            await self.client.patch(
                path("v1", "pods", namespace, name, "status"), patch, "strategic"
            )
        except ApiError as exc:
            if raise_errors:
                raise
            if not (exc.not_found or exc.conflict):
                log.warning("status patch of %s/%s failed: %s", namespace, name, exc)

    async def _poll(self) -> None:
        """Status for providers without notify_pods: ask for every running pod's status."""
        while True:
            await asyncio.sleep(self.settings.poll_interval)
            for key, tracked in list(self.tracked.items()):
                if tracked.in_provider:
                    self.status_queue.add(key)
                    if tracked.delete_requested:
                        self.sync_queue.add(key)

    # --- volumes ----------------------------------------------------------------------------------

    def _track_references(self, key: str, refs: set[tuple[str, str, str]]) -> None:
        self._forget_references(key)
        for ref in refs:
            self._references.setdefault(ref, set()).add(key)

    def _forget_references(self, key: str) -> None:
        for users in self._references.values():
            users.discard(key)
        for waiting in self._waiting_for_config.values():
            waiting.discard(key)

    async def _refresh_volumes(self, key: str) -> None:
        pod = self.pods.get(key)
        tracked = self.tracked.get(key)
        if self.volumes is None or pod is None or tracked is None or not tracked.in_provider:
            return
        if pod["metadata"].get("deletionTimestamp"):
            return
        try:
            result = await self.volumes.materialise(pod)
        except VolumeError as exc:
            self.events.emit(pod, "Warning", exc.reason, exc.message)
            raise
        for event in result.events:
            self.events.emit(pod, event.type, event.reason, event.message)
        if result.refresh_at is not None:
            self.volume_queue.add_after(key, max(0.0, result.refresh_at - time.time()))
