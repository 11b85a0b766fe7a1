"""port-forward sessions over SPDY/3.1 or WebSocket: the glue between an upgraded connection and
the provider's port-forward call.

SPDY: the client opens an error/data stream pair per connection (`requestid`, `port` headers);
each pair is forwarded on its own task. WebSocket: two channels per requested port. Every task a
session starts ends with it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from ...streams import CallbackOutput, DuplexStream, Pipe, QueueInput
from ..http import HttpError, Request, Responder
from . import channels, websocket
from .spdy_driver import SpdyConnection, negotiate_spdy

PORT_FORWARD_SPDY = ("portforward.k8s.io",)

Forward = Callable[[int, DuplexStream], Awaitable[None]]


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
    negotiate_spdy(request, PORT_FORWARD_SPDY)
    upgraded = await responder.upgrade(
        [
            ("Connection", "Upgrade"),
            ("Upgrade", "SPDY/3.1"),
            ("X-Stream-Protocol-Version", "portforward.k8s.io"),
        ]
    )
    async with SpdyConnection(upgraded, idle_timeout) as conn:
        await _spdy_port_forward(conn, forward, creation_timeout)


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
