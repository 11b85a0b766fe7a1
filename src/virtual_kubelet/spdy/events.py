"""What a `SpdySession` reports after receiving bytes: one frozen dataclass per event, in the
manner of h11's and wsproto's events."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from .frames import HeaderDict


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
