"""The target pods' Events mirrored onto their source pods (scheduling failures, image pulls,
kills: what `kubectl describe pod` in the source should show).

One list-and-watch of the target's Pod events; an event about one of our remote pods becomes an
Event on the source pod with a name derived from the target event's UID, so a restarted agent
updates the same Event instead of writing it twice, and a repeated target event raises the
count of the mirrored one. Writes are queued and bounded: a burst never blocks the pod watch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from ...sdk import Pod
from ...sdk.kube_api import ApiError, CallbackHandler, KubeClient, Reflector, path

__all__ = ["RemoteEvents"]

log = logging.getLogger(__name__)

_QUEUE_LIMIT = 1000
_COMPONENT_PREFIX = "target/"


class RemoteEvents:
    """Mirrors target Pod events of our pods (found by `source_of(remote_uid)`) to `source`."""

    def __init__(
        self,
        source: KubeClient,
        target: KubeClient,
        cluster_id: str,
        source_of: Callable[[str], Pod | None],
    ) -> None:
        self._source = source
        self._cluster_id = cluster_id
        self._source_of = source_of
        self._queue: asyncio.Queue[tuple[dict[str, Any], Pod]] = asyncio.Queue(_QUEUE_LIMIT)
        self._reflector = Reflector(
            target,
            path("v1", "events"),
            name="target events",
            field_selector="involvedObject.kind=Pod",
            handler=CallbackHandler(on_add=self._seen, on_update=lambda _old, new: self._seen(new)),
        )

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._reflector.run())
            group.create_task(self._send_all())

    def _seen(self, event: dict[str, Any]) -> None:
        uid = (event.get("involvedObject") or {}).get("uid")
        pod = self._source_of(str(uid)) if uid else None
        if pod is None:
            return  # not about one of our pods
        try:
            self._queue.put_nowait((event, pod))
        except asyncio.QueueFull:
            log.debug("target event for %s dropped: too many pending", pod["metadata"]["name"])

    async def _send_all(self) -> None:
        while True:
            event, pod = await self._queue.get()
            try:
                await self._send(event, pod)
            except ApiError as exc:
                log.debug("mirrored event not written: %s", exc)

    async def _send(self, event: dict[str, Any], pod: Pod) -> None:
        meta = pod["metadata"]
        namespace = meta["namespace"]
        name = f"{meta['name']}.offload-{str(event['metadata']['uid'])[:18]}"
        last = event.get("lastTimestamp") or event.get("eventTime") or event.get("firstTimestamp")
        fields = {
            "count": int(event.get("count") or 1),
            "lastTimestamp": last,
            "message": str(event.get("message") or ""),
        }
        try:
            await self._source.patch(path("v1", "events", namespace, name), fields)
            return
        except ApiError as exc:
            if not exc.not_found:
                raise
        component = (event.get("source") or {}).get("component") or event.get(
            "reportingComponent", ""
        )
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": meta["name"],
                "namespace": namespace,
                "uid": meta["uid"],
            },
            "reason": event.get("reason", ""),
            "type": event.get("type", "Normal"),
            "source": {"component": f"{_COMPONENT_PREFIX}{component}"[:100]},
            "reportingComponent": f"{_COMPONENT_PREFIX}{component}"[:100],
            "reportingInstance": self._cluster_id,
            "firstTimestamp": event.get("firstTimestamp") or last,
            **fields,
        }
        try:
            await self._source.create(path("v1", "events", namespace), body)
        except ApiError as exc:
            if not exc.conflict:
                raise
