"""SPDY/3 on the wire: version, limits, the header-compression dictionary, flags, control
frame types, status codes, and one frozen dataclass per frame. Data only: no parsing, no state."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, TypeAlias

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
