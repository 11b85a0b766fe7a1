"""Byte streams handed to providers for exec, attach and port-forward (part of the provider SDK).

A provider reads `stdin` until it returns b"" (end of input) and writes `stdout` / `stderr`;
terminal resizes arrive on `resize`. They are transport-neutral: the same objects serve SPDY and
WebSocket clients. Queue-backed implementations live here too.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol


class InputStream(Protocol):
    async def read(self, n: int = 65536) -> bytes:
        """Up to `n` bytes; b"" once the other side has finished sending."""
        ...


class OutputStream(Protocol):
    async def write(self, data: bytes) -> None: ...

    async def close(self) -> None:
        """No more data: the other side sees end of stream."""
        ...


class DuplexStream(InputStream, OutputStream, Protocol):
    """Both directions of one forwarded connection (port-forward)."""


@dataclass(frozen=True)
class TermSize:
    width: int
    height: int


@dataclass
class ContainerIO:
    """The streams of one exec or attach; absent ones were not requested by the client."""

    stdin: InputStream | None
    stdout: OutputStream | None
    stderr: OutputStream | None
    tty: bool = False
    resize: AsyncIterable[TermSize] | None = None


class QueueInput:
    """An InputStream fed by the protocol: `feed(bytes)` then `feed_eof()`."""

    def __init__(self) -> None:
        self._chunks: collections.deque[bytes] = collections.deque()
        self._eof = False
        self._ready = asyncio.Event()

    def feed(self, data: bytes) -> None:
        if data:
            self._chunks.append(data)
            self._ready.set()

    def feed_eof(self) -> None:
        self._eof = True
        self._ready.set()

    @property
    def at_eof(self) -> bool:
        return self._eof and not self._chunks

    async def read(self, n: int = 65536) -> bytes:
        while not self._chunks:
            if self._eof:
                return b""
            self._ready.clear()
            await self._ready.wait()
        chunk = self._chunks.popleft()
        if len(chunk) > n:
            self._chunks.appendleft(chunk[n:])
            chunk = chunk[:n]
        return chunk


class CallbackOutput:
    """An OutputStream that hands writes to the protocol (which applies backpressure)."""

    def __init__(
        self, send: Callable[[bytes], Awaitable[None]], close: Callable[[], Awaitable[None]]
    ) -> None:
        self._send, self._close = send, close
        self.closed = False

    async def write(self, data: bytes) -> None:
        if self.closed:
            raise BrokenPipeError("stream closed")
        if data:
            await self._send(data)

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            await self._close()


class ResizeQueue:
    """Terminal sizes as an async iterator; ends when closed."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[TermSize | None] = asyncio.Queue()

    def put(self, size: TermSize) -> None:
        self._queue.put_nowait(size)

    def close(self) -> None:
        self._queue.put_nowait(None)

    def __aiter__(self) -> AsyncIterator[TermSize]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[TermSize]:
        while (size := await self._queue.get()) is not None:
            yield size


class Pipe:
    """A DuplexStream made of a QueueInput and a CallbackOutput (one port-forward connection)."""

    def __init__(self, inbound: QueueInput, outbound: CallbackOutput) -> None:
        self.inbound, self.outbound = inbound, outbound

    async def read(self, n: int = 65536) -> bytes:
        return await self.inbound.read(n)

    async def write(self, data: bytes) -> None:
        await self.outbound.write(data)

    async def close(self) -> None:
        await self.outbound.close()
