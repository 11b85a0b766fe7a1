"""Keeps the files of pod volumes in step with the pods, for providers that want them
(`Provider.wants_volume_files`): written before the provider gets a pod, rewritten when a ConfigMap
or Secret they show changes or their service-account tokens age, removed once the pod is gone.

Without `PodVolumes` (the provider wants no files) every method does nothing. How volumes are laid
out and written is `volumes/`'s business; this module decides when.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..kube.events import EventRecorder
from ..kube.workqueue import WorkQueue, run_workers
from ..sdk import Pod, key_of
from .volumes import MaterialiseResult, PodVolumes, VolumeError

__all__ = ["VolumeSync"]

#: Concurrent refreshes: they are rare (a changed ConfigMap, a token due) and cheap.
_REFRESH_WORKERS = 4

#: A ConfigMap or Secret: (kind, namespace, name).
Source = tuple[str, str, str]


class VolumeSync:
    """Writes, refreshes (`run`) and removes pod volumes."""

    def __init__(
        self,
        volumes: PodVolumes | None,
        events: EventRecorder,
        api_pod: Callable[[str], Pod | None],
        in_provider: Callable[[str], bool],
    ) -> None:
        self._volumes = volumes
        self._events = events
        self._api_pod = api_pod
        self._in_provider = in_provider
        self.queue = WorkQueue("pod-volumes", base_delay=1.0, max_delay=60.0)
        #: source -> keys of the pods whose volumes show it
        self._readers: dict[Source, set[str]] = {}

    async def write(self, pod: Pod) -> None:
        """Write `pod`'s volumes before the provider gets it, and follow their sources from now
        on. Raises `VolumeError` (nothing changed on disk) while a mandatory source is missing."""
        if self._volumes is None:
            return
        result = await self._volumes.materialise(pod)
        key = key_of(pod)
        self._emit(pod, result)
        self.forget(key)
        for source in self._volumes.references(pod):
            self._readers.setdefault(source, set()).add(key)
        self._refresh_at(key, result)

    def refresh_soon(self, key: str) -> None:
        """Rewrite the pod's volumes soon (an adopted pod: its tokens are due after a restart)."""
        self.queue.add(key)

    def source_changed(self, kind: str, namespace: str, name: str) -> None:
        """A ConfigMap or Secret changed: refresh the volumes that show it."""
        for key in self._readers.get((kind, namespace, name), ()):
            self.queue.add(key)

    def forget(self, key: str) -> None:
        """Stop following the sources of the pod `key`."""
        for readers in self._readers.values():
            readers.discard(key)

    async def remove(self, uid: str) -> None:
        """Delete the files of the pod with `uid` (it is gone from the API and the provider)."""
        if self._volumes is not None:
            await self._volumes.remove(uid)

    async def run(self) -> None:
        await run_workers(self.queue, _REFRESH_WORKERS, self._refresh)

    def shutdown(self) -> None:
        self.queue.shutdown()

    async def _refresh(self, key: str) -> None:
        pod = self._api_pod(key)
        if self._volumes is None or pod is None or not self._in_provider(key):
            return
        if pod["metadata"].get("deletionTimestamp"):
            return
        try:
            result = await self._volumes.materialise(pod)
        except VolumeError as exc:
            self._events.emit(pod, "Warning", exc.reason, exc.message)
            raise
        self._emit(pod, result)
        self._refresh_at(key, result)

    def _emit(self, pod: Pod, result: MaterialiseResult) -> None:
        for event in result.events:
            self._events.emit(pod, event.type, event.reason, event.message)

    def _refresh_at(self, key: str, result: MaterialiseResult) -> None:
        if result.refresh_at is not None:
            self.queue.add_after(key, max(0.0, result.refresh_at - time.time()))
