"""Bytes to SPDY/3 frames and back, for one direction of one connection each: `FrameDecoder`
(buffering partial frames, inflating header blocks) and `FrameEncoder` (deflating them). Each keeps
its zlib context for the whole connection, as SPDY/3 requires."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping, Sequence
from typing import Final, assert_never

from .frames import (
    DEFAULT_MAX_HEADER_BLOCK,
    FLAG_FIN,
    FLAG_SETTINGS_CLEAR_SETTINGS,
    FLAG_UNIDIRECTIONAL,
    MAX_FRAME_LENGTH,
    MAX_STREAM_ID,
    SPDY3_DICTIONARY,
    SPDY_VERSION,
    ControlType,
    Data,
    Frame,
    GoAway,
    HeaderDict,
    Headers,
    Ping,
    ProtocolError,
    RstStream,
    Settings,
    SynReply,
    SynStream,
    WindowUpdate,
)
from .headers import pack_header_block, unpack_header_block

_CONTROL_BIT: Final = 0x80000000
_HEADER = struct.Struct(">II")
_U32 = struct.Struct(">I")
_U32_PAIR = struct.Struct(">II")
_SYN_STREAM_FIXED = struct.Struct(">IIBB")


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
