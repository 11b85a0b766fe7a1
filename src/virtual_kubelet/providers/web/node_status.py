"""The node as a backend describes it, kept safe from a backend that fails.

`NodeStatusKeeper` holds the node the agent registered (from `configure_node`) and applies what
each node source of the backend answers (`succeeded(source, apply)`). When a source fails it keeps
that source's last good values; after `failure_threshold` consecutive failures of any source the
node's Ready condition turns False with reason `BackendNodeStatusFailed` and a message naming the
source and its last error, until the source answers again. The original web provider panicked
here and took the agent down.

Changes are pushed through the agent's `notify_node_status` callback (`publish`), only when the
node really changed. `refresh_forever` is the periodic loop a mode runs from its `start()`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import orjson

from ...sdk import Node, NodeCallback, deep_copy

__all__ = ["FAILED_REASON", "NodeStatusKeeper", "refresh_forever"]

log = logging.getLogger(__name__)

#: The Ready condition's reason while a node source keeps failing.
FAILED_REASON = "BackendNodeStatusFailed"


class NodeStatusKeeper:
    def __init__(self, failure_threshold: int = 3) -> None:
        self.failure_threshold = failure_threshold
        self._node: Node | None = None
        #: source -> (consecutive failures, last error)
        self._failures: dict[str, tuple[int, str]] = {}
        self._callback: NodeCallback | None = None
        self._published: bytes | None = None

    # --- what the agent gives -------------------------------------------------------------------

    def attach(self, node: Node) -> None:
        """Keep `node` (the agent's, from `configure_node`) as the base the sources update."""
        self._node = node

    def set_callback(self, callback: NodeCallback) -> None:
        """The agent's `notify_node_status` callback; the current node is pushed at once if it
        already differs from what was registered."""
        self._callback = callback
        self._published = self._fingerprint(self.current()) if self._node is not None else None

    # --- what the sources report ----------------------------------------------------------------

    def succeeded(self, source: str, apply: Callable[[Node], None]) -> None:
        """`source` answered: `apply` its values to the node, and forget its failures."""
        if self._node is not None:
            apply(self._node)
        previous = self._failures.pop(source, None)
        if previous is not None and previous[0] >= self.failure_threshold:
            log.info("node source %s answers again", source)

    def failed(self, source: str, error: str) -> None:
        """`source` failed: its last good values stay; count the failure."""
        count = self._failures.get(source, (0, ""))[0] + 1
        self._failures[source] = (count, error)
        if count == self.failure_threshold:
            log.warning(
                "node source %s failed %d times in a row (%s): the node's Ready condition turns "
                "False; its last good values stay",
                source,
                count,
                error,
            )
        elif count < self.failure_threshold:
            log.info(
                "node source %s failed (%d/%d): %s", source, count, self.failure_threshold, error
            )

    def failing(self) -> str | None:
        """Why the node is not Ready because of its sources, or None."""
        bad = [
            f"{source} failed {count} times in a row: {error}"
            for source, (count, error) in sorted(self._failures.items())
            if count >= self.failure_threshold
        ]
        if not bad:
            return None
        return "; ".join(bad) + " (the node keeps the last values it answered)"

    # --- what is pushed -------------------------------------------------------------------------

    def current(self) -> Node:
        """A copy of the node as it should be reported now."""
        if self._node is None:
            raise RuntimeError("NodeStatusKeeper.attach() was not called (configure_node)")
        node: Node = deep_copy(self._node)
        reason = self.failing()
        if reason is not None:
            conditions = node.setdefault("status", {}).setdefault("conditions", [])
            ready = next((c for c in conditions if c.get("type") == "Ready"), None)
            if ready is None:
                ready = {"type": "Ready"}
                conditions.append(ready)
            ready.update(status="False", reason=FAILED_REASON, message=reason)
        return node

    def publish(self) -> None:
        """Push the node to the agent if it changed since the last push."""
        if self._callback is None or self._node is None:
            return
        node = self.current()
        fingerprint = self._fingerprint(node)
        if fingerprint != self._published:
            self._published = fingerprint
            self._callback(node)

    @staticmethod
    def _fingerprint(node: Node) -> bytes:
        return orjson.dumps(node, option=orjson.OPT_SORT_KEYS, default=str)


async def refresh_forever(
    refresh: Callable[[], Awaitable[None]], keeper: NodeStatusKeeper, interval: float
) -> None:
    """Every `interval` seconds (the first time after one interval: the caller has just
    refreshed), call `refresh` and publish what changed, until cancelled. A `refresh` that raises
    is logged and tried again next time: this loop never ends by itself."""
    while True:
        await asyncio.sleep(interval)
        try:
            await refresh()
            keeper.publish()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("refreshing the node status from the backend failed")
