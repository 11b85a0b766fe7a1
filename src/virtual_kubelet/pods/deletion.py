"""Graceful deletion of pods, as a kubelet does it: once `deletionTimestamp` appears the provider is
asked to stop the pod, and the API object is removed (grace period 0, uid precondition) when the
provider reports the pod gone or finished, or when the grace period is over, whichever is first.

A provider that can never delete a pod (`InvalidInput` from `delete_pod`, e.g. a web backend
without a delete call) does not wedge the deletion: the API object is removed at once, with a
Warning Event `ProviderDeleteFailed` carrying the provider's message.

Also removes the pods a restarted agent finds in the provider that the API no longer has.
"""

from __future__ import annotations

import logging
import time

from ..kube.client import KubeClient, path
from ..kube.errors import ApiError
from ..kube.events import EventRecorder
from ..kube.objects import split_key
from ..kube.timefmt import parse
from ..kube.workqueue import WorkQueue
from ..sdk import InvalidInput, NotFound, Pod, key_of, uid_of
from .lifecycle import Op, PodLifecycle, ProviderCalls
from .status import TERMINAL
from .tracking import TrackedPod

__all__ = ["DELETION_SLACK_S", "PodDeletion", "deletion_deadline"]

log = logging.getLogger(__name__)

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


class PodDeletion:
    """Carries out the deletion of pods; `sync` is called by the sync queue's workers."""

    def __init__(
        self,
        client: KubeClient,
        lifecycle: PodLifecycle,
        calls: ProviderCalls,
        sync_queue: WorkQueue,
        events: EventRecorder | None = None,
    ) -> None:
        self.client = client
        self._lifecycle = lifecycle
        self._calls = calls
        self._sync_queue = sync_queue
        self._events = events

    async def sync(self, key: str, pod: Pod, tracked: TrackedPod) -> None:
        """One step of deleting `pod` (it has a deletionTimestamp). The pod is synced again when
        the provider reports it, and at the end of the grace period at the latest."""
        grace = pod["metadata"].get("deletionGracePeriodSeconds")
        if tracked.deletion_deadline is None or grace != tracked.deletion_grace:
            computed = deletion_deadline(pod, time.time())
            if tracked.deletion_deadline is not None:
                computed = min(computed, tracked.deletion_deadline)
            tracked.deletion_deadline, tracked.deletion_grace = computed, grace
        deadline = tracked.deletion_deadline
        if tracked.in_provider and not tracked.delete_requested:
            try:
                await self._calls(Op.DELETE_POD, self._lifecycle.delete_pod(pod))
            except NotFound:
                tracked.in_provider = False
            except InvalidInput as exc:
                # Retrying cannot help: remove the API object and say the provider was not told.
                log.warning("%s: the provider cannot delete it (%s); removing it", key, exc)
                if self._events is not None:
                    self._events.emit(
                        pod,
                        "Warning",
                        "ProviderDeleteFailed",
                        f"removed without the provider stopping it: {exc}",
                    )
                tracked.in_provider = False
            tracked.delete_requested = True
        if tracked.in_provider:
            remaining = deadline - time.time()
            if remaining > 0:
                # The earlier of two pending checks wins, so a shortened grace period (a second
                # `kubectl delete`) moves this one forward.
                self._sync_queue.add_after(key, remaining + 0.1)
            current = await self._calls(Op.GET_POD, self._lifecycle.get_pod(*split_key(key)))
            if (
                current is None
                or uid_of(current) != tracked.uid
                or current.get("status", {}).get("phase") in TERMINAL
            ):
                tracked.in_provider = False
        if tracked.in_provider and time.time() < deadline:
            return  # wait for the provider (or the grace period)
        if tracked.in_provider:
            log.warning("%s: grace period over while the provider still runs it; removing it", key)
        await self.remove_from_api(pod)

    async def remove_from_api(self, pod: Pod) -> None:
        """Delete the API object now (the provider is done with it); a pod already gone or
        replaced by a new one of the same name is left alone."""
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

    async def delete_dangling(self, pod: Pod) -> None:
        """Stop a pod the provider runs but the API no longer has (found at start-up)."""
        try:
            await self._calls(Op.DELETE_POD, self._lifecycle.delete_pod(pod))
        except NotFound:
            pass
        except Exception as exc:
            log.warning("could not delete dangling provider pod %s: %s", key_of(pod), exc)
