"""The client side of Kubernetes' WebSocket channel protocols, for providers that relay kubectl
to another streaming endpoint (a container runtime's streaming server, another API server):
the v4 Status -> exit code rule, and port-forward (`portforward.k8s.io` / `v4.channel.k8s.io`
framing: one channel byte before each frame, 0 data and 1 error, each channel's first frame
naming the port) carried between a connected WebSocket and a `DuplexStream`."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aiohttp

from ..errors import NotFound, ProviderError
from ..streams import DuplexStream

__all__ = ["carry_port_forward", "exit_code"]


def exit_code(status: dict[str, Any], failed: str = "the command failed") -> int:
    """The command's exit code from the error channel's v4 Status; `NotFound` or `ProviderError`
    (with the Status's message, else `failed`) for anything but an exit."""
    if status.get("status") == "Success":
        return 0
    for cause in (status.get("details") or {}).get("causes") or []:
        if cause.get("reason") == "ExitCode":
            return int(cause.get("message", "1"))
    message = str(status.get("message") or failed)
    if status.get("reason") == "NotFound":
        raise NotFound(message)
    raise ProviderError(message)


async def carry_port_forward(
    ws: aiohttp.ClientWebSocketResponse, stream: DuplexStream, *, close_after_upload: bool
) -> None:
    """Carry bytes both ways until the far side closes; raise `ProviderError` with what came on
    the error channel. `close_after_upload` closes the WebSocket once `stream` has no more to
    send (the protocol has no half-close), else the far side decides when the connection ends."""
    seen_port: set[int] = set()
    errors: list[bytes] = []

    async def upstream() -> None:
        while data := await stream.read():
            await ws.send_bytes(bytes([0]) + data)
        if close_after_upload:
            await ws.close()

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
