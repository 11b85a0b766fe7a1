"""Kubernetes Events (core/v1) about pods and the node, sent in the background and aggregated.

`emit` never blocks and never raises: pod work must not wait on event delivery. A repeat of the same
event (same object, type, reason and message) within ten minutes increments the existing Event's
count, as the kubelet's recorder does, instead of creating another object. Like the kubelet
(--event-qps 50, --event-burst 100), events beyond a rate are dropped and counted rather than
allowed to compete with pod status writes; so are events queued while the API server lags.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

from .client import KubeClient, path
from .errors import ApiError
from .metrics import EVENTS_DROPPED
from .ratelimit import TokenBucket
from .timefmt import rfc3339 as _now

log = logging.getLogger(__name__)

_AGGREGATE_WINDOW_S = 600.0
_CACHE_SIZE = 4096
_MAX_MESSAGE = 1024


@dataclass(slots=True)  # one per recent event (up to _CACHE_SIZE): slots keep them small
class _Sent:
    name: str
    namespace: str
    count: int
    last: float


class EventRecorder:
    def __init__(
        self,
        client: KubeClient,
        *,
        component: str,
        host: str,
        max_pending: int = 2000,
        senders: int = 4,
        qps: float = 50.0,
        burst: int = 100,
    ) -> None:
        self.client = client
        self.component = component
        self.host = host
        self.senders = senders
        self._limit = TokenBucket(qps, burst)
        self._pending: asyncio.Queue[tuple[dict[str, Any], str, str, str]] = asyncio.Queue(
            max_pending
        )
        self._sent: collections.OrderedDict[tuple[str, str, str, str], _Sent] = (
            collections.OrderedDict()
        )

    def emit(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """Record an event about `obj` (a Pod or Node dict). Returns immediately."""
        message = message if len(message) <= _MAX_MESSAGE else message[: _MAX_MESSAGE - 3] + "..."
        meta = obj.get("metadata", {})
        where = (
            f"{meta.get('namespace')}/{meta.get('name')}"
            if meta.get("namespace")
            else meta.get("name")
        )
        level = logging.WARNING if type_ == "Warning" else logging.INFO
        log.log(level, "event %s %s: %s", reason, where, message, extra={"object": where})
        if not self._limit.try_acquire():
            EVENTS_DROPPED.inc()
            return
        try:
            self._pending.put_nowait((obj, type_, reason, message))
        except asyncio.QueueFull:
            EVENTS_DROPPED.inc()

    async def run(self) -> None:
        """Deliver events until cancelled."""
        async with asyncio.TaskGroup() as group:
            for _ in range(self.senders):
                group.create_task(self._sender())

    async def _sender(self) -> None:
        while True:
            obj, type_, reason, message = await self._pending.get()
            try:
                await self._send(obj, type_, reason, message)
            except ApiError as exc:
                log.debug("event %s not delivered: %s", reason, exc)
            except Exception:
                log.exception("event %s not delivered", reason)

    async def _send(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        meta = obj["metadata"]
        kind = obj.get("kind") or ("Pod" if meta.get("namespace") else "Node")
        namespace = meta.get("namespace") or "default"
        key = (str(meta.get("uid", meta["name"])), type_, reason, message)
        now = time.monotonic()
        previous = self._sent.get(key)
        if previous is not None and now - previous.last < _AGGREGATE_WINDOW_S:
            previous.count += 1
            previous.last = now
            self._sent.move_to_end(key)
            try:
                await self.client.patch(
                    path("v1", "events", previous.namespace, previous.name),
                    {"count": previous.count, "lastTimestamp": _now()},
                )
                return
            except ApiError as exc:
                if not exc.not_found:
                    raise
        stamp = _now()
        involved: dict[str, Any] = {
            "apiVersion": obj.get("apiVersion", "v1"),
            "kind": kind,
            "name": meta["name"],
            "uid": meta.get("uid", ""),
        }
        if meta.get("namespace"):
            involved["namespace"] = meta["namespace"]
        name = f"{meta['name']}.{time.time_ns():x}{secrets.token_hex(2)}"
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": involved,
            "reason": reason,
            "message": message,
            "type": type_,
            "source": {"component": self.component, "host": self.host},
            "reportingComponent": self.component,
            "reportingInstance": self.host,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        await self.client.create(path("v1", "events", namespace), body)
        self._sent[key] = _Sent(name, namespace, 1, now)
        if len(self._sent) > _CACHE_SIZE:
            self._sent.popitem(last=False)
