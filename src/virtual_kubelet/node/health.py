"""Whether the provider answered its last ping: shared by the lease and the node status writer.

The lease stops renewing and the Ready condition turns False while the provider is unhealthy.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from ..metrics import provider_call

log = logging.getLogger(__name__)


class ProviderHealth:
    def __init__(self, ping: Callable[[], Awaitable[None]], timeout: float = 5.0) -> None:
        self._ping = ping
        self.timeout = timeout
        self.healthy = True
        self.message = ""
        self.changed = asyncio.Event()

    async def check(self) -> bool:
        """Ping the provider once (bounded by `timeout`) and record the outcome."""
        try:
            with provider_call("ping"):
                async with asyncio.timeout(self.timeout):
                    await self._ping()
        except Exception as exc:
            message = str(exc) or type(exc).__name__
            if isinstance(exc, TimeoutError):
                message = f"ping did not answer within {self.timeout:.0f} s"
            self._set(False, message)
        else:
            self._set(True, "")
        return self.healthy

    def _set(self, healthy: bool, message: str) -> None:
        if healthy != self.healthy:
            if healthy:
                log.info("provider is healthy again")
            else:
                log.warning("provider ping failed: %s (node lease renewal paused)", message)
            self.changed.set()
        self.healthy, self.message = healthy, message
