"""exec and attach through the runtime's streaming server over SPDY/3.1, the protocol the kubelet
itself uses with it: unlike the WebSocket channel protocol (v4), SPDY can half-close the stdin
stream, so a command reading until end of input (`cat`, `tar x` for `kubectl cp`) sees it end.

After an HTTP/1.1 upgrade (`X-Stream-Protocol-Version: v4.channel.k8s.io`) the client opens one
stream per channel, named by its `streamType` header (error, stdin, stdout, stderr, resize), in
the order Kubernetes' own client does; the runtime ends with the v4 Status on the error stream
and closes the connection. The protocol is the SDK's sans-I/O `SpdySession`; this module is only
its I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit

import orjson

from ...sdk import ContainerIO, OutputStream, ProviderError, TermSize
from ...sdk.channel_client import exit_code
from ...sdk.spdy import DataReceived, ProtocolError, SpdySession

__all__ = ["run_spdy"]

PROTOCOL = "v4.channel.k8s.io"
MAX_RESPONSE_HEAD = 64 * 1024


async def _upgrade(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname is None:
        raise ProviderError(f"the runtime's streaming URL is not plain http: {parts.scheme}://")
    port = parts.port or 80
    try:
        reader, writer = await asyncio.open_connection(parts.hostname, port)
    except OSError as exc:
        raise ProviderError(f"the runtime's streaming server cannot be reached: {exc}") from None
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    writer.write(
        (
            f"POST {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: Upgrade\r\n"
            f"Upgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: {PROTOCOL}\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
    )
    await writer.drain()
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        writer.close()
        raise ProviderError("the runtime's streaming server closed the upgrade") from None
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    if " 101 " not in f"{status_line} ":
        writer.close()
        raise ProviderError(f"the runtime's streaming server refused the upgrade: {status_line}")
    return reader, writer


async def run_spdy(url: str, io: ContainerIO, *, attach: bool) -> int | None:
    """Carry `io` over the exec or attach stream at `url`; the exit code if the runtime said."""
    reader, writer = await _upgrade(url)
    session = SpdySession(client=True)
    lock = asyncio.Lock()

    async def flush() -> None:
        async with lock:
            data = session.data_to_send()
            if data:
                writer.write(data)
                await writer.drain()

    error_id = session.open_stream({"streamType": "error"})
    stdin_id = session.open_stream({"streamType": "stdin"}) if io.stdin is not None else None
    routes: dict[int, OutputStream] = {}
    if io.stdout is not None:
        routes[session.open_stream({"streamType": "stdout"})] = io.stdout
    if io.stderr is not None and not io.tty:
        routes[session.open_stream({"streamType": "stderr"})] = io.stderr
    resize_id = session.open_stream({"streamType": "resize"}) if io.tty else None
    await flush()

    async def pump_stdin() -> None:
        assert io.stdin is not None
        assert stdin_id is not None
        while data := await io.stdin.read():
            session.send_data(stdin_id, data)
            await flush()
        session.end_stream(stdin_id)  # what v4 over WebSocket cannot say
        await flush()

    async def pump_resize() -> None:
        assert resize_id is not None
        if io.resize is None:
            return
        size: TermSize
        async for size in io.resize:
            session.send_data(resize_id, orjson.dumps({"Width": size.width, "Height": size.height}))
            await flush()

    pumps: list[asyncio.Task[None]] = []
    if stdin_id is not None:
        pumps.append(asyncio.create_task(pump_stdin()))
    if resize_id is not None:
        pumps.append(asyncio.create_task(pump_resize()))
    status = b""
    try:
        while chunk := await reader.read(65536):
            try:
                events = session.receive_data(chunk)
            except ProtocolError as exc:
                raise ProviderError(f"the runtime's streaming server broke SPDY: {exc}") from None
            for event in events:
                if isinstance(event, DataReceived):
                    if event.stream_id == error_id:
                        status += event.data
                    elif event.stream_id in routes:
                        await routes[event.stream_id].write(event.data)
            await flush()
    finally:
        for pump in pumps:
            pump.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    if not status:
        return None if attach else 0
    return exit_code(orjson.loads(status), "the command failed in the runtime")
