"""The Kubernetes WebSocket channel framing (sans-I/O): which subprotocols we speak and how a
message maps to (channel, payload).

Binary protocols put the channel in the first byte; the base64 ones put it as an ASCII digit and
base64-encode the payload (for browsers). Channels for exec/attach: 0 stdin, 1 stdout, 2 stderr,
3 error, 4 resize. v5 (half-close) is deliberately absent: we do not declare the node feature that
would make the API server send it.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

STDIN, STDOUT, STDERR, ERROR, RESIZE = 0, 1, 2, 3, 4

#: Remote command subprotocols, in our order of preference; "" is a client that asked for none.
REMOTE_COMMAND_PROTOCOLS = (
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
)
PORT_FORWARD_PROTOCOLS = (
    "v4.channel.k8s.io",
    "portforward.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
    "v4.base64.channel.k8s.io",
)


class ChannelError(ValueError):
    """A message that is not valid in the negotiated framing."""


@dataclass(frozen=True)
class Framing:
    protocol: str

    @property
    def base64(self) -> bool:
        return "base64" in self.protocol

    @property
    def v4(self) -> bool:
        return self.protocol.startswith("v4.")

    def encode(self, channel: int, payload: bytes) -> bytes | str:
        """A WebSocket message: bytes (binary frame) or str (text frame)."""
        if self.base64:
            return chr(ord("0") + channel) + base64.b64encode(payload).decode()
        return bytes([channel]) + payload

    def decode(self, message: bytes | str) -> tuple[int, bytes]:
        if isinstance(message, str):
            if not self.base64:
                raise ChannelError("text message on a binary channel protocol")
            if not message:
                raise ChannelError("empty message")
            channel = ord(message[0]) - ord("0")
            try:
                payload = base64.b64decode(message[1:], validate=True)
            except (binascii.Error, ValueError):
                raise ChannelError("payload is not base64") from None
            return channel, payload
        if not message:
            raise ChannelError("empty message")
        if self.base64:
            # Some clients send base64 protocols as binary frames: the same text, as bytes.
            return self.decode(message.decode("ascii", errors="replace"))
        return message[0], bytes(message[1:])


def choose(offered: list[str], supported: tuple[str, ...]) -> str | None:
    """The first protocol the client offered that we support; "" if it offered none."""
    if not offered:
        return ""
    for protocol in offered:
        if protocol in supported:
            return protocol
    return None
