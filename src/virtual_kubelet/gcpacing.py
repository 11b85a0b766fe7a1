"""Paces Python's full (generation 2) garbage collections so a burst of pods does not stall the
event loop again and again.

A full collection walks every tracked object: with 5 000 cached pods that is over a million dicts
and lists and a pause of a few hundred milliseconds, during which no pod is synced and no Lease is
renewed. CPython starts one whenever the objects promoted since the last one exceed a quarter of
the survivors, and every status update of a pod replaces its cached dicts with new ones that are
promoted in turn, so a 5 000-pod burst triggered ~30 full collections (measured with
`virtual_kubelet_gc_pause_seconds`: 16 s of a 25 s run). Pod objects parsed from JSON hold no
reference cycles and are freed by reference counting the moment they are replaced; the cyclic
collector is only needed for the few cycles asyncio and exceptions leave behind, and most of those
die young in generations 0 and 1, which keep their default thresholds.

So the automatic full collection is switched off and replaced by this pacer: at most one full
collection per `min_interval`, and only when the young generations have been collected often
enough since the last one to make it worthwhile (CPython's own trigger, minus the growth rule).
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable

#: Generation 0 and 1 thresholds stay CPython's defaults; generation 2 is ours.
_NEVER = 1 << 30


class FullCollectionPacer:
    def __init__(
        self,
        min_interval: float = 60.0,
        min_young_collections: int = 10,
        clock: Callable[[], float] = time.monotonic,
        collect: Callable[[int], int] = gc.collect,
    ) -> None:
        self.min_interval = min_interval
        self.min_young_collections = min_young_collections
        self._clock = clock
        self._collect = collect
        self._last = clock()
        self._previous: tuple[int, int, int] | None = None

    def install(self) -> None:
        """Take over generation 2 (restored by `uninstall`)."""
        if self._previous is None:
            self._previous = gc.get_threshold()
            young, middle, _ = self._previous
            gc.set_threshold(young, middle, _NEVER)

    def uninstall(self) -> None:
        if self._previous is not None:
            gc.set_threshold(*self._previous)
            self._previous = None

    def tick(self) -> bool:
        """Run a full collection if one is due; True if it ran."""
        if self._clock() - self._last < self.min_interval:
            return False
        # gc.get_count()[2]: generation-1 collections since the last full one.
        if gc.get_count()[2] < self.min_young_collections:
            return False
        self._collect(2)
        self._last = self._clock()
        return True

    async def run(self, check_every: float = 5.0) -> None:
        self.install()
        try:
            while True:
                await asyncio.sleep(check_every)
                self.tick()
        finally:
            self.uninstall()
