"""SPDY/3.1 for the kubelet's streaming endpoints (exec, attach, port-forward), sans-I/O.

After the HTTP/1.1 upgrade, kube-apiserver and kubelet speak SPDY/3.1 as implemented by
moby/spdystream. This module is the protocol and nothing else: `FrameDecoder` and `FrameEncoder`
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
"""

from __future__ import annotations

import enum
import struct
import zlib
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, TypeAlias, assert_never

SPDY_VERSION: Final = 3
MAX_FRAME_LENGTH: Final = 2**24 - 1
MAX_STREAM_ID: Final = 2**31 - 1
DEFAULT_MAX_HEADER_BLOCK: Final = 256 * 1024

# The zlib preset dictionary of SPDY/3 header compression (1423 bytes, from the SPDY/3 draft and
# moby/spdystream spdy/dictionary.go). It must be byte-exact: the peer checks its Adler-32.
SPDY3_DICTIONARY: Final = (
    b"\x00\x00\x00\x07options\x00\x00\x00\x04head\x00\x00\x00\x04post\x00\x00\x00\x03put\x00"
    b"\x00\x00\x06delete\x00\x00\x00\x05trace\x00\x00\x00\x06accept\x00\x00\x00\x0eaccept-ch"
    b"arset\x00\x00\x00\x0faccept-encoding\x00\x00\x00\x0faccept-language\x00\x00\x00\x0dacc"
    b"ept-ranges\x00\x00\x00\x03age\x00\x00\x00\x05allow\x00\x00\x00\x0dauthorization\x00"
    b"\x00\x00\x0dcache-control\x00\x00\x00\x0aconnection\x00\x00\x00\x0ccontent-base\x00"
    b"\x00\x00\x10content-encoding\x00\x00\x00\x10content-language\x00\x00\x00\x0econtent-le"
    b"ngth\x00\x00\x00\x10content-location\x00\x00\x00\x0bcontent-md5\x00\x00\x00\x0dcontent"
    b"-range\x00\x00\x00\x0ccontent-type\x00\x00\x00\x04date\x00\x00\x00\x04etag\x00\x00\x00"
    b"\x06expect\x00\x00\x00\x07expires\x00\x00\x00\x04from\x00\x00\x00\x04host\x00\x00\x00"
    b"\x08if-match\x00\x00\x00\x11if-modified-since\x00\x00\x00\x0dif-none-match\x00\x00\x00"
    b"\x08if-range\x00\x00\x00\x13if-unmodified-since\x00\x00\x00\x0dlast-modified\x00\x00"
    b"\x00\x08location\x00\x00\x00\x0cmax-forwards\x00\x00\x00\x06pragma\x00\x00\x00\x12prox"
    b"y-authenticate\x00\x00\x00\x13proxy-authorization\x00\x00\x00\x05range\x00\x00\x00\x07"
    b"referer\x00\x00\x00\x0bretry-after\x00\x00\x00\x06server\x00\x00\x00\x02te\x00\x00\x00"
    b"\x07trailer\x00\x00\x00\x11transfer-encoding\x00\x00\x00\x07upgrade\x00\x00\x00\x0ause"
    b"r-agent\x00\x00\x00\x04vary\x00\x00\x00\x03via\x00\x00\x00\x07warning\x00\x00\x00\x10w"
    b"ww-authenticate\x00\x00\x00\x06method\x00\x00\x00\x03get\x00\x00\x00\x06status\x00\x00"
    b"\x00\x06200 OK\x00\x00\x00\x07version\x00\x00\x00\x08HTTP/1.1\x00\x00\x00\x03url\x00"
    b"\x00\x00\x06public\x00\x00\x00\x0aset-cookie\x00\x00\x00\x0akeep-alive\x00\x00\x00\x06"
    b"origin10010120120220520630030230330430530630740240540640740840941041141241341441541641"
    b"7502504505203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad "
    b"Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Impl"
    b"emented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:0"
    b"0 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gi"
    b"f,application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-ag"
    b"e=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)

FLAG_FIN: Final = 0x01
FLAG_UNIDIRECTIONAL: Final = 0x02
FLAG_SETTINGS_CLEAR_SETTINGS: Final = 0x01

_CONTROL_BIT: Final = 0x80000000
_HEADER = struct.Struct(">II")
_U32 = struct.Struct(">I")
_U32_PAIR = struct.Struct(">II")
_SYN_STREAM_FIXED = struct.Struct(">IIBB")


class ControlType(enum.IntEnum):
    """Control frame types of SPDY/3 (NOOP=5 and CREDENTIAL=10 are not used by spdystream)."""

    SYN_STREAM = 1
    SYN_REPLY = 2
    RST_STREAM = 3
    SETTINGS = 4
    PING = 6
    GOAWAY = 7
    HEADERS = 8
    WINDOW_UPDATE = 9


class RstStatus(enum.IntEnum):
    """Status codes of RST_STREAM."""

    PROTOCOL_ERROR = 1
    INVALID_STREAM = 2
    REFUSED_STREAM = 3
    UNSUPPORTED_VERSION = 4
    CANCEL = 5
    INTERNAL_ERROR = 6
    FLOW_CONTROL_ERROR = 7
    STREAM_IN_USE = 8
    STREAM_ALREADY_CLOSED = 9
    INVALID_CREDENTIALS = 10
    FRAME_TOO_LARGE = 11


PROTOCOL_ERROR: Final = RstStatus.PROTOCOL_ERROR
INVALID_STREAM: Final = RstStatus.INVALID_STREAM
REFUSED_STREAM: Final = RstStatus.REFUSED_STREAM
UNSUPPORTED_VERSION: Final = RstStatus.UNSUPPORTED_VERSION
CANCEL: Final = RstStatus.CANCEL
INTERNAL_ERROR: Final = RstStatus.INTERNAL_ERROR
FLOW_CONTROL_ERROR: Final = RstStatus.FLOW_CONTROL_ERROR
STREAM_IN_USE: Final = RstStatus.STREAM_IN_USE
STREAM_ALREADY_CLOSED: Final = RstStatus.STREAM_ALREADY_CLOSED
INVALID_CREDENTIALS: Final = RstStatus.INVALID_CREDENTIALS
FRAME_TOO_LARGE: Final = RstStatus.FRAME_TOO_LARGE

# GOAWAY status codes.
GOAWAY_OK: Final = 0
GOAWAY_PROTOCOL_ERROR: Final = 1
GOAWAY_INTERNAL_ERROR: Final = 2


class ProtocolError(Exception):
    """The peer sent something malformed; the connection must be torn down."""


HeaderDict: TypeAlias = dict[str, list[str]]
HeaderInput: TypeAlias = Mapping[str, str | Sequence[str]]


# --- frames ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SynStream:
    stream_id: int
    headers: HeaderDict
    fin: bool = False
    unidirectional: bool = False
    associated_id: int = 0
    priority: int = 0


@dataclass(frozen=True)
class SynReply:
    stream_id: int
    headers: HeaderDict
    fin: bool = False


@dataclass(frozen=True)
class RstStream:
    stream_id: int
    status: int


@dataclass(frozen=True)
class Settings:
    """Entries are (flags, id, value); `clear` is the CLEAR_SETTINGS frame flag."""

    entries: tuple[tuple[int, int, int], ...] = ()
    clear: bool = False


@dataclass(frozen=True)
class Ping:
    ping_id: int


@dataclass(frozen=True)
class GoAway:
    last_stream_id: int
    status: int = GOAWAY_OK


@dataclass(frozen=True)
class Headers:
    stream_id: int
    headers: HeaderDict
    fin: bool = False


@dataclass(frozen=True)
class WindowUpdate:
    stream_id: int
    delta: int


@dataclass(frozen=True)
class Data:
    stream_id: int
    data: bytes
    fin: bool = False


Frame: TypeAlias = (
    SynStream | SynReply | RstStream | Settings | Ping | GoAway | Headers | WindowUpdate | Data
)


# --- header blocks -----------------------------------------------------------------------------


def normalize_headers(headers: HeaderInput | None) -> HeaderDict:
    """Copy `headers` into frame form: lowercase name -> list of values.

    A plain string value is one value; names differing only in case are merged, because the wire
    form is lowercase and a block must not name a header twice.
    """
    result: HeaderDict = {}
    if headers is None:
        return result
    for name, value in headers.items():
        values = [value] if isinstance(value, str) else list(value)
        result.setdefault(name.lower(), []).extend(values)
    return result


def _text(raw: bytes) -> str:
    # surrogateescape keeps arbitrary peer bytes round-trippable instead of failing on non-UTF-8.
    return raw.decode("utf-8", "surrogateescape")


def _wire(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def pack_header_block(headers: Mapping[str, Sequence[str]]) -> bytes:
    """The uncompressed header block: u32 count, then length-prefixed name and value per pair.

    Names are lowercased; several values of one name are joined with NUL. A name with no values
    is left out (spdystream would send it with one empty value, which does not round-trip).
    Raises ValueError for an empty name, a NUL inside a name or value, or a repeated name.
    """
    pairs: list[tuple[bytes, bytes]] = []
    seen: set[str] = set()
    for name, values in headers.items():
        # A bare str is also a Sequence[str]; joining its characters with NUL would be nonsense.
        given: object = values
        value_list = [given] if isinstance(given, str) else list(values)
        if not value_list:
            continue
        lowered = name.lower()
        if not lowered or "\0" in lowered:
            raise ValueError(f"invalid header name {name!r}")
        if lowered in seen:
            raise ValueError(f"header {lowered!r} given twice (names are case-insensitive)")
        if any("\0" in value for value in value_list):
            raise ValueError(f"header {lowered!r} has a value containing NUL")
        seen.add(lowered)
        pairs.append((_wire(lowered), _wire("\0".join(value_list))))
    out = bytearray(_U32.pack(len(pairs)))
    for raw_name, raw_value in pairs:
        out += _U32.pack(len(raw_name))
        out += raw_name
        out += _U32.pack(len(raw_value))
        out += raw_value
    return bytes(out)


def _read_string(raw: bytes, pos: int) -> tuple[bytes, int]:
    if len(raw) - pos < 4:
        raise ProtocolError("header block truncated")
    (length,) = _U32.unpack_from(raw, pos)
    pos += 4
    if length > len(raw) - pos:
        raise ProtocolError("header block truncated")
    return raw[pos : pos + length], pos + length


def unpack_header_block(raw: bytes) -> HeaderDict:
    """Parse an inflated header block; raises ProtocolError if it is malformed.

    Like spdystream, an upper-case or repeated name is an error, and every byte must be used:
    spdystream's inflater would read leftovers as the start of the next block.
    """
    if len(raw) < 4:
        raise ProtocolError("header block truncated")
    (count,) = _U32.unpack_from(raw, 0)
    # Each pair needs at least its two length fields; checking first avoids trusting `count`.
    if count > (len(raw) - 4) // 8:
        raise ProtocolError(f"header block claims {count} pairs in {len(raw)} bytes")
    headers: HeaderDict = {}
    pos = 4
    for _ in range(count):
        raw_name, pos = _read_string(raw, pos)
        raw_value, pos = _read_string(raw, pos)
        if not raw_name:
            raise ProtocolError("empty header name")
        if raw_name.lower() != raw_name:
            raise ProtocolError(f"header name {_text(raw_name)!r} is not lowercase")
        name = _text(raw_name)
        if name in headers:
            raise ProtocolError(f"header {name!r} appears twice in one block")
        headers[name] = _text(raw_value).split("\0")
    if pos != len(raw):
        raise ProtocolError("trailing bytes after the header block")
    return headers


# --- codec -------------------------------------------------------------------------------------


class FrameDecoder:
    """Bytes -> frames for one direction of one connection; holds the inbound zlib context.

    Partial frames are buffered until complete. After a ProtocolError the decoder stays failed,
    because the zlib context (and the framing) can no longer be trusted.
    """

    def __init__(
        self, *, max_frame: int = MAX_FRAME_LENGTH, max_header_block: int = DEFAULT_MAX_HEADER_BLOCK
    ) -> None:
        if not 8 <= max_frame <= MAX_FRAME_LENGTH:
            raise ValueError(f"max_frame must be in 8..{MAX_FRAME_LENGTH}")
        if max_header_block < 4:
            raise ValueError("max_header_block must be at least 4")
        self._max_frame = max_frame
        self._max_header_block = max_header_block
        self._max_control = max_header_block + max_header_block // 64 + 64
        self._buffer = bytearray()
        self._inflater = zlib.decompressobj(zdict=SPDY3_DICTIONARY)
        self._failure: ProtocolError | None = None

    def feed(self, data: bytes) -> list[Frame]:
        """Add received bytes; return the frames they complete (possibly none)."""
        if self._failure is not None:
            raise ProtocolError(f"decoder failed earlier: {self._failure}")
        buf = self._buffer
        buf += data
        frames: list[Frame] = []
        pos = 0
        try:
            while len(buf) - pos >= 8:
                word, flags_length = _HEADER.unpack_from(buf, pos)
                length = flags_length & 0xFFFFFF
                # Checked before buffering the body, so a huge length costs no memory.
                if length > self._max_frame:
                    raise ProtocolError(f"frame of {length} bytes exceeds {self._max_frame}")
                # A control frame is a few fixed fields plus a compressed header block, which
                # cannot be much larger than the block itself: refuse a huge one at once rather
                # than wait for megabytes that may never come.
                if word & _CONTROL_BIT and length > self._max_control:
                    raise ProtocolError(f"control frame of {length} bytes is too large")
                end = pos + 8 + length
                if end > len(buf):
                    break
                body = bytes(buf[pos + 8 : end])
                pos = end
                frame = self._parse(word, flags_length >> 24, body)
                if frame is not None:
                    frames.append(frame)
        except ProtocolError as exc:
            self._failure = exc
            self._buffer = bytearray()
            raise
        del buf[:pos]
        return frames

    def _parse(self, word: int, flags: int, body: bytes) -> Frame | None:
        fin = bool(flags & FLAG_FIN)
        if not word & _CONTROL_BIT:
            if word == 0:
                raise ProtocolError("DATA frame for stream 0")
            return Data(word, body, fin)
        version = (word >> 16) & 0x7FFF
        if version != SPDY_VERSION:
            raise ProtocolError(f"unsupported SPDY version {version}")
        kind = word & 0xFFFF
        if kind == ControlType.SYN_STREAM:
            if len(body) < 10:
                raise ProtocolError("SYN_STREAM too short")
            stream_id, associated, priority, _slot = _SYN_STREAM_FIXED.unpack_from(body)
            headers = self._inflate(body[10:])
            return SynStream(
                _stream_id(stream_id, "SYN_STREAM"),
                headers,
                fin=fin,
                unidirectional=bool(flags & FLAG_UNIDIRECTIONAL),
                associated_id=associated & MAX_STREAM_ID,
                priority=priority >> 5,
            )
        if kind in (ControlType.SYN_REPLY, ControlType.HEADERS):
            if len(body) < 4:
                raise ProtocolError(f"{ControlType(kind).name} too short")
            (stream_id,) = _U32.unpack_from(body)
            headers = self._inflate(body[4:])
            stream_id = _stream_id(stream_id, ControlType(kind).name)
            if kind == ControlType.SYN_REPLY:
                return SynReply(stream_id, headers, fin)
            return Headers(stream_id, headers, fin)
        if kind == ControlType.RST_STREAM:
            stream_id, status = _fixed_pair(body, "RST_STREAM")
            if status == 0:
                raise ProtocolError("RST_STREAM with status 0")
            return RstStream(_stream_id(stream_id, "RST_STREAM"), status)
        if kind == ControlType.SETTINGS:
            return _parse_settings(body, flags)
        if kind == ControlType.PING:
            if len(body) != 4:
                raise ProtocolError("PING must be 4 bytes")
            (ping_id,) = _U32.unpack_from(body)
            if ping_id == 0:
                raise ProtocolError("PING with id 0")
            return Ping(ping_id)
        if kind == ControlType.GOAWAY:
            last, status = _fixed_pair(body, "GOAWAY")
            return GoAway(last & MAX_STREAM_ID, status)
        if kind == ControlType.WINDOW_UPDATE:
            stream_id, delta = _fixed_pair(body, "WINDOW_UPDATE")
            return WindowUpdate(stream_id & MAX_STREAM_ID, delta & MAX_STREAM_ID)
        # SPDY/3 says unknown control frames are ignored; their length is known, so skipping is
        # safe (NOOP, CREDENTIAL, anything newer).
        return None

    def _inflate(self, block: bytes) -> HeaderDict:
        limit = self._max_header_block
        try:
            # max_length bounds the output, so a zip bomb cannot allocate more than the limit.
            raw = self._inflater.decompress(block, limit + 1)
        except zlib.error as exc:
            raise ProtocolError(f"header block does not inflate: {exc}") from exc
        if len(raw) > limit or self._inflater.unconsumed_tail:
            raise ProtocolError(f"header block inflates to more than {limit} bytes")
        if self._inflater.eof:
            # The peer finished its zlib stream; no later header block could be decoded.
            raise ProtocolError("peer ended its header compression stream")
        return unpack_header_block(raw)


def _stream_id(word: int, what: str) -> int:
    stream_id = word & MAX_STREAM_ID
    if stream_id == 0:
        raise ProtocolError(f"{what} for stream 0")
    return stream_id


def _fixed_pair(body: bytes, what: str) -> tuple[int, int]:
    if len(body) != 8:
        raise ProtocolError(f"{what} must be 8 bytes")
    first, second = _U32_PAIR.unpack_from(body)
    return first, second


def _parse_settings(body: bytes, flags: int) -> Settings:
    if len(body) < 4:
        raise ProtocolError("SETTINGS too short")
    (count,) = _U32.unpack_from(body)
    if len(body) != 4 + 8 * count:
        raise ProtocolError(f"SETTINGS of {len(body)} bytes cannot hold {count} entries")
    entries = []
    for index in range(count):
        flags_id, value = _U32_PAIR.unpack_from(body, 4 + 8 * index)
        entries.append((flags_id >> 24, flags_id & 0xFFFFFF, value))
    return Settings(tuple(entries), clear=bool(flags & FLAG_SETTINGS_CLEAR_SETTINGS))


def _check(value: int, low: int, high: int, what: str) -> int:
    if not low <= value <= high:
        raise ValueError(f"{what} {value} out of range {low}..{high}")
    return value


def _control(kind: ControlType, flags: int, body: bytes) -> bytes:
    return _HEADER.pack(_CONTROL_BIT | SPDY_VERSION << 16 | kind, flags << 24 | len(body)) + body


class FrameEncoder:
    """Frames -> bytes for one direction of one connection; holds the outbound zlib context.

    Every header block ends with a sync flush, so the peer can inflate it on its own while the
    context (and its compression history) carries on. Invalid frames raise ValueError before the
    context is touched, so a rejected frame never desynchronises the peer.
    """

    def __init__(self, *, compression_level: int = zlib.Z_BEST_COMPRESSION) -> None:
        # Level 9 as spdystream uses; header blocks are tiny, so the CPU cost is negligible.
        self._deflater = zlib.compressobj(
            compression_level,
            zlib.DEFLATED,
            15,
            8,
            zlib.Z_DEFAULT_STRATEGY,
            zdict=SPDY3_DICTIONARY,
        )

    def encode(self, frame: Frame) -> bytes:
        match frame:
            case Data(stream_id, data, fin):
                _check(stream_id, 1, MAX_STREAM_ID, "stream id")
                _check(len(data), 0, MAX_FRAME_LENGTH, "DATA length")
                return _HEADER.pack(stream_id, (FLAG_FIN if fin else 0) << 24 | len(data)) + data
            case SynStream(stream_id, headers, fin, unidirectional, associated_id, priority):
                _check(stream_id, 1, MAX_STREAM_ID, "stream id")
                _check(associated_id, 0, MAX_STREAM_ID, "associated stream id")
                _check(priority, 0, 7, "priority")
                fixed = _SYN_STREAM_FIXED.pack(stream_id, associated_id, priority << 5, 0)
                flags = (FLAG_FIN if fin else 0) | (FLAG_UNIDIRECTIONAL if unidirectional else 0)
                return _control(ControlType.SYN_STREAM, flags, fixed + self._compress(headers))
            case SynReply(stream_id, headers, fin):
                _check(stream_id, 1, MAX_STREAM_ID, "stream id")
                body = _U32.pack(stream_id) + self._compress(headers)
                return _control(ControlType.SYN_REPLY, FLAG_FIN if fin else 0, body)
            case Headers(stream_id, headers, fin):
                _check(stream_id, 1, MAX_STREAM_ID, "stream id")
                body = _U32.pack(stream_id) + self._compress(headers)
                return _control(ControlType.HEADERS, FLAG_FIN if fin else 0, body)
            case RstStream(stream_id, status):
                _check(stream_id, 1, MAX_STREAM_ID, "stream id")
                _check(status, 1, 2**32 - 1, "RST_STREAM status")
                return _control(ControlType.RST_STREAM, 0, _U32_PAIR.pack(stream_id, status))
            case Settings(entries, clear):
                packed = bytearray(_U32.pack(len(entries)))
                for entry_flags, entry_id, value in entries:
                    _check(entry_flags, 0, 0xFF, "setting flags")
                    _check(entry_id, 0, 0xFFFFFF, "setting id")
                    _check(value, 0, 2**32 - 1, "setting value")
                    packed += _U32_PAIR.pack(entry_flags << 24 | entry_id, value)
                _check(len(packed), 0, MAX_FRAME_LENGTH, "SETTINGS length")
                flags = FLAG_SETTINGS_CLEAR_SETTINGS if clear else 0
                return _control(ControlType.SETTINGS, flags, bytes(packed))
            case Ping(ping_id):
                _check(ping_id, 1, 2**32 - 1, "ping id")
                return _control(ControlType.PING, 0, _U32.pack(ping_id))
            case GoAway(last_stream_id, status):
                _check(last_stream_id, 0, MAX_STREAM_ID, "last stream id")
                _check(status, 0, 2**32 - 1, "GOAWAY status")
                return _control(ControlType.GOAWAY, 0, _U32_PAIR.pack(last_stream_id, status))
            case WindowUpdate(stream_id, delta):
                _check(stream_id, 0, MAX_STREAM_ID, "stream id")
                _check(delta, 0, MAX_STREAM_ID, "window delta")
                return _control(ControlType.WINDOW_UPDATE, 0, _U32_PAIR.pack(stream_id, delta))
            case _:
                assert_never(frame)

    def _compress(self, headers: Mapping[str, Sequence[str]]) -> bytes:
        raw = pack_header_block(headers)
        # Refuse before deflating: once bytes enter the zlib context the peer must receive them.
        # The bound is zlib's worst-case expansion plus header, dictionary id and flush marker.
        worst = len(raw) + (len(raw) >> 12) + (len(raw) >> 14) + 64
        if worst + 10 > MAX_FRAME_LENGTH:
            raise ValueError(f"header block of {len(raw)} bytes cannot fit in one frame")
        return self._deflater.compress(raw) + self._deflater.flush(zlib.Z_SYNC_FLUSH)


# --- session -----------------------------------------------------------------------------------


class StreamState(enum.Enum):
    OPEN = "open"
    HALF_CLOSED_LOCAL = "half-closed (local)"
    HALF_CLOSED_REMOTE = "half-closed (remote)"
    CLOSED = "closed"


@dataclass(frozen=True)
class StreamOpened:
    """The peer opened a stream (SYN_STREAM); answer with `reply()` or `reset()`."""

    stream_id: int
    headers: HeaderDict
    fin: bool


@dataclass(frozen=True)
class StreamReplied:
    """SYN_REPLY to a stream we opened."""

    stream_id: int
    headers: HeaderDict


@dataclass(frozen=True)
class HeadersReceived:
    """A HEADERS frame on a live stream (Kubernetes does not use them)."""

    stream_id: int
    headers: HeaderDict


@dataclass(frozen=True)
class DataReceived:
    stream_id: int
    data: bytes


@dataclass(frozen=True)
class StreamEnded:
    """The peer half-closed the stream (FIN on DATA, SYN_STREAM, SYN_REPLY or HEADERS)."""

    stream_id: int


@dataclass(frozen=True)
class StreamReset:
    """The stream is gone: the peer reset it, or (`local`) the session reset it itself because
    the peer broke the stream's rules (e.g. DATA after FIN); either way it is forgotten."""

    stream_id: int
    status: int
    local: bool = False


@dataclass(frozen=True)
class PingAnswered:
    """The answer to a ping we sent with `ping()`."""

    ping_id: int


@dataclass(frozen=True)
class GoAwayReceived:
    last_stream_id: int
    status: int


Event: TypeAlias = (
    StreamOpened
    | StreamReplied
    | HeadersReceived
    | DataReceived
    | StreamEnded
    | StreamReset
    | PingAnswered
    | GoAwayReceived
)


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
                pass  # no flow control, as in spdystream (see the module docstring)
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
