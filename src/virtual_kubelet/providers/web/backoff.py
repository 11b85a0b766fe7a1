"""Exponential back-off with jitter, as the original web provider used (cenkalti/backoff's
defaults: 0.5 s first, x1.5 each time, +-50 % jitter, at most 60 s between tries), bounded by the
total time allowed. Pure: the random source and the clock are the caller's."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

__all__ = ["Backoff"]


@dataclass(frozen=True)
class Backoff:
    initial: float = 0.5
    multiplier: float = 1.5
    max_interval: float = 60.0
    #: Each delay is drawn from [d * (1 - jitter), d * (1 + jitter)].
    jitter: float = 0.5
    #: Total time after which no further try is made.
    max_elapsed: float = 60.0

    def delays(self, rand: Callable[[], float] = random.random) -> Iterator[float]:
        """The delays before each retry (endless: the caller stops at `max_elapsed`)."""
        interval = self.initial
        while True:
            spread = interval * self.jitter
            yield interval - spread + 2 * spread * rand()
            interval = min(interval * self.multiplier, self.max_interval)

    def allows(self, elapsed: float, delay: float) -> bool:
        """Whether a retry after `delay` more seconds still starts within `max_elapsed`."""
        return elapsed + delay <= self.max_elapsed
