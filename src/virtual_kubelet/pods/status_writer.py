"""Writing pod status to the API server: the provider's newest status of each pod (coalesced: a
burst of reports for one pod is one write), and the controller's own patches (conditions, Failed,
waiting reasons).

Status goes to the status subresource by strategic-merge PATCH carrying `metadata.uid` (see
`status.py`), never by a full PUT. A finished pod's status is never overwritten.

A patch carries only what differs from the pod as the API server has it. The pod cache (the
reflector) lags behind our own writes, so the base of that difference is the newer (by
resourceVersion) of the cached pod and the pod as our last PATCH returned it: diffing against the
cache alone drops a field that went A -> B -> A faster than the watch delivered B (after a backend
restart: phase Running, then Pending written, then Running left out of the patch because the
cache still said Running, so the pod stayed Pending with a running container).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ..kube.client import KubeClient, path
from ..kube.errors import ApiError
from ..kube.workqueue import WorkQueue, run_workers
from ..sdk import Pod, PodStatus, uid_of
from .status import TERMINAL, status_patch

__all__ = ["StatusWriter"]

log = logging.getLogger(__name__)


class StatusWriter:
    """Writes reported statuses with `workers` concurrent writers (`run`), and patches on demand."""

    def __init__(
        self,
        client: KubeClient,
        api_pod: Callable[[str], Pod | None],
        host_ips: list[str],
        workers: int,
    ) -> None:
        self.client = client
        self._api_pod = api_pod
        self._host_ips = host_ips
        self._workers = workers
        self.queue = WorkQueue("pod-status", base_delay=0.1, max_delay=10.0)
        #: key -> (uid, status): the newest status the provider reported, not yet written
        self._reported: dict[str, tuple[str, PodStatus]] = {}
        #: key -> the pod as our last status PATCH returned it, until the cache has caught up
        self._written: dict[str, Pod] = {}

    def report(self, key: str, uid: str, status: PodStatus) -> None:
        """The provider's newest status of the pod `key` (with `uid`); written soon."""
        self._reported[key] = (uid, status)
        self.queue.add(key)

    def cache_updated(self, key: str, pod: Pod) -> None:
        """The pod cache now holds `pod`: drop the answer to our last PATCH once the cache has
        caught up with it (the rule of `_freshest`), so a pod whose status no longer changes does
        not keep a second, full copy of itself here (~18 KB each)."""
        if key in self._written:
            self._freshest(key, pod)

    def forget(self, key: str) -> None:
        """The pod is gone: drop a status not yet written."""
        self._reported.pop(key, None)
        self._written.pop(key, None)

    async def run(self) -> None:
        await run_workers(self.queue, self._workers, self._write)

    def shutdown(self) -> None:
        self.queue.shutdown()

    async def _write(self, key: str) -> None:
        entry = self._reported.pop(key, None)
        if entry is None:
            return
        uid, status = entry
        pod = self._api_pod(key)
        if pod is None or (uid and uid_of(pod) != uid):
            return
        pod = self._freshest(key, pod)
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
        patch = status_patch(pod, status, self._host_ips)
        if patch is None:
            return
        try:
            await self.patch(pod, patch, raise_errors=True)
        except ApiError as exc:
            if exc.retryable:
                # Retried with backoff by the work queue, unless a newer status arrived meanwhile.
                self._reported.setdefault(key, entry)
                raise
            log.debug("status of %s not written: %s", key, exc)

    async def patch(self, pod: Pod, patch: dict[str, Any], *, raise_errors: bool = False) -> None:
        """PATCH `pod`'s status; failures other than a vanished or replaced pod are logged (or
        raised, with `raise_errors`)."""
        namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        try:
            written = await self.client.patch(
                path("v1", "pods", namespace, name, "status"), patch, "strategic"
            )
        except ApiError as exc:
            if raise_errors:
                raise
            if not (exc.not_found or exc.conflict):
                log.warning("status patch of %s/%s failed: %s", namespace, name, exc)
            return
        if isinstance(written, dict) and _resource_version(written) is not None:
            self._remember(f"{namespace}/{name}", written)

    def _remember(self, key: str, written: Pod) -> None:
        """Keep `written` as the base of the next diff, unless an answer to a later write (the
        reconciler patches too, concurrently) is already kept, or the cache already has it (the
        watch often delivers our write before its answer arrives: `cache_updated` came first)."""
        cached = self._api_pod(key)
        if cached is not None and self._freshest_of(cached, written) is cached:
            return
        kept = self._written.get(key)
        if (
            kept is None
            or uid_of(kept) != uid_of(written)
            or (_resource_version(kept) or 0) < (_resource_version(written) or 0)
        ):
            self._written[key] = written

    def _freshest(self, key: str, cached: Pod) -> Pod:
        """`cached`, or the pod as our last PATCH returned it where the cache has not caught up
        with that write yet."""
        written = self._written.get(key)
        if written is None:
            return cached
        if self._freshest_of(cached, written) is written:
            return written
        del self._written[key]  # the cache has our write (or a newer one, or another pod)
        return cached

    @staticmethod
    def _freshest_of(cached: Pod, written: Pod) -> Pod:
        """`written` if it is the same pod as `cached` and newer, else `cached`."""
        ours, theirs = _resource_version(written), _resource_version(cached)
        if (
            uid_of(written) == uid_of(cached)
            and ours is not None
            and theirs is not None
            and theirs < ours
        ):
            return written
        return cached


def _resource_version(pod: Pod) -> int | None:
    """The pod's resourceVersion as a number. Kubernetes calls it opaque, but every API server
    backed by etcd hands out etcd's revision, a growing integer; anything else reads as unknown
    (None), and then the cache is trusted as before."""
    try:
        return int(pod["metadata"]["resourceVersion"])
    except (KeyError, TypeError, ValueError):
        return None
