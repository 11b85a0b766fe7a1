"""`kubectl exec`, `attach` and `port-forward` proxied to the target API server over WebSocket.

exec and attach speak the channel protocol (`v5.channel.k8s.io`, or `v4` where that is all the
server offers): one byte of channel (0 stdin, 1 stdout, 2 stderr, 3 the final Status, 4 terminal
size, 255 close) before each frame's data. port-forward speaks `v4.channel.k8s.io` with one
data/error channel pair; each channel's first frame from the server carries the port. The
v4 port-forward protocol has no half-close: when our client stops sending, the WebSocket closes.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson

from ...sdk import ContainerIO, DuplexStream, InvalidInput, NotFound, ProviderError, TermSize
from ...sdk.channel_client import carry_port_forward, exit_code
from ...sdk.kube_api import path
from .streams import TargetStreams

__all__ = ["RemoteExec"]

STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255
_EXEC_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")


class RemoteExec:
    """exec, attach and port-forward against one target API server."""

    def __init__(self, streams: TargetStreams) -> None:
        self._streams = streams

    async def _connect(
        self, url: str, params: list[tuple[str, str]], protocols: tuple[str, ...]
    ) -> aiohttp.ClientWebSocketResponse:
        try:
            return await self._streams.session().ws_connect(
                url,
                params=params,
                headers=await self._streams.headers(),
                protocols=protocols,
                server_hostname=self._streams.server_hostname,
                max_msg_size=0,
                autoping=True,
            )
        except aiohttp.WSServerHandshakeError as exc:
            text = f"the target cluster refused the stream: {exc.status} {exc.message}"
            if exc.status == 404:
                raise NotFound(text) from None
            if exc.status == 400:
                raise InvalidInput(text) from None
            raise ProviderError(text) from None
        except aiohttp.ClientError as exc:
            raise ProviderError(f"the target cluster cannot be reached: {exc}") from None

    async def run(
        self,
        namespace: str,
        pod: str,
        container: str,
        command: list[str] | None,
        io: ContainerIO,
    ) -> int | None:
        """exec (`command`) or attach (None); the exit code, if the server reported one."""
        params = [("container", container)]
        params += [("command", part) for part in command or []]
        for flag, wanted in (
            ("stdin", io.stdin is not None),
            ("stdout", io.stdout is not None),
            ("stderr", io.stderr is not None and not io.tty),
            ("tty", io.tty),
        ):
            if wanted:
                params.append((flag, "true"))
        verb = "exec" if command is not None else "attach"
        url = path("v1", "pods", namespace, pod, verb)
        ws = await self._connect(url, params, _EXEC_PROTOCOLS)
        v5 = ws.protocol == "v5.channel.k8s.io"
        pumps: list[asyncio.Task[None]] = []
        if io.stdin is not None:
            pumps.append(asyncio.create_task(_pump_stdin(ws, io, v5)))
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
            return None if command is None else 0
        return exit_code(status, "the command failed in the target cluster")

    async def port_forward(self, namespace: str, pod: str, port: int, stream: DuplexStream) -> None:
        url = path("v1", "pods", namespace, pod, "portforward")
        ws = await self._connect(url, [("ports", str(port))], ("v4.channel.k8s.io",))
        await carry_port_forward(ws, stream, close_after_upload=True)


async def _pump_stdin(ws: aiohttp.ClientWebSocketResponse, io: ContainerIO, v5: bool) -> None:
    assert io.stdin is not None
    while data := await io.stdin.read():
        await ws.send_bytes(bytes([STDIN]) + data)
    if v5:
        await ws.send_bytes(bytes([CLOSE, STDIN]))


async def _pump_resize(ws: aiohttp.ClientWebSocketResponse, io: ContainerIO) -> None:
    assert io.resize is not None
    size: TermSize
    async for size in io.resize:
        await ws.send_bytes(
            bytes([RESIZE]) + orjson.dumps({"Width": size.width, "Height": size.height})
        )
