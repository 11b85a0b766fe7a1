"""exec, attach and port-forward of the extended protocol: the kubelet API's streams
(`ContainerIO`, `DuplexStream`) carried over one WebSocket to the backend, in the channel frames
of `extended_wire`.

Input (stdin, terminal sizes, bytes into a forwarded port) is pumped by its own task; the
backend's messages are read in the caller's task, so cancelling the call (the client went away)
closes the WebSocket and the backend ends the command. The status message ends an exec or attach;
its error maps to the SDK's errors so the client sees the backend's message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp

from ...sdk import ContainerIO, DuplexStream, InvalidInput, NotFound
from .errors import BackendError, BackendUnavailable, BadResponse
from .extended_wire import (
    Channel,
    StreamStatus,
    WireError,
    decode_closed,
    decode_frame,
    decode_status,
    encode_close,
    encode_frame,
    encode_resize,
)

__all__ = ["forward_port", "run_attach", "run_exec", "status_error"]

log = logging.getLogger(__name__)

#: Largest chunk read from a client's stream and sent as one message.
CHUNK = 64 * 1024


def status_error(what: str, status: StreamStatus) -> Exception:
    """The SDK error for a status that carries an `error`."""
    message = f"{what}: {status.error}"
    if status.reason == "NotFound":
        return NotFound(message)
    if status.reason == "InvalidInput":
        return InvalidInput(message)
    return BackendError(message)


async def run_exec(ws: aiohttp.ClientWebSocketResponse, io: ContainerIO, what: str) -> int:
    """Carry `io` until the backend's status; the command's exit code."""
    status = await _carry(ws, io, what)
    if status.error is not None:
        raise status_error(what, status)
    if status.exit_code is None:
        raise BadResponse(f"{what}: the backend's status has neither exitCode nor error")
    return status.exit_code


async def run_attach(ws: aiohttp.ClientWebSocketResponse, io: ContainerIO, what: str) -> int | None:
    """Carry `io` until the backend's status; the process's exit code if it ended."""
    status = await _carry(ws, io, what)
    if status.error is not None:
        raise status_error(what, status)
    return status.exit_code


async def _carry(ws: aiohttp.ClientWebSocketResponse, io: ContainerIO, what: str) -> StreamStatus:
    pumps: list[Callable[[], Awaitable[None]]] = []
    if io.stdin is not None:
        stdin = io.stdin

        async def pump_stdin() -> None:
            while data := await stdin.read(CHUNK):
                await ws.send_bytes(encode_frame(Channel.STDIN, data))
            await ws.send_bytes(encode_close(Channel.STDIN))

        pumps.append(pump_stdin)
    if io.resize is not None:
        sizes = io.resize

        async def pump_resize() -> None:
            async for size in sizes:
                await ws.send_bytes(encode_resize(size))

        pumps.append(pump_resize)
    async with _pumping(pumps, what):
        async for message in ws:
            channel, payload = _frame(message, what)
            if channel == Channel.STDOUT and io.stdout is not None:
                await io.stdout.write(payload)
            elif channel == Channel.STDERR:
                # Without a stderr stream (a tty), the kubelet drops stderr too.
                if io.stderr is not None:
                    await io.stderr.write(payload)
            elif channel == Channel.STATUS:
                return _status(payload, what)
            elif channel == Channel.CLOSE:
                decode_closed(payload)  # validated; the status that follows ends the call
            elif channel in (Channel.STDIN, Channel.RESIZE):
                raise BadResponse(f"{what}: the backend sent on the agent's channel {channel}")
    raise BackendUnavailable(f"{what}: the backend closed the stream without a status")


async def forward_port(
    ws: aiohttp.ClientWebSocketResponse, stream: DuplexStream, what: str
) -> None:
    """Carry one forwarded connection until both directions have ended (or either side fails)."""

    async def upstream() -> None:
        while data := await stream.read(CHUNK):
            await ws.send_bytes(encode_frame(Channel.STDIN, data))
        await ws.send_bytes(encode_close(Channel.STDIN))

    sending = asyncio.create_task(upstream())
    try:
        async for message in ws:
            channel, payload = _frame(message, what)
            if channel == Channel.STDOUT:
                await stream.write(payload)
            elif channel == Channel.CLOSE and decode_closed(payload) == Channel.STDOUT:
                break  # the pod's side is done; the client's may still be sending
            elif channel == Channel.STATUS:
                status = _status(payload, what)
                if status.error is not None:
                    raise status_error(what, status)
                break
        await stream.close()
        if not ws.closed:
            await sending  # until the client has finished sending too
    finally:
        sending.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError, aiohttp.ClientError):
            await sending
        await ws.close()


def _frame(message: aiohttp.WSMessage, what: str) -> tuple[Channel, bytes]:
    if message.type == aiohttp.WSMsgType.BINARY:
        try:
            return decode_frame(message.data)
        except WireError as exc:
            raise BadResponse(f"{what}: {exc}") from None
    if message.type == aiohttp.WSMsgType.ERROR:
        raise BackendUnavailable(f"{what}: the stream broke: {message.data}")
    raise BadResponse(f"{what}: the backend sent a {message.type.name} message (only binary)")


def _status(payload: bytes, what: str) -> StreamStatus:
    try:
        return decode_status(payload)
    except WireError as exc:
        raise BadResponse(f"{what}: {exc}") from None


@contextlib.asynccontextmanager
async def _pumping(pumps: list[Callable[[], Awaitable[None]]], what: str) -> AsyncIterator[None]:
    """Run the input pumps for the duration of the block. A pump that fails because the stream
    closed under it is not an error of its own: the reader reports what happened."""

    async def guarded(pump: Callable[[], Awaitable[None]]) -> None:
        try:
            await pump()
        except (ConnectionError, aiohttp.ClientError, RuntimeError) as exc:
            log.debug("%s: input stopped: %s", what, exc)

    tasks = [asyncio.create_task(guarded(p)) for p in pumps]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
