"""port-forward through the runtime's streaming server: the CRI `PortForward` call returns a
one-time URL, spoken to here over WebSocket with the channel protocol (`v4.channel.k8s.io`): one
byte of channel (0 data, 1 error) before each frame's data, and each channel's first frame names
the port. The bytes are carried as they are. (exec and attach need the end of stdin, which v4
cannot carry: they use SPDY, spdy_stream.py.) The framing and the v4 Status -> exit code rule are the SDK's (`sdk.channel_client`).
"""

from __future__ import annotations

import aiohttp

from ...sdk import DuplexStream, InvalidInput, ProviderError
from ...sdk.channel_client import carry_port_forward

__all__ = ["forward_port"]

STDIN, STDOUT, STDERR, ERROR, RESIZE = 0, 1, 2, 3, 4
PROTOCOLS = ("v4.channel.k8s.io",)


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
        await carry_port_forward(ws, stream, close_after_upload=False)
