"""Makes a provider without `notify_pods` push, so the pod controller only ever handles pushes
(upstream virtual-kubelet does the same in `node/sync.go`, `syncProviderWrapper`).

`PollingProvider` wraps the provider: every `interval` seconds it asks `get_pod_status` for each pod
the controller has in the provider (`polled`), a few at a time, and calls the callback given to
`notify_pods` when a pod's status changed since the last report. A pod is also polled shortly after
each create or update, so its first status shows up without waiting for the next round. A pod the
provider no longer knows (None or `NotFound`) is reported once, without a `status`: that tells the
controller to look at it again (e.g. to finish its deletion) and writes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable

import orjson

from ..kube.objects import split_key
from ..sdk import NotFound, Pod, PodCallback, PodStatus, Provider, key_of, uid_of
from .lifecycle import Op, ProviderCalls

__all__ = ["PolledPod", "PollingProvider"]

log = logging.getLogger(__name__)

#: How long after a create or update the pod is polled: the provider's first status is usually
#: there by then.
AFTER_CHANGE_S = 0.05

#: A pod to poll: (namespace/name, uid).
PolledPod = tuple[str, str]


class PollingProvider:
    """`provider`'s pod lifecycle, with `notify_pods` served by polling (`run`)."""

    def __init__(
        self,
        provider: Provider,
        calls: ProviderCalls,
        *,
        interval: float,
        polled: Callable[[], Iterable[PolledPod]],
        concurrency: int,
    ) -> None:
        self._provider = provider
        self._calls = calls
        self.interval = interval
        self._polled = polled
        self._concurrency = concurrency
        self._callback: PodCallback | None = None
        #: key -> (uid, status as sorted JSON, or None once reported gone): the last report
        self._reported: dict[str, tuple[str, bytes | None]] = {}
        #: Pods to poll soon (just created or updated): key -> uid
        self._soon: dict[str, str] = {}
        self._wake = asyncio.Event()
        self._closed = False

    # --- the lifecycle, passed through ---------------------------------------------------------

    async def create_pod(self, pod: Pod) -> None:
        await self._provider.create_pod(pod)
        self._poll_soon(pod)

    async def update_pod(self, pod: Pod) -> None:
        await self._provider.update_pod(pod)
        self._poll_soon(pod)

    async def delete_pod(self, pod: Pod) -> None:
        await self._provider.delete_pod(pod)

    async def get_pod(self, namespace: str, name: str) -> Pod | None:
        return await self._provider.get_pod(namespace, name)

    async def list_pods(self) -> list[Pod]:
        return await self._provider.list_pods()

    async def assign_pod_ips(self, pod: Pod) -> list[str] | None:
        return await self._provider.assign_pod_ips(pod)

    def notify_pods(self, callback: PodCallback) -> None:
        self._callback = callback
        log.info("provider does not push pod status; polling every %.0f s", self.interval)

    # --- polling -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Poll until `close()`."""
        loop = asyncio.get_running_loop()
        next_round = loop.time() + self.interval
        while True:
            wait = next_round - loop.time()
            if not self._soon and wait > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
            self._wake.clear()
            if self._closed:
                return
            if self._soon:
                # A delay, not synchronisation: give the provider a moment to report the change.
                await asyncio.sleep(AFTER_CHANGE_S)
                soon, self._soon = self._soon, {}
                await self._poll(soon.items())
            if loop.time() >= next_round:
                pods = list(self._polled())
                await self._poll(pods)
                # Forget pods no longer polled, so a pod that comes back is reported again.
                wanted = {key for key, _ in pods}
                self._reported = {k: v for k, v in self._reported.items() if k in wanted}
                next_round = loop.time() + self.interval

    def close(self) -> None:
        """Stop `run` (the agent is shutting down)."""
        self._closed = True
        self._wake.set()

    def _poll_soon(self, pod: Pod) -> None:
        self._soon[key_of(pod)] = uid_of(pod)
        self._wake.set()

    async def _poll(self, pods: Iterable[PolledPod]) -> None:
        # As many at once as status writers: a provider with thousands of pods is asked in
        # parallel, but never thousands of times at once.
        limit = asyncio.Semaphore(self._concurrency)

        async def poll(key: str, uid: str) -> None:
            async with limit:
                await self._poll_one(key, uid)

        await asyncio.gather(*(poll(key, uid) for key, uid in pods))

    async def _poll_one(self, key: str, uid: str) -> None:
        namespace, name = split_key(key)
        try:
            status = await self._calls(
                Op.GET_POD_STATUS, self._provider.get_pod_status(namespace, name)
            )
        except NotFound:
            status = None
        except Exception as exc:
            log.warning("polling the status of %s failed: %s", key, exc, extra={"pod": key})
            return
        seen = None if status is None else _fingerprint(status)
        if self._reported.get(key) == (uid, seen):
            return
        self._reported[key] = (uid, seen)
        pod: Pod = {"metadata": {"namespace": namespace, "name": name, "uid": uid}}
        if status is not None:
            pod["status"] = status
        if self._callback is not None:
            self._callback(pod)


def _fingerprint(status: PodStatus) -> bytes:
    """The status as canonical bytes: equal statuses, equal bytes (and never a reference to a
    dict the provider may change later)."""
    return orjson.dumps(status, option=orjson.OPT_SORT_KEYS, default=str)
