"""A keyed work queue: duplicates collapse, one worker per key at a time, delayed and backed-off adds.

Semantics follow client-go's workqueue so Kubernetes engineers feel at home: `add` a key, workers
`get` it and must call `done`; a key added again while being processed is handed out once more after
`done` ("dirty"). `add_rate_limited` re-adds with per-key exponential backoff; `forget` resets it.
Pure asyncio, no I/O: unit-testable without a cluster.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable

from .metrics import QUEUE_ADDS, QUEUE_DEPTH, QUEUE_RETRIES, SYNC_SECONDS

log = logging.getLogger(__name__)


class ShutDown(Exception):
    """The queue was shut down; workers should exit."""


class WorkQueue:
    def __init__(self, name: str, *, base_delay: float = 0.05, max_delay: float = 60.0) -> None:
        self.name = name
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._queue: collections.deque[str] = collections.deque()
        self._dirty: set[str] = set()
        self._processing: set[str] = set()
        self._failures: dict[str, int] = {}
        self._timers: dict[str, tuple[float, asyncio.TimerHandle]] = {}
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._shutdown = False
        self._depth = QUEUE_DEPTH.labels(name)
        self._adds = QUEUE_ADDS.labels(name)

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, key: str) -> None:
        """Queue `key` now (no-op if it is already waiting)."""
        if self._shutdown or key in self._dirty:
            return
        self._adds.inc()
        self._dirty.add(key)
        if key in self._processing:
            return  # handed out again by done()
        self._queue.append(key)
        self._depth.set(len(self._queue))
        self._wake()

    def add_after(self, key: str, delay: float) -> None:
        """Queue `key` after `delay` seconds; an earlier pending deadline for it wins."""
        if self._shutdown:
            return
        if delay <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + delay
        pending = self._timers.get(key)
        if pending is not None:
            if pending[0] <= deadline:
                return
            pending[1].cancel()
        self._timers[key] = (deadline, loop.call_at(deadline, self._fire, key))

    def _fire(self, key: str) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def add_rate_limited(self, key: str) -> float:
        """Re-queue after a failure, with exponential backoff per key; returns the delay used."""
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        delay: float = min(self.max_delay, self.base_delay * 2.0**failures)
        QUEUE_RETRIES.labels(self.name).inc()
        self.add_after(key, delay)
        return delay

    def failures(self, key: str) -> int:
        """How many times `key` was re-queued since it was last forgotten."""
        return self._failures.get(key, 0)

    def forget(self, key: str) -> None:
        """Reset `key`'s backoff (after a success, or when giving up on it)."""
        self._failures.pop(key, None)

    def cancel_delayed(self, key: str) -> None:
        pending = self._timers.pop(key, None)
        if pending is not None:
            pending[1].cancel()

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def get(self) -> str:
        """Wait for a key; the caller owns it until `done(key)`."""
        while not self._queue:
            if self._shutdown:
                raise ShutDown()
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake()  # we were chosen but are leaving: pass the wake-up on
                raise
        key = self._queue.popleft()
        self._depth.set(len(self._queue))
        self._processing.add(key)
        self._dirty.discard(key)
        return key

    def done(self, key: str) -> None:
        self._processing.discard(key)
        if key in self._dirty and not self._shutdown:
            self._queue.append(key)
            self._depth.set(len(self._queue))
            self._wake()

    def shutdown(self) -> None:
        self._shutdown = True
        for _, timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)


async def run_workers(
    queue: WorkQueue, count: int, handle: Callable[[str], Awaitable[None]]
) -> None:
    """Run `count` workers calling `handle(key)`; an exception is logged and the key is re-queued
    with backoff. Returns when the queue shuts down."""

    async def worker() -> None:
        while True:
            try:
                key = await queue.get()
            except ShutDown:
                return
            started = time.monotonic()
            result = "ok"
            try:
                await handle(key)
            except asyncio.CancelledError:
                raise
            except Exception:
                result = "error"
                delay = queue.add_rate_limited(key)
                log.exception("%s: handling %s failed; retrying in %.2f s", queue.name, key, delay)
            finally:
                SYNC_SECONDS.labels(queue.name, result).observe(time.monotonic() - started)
                queue.done(key)

    async with asyncio.TaskGroup() as group:
        for _ in range(count):
            group.create_task(worker())
