"""The extended web-bridge protocol's wire formats, sans I/O: the `GET /capabilities` document,
the server-sent events of `GET /watch` (bytes in, events out), the channel frames of exec, attach
and port-forward, and the query of `GET /getContainerLogs`. No sockets here: the provider's
modules do the I/O, and every edge case of these formats is a unit test.

The protocol itself is described in docs/providers/web-extended.openapi.yaml.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from ...sdk import LogOptions, Pod, TermSize, rfc3339

__all__ = [
    "PROTOCOL",
    "SUBPROTOCOL",
    "VERSION",
    "BackendCapabilities",
    "Channel",
    "EventStreamDecoder",
    "Feature",
    "NodeChanged",
    "PodChanged",
    "PodGone",
    "ServerEvent",
    "StreamStatus",
    "Synced",
    "WatchEvent",
    "WireError",
    "decode_frame",
    "decode_status",
    "encode_close",
    "encode_frame",
    "encode_resize",
    "log_query",
    "parse_watch_event",
]

#: What `GET /capabilities` names as its `protocol`.
PROTOCOL = "virtual-kubelet.io/web-bridge"
#: The protocol version this agent speaks. Versions only add: a backend of a later version
#: still serves everything of version 1.
VERSION = 1
#: The WebSocket subprotocol of exec, attach and port-forward.
SUBPROTOCOL = "v1.web-bridge.virtual-kubelet.io"


class WireError(ValueError):
    """Bytes or a document that do not follow the protocol; the message says what and where."""


class Feature(enum.StrEnum):
    """What a backend may advertise in `features`; each enables the calls named after it."""

    #: `GET /watch`: pod status and node updates pushed as server-sent events.
    WATCH = "watch"
    #: `GET /getContainerLogs` honours follow, previous, timestamps, since*, tailLines, limitBytes.
    LOGS = "logs"
    #: `GET /exec` (WebSocket).
    EXEC = "exec"
    #: `GET /attach` (WebSocket).
    ATTACH = "attach"
    #: `GET /portForward` (WebSocket).
    PORT_FORWARD = "portForward"
    #: `GET /stats/summary`.
    STATS = "stats"


@dataclass(frozen=True)
class BackendCapabilities:
    """A backend's answer to `GET /capabilities`."""

    version: int
    features: frozenset[Feature]
    #: The longest the backend stays silent on `/watch` (it sends a comment line at least this
    #: often): a stream silent for three times as long is taken as dead.
    heartbeat_seconds: float = 15.0
    #: Feature names this agent does not know (a newer backend); ignored, shown in the log.
    unknown: tuple[str, ...] = ()

    def __contains__(self, feature: object) -> bool:
        return feature in self.features

    @classmethod
    def none(cls) -> BackendCapabilities:
        """What a backend that speaks only the original protocol offers."""
        return cls(version=0, features=frozenset())

    @classmethod
    def parse(cls, body: bytes) -> BackendCapabilities:
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise WireError(
                f"the capabilities are not JSON ({exc.msg} at byte {exc.pos})"
            ) from None
        if not isinstance(doc, dict):
            raise WireError("the capabilities are not a JSON object")
        if doc.get("protocol") != PROTOCOL:
            raise WireError(
                f"the capabilities name protocol {doc.get('protocol')!r}, not {PROTOCOL!r}"
            )
        version = doc.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise WireError(f"the capabilities' version {version!r} is not a positive integer")
        names = doc.get("features", [])
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise WireError("the capabilities' features are not a list of names")
        known = {f.value for f in Feature}
        heartbeat = doc.get("heartbeatSeconds", 15.0)
        if (
            not isinstance(heartbeat, int | float)
            or isinstance(heartbeat, bool)
            or not 0 < heartbeat <= 3600
        ):
            raise WireError(f"heartbeatSeconds {heartbeat!r} is not a number of seconds (0, 3600]")
        return cls(
            version=version,
            features=frozenset(Feature(n) for n in names if n in known),
            heartbeat_seconds=float(heartbeat),
            unknown=tuple(sorted({n for n in names if n not in known})),
        )


# --- server-sent events (GET /watch) ---------------------------------------------------------------


@dataclass(frozen=True)
class ServerEvent:
    """One dispatched server-sent event (the WHATWG event-stream format)."""

    event: str
    data: str
    id: str | None = None


class EventStreamDecoder:
    """`text/event-stream` bytes -> `ServerEvent`s, fed in chunks of any size.

    Lines end with CRLF, LF or CR; `:` starts a comment (the heartbeat); `data` lines of one event
    are joined with newlines; a blank line dispatches; an event without data is not dispatched;
    `event` defaults to "message". `retry` is read into `retry_ms`. An event (or a line) longer
    than `max_event_bytes` is a `WireError`: a backend cannot make the agent buffer without end.
    """

    def __init__(self, max_event_bytes: int = 16 * 1024 * 1024) -> None:
        self.max_event_bytes = max_event_bytes
        self.retry_ms: int | None = None
        self.last_id: str | None = None
        self._buffer = b""
        self._event = ""
        self._data: list[str] = []
        self._size = 0
        self._id: str | None = None
        self._skip_lf = False
        self._first = True

    def feed(self, chunk: bytes) -> list[ServerEvent]:
        events: list[ServerEvent] = []
        buffer = self._buffer + chunk
        start = 0
        if self._skip_lf and buffer:  # an empty chunk must not forget a CR that ended the last
            if buffer[:1] == b"\n":
                start = 1
            self._skip_lf = False
        while True:
            cr, lf = buffer.find(b"\r", start), buffer.find(b"\n", start)
            ends = [i for i in (cr, lf) if i >= 0]
            if not ends:
                break
            end = min(ends)
            line = buffer[start:end]
            if buffer[end : end + 1] == b"\r":
                if end + 1 == len(buffer):
                    self._skip_lf = True  # a CRLF may be split across chunks
                    start = end + 1
                elif buffer[end + 1 : end + 2] == b"\n":
                    start = end + 2
                else:
                    start = end + 1
            else:
                start = end + 1
            event = self._line(line)
            if event is not None:
                events.append(event)
        self._buffer = buffer[start:]
        if len(self._buffer) + self._size > self.max_event_bytes:
            raise WireError(f"a server-sent event is longer than {self.max_event_bytes} bytes")
        return events

    def _line(self, raw: bytes) -> ServerEvent | None:
        if self._first:
            self._first = False
            raw = raw.removeprefix(b"\xef\xbb\xbf")  # a byte-order mark may start the stream
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise WireError("a server-sent event line is not UTF-8") from None
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
            self._size += len(raw)
            if self._size > self.max_event_bytes:
                raise WireError(f"a server-sent event is longer than {self.max_event_bytes} bytes")
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        elif name == "retry" and value.isdigit():
            self.retry_ms = int(value)
        return None  # other fields are ignored, as the format says

    def _dispatch(self) -> ServerEvent | None:
        event, data, self._event, self._data, self._size = self._event, self._data, "", [], 0
        if self._id is not None:
            self.last_id = self._id
        if not data:
            return None
        return ServerEvent(event or "message", "\n".join(data), self.last_id)


@dataclass(frozen=True)
class PodChanged:
    """`event: pod`: a pod's current status (`metadata` namespace, name, uid and `status`)."""

    pod: Pod


@dataclass(frozen=True)
class PodGone:
    """`event: podDeleted`: the backend no longer has the pod (`metadata` only)."""

    pod: Pod


@dataclass(frozen=True)
class NodeChanged:
    """`event: node`: any of `capacity`, `allocatable`, `conditions`, `addresses`."""

    node: Mapping[str, Any]


@dataclass(frozen=True)
class Synced:
    """`event: synced`: every pod the backend runs has been sent since the stream opened."""


WatchEvent = PodChanged | PodGone | NodeChanged | Synced

#: The parts of the node a `node` event may set.
NODE_FIELDS = ("capacity", "allocatable", "conditions", "addresses")


def parse_watch_event(event: ServerEvent) -> WatchEvent | None:
    """The protocol's meaning of one server-sent event; None for an event type this agent does
    not know (a newer backend may send more)."""
    if event.event == "synced":
        return Synced()
    if event.event not in ("pod", "podDeleted", "node"):
        return None
    try:
        doc = orjson.loads(event.data)
    except orjson.JSONDecodeError as exc:
        raise WireError(f"a {event.event!r} event is not JSON ({exc.msg})") from None
    if not isinstance(doc, dict):
        raise WireError(f"a {event.event!r} event is not a JSON object")
    if event.event == "node":
        unknown = [k for k in doc if k not in NODE_FIELDS]
        if unknown:
            raise WireError(f"a 'node' event has unknown fields {unknown}")
        return NodeChanged(doc)
    meta = doc.get("metadata")
    if (
        not isinstance(meta, dict)
        or not isinstance(meta.get("namespace"), str)
        or not isinstance(meta.get("name"), str)
    ):
        raise WireError(f"a {event.event!r} event has no metadata.namespace and metadata.name")
    if event.event == "podDeleted":
        return PodGone({"metadata": meta})
    if not isinstance(doc.get("status"), dict):
        raise WireError(
            f"the 'pod' event of {meta['namespace']}/{meta['name']} has no status object"
        )
    return PodChanged(doc)


# --- exec, attach and port-forward frames -----------------------------------------------------------


class Channel(enum.IntEnum):
    """The first byte of every WebSocket message of exec, attach and port-forward."""

    #: agent -> backend: stdin (exec, attach); bytes into the pod's port (port-forward).
    STDIN = 0
    #: backend -> agent: stdout; bytes out of the pod's port (port-forward).
    STDOUT = 1
    #: backend -> agent: stderr (exec and attach without a tty).
    STDERR = 2
    #: backend -> agent, the last message: JSON `StreamStatus`.
    STATUS = 3
    #: agent -> backend: JSON `{"width": w, "height": h}` (a tty's new size).
    RESIZE = 4
    #: either way: the channel named by the one-byte payload has ended (half-close).
    CLOSE = 5


def encode_frame(channel: Channel, payload: bytes = b"") -> bytes:
    return bytes((channel,)) + payload


def decode_frame(message: bytes) -> tuple[Channel, bytes]:
    if not message:
        raise WireError("an empty stream message (every message starts with its channel)")
    try:
        channel = Channel(message[0])
    except ValueError:
        raise WireError(f"a stream message on unknown channel {message[0]}") from None
    return channel, message[1:]


def encode_resize(size: TermSize) -> bytes:
    return encode_frame(Channel.RESIZE, orjson.dumps({"width": size.width, "height": size.height}))


def encode_close(channel: Channel) -> bytes:
    return encode_frame(Channel.CLOSE, bytes((channel,)))


def decode_closed(payload: bytes) -> Channel:
    """Which channel a CLOSE frame ends."""
    if len(payload) != 1:
        raise WireError("a close message names exactly one channel")
    try:
        return Channel(payload[0])
    except ValueError:
        raise WireError(f"a close message names unknown channel {payload[0]}") from None


@dataclass(frozen=True)
class StreamStatus:
    """How an exec, attach or port-forward ended, as the backend says in its STATUS message."""

    exit_code: int | None = None
    error: str | None = None
    #: With `error`: `NotFound` or `InvalidInput` map to the SDK's errors; anything else fails.
    reason: str | None = None


def decode_status(payload: bytes) -> StreamStatus:
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise WireError(f"the stream's status is not JSON ({exc.msg})") from None
    if not isinstance(doc, dict):
        raise WireError("the stream's status is not a JSON object")
    code, error, reason = doc.get("exitCode"), doc.get("error"), doc.get("reason")
    if code is not None and (not isinstance(code, int) or isinstance(code, bool)):
        raise WireError(f"the stream's exitCode {code!r} is not an integer")
    if error is not None and not isinstance(error, str):
        raise WireError("the stream's error is not a string")
    if reason is not None and not isinstance(reason, str):
        raise WireError("the stream's reason is not a string")
    if code is not None and not 0 <= code <= 255:
        code = code % 256  # what a shell would report
    return StreamStatus(exit_code=code, error=error, reason=reason)


# --- logs ---------------------------------------------------------------------------------------------


def log_query(
    namespace: str, pod: str, container: str, options: LogOptions, *, extended: bool
) -> dict[str, str]:
    """The query of `GET /getContainerLogs`. `tail` keeps the original meaning (0 = everything)
    for backends that only know it; with the `logs` feature every option is sent, `tailLines`
    being exact (`tailLines=0` is no lines)."""
    query = {
        "namespace": namespace,
        "podName": pod,
        "containerName": container,
        "tail": str(options.tail_lines or 0),
    }
    if not extended:
        return query
    if options.tail_lines is not None:
        query["tailLines"] = str(options.tail_lines)
    if options.follow:
        query["follow"] = "true"
    if options.previous:
        query["previous"] = "true"
    if options.timestamps:
        query["timestamps"] = "true"
    if options.since_seconds is not None:
        query["sinceSeconds"] = str(options.since_seconds)
    elif options.since_time is not None:
        query["sinceTime"] = rfc3339(options.since_time)
    if options.limit_bytes is not None:
        query["limitBytes"] = str(options.limit_bytes)
    return query
