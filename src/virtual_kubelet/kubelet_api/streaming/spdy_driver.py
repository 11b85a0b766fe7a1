"""The asyncio side of SPDY/3.1 for the kubelet's streaming routes: protocol negotiation on the
upgrade request, and `SpdyConnection`, which drives the sans-I/O `SpdySession` over an upgraded
socket (one reader task, serialised writes). It knows nothing of exec or port-forward."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from ...spdy import (
    DataReceived,
    Event,
    GoAwayReceived,
    ProtocolError,
    SpdySession,
    StreamEnded,
    StreamOpened,
    StreamReset,
)
from ...streams import CallbackOutput, QueueInput
from ..http import HttpError, Request, Upgraded

log = logging.getLogger(__name__)

_CHUNK = 256 * 1024


def negotiate_spdy(request: Request, supported: tuple[str, ...]) -> str:
    connection = (request.header("connection") or "").lower()
    upgrade = (request.header("upgrade") or "").lower()
    if "upgrade" not in connection or "spdy/3.1" not in upgrade:
        raise HttpError(400, "unable to upgrade: missing upgrade headers in request")
    offered = request.header_values("x-stream-protocol-version")
    if not offered:
        raise HttpError(400, "unable to upgrade: no X-Stream-Protocol-Version requested")
    for protocol in offered:
        if protocol in supported:
            return protocol
    raise HttpError(
        403,
        f"unable to upgrade: unable to negotiate protocol: client supports {offered}, "
        f"server supports {list(supported)}",
    )


class SpdyConnection:
    """Runs a SpdySession over an upgraded socket: one reader task, serialised writes.

    Use it as `async with SpdyConnection(upgraded, idle_timeout) as conn:`; the reader task lives
    exactly as long as the block, and leaving the block sends GOAWAY and closes the socket.
    `closed` is set once the client is gone (end of stream, reset, protocol error, idle timeout).
    """

    def __init__(self, upgraded: Upgraded, idle_timeout: float) -> None:
        self.reader, self.writer = upgraded.reader, upgraded.writer
        self.session = SpdySession()
        self.idle_timeout = idle_timeout
        self.opened: asyncio.Queue[StreamOpened | None] = asyncio.Queue()
        self.inputs: dict[int, QueueInput] = {}
        self.closed = asyncio.Event()
        self._lock = asyncio.Lock()
        self._buffered = upgraded.buffered
        self._reader_task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> SpdyConnection:
        self._reader_task = asyncio.create_task(self._read(), name="SPDY reader")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.session.goaway()
        with contextlib.suppress(ConnectionError, OSError):
            await self.flush()
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task
        with contextlib.suppress(Exception):
            self.writer.close()

    def input_for(self, stream_id: int) -> QueueInput:
        return self.inputs.setdefault(stream_id, QueueInput())

    async def flush(self) -> None:
        async with self._lock:
            data = self.session.data_to_send()
            if data and not self.writer.is_closing():
                self.writer.write(data)
                await self.writer.drain()

    async def _read(self) -> None:
        try:
            data = self._buffered
            while True:
                if data:
                    self._dispatch(self.session.receive_data(data))
                    await self.flush()  # ping echoes and rejections
                data = await asyncio.wait_for(self.reader.read(65536), self.idle_timeout)
                if not data:
                    return
        except (ProtocolError, ConnectionError, TimeoutError, OSError) as exc:
            log.debug("SPDY connection ended: %s", exc)
        finally:
            self.closed.set()
            for stream_input in self.inputs.values():
                stream_input.feed_eof()
            self.opened.put_nowait(None)

    def _dispatch(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, StreamOpened):
                if event.fin:
                    self.input_for(event.stream_id).feed_eof()
                self.opened.put_nowait(event)
            elif isinstance(event, DataReceived):
                self.input_for(event.stream_id).feed(event.data)
            elif isinstance(event, StreamEnded | StreamReset):
                self.input_for(event.stream_id).feed_eof()
            elif isinstance(event, GoAwayReceived):
                self.opened.put_nowait(None)

    async def send(self, stream_id: int, data: bytes) -> None:
        if self.closed.is_set():
            raise BrokenPipeError("connection closed")
        for start in range(0, len(data), _CHUNK):
            try:
                self.session.send_data(stream_id, data[start : start + _CHUNK])
            except ValueError:
                raise BrokenPipeError(f"stream {stream_id} is closed") from None
            await self.flush()

    async def end(self, stream_id: int) -> None:
        with contextlib.suppress(ValueError):
            self.session.end_stream(stream_id)
        with contextlib.suppress(ConnectionError, OSError):
            await self.flush()

    async def reset(self, stream_id: int) -> None:
        self.session.reset(stream_id)
        with contextlib.suppress(ConnectionError, OSError):
            await self.flush()

    def output(self, stream_id: int) -> CallbackOutput:
        return CallbackOutput(lambda data: self.send(stream_id, data), lambda: self.end(stream_id))
