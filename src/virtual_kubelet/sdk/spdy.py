"""SPDY/3.1, sans-I/O, for providers whose backend speaks the kubelet's streaming protocol (the
cri provider talks to a container runtime's streaming server with it).

    from virtual_kubelet.sdk.spdy import SpdySession, DataReceived, StreamEnded

A submodule rather than names in `virtual_kubelet.sdk.__all__`: only such providers need it. It
re-exports the leaf package `virtual_kubelet.spdy` unchanged (see its docstring for the rules).
"""

from __future__ import annotations

from ..spdy import (
    DataReceived,
    Event,
    GoAwayReceived,
    ProtocolError,
    SpdySession,
    StreamEnded,
    StreamReplied,
    StreamReset,
)

__all__ = [
    "DataReceived",
    "Event",
    "GoAwayReceived",
    "ProtocolError",
    "SpdySession",
    "StreamEnded",
    "StreamReplied",
    "StreamReset",
]
