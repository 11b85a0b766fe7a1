"""exec, attach and port-forward through the runtime's streaming server: the CRI `Exec`, `Attach`
and `PortForward` calls return a one-time URL, spoken to here over WebSocket with the channel
protocol (`v4.channel.k8s.io`, what containerd's streaming server offers): one byte of channel
(0 stdin, 1 stdout, 2 stderr, 3 the final Status, 4 terminal size) before each frame's data.
The bytes are carried as they are; only the framing differs from what the client spoke to us.

The v4 protocol cannot say "stdin ended" (v5 can; containerd 1.6 does not offer it): a command
that waits for the end of its input only ends when the client closes the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aiohttp
import orjson

from ...sdk import ContainerIO, DuplexStream, InvalidInput, ProviderError, TermSize

__all__ = ["exit_code", "forward_port", "run_stream"]

STDIN, STDOUT, STDERR, ERROR, RESIZE = 0, 1, 2, 3, 4
PROTOCOLS = ("v4.channel.k8s.io",)


def exit_code(status: dict[str, Any]) -> int:
    """The command's exit code from the error channel's Status; raises for other failures."""
    if status.get("status") == "Success":
        return 0
    for cause in (status.get("details") or {}).get("causes") or []:
        if cause.get("reason") == "ExitCode":
            return int(cause.get("message", "1"))
    raise ProviderError(str(status.get("message") or "the command failed in the runtime"))


async def _connect(session: aiohttp.ClientSession, url: str) -> aiohttp.ClientWebSocketResponse:
    try:
        return await session.ws_connect(url, protocols=PROTOCOLS, max_msg_size=0, autoping=True)
    except aiohttp.WSServerHandshakeError as exc:
        text = f"the runtime's streaming server refused the stream: {exc.status} {exc.message}"
        if exc.status == 400:
            raise InvalidInput(text) from None
        raise ProviderError(text) from None
    except aiohttp.ClientError as exc:
        raise ProviderError(f"the runtime's streaming server cannot be reached: {exc}") from None


async def run_stream(url: str, io: ContainerIO, *, attach: bool) -> int | None:
    """Carry `io` over the stream at `url` until it ends; the exit code if the runtime said."""
    async with aiohttp.ClientSession() as session:
        ws = await _connect(session, url)
        pumps: list[asyncio.Task[None]] = []
        if io.stdin is not None:
            pumps.append(asyncio.create_task(_pump_stdin(ws, io)))
        if io.resize is not None:
            pumps.append(asyncio.create_task(_pump_resize(ws, io)))
        status: dict[str, Any] | None = None
        try:
            async for message in ws:
                if message.type != aiohttp.WSMsgType.BINARY or not message.data:
                    continue
                channel, data = message.data[0], message.data[1:]
                if channel == STDOUT and io.stdout is not None:
                    await io.stdout.write(data)
                elif channel == STDERR and io.stderr is not None:
                    await io.stderr.write(data)
                elif channel == ERROR and data:
                    status = orjson.loads(data)
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            await ws.close()
    if status is None:
        return None if attach else 0
    return exit_code(status)


async def forward_port(url: str, port: int, stream: DuplexStream) -> None:
    """Carry `stream` to the pod's `port` through the runtime's port-forward stream."""
    async with aiohttp.ClientSession() as session:
        ws = await _connect(session, f"{url}?port={port}")
        seen_port: set[int] = set()
        errors: list[bytes] = []

        async def upstream() -> None:
            while data := await stream.read():
                await ws.send_bytes(bytes([0]) + data)

        sender = asyncio.create_task(upstream())
        try:
            async for message in ws:
                if message.type != aiohttp.WSMsgType.BINARY or not message.data:
                    continue
                channel, data = message.data[0], message.data[1:]
                if channel not in seen_port:
                    seen_port.add(channel)  # each channel's first frame names the port
                    data = data[2:]
                if not data:
                    continue
                if channel == 0:
                    await stream.write(data)
                else:
                    errors.append(data)
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
            await ws.close()
            with contextlib.suppress(Exception):
                await stream.close()
        if errors:
            raise ProviderError(b"".join(errors).decode(errors="replace").strip())


async def _pump_stdin(ws: aiohttp.ClientWebSocketResponse, io: ContainerIO) -> None:
    assert io.stdin is not None
    while data := await io.stdin.read():
        await ws.send_bytes(bytes([STDIN]) + data)


async def _pump_resize(ws: aiohttp.ClientWebSocketResponse, io: ContainerIO) -> None:
    assert io.resize is not None
    size: TermSize
    async for size in io.resize:
        await ws.send_bytes(
            bytes([RESIZE]) + orjson.dumps({"Width": size.width, "Height": size.height})
        )
