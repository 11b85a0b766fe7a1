"""WebSocket transport for exec, attach and port-forward: the handshake answer and a small asyncio
driver around wsproto's frame-level connection, speaking Kubernetes channel framing.

Only clients whose requests the API server passes through untranslated arrive here (for example a
client asking for `v4.channel.k8s.io` only); kubectl itself reaches us over SPDY.
"""

from __future__ import annotations

import asyncio
import contextlib

from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage
from wsproto.utilities import generate_accept_token

from ..http import HttpError, Request, Responder
from .channels import ChannelError, Framing, choose

MAX_MESSAGE = 16 * 1024 * 1024


def is_websocket(request: Request) -> bool:
    return (request.header("upgrade") or "").lower() == "websocket"


async def accept(
    request: Request, responder: Responder, supported: tuple[str, ...]
) -> WebSocketChannels:
    """Answer the WebSocket handshake choosing a channel subprotocol; 400/403 if impossible."""
    key = request.header("sec-websocket-key")
    if not key or request.header("sec-websocket-version") != "13":
        raise HttpError(400, "invalid WebSocket handshake")
    protocol = choose(request.header_values("sec-websocket-protocol"), supported)
    if protocol is None:
        raise HttpError(
            403,
            f"none of the WebSocket subprotocols is supported; supported: {', '.join(supported)}",
        )
    headers = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", generate_accept_token(key.encode()).decode()),
    ]
    if protocol:
        headers.append(("Sec-WebSocket-Protocol", protocol))
    upgraded = await responder.upgrade(headers)
    return WebSocketChannels(upgraded.reader, upgraded.writer, upgraded.buffered, Framing(protocol))


class WebSocketChannels:
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        buffered: bytes,
        framing: Framing,
    ) -> None:
        self.reader, self.writer, self.framing = reader, writer, framing
        self.conn = Connection(ConnectionType.SERVER)
        self._pending = buffered
        self._lock = asyncio.Lock()
        self._partial: list[bytes | str] = []
        self._size = 0

    async def _write(self, data: bytes) -> None:
        if data:
            async with self._lock:
                self.writer.write(data)
                await self.writer.drain()

    async def send(self, channel: int, payload: bytes) -> None:
        if self.conn.state is not ConnectionState.OPEN:
            raise BrokenPipeError("websocket closed")
        message = self.framing.encode(channel, payload)
        if isinstance(message, str):
            await self._write(self.conn.send(TextMessage(data=message)))
        else:
            await self._write(self.conn.send(BytesMessage(data=message)))

    async def receive(self, idle_timeout: float) -> tuple[int, bytes] | None:
        """The next channel message, or None once the client has closed (or timed out)."""
        while True:
            for event in self.conn.events():
                if isinstance(event, Ping):
                    await self._write(self.conn.send(event.response()))
                elif isinstance(event, CloseConnection):
                    with contextlib.suppress(Exception):
                        await self._write(self.conn.send(event.response()))
                    return None
                elif isinstance(event, BytesMessage | TextMessage):
                    chunk = event.data
                    self._partial.append(bytes(chunk) if isinstance(chunk, bytearray) else chunk)
                    self._size += len(event.data)
                    if self._size > MAX_MESSAGE:
                        await self.close(1009)
                        return None
                    if event.message_finished:
                        parts, self._partial, self._size = self._partial, [], 0
                        message: bytes | str = (
                            "".join(p for p in parts if isinstance(p, str))
                            if isinstance(event, TextMessage)
                            else b"".join(p for p in parts if isinstance(p, bytes))
                        )
                        try:
                            return self.framing.decode(message)
                        except ChannelError:
                            await self.close(1003)
                            return None
            if self._pending:
                data, self._pending = self._pending, b""
            else:
                try:
                    data = await asyncio.wait_for(self.reader.read(65536), idle_timeout)
                except (TimeoutError, ConnectionError):
                    return None
                if not data:
                    return None
            try:
                self.conn.receive_data(data)
            except Exception:  # wsproto raises on protocol violations: treat as a closed peer
                await self.close(1002)
                return None

    async def close(self, code: int = 1000) -> None:
        with contextlib.suppress(Exception):
            if self.conn.state is ConnectionState.OPEN:
                await self._write(self.conn.send(CloseConnection(code=code)))
        with contextlib.suppress(Exception):
            self.writer.close()
