"""port-forward through the runtime's streaming server: the CRI `PortForward` call returns a
one-time URL, spoken to here over WebSocket with the channel protocol (`v4.channel.k8s.io`): one
byte of channel (0 data, 1 error) before each frame's data, and each channel's first frame names
the port. The bytes are carried as they are. (exec and attach need the end of stdin, which v4
cannot carry: they use SPDY, spdy_stream.py.) Also the v4 Status -> exit code rule both use.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aiohttp

from ...sdk import DuplexStream, InvalidInput, ProviderError

__all__ = ["exit_code", "forward_port"]

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
