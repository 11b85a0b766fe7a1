"""exec and attach sessions over SPDY/3.1 or WebSocket: the glue between an upgraded connection and
the provider's exec/attach call.

SPDY (what kube-apiserver speaks to kubelets): negotiate `X-Stream-Protocol-Version`, accept the
client's streams (`streamtype` error/stdin/stdout/stderr/resize), run the provider, write the v4
Status on the error stream, GOAWAY. WebSocket: the same with channel framing. Every task a session
starts ends with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from ...streams import CallbackOutput, ContainerIO, QueueInput, ResizeQueue
from ..http import Request, Responder
from ..provider_errors import provider_failure
from . import channels, websocket
from .remotecommand import (
    ResizeDecoder,
    StreamOptions,
    error_stream_payload,
    status,
    stream_options,
)
from .spdy_driver import SpdyConnection, negotiate_spdy

log = logging.getLogger(__name__)

REMOTE_COMMAND_SPDY = (
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
)

RunCommand = Callable[[ContainerIO], Coroutine[Any, Any, int | None]]


async def serve_remote_command(
    request: Request,
    responder: Responder,
    run: RunCommand,
    creation_timeout: float,
    idle_timeout: float,
) -> None:
    options = stream_options(request)
    command = request.query.get("command")
    if websocket.is_websocket(request):
        ws = await websocket.accept(request, responder, channels.REMOTE_COMMAND_PROTOCOLS)
        await _ws_remote_command(ws, options, run, command, idle_timeout)
        return
    protocol = negotiate_spdy(request, REMOTE_COMMAND_SPDY)
    upgraded = await responder.upgrade(
        [
            ("Connection", "Upgrade"),
            ("Upgrade", "SPDY/3.1"),
            ("X-Stream-Protocol-Version", protocol),
        ]
    )
    async with SpdyConnection(upgraded, idle_timeout) as conn:
        await _spdy_remote_command(conn, protocol, options, run, command, creation_timeout)


async def _run_provider(
    run: RunCommand, io: ContainerIO, client_gone: asyncio.Event
) -> tuple[int | None, BaseException | None]:
    """The provider's exit code or error, (None, None) if the client went away first.

    The call is cancelled when the client disconnects: an exec that neither reads stdin nor
    writes output would otherwise never notice and outlive its client (the kubelet's runtime
    does the same when the stream's context ends)."""
    call = asyncio.create_task(run(io), name="provider exec/attach")
    disconnect = asyncio.create_task(client_gone.wait(), name="exec/attach disconnect watch")
    try:
        await asyncio.wait([call, disconnect], return_when=asyncio.FIRST_COMPLETED)
    finally:
        # Still running: the client is gone (or this session is being cancelled). Either way the
        # provider's call ends here, and its clean-up finishes before the session does.
        for task in (disconnect, call):
            task.cancel()
        await asyncio.gather(disconnect, call, return_exceptions=True)
    if call.cancelled():
        log.debug("exec/attach: the client disconnected; the provider's call was cancelled")
        return None, None
    try:
        return call.result(), None
    except (BrokenPipeError, ConnectionError):
        return None, None  # the client went away
    except Exception as exc:
        # The 101 is long sent: the status the dispatcher would answer with goes into the Status
        # on the error stream instead, with the same message.
        failure = provider_failure(exc)
        if failure.unexpected:
            log.exception("provider exec/attach failed")
        return None, RuntimeError(failure.message)


async def _spdy_remote_command(
    conn: SpdyConnection,
    protocol: str,
    options: StreamOptions,
    run: RunCommand,
    command: list[str] | None,
    creation_timeout: float,
) -> None:
    expected = {"error"}
    expected |= {
        name
        for name, wanted in (
            ("stdin", options.stdin),
            ("stdout", options.stdout),
            ("stderr", options.stderr),
        )
        if wanted
    }
    if options.tty and protocol in ("v4.channel.k8s.io", "v3.channel.k8s.io"):
        expected.add("resize")
    streams: dict[str, int] = {}
    try:
        async with asyncio.timeout(creation_timeout):
            while set(streams) != expected:
                event = await conn.opened.get()
                if event is None:
                    return
                kind = (event.headers.get("streamtype") or [""])[0]
                if kind in expected and kind not in streams:
                    conn.session.reply(event.stream_id)
                    streams[kind] = event.stream_id
                else:
                    log.debug("unexpected stream type %r ignored", kind)
                    conn.session.reset(event.stream_id)
                await conn.flush()
    except TimeoutError:
        log.warning("exec/attach: client did not open its streams within %.0f s", creation_timeout)
        return
    resize = None
    resize_task = None
    if "resize" in streams:
        resize = ResizeQueue()
        resize_task = asyncio.create_task(_read_resizes(conn.input_for(streams["resize"]), resize))
    io = ContainerIO(
        stdin=conn.input_for(streams["stdin"]) if "stdin" in streams else None,
        stdout=conn.output(streams["stdout"]) if "stdout" in streams else None,
        stderr=conn.output(streams["stderr"]) if "stderr" in streams else None,
        tty=options.tty,
        resize=resize,
    )
    exit_code, error = await _run_provider(run, io, conn.closed)
    if resize_task is not None:
        resize_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await resize_task
    for kind in ("stdout", "stderr"):
        if kind in streams:
            await conn.end(streams[kind])
    payload = error_stream_payload(protocol.startswith("v4."), status(exit_code, error, command))
    with contextlib.suppress(BrokenPipeError, ConnectionError, OSError):
        if payload:
            await conn.send(streams["error"], payload)
        await conn.end(streams["error"])


async def _read_resizes(source: QueueInput, sink: ResizeQueue) -> None:
    decoder = ResizeDecoder()
    try:
        while data := await source.read():
            for size in decoder.feed(data):
                sink.put(size)
    finally:
        sink.close()


async def _ws_remote_command(
    ws: websocket.WebSocketChannels,
    options: StreamOptions,
    run: RunCommand,
    command: list[str] | None,
    idle_timeout: float,
) -> None:
    stdin = QueueInput() if options.stdin else None
    resize = ResizeQueue() if options.tty else None

    def output(channel: int) -> CallbackOutput:
        async def nothing() -> None:
            return None

        return CallbackOutput(lambda data: ws.send(channel, data), nothing)

    io = ContainerIO(
        stdin=stdin,
        stdout=output(channels.STDOUT) if options.stdout else None,
        stderr=output(channels.STDERR) if options.stderr else None,
        tty=options.tty,
        resize=resize,
    )
    # The server speaks first: an empty message on the lowest writable channel.
    first = (
        channels.STDOUT if options.stdout else channels.STDERR if options.stderr else channels.ERROR
    )
    await ws.send(first, b"")
    client_gone = asyncio.Event()

    async def pump() -> None:
        decoder = ResizeDecoder()
        try:
            while (message := await ws.receive(idle_timeout)) is not None:
                channel, payload = message
                if channel == channels.STDIN and stdin is not None:
                    stdin.feed(payload)
                elif channel == channels.RESIZE and resize is not None:
                    for size in decoder.feed(payload):
                        resize.put(size)
        finally:
            client_gone.set()
            if stdin is not None:
                stdin.feed_eof()
            if resize is not None:
                resize.close()

    reader = asyncio.create_task(pump())
    try:
        exit_code, error = await _run_provider(run, io, client_gone)
        payload = error_stream_payload(ws.framing.v4, status(exit_code, error, command))
        with contextlib.suppress(BrokenPipeError, ConnectionError, OSError):
            if payload:
                await ws.send(channels.ERROR, payload)
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        await ws.close()
