"""exec, attach and port-forward sessions over SPDY/3.1 or WebSocket: the asyncio glue between an
upgraded connection and the provider's stream-based hooks.

SPDY (what kube-apiserver speaks to kubelets): negotiate `X-Stream-Protocol-Version`, accept the
client's streams (`streamtype` error/stdin/stdout/stderr/resize for remote commands; error/data
pairs per `requestid` for port-forward), run the provider, write the v4 Status on the error stream,
GOAWAY. WebSocket: the same with channel framing. Every task a session starts ends with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ...errors import InvalidInput, NotFound
from ...streams import CallbackOutput, ContainerIO, Pipe, QueueInput, ResizeQueue
from ..http import HttpError, Request, Responder, Upgraded
from . import channels, websocket
from .remotecommand import (
    ResizeDecoder,
    StreamOptions,
    error_stream_payload,
    status,
    stream_options,
)
from .spdy import (
    DataReceived,
    GoAwayReceived,
    ProtocolError,
    SpdySession,
    StreamEnded,
    StreamOpened,
    StreamReset,
)

log = logging.getLogger(__name__)

REMOTE_COMMAND_SPDY = (
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
)
PORT_FORWARD_SPDY = ("portforward.k8s.io",)
_CHUNK = 256 * 1024

RunCommand = Callable[[ContainerIO], Awaitable[int | None]]
Forward = Callable[[int, Any], Awaitable[None]]


# --- SPDY driver ------------------------------------------------------------------------------------


def _negotiate_spdy(request: Request, supported: tuple[str, ...]) -> str:
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
    """Runs a SpdySession over an upgraded socket: one reader task, serialised writes."""

    def __init__(self, upgraded: Upgraded, idle_timeout: float) -> None:
        self.reader, self.writer = upgraded.reader, upgraded.writer
        self.session = SpdySession()
        self.idle_timeout = idle_timeout
        self.opened: asyncio.Queue[StreamOpened | None] = asyncio.Queue()
        self.inputs: dict[int, QueueInput] = {}
        self.closed = asyncio.Event()
        self._lock = asyncio.Lock()
        self._buffered = upgraded.buffered
        self._task = asyncio.create_task(self._read())

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

    def _dispatch(self, events: list[Any]) -> None:
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

    async def close(self) -> None:
        self.session.goaway()
        with contextlib.suppress(ConnectionError, OSError):
            await self.flush()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        with contextlib.suppress(Exception):
            self.writer.close()


# --- remote command (exec / attach) ----------------------------------------------------------------


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
    protocol = _negotiate_spdy(request, REMOTE_COMMAND_SPDY)
    upgraded = await responder.upgrade(
        [
            ("Connection", "Upgrade"),
            ("Upgrade", "SPDY/3.1"),
            ("X-Stream-Protocol-Version", protocol),
        ]
    )
    conn = SpdyConnection(upgraded, idle_timeout)
    try:
        await _spdy_remote_command(conn, protocol, options, run, command, creation_timeout)
    finally:
        await conn.close()


async def _run_provider(
    run: RunCommand, io: ContainerIO
) -> tuple[int | None, BaseException | None]:
    try:
        return await run(io), None
    except (NotFound, InvalidInput) as exc:
        return None, exc
    except NotImplementedError:
        return None, RuntimeError("not implemented by the provider")
    except (BrokenPipeError, ConnectionError):
        return None, None  # the client went away
    except Exception as exc:
        log.exception("provider exec/attach failed")
        return None, RuntimeError(type(exc).__name__)


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
    exit_code, error = await _run_provider(run, io)
    if resize_task is not None:
        resize_task.cancel()
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
            if stdin is not None:
                stdin.feed_eof()
            if resize is not None:
                resize.close()

    reader = asyncio.create_task(pump())
    try:
        exit_code, error = await _run_provider(run, io)
        payload = error_stream_payload(ws.framing.v4, status(exit_code, error, command))
        with contextlib.suppress(BrokenPipeError, ConnectionError, OSError):
            if payload:
                await ws.send(channels.ERROR, payload)
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        await ws.close()


# --- port-forward ------------------------------------------------------------------------------------


async def serve_port_forward(
    request: Request,
    responder: Responder,
    forward: Forward,
    creation_timeout: float,
    idle_timeout: float,
) -> None:
    if websocket.is_websocket(request):
        ports = _ws_ports(request)
        ws = await websocket.accept(request, responder, channels.PORT_FORWARD_PROTOCOLS)
        await _ws_port_forward(ws, ports, forward, idle_timeout)
        return
    _negotiate_spdy(request, PORT_FORWARD_SPDY)
    upgraded = await responder.upgrade(
        [
            ("Connection", "Upgrade"),
            ("Upgrade", "SPDY/3.1"),
            ("X-Stream-Protocol-Version", "portforward.k8s.io"),
        ]
    )
    conn = SpdyConnection(upgraded, idle_timeout)
    try:
        await _spdy_port_forward(conn, forward, creation_timeout)
    finally:
        await conn.close()


def _port(value: str | None) -> int | None:
    try:
        port = int(value or "")
    except ValueError:
        return None
    return port if 0 < port < 65536 else None


async def _spdy_port_forward(
    conn: SpdyConnection, forward: Forward, creation_timeout: float
) -> None:
    pairs: dict[str, dict[str, int]] = {}
    tasks: set[asyncio.Task[None]] = set()

    async def expire(request_id: str) -> None:
        await asyncio.sleep(creation_timeout)
        pair = pairs.pop(request_id, None)
        if pair:
            if "error" in pair:
                with contextlib.suppress(BrokenPipeError, ConnectionError, OSError):
                    await conn.send(
                        pair["error"], b"timed out waiting for the data stream of this request"
                    )
            for stream_id in pair.values():
                if isinstance(stream_id, int) and stream_id > 0:
                    await conn.reset(stream_id)

    try:
        while (event := await conn.opened.get()) is not None:
            headers = event.headers
            kind = (headers.get("streamtype") or [""])[0]
            port = _port(next(iter(headers.get("port") or []), None))
            if kind not in ("error", "data") or port is None:
                await conn.reset(event.stream_id)
                continue
            request_id = (headers.get("requestid") or [""])[0] or str(
                event.stream_id if kind == "error" else event.stream_id - 2
            )
            conn.session.reply(event.stream_id)
            await conn.flush()
            pair = pairs.setdefault(request_id, {"port": port})
            if not any(k in pair for k in ("error", "data")):
                timer = asyncio.create_task(expire(request_id))
                tasks.add(timer)
                timer.add_done_callback(tasks.discard)
            pair[kind] = event.stream_id
            if "error" in pair and "data" in pairs.get(request_id, {}):
                del pairs[request_id]
                task = asyncio.create_task(
                    _forward_pair(conn, forward, pair["port"], pair["data"], pair["error"])
                )
                tasks.add(task)
                task.add_done_callback(tasks.discard)
    finally:
        for task in list(tasks):
            task.cancel()
        for task in list(tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def _forward_pair(
    conn: SpdyConnection, forward: Forward, port: int, data_id: int, error_id: int
) -> None:
    pipe = Pipe(conn.input_for(data_id), conn.output(data_id))
    try:
        await forward(port, pipe)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        message = forward_error(port, exc)
        with contextlib.suppress(BrokenPipeError, ConnectionError, OSError):
            await conn.send(error_id, message.encode())
        await conn.reset(data_id)
    else:
        await conn.end(data_id)
    await conn.end(error_id)


def _ws_ports(request: Request) -> list[int]:
    ports = []
    for value in request.query.get("port", []):
        for part in value.split(","):
            port = _port(part.strip())
            if port is None:
                raise HttpError(400, f"invalid port {part!r}")
            ports.append(port)
    if not ports:
        raise HttpError(400, 'query parameter "port" is required')
    return ports


async def _ws_port_forward(
    ws: websocket.WebSocketChannels, ports: list[int], forward: Forward, idle_timeout: float
) -> None:
    """Two channels per port (data 2i, error 2i+1); the first message on each is the port number.

    As in the kubelet, the session ends when the client closes *or* when every forwarded
    connection has ended: a pod that answers and closes its socket closes the WebSocket, which is
    how a client without per-channel close frames (v4 protocol) learns the stream is over."""
    inputs = [QueueInput() for _ in ports]
    for index, port in enumerate(ports):
        header = port.to_bytes(2, "little")
        await ws.send(2 * index, header)
        await ws.send(2 * index + 1, header)

    async def run(index: int, port: int) -> None:
        async def close() -> None:
            return None

        pipe = Pipe(inputs[index], CallbackOutput(lambda data: ws.send(2 * index, data), close))
        try:
            await forward(port, pipe)
        except Exception as exc:
            with contextlib.suppress(BrokenPipeError, ConnectionError, OSError):
                await ws.send(2 * index + 1, forward_error(port, exc).encode())

    async def receive() -> None:
        while (message := await ws.receive(idle_timeout)) is not None:
            channel, payload = message
            if channel % 2 == 0 and channel // 2 < len(inputs):
                inputs[channel // 2].feed(payload)

    async def forward_all() -> None:
        await asyncio.gather(*forwards, return_exceptions=True)

    forwards = [asyncio.create_task(run(i, p)) for i, p in enumerate(ports)]
    receiver = asyncio.create_task(receive())
    everything = asyncio.create_task(forward_all())
    try:
        await asyncio.wait([receiver, everything], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for stream_input in inputs:
            stream_input.feed_eof()
        for task in [receiver, everything, *forwards]:
            task.cancel()
        for task in [receiver, everything, *forwards]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await ws.close()


def forward_error(port: int, exc: BaseException) -> str:
    """What the error channel carries when a port cannot be forwarded (the kubelet's wording)."""
    return f"error forwarding port {port} to pod: {exc}"
