"""Waiting on a condition with a deadline: the only way tests and tools here synchronise.

Never sleep for a fixed time and hope; poll a predicate, and on timeout say what was awaited and
what was last seen.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """The awaited condition did not hold before the deadline."""


def wait_until(
    probe: Callable[[], T | None],
    timeout: float,
    what: str,
    interval: float = 0.25,
) -> T:
    """Call `probe` until it returns something truthy and return that; raise WaitTimeout after
    `timeout` seconds, quoting the last value or exception seen."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = probe()
            if value:
                return value
            last = value
        except Exception as exc:
            last = exc
        if time.monotonic() >= deadline:
            raise WaitTimeout(
                f"timed out after {timeout:.0f} s waiting for {what}; last seen: {last!r}"
            )
        time.sleep(interval)
