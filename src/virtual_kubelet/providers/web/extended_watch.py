"""The status stream of the extended protocol: `GET /watch` kept open, its server-sent events
turned into pod and node pushes, reconnected with back-off when it drops, resynced on every
connection.

Each connection starts with a snapshot (every pod the backend runs, then `synced`); a pod the
agent had heard of that is missing from the snapshot is reported gone (a pod without `status`, as
the polling adapter reports one), so nothing that happened while the stream was down is lost. A
stream silent for three heartbeats is taken as dead and reopened. While it is down the stream
records since when and why (`down_since`, `last_error`), for the provider's ping.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any

from ...sdk import NotFound, Pod, ProviderError, key_of, uid_of
from .backoff import Backoff
from .extended_wire import (
    EventStreamDecoder,
    NodeChanged,
    PodChanged,
    PodGone,
    Synced,
    WireError,
    parse_watch_event,
)

__all__ = ["StatusStream"]

log = logging.getLogger(__name__)

OpenStream = Callable[[], AbstractAsyncContextManager[AsyncIterator[bytes]]]


class StatusStream:
    def __init__(
        self,
        open_stream: OpenStream,
        *,
        on_pod: Callable[[Pod], None],
        on_node: Callable[[Mapping[str, Any]], None],
        heartbeat_seconds: float,
        backoff: Backoff,
        max_event_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        self._open = open_stream
        self._on_pod = on_pod
        self._on_node = on_node
        #: Silence longer than this ends a connection.
        self.stale_after = 3 * heartbeat_seconds
        self._backoff = backoff
        self._max_event_bytes = max_event_bytes
        #: namespace/name -> uid of every pod reported and not reported gone since
        self._known: dict[str, str] = {}
        #: monotonic time since which the stream is not synced (None while it is)
        self.down_since: float | None = time.monotonic()
        self.last_error = "not connected yet"
        self.connections = 0
        self._synced = asyncio.Event()

    @property
    def synced(self) -> asyncio.Event:
        """Set while a connection has delivered its snapshot."""
        return self._synced

    async def run(self) -> None:
        """Keep the stream open until cancelled; never ends by itself."""
        delays = self._backoff.delays()
        while True:
            try:
                await self._connection()
                error = "the backend ended the stream"
            except TimeoutError:
                error = f"no event or heartbeat for {self.stale_after:g} s"
            except (ProviderError, NotFound, WireError, OSError) as exc:
                error = str(exc) or type(exc).__name__
            except Exception as exc:  # a bug here must not end the stream for good
                log.exception("status stream GET /watch failed unexpectedly")
                error = f"{type(exc).__name__}: {exc}"
            if self._synced.is_set():
                delays = self._backoff.delays()  # it was up: start the back-off afresh
                self.down_since = time.monotonic()
                self._synced.clear()
            first = self.last_error != error
            self.last_error = error
            delay = next(delays)
            log.log(
                logging.WARNING if first else logging.DEBUG,
                "status stream GET /watch: %s; reconnecting in %.1f s",
                error,
                delay,
            )
            await asyncio.sleep(delay)

    async def _connection(self) -> None:
        decoder = EventStreamDecoder(self._max_event_bytes)
        snapshot: dict[str, str] = {}
        async with self._open() as chunks:
            self.connections += 1
            iterator = aiter(chunks)
            while True:
                async with asyncio.timeout(self.stale_after):
                    chunk = await anext(iterator, None)
                if chunk is None:
                    return
                for raw in decoder.feed(chunk):
                    event = parse_watch_event(raw)
                    if event is None:
                        log.debug("status stream: ignored event %r (unknown type)", raw.event)
                    elif not self._synced.is_set():
                        self._during_snapshot(event, snapshot)
                    else:
                        self._apply(event)

    def _during_snapshot(
        self, event: PodChanged | PodGone | NodeChanged | Synced, snapshot: dict[str, str]
    ) -> None:
        if isinstance(event, PodChanged):
            snapshot[key_of(event.pod)] = uid_of(event.pod)
        elif isinstance(event, PodGone):
            snapshot.pop(key_of(event.pod), None)
        if not isinstance(event, Synced):
            self._apply(event)
            return
        gone = [(key, uid) for key, uid in self._known.items() if snapshot.get(key) != uid]
        for key, uid in gone:
            namespace, _, name = key.partition("/")
            self._apply(PodGone({"metadata": {"namespace": namespace, "name": name, "uid": uid}}))
        if self.down_since is not None:
            down = time.monotonic() - self.down_since
            log.info(
                "status stream GET /watch synced: %d pods%s",
                len(snapshot),
                f", {len(gone)} gone while it was down ({down:.0f} s)" if gone else "",
            )
        self.down_since = None
        self._synced.set()

    def _apply(self, event: PodChanged | PodGone | NodeChanged | Synced) -> None:
        if isinstance(event, PodChanged):
            self._known[key_of(event.pod)] = uid_of(event.pod)
            self._on_pod(event.pod)
        elif isinstance(event, PodGone):
            key = key_of(event.pod)
            uid = uid_of(event.pod)
            if key in self._known and (not uid or self._known[key] == uid):
                del self._known[key]
            self._on_pod(event.pod)
        elif isinstance(event, NodeChanged):
            self._on_node(event.node)
