"""The status stream (`GET /watch`, server-sent events): every subscriber gets a snapshot (each
pod, the node, then `synced`) and afterwards every change. A subscriber that falls too far behind
is dropped; the agent reconnects and resyncs from a new snapshot, so nothing is lost.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

#: Events queued for one subscriber before it is dropped.
BACKLOG = 10_000


def sse(event: str, data: Any) -> bytes:
    """One server-sent event; JSON is written on one line, so one `data:` line suffices."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class Hub:
    def __init__(self, heartbeat_s: float) -> None:
        self.heartbeat_s = heartbeat_s
        self._subscribers: set[asyncio.Queue[bytes | None]] = set()

    def publish(self, event: str, data: Any) -> None:
        if not self._subscribers:
            return
        frame = sse(event, data)
        for queue in list(self._subscribers):
            try:
                queue.put_nowait(frame)
            except asyncio.QueueFull:
                log.warning("a status stream fell %d events behind: dropping it", BACKLOG)
                self._subscribers.discard(queue)
                queue.get_nowait()  # make room for the end marker
                queue.put_nowait(None)

    def close_all(self) -> None:
        for queue in self._subscribers:
            queue.put_nowait(None)
        self._subscribers.clear()

    async def serve(
        self, request: web.Request, snapshot: list[tuple[str, Any]]
    ) -> web.StreamResponse:
        """Stream `snapshot`, `synced`, then changes and heartbeats until either side goes."""
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(BACKLOG)
        self._subscribers.add(queue)  # before the snapshot: no change falls in between
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        try:
            await response.prepare(request)
            await response.write(b"".join(sse(event, data) for event, data in snapshot))
            await response.write(sse("synced", {}))
            while True:
                try:
                    async with asyncio.timeout(self.heartbeat_s):
                        frame = await queue.get()
                except TimeoutError:
                    await response.write(b": heartbeat\n\n")
                    continue
                if frame is None:
                    break
                await response.write(frame)
        except ConnectionResetError:
            pass  # the agent went away
        finally:
            self._subscribers.discard(queue)
        return response
