"""`SpdySession`: one SPDY/3.1 connection's stream table, either role. Bytes in, events and bytes
out; API misuse raises ValueError, malformed peer input ProtocolError."""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass
from typing import assert_never

from .codec import FrameDecoder, FrameEncoder
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
    GOAWAY_OK,
    INVALID_STREAM,
    MAX_FRAME_LENGTH,
    MAX_STREAM_ID,
    PROTOCOL_ERROR,
    REFUSED_STREAM,
    STREAM_ALREADY_CLOSED,
    STREAM_IN_USE,
    Data,
    Frame,
    GoAway,
    HeaderInput,
    Headers,
    Ping,
    RstStream,
    Settings,
    SynReply,
    SynStream,
    WindowUpdate,
)
from .headers import normalize_headers


class StreamState(enum.Enum):
    OPEN = "open"
    HALF_CLOSED_LOCAL = "half-closed (local)"
    HALF_CLOSED_REMOTE = "half-closed (remote)"
    CLOSED = "closed"


@dataclass(slots=True)
class _Stream:
    stream_id: int
    ours: bool
    replied: bool = False
    local_closed: bool = False
    remote_closed: bool = False


# How many reset stream ids to remember, so DATA already in flight when a stream was reset is
# dropped quietly instead of drawing one RST_STREAM per frame.
_RESET_MEMORY = 256


class SpdySession:
    """One SPDY/3.1 connection's state, either role; bytes in, events and bytes out.

    Server role (the kubelet): our stream and ping ids are even, the peer's odd. Client role:
    the reverse. A stream is forgotten once both sides have closed it or it was reset;
    `stream_state` then reports CLOSED. API misuse (sending on a closed stream, replying twice)
    raises ValueError; malformed peer input raises ProtocolError and the session stays failed.
    """

    def __init__(
        self,
        *,
        client: bool = False,
        max_header_block: int = DEFAULT_MAX_HEADER_BLOCK,
        max_streams: int = 1000,
    ) -> None:
        self._client = client
        self._max_streams = max_streams
        self._decoder = FrameDecoder(max_header_block=max_header_block)
        self._encoder = FrameEncoder()
        self._outbound: list[bytes] = []
        self._streams: dict[int, _Stream] = {}
        self._peer_streams = 0
        self._our_parity = 1 if client else 0
        self._next_local_id = 1 if client else 2
        self._next_peer_id = 2 if client else 1
        self._last_peer_id = 0
        self._next_ping_id = 1 if client else 2
        self._pings_in_flight: set[int] = set()
        self._reset_ids: set[int] = set()
        self._reset_order: deque[int] = deque()
        self._goaway_sent = False
        self._goaway_received = False

    # -- inbound --

    def receive_data(self, data: bytes) -> list[Event]:
        """Process received bytes; return what happened. Replies (PING echoes, RST_STREAMs for
        rejected streams) are queued for `data_to_send`."""
        events: list[Event] = []
        for frame in self._decoder.feed(data):
            self._handle(frame, events)
        return events

    def _handle(self, frame: Frame, events: list[Event]) -> None:
        match frame:
            case Data():
                self._on_data(frame, events)
            case SynStream():
                self._on_syn_stream(frame, events)
            case SynReply(stream_id, headers, fin):
                stream = self._streams.get(stream_id)
                # Like spdystream: a reply to an unknown (e.g. already reset) or peer-opened
                # stream, or a second reply, is ignored.
                if stream is None or not stream.ours or stream.replied:
                    return
                stream.replied = True
                events.append(StreamReplied(stream_id, headers))
                if fin:
                    self._remote_fin(stream, events)
            case Headers(stream_id, headers, fin):
                stream = self._streams.get(stream_id)
                if stream is None:
                    return
                if stream.remote_closed:
                    self._reset_stream(stream_id, STREAM_ALREADY_CLOSED, events)
                    return
                events.append(HeadersReceived(stream_id, headers))
                if fin:
                    self._remote_fin(stream, events)
            case RstStream(stream_id, status):
                # Never answer a RST with a RST, even for unknown streams.
                if self._forget(stream_id):
                    events.append(StreamReset(stream_id, status))
                self._remember_reset(stream_id)
            case Ping(ping_id):
                if ping_id % 2 != self._our_parity:
                    self._send(frame)
                elif ping_id in self._pings_in_flight:
                    self._pings_in_flight.discard(ping_id)
                    events.append(PingAnswered(ping_id))
            case GoAway(last_stream_id, status):
                self._goaway_received = True
                events.append(GoAwayReceived(last_stream_id, status))
            case Settings() | WindowUpdate():
                pass  # no flow control, as in spdystream (see the package docstring)
            case _:
                assert_never(frame)

    def _on_syn_stream(self, frame: SynStream, events: list[Event]) -> None:
        stream_id = frame.stream_id
        # The header block has already been inflated by the decoder, whatever happens here.
        if stream_id % 2 == self._our_parity:
            self._reset_stream(stream_id, PROTOCOL_ERROR, events)
            return
        if stream_id in self._streams:
            self._reset_stream(stream_id, STREAM_IN_USE, events)
            return
        if stream_id < self._next_peer_id:
            self._reset_stream(stream_id, PROTOCOL_ERROR, events)
            return
        self._next_peer_id = stream_id + 2
        if self._goaway_sent or self._peer_streams >= self._max_streams:
            self._reset_stream(stream_id, REFUSED_STREAM, events)
            return
        # A unidirectional stream is one we may never send on.
        stream = _Stream(stream_id, ours=False, local_closed=frame.unidirectional)
        self._streams[stream_id] = stream
        self._peer_streams += 1
        self._last_peer_id = stream_id
        events.append(StreamOpened(stream_id, frame.headers, frame.fin))
        if frame.fin:
            self._remote_fin(stream, events)

    def _on_data(self, frame: Data, events: list[Event]) -> None:
        stream_id = frame.stream_id
        stream = self._streams.get(stream_id)
        if stream is None:
            if stream_id not in self._reset_ids:
                status = STREAM_ALREADY_CLOSED if self._existed(stream_id) else INVALID_STREAM
                self._send(RstStream(stream_id, status))
                self._remember_reset(stream_id)
            return
        if stream.remote_closed:
            self._reset_stream(stream_id, STREAM_ALREADY_CLOSED, events)
            return
        if frame.data:
            events.append(DataReceived(stream_id, frame.data))
        if frame.fin:
            self._remote_fin(stream, events)

    def _existed(self, stream_id: int) -> bool:
        if stream_id % 2 == self._our_parity:
            return stream_id < self._next_local_id
        return stream_id < self._next_peer_id

    def _remote_fin(self, stream: _Stream, events: list[Event]) -> None:
        stream.remote_closed = True
        events.append(StreamEnded(stream.stream_id))
        if stream.local_closed:
            self._forget(stream.stream_id)

    def _reset_stream(self, stream_id: int, status: int, events: list[Event]) -> None:
        # The peer applies a RST to whatever stream has this id, so if we track one it is gone
        # for us too, and the application must hear about it.
        self._send(RstStream(stream_id, status))
        if self._forget(stream_id):
            events.append(StreamReset(stream_id, status, local=True))
        self._remember_reset(stream_id)

    def _forget(self, stream_id: int) -> bool:
        stream = self._streams.pop(stream_id, None)
        if stream is None:
            return False
        if not stream.ours:
            self._peer_streams -= 1
        return True

    def _remember_reset(self, stream_id: int) -> None:
        if stream_id in self._reset_ids:
            return
        self._reset_ids.add(stream_id)
        self._reset_order.append(stream_id)
        if len(self._reset_order) > _RESET_MEMORY:
            self._reset_ids.discard(self._reset_order.popleft())

    # -- outbound --

    def data_to_send(self) -> bytes:
        """Everything queued for the peer since the last call."""
        out = b"".join(self._outbound)
        self._outbound.clear()
        return out

    def _send(self, frame: Frame) -> None:
        self._outbound.append(self._encoder.encode(frame))

    def open_stream(self, headers: HeaderInput, *, fin: bool = False) -> int:
        """Send SYN_STREAM; return the new stream's id. Wait for StreamReplied before sending
        DATA: spdystream drops DATA on a stream it has not replied to."""
        if self._goaway_sent or self._goaway_received:
            raise ValueError("no new streams after GOAWAY")
        stream_id = self._next_local_id
        if stream_id > MAX_STREAM_ID:
            raise ValueError("stream ids exhausted; open a new connection")
        self._send(SynStream(stream_id, normalize_headers(headers), fin=fin))
        self._next_local_id += 2
        self._streams[stream_id] = _Stream(stream_id, ours=True, local_closed=fin)
        return stream_id

    def reply(
        self, stream_id: int, headers: HeaderInput | None = None, *, fin: bool = False
    ) -> None:
        """Accept a peer's stream with SYN_REPLY (Kubernetes sends an empty header block)."""
        stream = self._streams.get(stream_id)
        if stream is None or stream.ours:
            raise ValueError(f"stream {stream_id} is not an open stream of the peer")
        if stream.replied:
            raise ValueError(f"stream {stream_id} was already replied to")
        if stream.local_closed:
            raise ValueError(f"stream {stream_id} is unidirectional or closed on our side")
        self._send(SynReply(stream_id, normalize_headers(headers), fin=fin))
        stream.replied = True
        if fin:
            self._local_fin(stream)

    def send_data(self, stream_id: int, data: bytes, *, fin: bool = False) -> None:
        """Queue DATA, split into frames of at most 2^24-1 bytes; with `fin`, half-close."""
        stream = self._streams.get(stream_id)
        if stream is None or stream.local_closed:
            raise ValueError(f"stream {stream_id} is closed for sending")
        if not (stream.ours or stream.replied):
            raise ValueError(f"reply to stream {stream_id} before sending on it")
        view = memoryview(data)
        if len(view) == 0:
            if fin:
                self._send(Data(stream_id, b"", fin=True))
        else:
            for start in range(0, len(view), MAX_FRAME_LENGTH):
                chunk = bytes(view[start : start + MAX_FRAME_LENGTH])
                last = start + MAX_FRAME_LENGTH >= len(view)
                self._send(Data(stream_id, chunk, fin=fin and last))
        if fin:
            self._local_fin(stream)

    def end_stream(self, stream_id: int) -> None:
        """Half-close our side: an empty DATA frame with FIN, as spdystream's Close does."""
        self.send_data(stream_id, b"", fin=True)

    def _local_fin(self, stream: _Stream) -> None:
        stream.local_closed = True
        if stream.remote_closed:
            self._forget(stream.stream_id)

    def reset(self, stream_id: int, status: int = CANCEL) -> None:
        """Abort a stream both ways with RST_STREAM. A stream already gone is left alone, so
        teardown code need not know whether the peer got there first."""
        if self._forget(stream_id):
            self._send(RstStream(stream_id, status))
            self._remember_reset(stream_id)

    def ping(self) -> int:
        """Send a PING; a PingAnswered event with the returned id reports the echo."""
        ping_id = self._next_ping_id
        # Wrap within 31 bits, keeping the parity, as spdystream does.
        self._next_ping_id = ping_id + 2
        if self._next_ping_id > MAX_STREAM_ID:
            self._next_ping_id = 1 if self._client else 2
        self._pings_in_flight.add(ping_id)
        self._send(Ping(ping_id))
        return ping_id

    def goaway(self, status: int = GOAWAY_OK) -> None:
        """Send GOAWAY (once): no new streams either way; open streams may finish."""
        if self._goaway_sent:
            return
        self._send(GoAway(self._last_peer_id, status))
        self._goaway_sent = True

    # -- inspection --

    def stream_state(self, stream_id: int) -> StreamState:
        stream = self._streams.get(stream_id)
        if stream is None:
            return StreamState.CLOSED
        if stream.local_closed:
            return StreamState.HALF_CLOSED_LOCAL
        if stream.remote_closed:
            return StreamState.HALF_CLOSED_REMOTE
        return StreamState.OPEN

    @property
    def open_streams(self) -> int:
        """Streams not yet closed by both sides nor reset."""
        return len(self._streams)

    @property
    def client(self) -> bool:
        return self._client

    @property
    def goaway_sent(self) -> bool:
        return self._goaway_sent

    @property
    def goaway_received(self) -> bool:
        return self._goaway_received
