"""The HTTP/1.1 layer of the kubelet port: an asyncio TLS listener driving h11, one task per
connection, routing, authn/authz in front of every route, chunked streaming and protocol upgrades.

Handlers never see sockets: they answer through a `Responder`, or take the raw connection after a
`101 Switching Protocols` for SPDY or WebSocket. What a handler raises becomes the answer in one
place, `_dispatch`: `HttpError` as given, anything else (provider errors included) through
`provider_errors.provider_failure`. Malformed or oversized requests get a 4xx and a closed
connection; nothing a client sends can crash the server or leak a task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import h11

from ..metrics import KUBELET_API_CONNECTIONS, KUBELET_API_REQUESTS
from .auth import Authenticator, AuthError, Authorizer, User
from .provider_errors import provider_failure

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 1024 * 1024
IDLE_TIMEOUT_S = 120.0
REQUEST_TIMEOUT_S = 30.0
#: Route names used as a metric label (bounded: anything else counts as "other").
_ROUTES = {
    "healthz",
    "pods",
    "runningpods",
    "containerLogs",
    "exec",
    "attach",
    "portForward",
    "stats",
    "metrics",
}


class HttpError(Exception):
    """Answer with this status and plain-text message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, list[str]]
    params: dict[str, str] = field(default_factory=dict)
    user: User | None = None

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None

    def header_values(self, name: str) -> list[str]:
        """All values of a header, comma lists split (e.g. X-Stream-Protocol-Version)."""
        out: list[str] = []
        for value in self.headers.get(name.lower(), []):
            out.extend(v.strip() for v in value.split(",") if v.strip())
        return out

    def flag(self, name: str) -> bool:
        values = self.query.get(name) or []
        return bool(values) and values[-1].lower() in ("1", "true")


@dataclass
class Upgraded:
    """The raw connection after 101: bytes the client already sent, and the streams."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    buffered: bytes


class Responder:
    def __init__(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, reader: asyncio.StreamReader
    ) -> None:
        self._conn, self._writer, self._reader = conn, writer, reader
        self.started = False
        self.status = 0
        self.upgraded: Upgraded | None = None

    async def _send(self, event: Any) -> None:
        data = self._conn.send(event)
        if data:
            self._writer.write(data)
            await self._writer.drain()

    async def respond(
        self,
        status: int,
        body: bytes | str = b"",
        content_type: str = "text/plain; charset=utf-8",
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        payload = body.encode() if isinstance(body, str) else body
        self.started = True
        self.status = status
        all_headers = [
            ("Content-Type", content_type),
            ("Content-Length", str(len(payload))),
            *(headers or []),
        ]
        await self._send(h11.Response(status_code=status, headers=all_headers))
        if payload:
            await self._send(h11.Data(data=payload))
        await self._send(h11.EndOfMessage())

    async def stream(
        self,
        status: int,
        chunks: AsyncIterator[bytes],
        content_type: str = "text/plain; charset=utf-8",
    ) -> None:
        """A chunked response, each chunk flushed as it comes (`kubectl logs -f`)."""
        self.started = True
        self.status = status
        await self._send(
            h11.Response(
                status_code=status,
                headers=[("Content-Type", content_type), ("Transfer-Encoding", "chunked")],
            )
        )
        async for chunk in chunks:
            if chunk:
                await self._send(h11.Data(data=chunk))
        await self._send(h11.EndOfMessage())

    async def upgrade(self, headers: list[tuple[str, str]]) -> Upgraded:
        """Answer `101 Switching Protocols` and take over the connection."""
        self.started = True
        self.status = 101
        await self._send(h11.InformationalResponse(status_code=101, headers=headers))
        buffered, _closed = self._conn.trailing_data
        self.upgraded = Upgraded(self._reader, self._writer, bytes(buffered))
        return self.upgraded


Handler = Callable[[Request, Responder], Awaitable[None]]


class Router:
    def __init__(self) -> None:
        self._routes: list[tuple[re.Pattern[str], frozenset[str], Handler]] = []

    def add(self, pattern: str, methods: tuple[str, ...], handler: Handler) -> None:
        """`pattern` uses `{name}` for one path segment. Every route answers with and without a
        trailing slash: Go clients build proxy URLs with `path.Join`, which drops it, and the
        kubelet answers both forms."""
        body = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern.rstrip("/"))
        regex = "^" + body + "/?$"
        self._routes.append((re.compile(regex), frozenset(methods), handler))

    def match(self, method: str, path: str) -> tuple[Handler, dict[str, str]]:
        allowed = False
        for regex, methods, handler in self._routes:
            found = regex.match(path)
            if found:
                if method in methods:
                    return handler, {k: unquote(v) for k, v in found.groupdict().items()}
                allowed = True
        if allowed:
            raise HttpError(405, f"method {method} not allowed")
        raise HttpError(404, "404 page not found")


class KubeletHttpServer:
    def __init__(
        self,
        router: Router,
        authenticator: Authenticator,
        authorizer: Authorizer,
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        self.router = router
        self.authenticator = authenticator
        self.authorizer = authorizer
        self.ssl_context = ssl_context
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self, listener: socket.socket) -> int:
        """Serve on an already bound, listening socket (see listener.py); returns its port."""
        self._server = await asyncio.start_server(
            self._on_connection,
            sock=listener,
            ssl=self.ssl_context,
            ssl_handshake_timeout=15,
            limit=MAX_HEADER_BYTES,
        )
        return int(listener.getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        for task in list(self._connections):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    @property
    def connections(self) -> int:
        return len(self._connections)

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        KUBELET_API_CONNECTIONS.inc()
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, TimeoutError):
            pass
        except asyncio.CancelledError:
            # Only stop() cancels a connection. Ending normally matters: on Python 3.11, asyncio's
            # done-callback for client_connected_cb calls task.exception(), which raises on a
            # cancelled task and logs an ERROR traceback for every stream open at shutdown.
            pass
        except Exception:
            log.exception("kubelet API connection failed")
        finally:
            KUBELET_API_CONNECTIONS.dec()
            self._connections.discard(task)
            if not writer.is_closing():
                writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 5)

    async def _next_event(
        self, conn: h11.Connection, reader: asyncio.StreamReader, timeout: float
    ) -> Any:
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            data = await asyncio.wait_for(reader.read(65536), timeout)
            conn.receive_data(data)
            # Once a request has started, the rest of it must come soon (no slow-loris holding a
            # connection for the whole keep-alive period).
            timeout = min(timeout, REQUEST_TIMEOUT_S)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        ssl_object = writer.get_extra_info("ssl_object")
        while True:
            try:
                event = await self._next_event(conn, reader, IDLE_TIMEOUT_S)
                if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                    return
                if not isinstance(event, h11.Request):
                    return
                size = 0
                while True:  # bodies are not used by any route; read and bound them
                    more = await self._next_event(conn, reader, REQUEST_TIMEOUT_S)
                    if isinstance(more, h11.Data):
                        size += len(more.data)
                        if size > MAX_BODY_BYTES:
                            raise HttpError(413, "request body too large")
                    elif isinstance(more, h11.EndOfMessage) or more is h11.PAUSED:
                        break
                    else:
                        return
            except h11.RemoteProtocolError as exc:
                await self._refuse(conn, writer, exc.error_status_hint, f"bad request: {exc}")
                return
            except HttpError as exc:
                await self._refuse(conn, writer, exc.status, exc.message)
                return
            responder = Responder(conn, writer, reader)
            request = _request(event)
            await self._dispatch(request, responder, ssl_object)
            if responder.upgraded is not None or conn.our_state is not h11.DONE:
                return
            if conn.their_state is not h11.DONE:
                return
            try:
                conn.start_next_cycle()
            except h11.LocalProtocolError:
                return

    async def _refuse(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, status: int, message: str
    ) -> None:
        with contextlib.suppress(Exception):
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                body = message.encode()
                data = conn.send(
                    h11.Response(
                        status_code=status,
                        headers=[
                            ("Content-Type", "text/plain"),
                            ("Content-Length", str(len(body))),
                            ("Connection", "close"),
                        ],
                    )
                )
                writer.write(
                    (data or b"")
                    + (conn.send(h11.Data(data=body)) or b"")
                    + (conn.send(h11.EndOfMessage()) or b"")
                )
                await writer.drain()

    async def _dispatch(self, request: Request, responder: Responder, ssl_object: Any) -> None:
        try:
            peer = ssl_object.getpeercert() if ssl_object is not None else None
            request.user = await self.authenticator.authenticate(
                peer, request.header("authorization")
            )
            if request.user is None:
                raise HttpError(401, "Unauthorized")
            allowed, attributes = await self.authorizer.authorize(
                request.user, request.method, request.path
            )
            if not allowed:
                raise HttpError(403, f"Forbidden ({attributes})")
            handler, request.params = self.router.match(request.method, request.path)
            await handler(request, responder)
        except HttpError as exc:
            await self._error(responder, exc.status, exc.message)
        except AuthError as exc:
            log.warning("kubelet API: %s", exc)
            await self._error(responder, 500, "authentication or authorization failed")
        except (ConnectionError, asyncio.CancelledError):
            raise
        except Exception as exc:
            failure = provider_failure(exc)
            if failure.unexpected:
                log.exception("kubelet API handler %s %s failed", request.method, request.path)
            await self._error(responder, failure.status, failure.message)
        finally:
            route = request.path.lstrip("/").split("/", 1)[0] or "/"
            if route not in _ROUTES:
                route = "other"
            KUBELET_API_REQUESTS.labels(route, str(responder.status or 0)).inc()

    async def _error(self, responder: Responder, status: int, message: str) -> None:
        if responder.started:
            return  # mid-stream: all we can do is end the connection
        with contextlib.suppress(Exception):
            await responder.respond(status, message + "\n")


def _request(event: h11.Request) -> Request:
    target = event.target.decode("latin-1")
    split = urlsplit(target)
    headers: dict[str, list[str]] = {}
    for name, value in event.headers:
        headers.setdefault(name.decode("latin-1").lower(), []).append(value.decode("latin-1"))
    return Request(
        method=event.method.decode("ascii").upper(),
        path=split.path or "/",
        query=parse_qs(split.query, keep_blank_values=True),
        headers=headers,
    )
