"""SPDY/3.1 for the kubelet's streaming endpoints (exec, attach, port-forward), sans-I/O.

After the HTTP/1.1 upgrade, kube-apiserver and kubelet speak SPDY/3.1 as implemented by
moby/spdystream. This package is the protocol and nothing else: `FrameDecoder` and `FrameEncoder`
turn bytes into frames and back (with the per-connection zlib header compression), and
`SpdySession` keeps the stream table, turning received bytes into events and API calls into bytes
to send, in the manner of h11 and wsproto.

It must not do I/O: no sockets, no asyncio, no clocks, no threads, no logging of payloads. The
caller feeds received bytes to `SpdySession.receive_data`, acts on the events, and writes out
`data_to_send()`. Timeouts, backpressure, idle pings and the HTTP upgrade belong to the caller.

Choices forced by interoperating with spdystream:
- No flow control. spdystream never sends WINDOW_UPDATE and ignores SETTINGS and WINDOW_UPDATE,
  so honouring a send window would stall the stream. Both frames are decoded, and the session
  drops them without an event.
- One zlib context per direction for the whole connection: every received header block is
  inflated, even when its stream is then refused, or the next block cannot be decoded.
- spdystream drops DATA on a stream it opened until the SYN_REPLY arrives, so the session refuses
  to send DATA on a peer's stream before `reply()`.
Modules, split the way h11 is: `frames` (constants, enums, frame dataclasses), `headers` (header
block packing), `codec` (FrameDecoder, FrameEncoder), `events` (what the session reports),
`session` (SpdySession). Import from this package, not from the modules.
"""

from __future__ import annotations

from .codec import (
    FrameDecoder,
    FrameEncoder,
)
from .events import (
    DataReceived,
    Event,
    GoAwayReceived,
    HeadersReceived,
    PingAnswered,
    StreamEnded,
    StreamOpened,
    StreamReplied,
    StreamReset,
)
from .frames import (
    CANCEL,
    DEFAULT_MAX_HEADER_BLOCK,
    FLAG_FIN,
    FLAG_SETTINGS_CLEAR_SETTINGS,
    FLAG_UNIDIRECTIONAL,
    FLOW_CONTROL_ERROR,
    FRAME_TOO_LARGE,
    GOAWAY_INTERNAL_ERROR,
    GOAWAY_OK,
    GOAWAY_PROTOCOL_ERROR,
    INTERNAL_ERROR,
    INVALID_CREDENTIALS,
    INVALID_STREAM,
    MAX_FRAME_LENGTH,
    MAX_STREAM_ID,
    PROTOCOL_ERROR,
    REFUSED_STREAM,
    SPDY3_DICTIONARY,
    SPDY_VERSION,
    STREAM_ALREADY_CLOSED,
    STREAM_IN_USE,
    UNSUPPORTED_VERSION,
    ControlType,
    Data,
    Frame,
    GoAway,
    HeaderDict,
    HeaderInput,
    Headers,
    Ping,
    ProtocolError,
    RstStatus,
    RstStream,
    Settings,
    SynReply,
    SynStream,
    WindowUpdate,
)
from .headers import (
    normalize_headers,
    pack_header_block,
    unpack_header_block,
)
from .session import (
    SpdySession,
    StreamState,
)

__all__ = [
    "CANCEL",
    "DEFAULT_MAX_HEADER_BLOCK",
    "FLAG_FIN",
    "FLAG_SETTINGS_CLEAR_SETTINGS",
    "FLAG_UNIDIRECTIONAL",
    "FLOW_CONTROL_ERROR",
    "FRAME_TOO_LARGE",
    "GOAWAY_INTERNAL_ERROR",
    "GOAWAY_OK",
    "GOAWAY_PROTOCOL_ERROR",
    "INTERNAL_ERROR",
    "INVALID_CREDENTIALS",
    "INVALID_STREAM",
    "MAX_FRAME_LENGTH",
    "MAX_STREAM_ID",
    "PROTOCOL_ERROR",
    "REFUSED_STREAM",
    "SPDY3_DICTIONARY",
    "SPDY_VERSION",
    "STREAM_ALREADY_CLOSED",
    "STREAM_IN_USE",
    "UNSUPPORTED_VERSION",
    "ControlType",
    "Data",
    "DataReceived",
    "Event",
    "Frame",
    "FrameDecoder",
    "FrameEncoder",
    "GoAway",
    "GoAwayReceived",
    "HeaderDict",
    "HeaderInput",
    "Headers",
    "HeadersReceived",
    "Ping",
    "PingAnswered",
    "ProtocolError",
    "RstStatus",
    "RstStream",
    "Settings",
    "SpdySession",
    "StreamEnded",
    "StreamOpened",
    "StreamReplied",
    "StreamReset",
    "StreamState",
    "SynReply",
    "SynStream",
    "WindowUpdate",
    "normalize_headers",
    "pack_header_block",
    "unpack_header_block",
]
