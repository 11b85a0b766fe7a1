"""HTTP to a backend: one connection pool (TCP, TLS or a unix socket), JSON bodies, bounded
answers, a bearer token from a file, and exponential back-off for transport errors only.

Rules every protocol mode shares:
- Every request carries `Content-Type: application/json` (the original sent it on GETs too),
  a body where the protocol has one (GET and DELETE with a body included), and the token if any.
- A request that got no HTTP answer is retried with back-off (`Backoff`) for up to
  `retry_max_elapsed` seconds. A failed connect is always retried (nothing was sent); a request
  cut off after it was sent is retried only when it is idempotent (GET by default), so a create
  is never sent twice by this layer. An HTTP status, 5xx included, is never retried here: it
  goes back to the caller (and the agent's own retry budget), as in the original.
- "Not found" is decided by status code 404 (`check`), never by the reason phrase.
- JSON answers are read up to `max_json_bytes`; a larger or unparsable one is a `BadResponse`
  naming the request, never a crash. Streamed answers (logs) are not bounded here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import orjson

from ...sdk import AGENT_VERSION, NotFound
from .backoff import Backoff
from .config import TlsConfig
from .endpoint import Endpoint
from .errors import (
    BackendHTTPError,
    BackendUnavailable,
    BadResponse,
    Redactor,
    excerpt,
)
from .token import TokenFile

__all__ = ["NO_BODY", "Response", "Transport"]

log = logging.getLogger(__name__)

#: Marks "no request body" (None would be the JSON body `null`).
NO_BODY: Any = object()
#: Connections kept open to one backend.
POOL_SIZE = 64
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS"})
Query = Mapping[str, str | int]
T = TypeVar("T")


@dataclass(frozen=True)
class Response:
    """A whole HTTP answer (bounded by `max_json_bytes`)."""

    request: str  # "GET /getPods", for messages
    status: int
    reason: str
    body: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        """The body as JSON, or a `BadResponse` that says which request answered garbage."""
        if not self.body.strip():
            raise BadResponse(f"{self.request} answered {self.status} with an empty body")
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError as exc:
            raise BadResponse(
                f"{self.request} answered {self.status} with a body that is not JSON "
                f"({exc.msg} at byte {exc.pos})"
            ) from None


class Transport:
    """Requests to one backend. `start()` in the provider's `start`, `close()` in its `stop`."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        token: TokenFile | None = None,
        tls: TlsConfig | None = None,
        request_timeout: float = 30.0,
        retry: Backoff | None = None,
        max_json_bytes: int = 32 * 1024 * 1024,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.token = token
        self.tls = tls or TlsConfig()
        self.request_timeout = request_timeout
        self.retry = retry or Backoff()
        self.max_json_bytes = max_json_bytes
        self.headers = {
            "Content-Type": "application/json",
            "User-Agent": f"virtual-kubelet-web/{AGENT_VERSION}",
            **(headers or {}),
        }
        self._session: aiohttp.ClientSession | None = None

    # --- life cycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the connection pool (needs the running loop). Idempotent."""
        if self._session is not None:
            return
        connector: aiohttp.BaseConnector
        if self.endpoint.socket_path is not None:
            connector = aiohttp.UnixConnector(path=self.endpoint.socket_path, limit=POOL_SIZE)
        else:
            connector = aiohttp.TCPConnector(limit=POOL_SIZE, ssl=self._ssl_context())
        self._session = aiohttp.ClientSession(
            connector=connector,
            # Our own JSON handling: aiohttp must not add Content-Type guesses or decompress lies.
            json_serialize=lambda obj: orjson.dumps(obj).decode(),
            timeout=aiohttp.ClientTimeout(total=None),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _ssl_context(self) -> ssl.SSLContext | bool:
        if not self.endpoint.tls:
            return False
        tls = self.tls
        context = ssl.create_default_context(
            cafile=str(tls.ca_file) if tls.ca_file is not None else None
        )
        if tls.cert_file is not None:
            context.load_cert_chain(
                str(tls.cert_file), str(tls.key_file) if tls.key_file is not None else None
            )
        if tls.insecure_skip_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    # --- requests -------------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Query | None = None,
        body: Any = NO_BODY,
        idempotent: bool | None = None,
        max_bytes: int | None = None,
    ) -> Response:
        """Send one request (retrying transport errors) and read its whole answer, whatever
        its status. `max_bytes` bounds the answer (default `max_json_bytes`)."""
        limit = self.max_json_bytes if max_bytes is None else max_bytes
        name = f"{method} {path}"

        async def attempt() -> Response:
            async with (
                asyncio.timeout(self.request_timeout),
                self._send(method, path, query, body) as response,
            ):
                data = await _read_bounded(response, limit, name)
                return Response(name, response.status, response.reason or "", data)

        return await self._with_retries(name, method, idempotent, attempt)

    @contextlib.asynccontextmanager
    async def stream(
        self,
        method: str,
        path: str,
        *,
        query: Query | None = None,
        body: Any = NO_BODY,
        redact: Redactor | None = None,
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """Send one request and yield its answer's chunks as they arrive (logs, follow included).
        A non-2xx answer raises as `check` does; only the wait for the answer's headers is
        bounded by `request_timeout` and retried."""
        name = f"{method} {path}"
        stack = contextlib.AsyncExitStack()

        async def attempt() -> aiohttp.ClientResponse:
            async with asyncio.timeout(self.request_timeout):
                return await stack.enter_async_context(self._send(method, path, query, body))

        async with stack:
            response = await self._with_retries(name, method, None, attempt)
            if not 200 <= response.status < 300:
                data = await _read_bounded(response, 64 * 1024, name, truncate=True)
                check(Response(name, response.status, response.reason or "", data), redact)

            async def chunks() -> AsyncIterator[bytes]:
                try:
                    async for chunk in response.content.iter_any():
                        yield chunk
                except aiohttp.ClientError as exc:
                    raise BackendUnavailable(
                        f"{name}: the stream broke: {_describe(exc)}"
                    ) from None

            yield chunks()

    async def get_json(self, path: str, *, query: Query | None = None, body: Any = NO_BODY) -> Any:
        """GET `path` and return its JSON (NotFound on 404, errors as `check` says)."""
        return check(await self.request("GET", path, query=query, body=body)).json()

    def _send(
        self, method: str, path: str, query: Query | None, body: Any
    ) -> aiohttp.client._RequestContextManager:
        if self._session is None:
            raise RuntimeError("Transport.start() was not called")
        headers = dict(self.headers)
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token.token()}"
        data = None if body is NO_BODY else orjson.dumps(body)
        params = {k: str(v) for k, v in query.items()} if query else None
        return self._session.request(
            method,
            self.endpoint.url(path),
            params=params,
            data=data,
            headers=headers,
            allow_redirects=False,
        )

    async def _with_retries(
        self,
        name: str,
        method: str,
        idempotent: bool | None,
        attempt: Callable[[], Awaitable[T]],
    ) -> T:
        may_resend = method.upper() in _IDEMPOTENT if idempotent is None else idempotent
        started = time.monotonic()
        delays = self.retry.delays()
        tries = 0
        while True:
            tries += 1
            try:
                return await attempt()
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                if isinstance(exc, aiohttp.ClientResponseError):
                    raise BadResponse(
                        f"{name}: the answer is not valid HTTP: {exc.message}"
                    ) from None
                sent = not isinstance(exc, aiohttp.ClientConnectorError)
                delay = next(delays)
                elapsed = time.monotonic() - started
                what = _describe(exc)
                if (sent and not may_resend) or not self.retry.allows(elapsed, delay):
                    waited = f" (tried {tries} times over {elapsed:.0f} s)" if tries > 1 else ""
                    raise BackendUnavailable(
                        f"{name}: no answer from the backend at {self.endpoint.describe()}: "
                        f"{what}{waited}"
                    ) from None
                level = logging.WARNING if tries == 1 else logging.DEBUG
                log.log(level, "%s: %s; retrying in %.1f s", name, what, delay)
                await asyncio.sleep(delay)


def check(response: Response, redact: Redactor | None = None) -> Response:
    """`response` if it is a success (any 2xx); `NotFound` for 404 (by status code, whatever the
    reason phrase: Flask sends `404 NOT FOUND`); otherwise a `BackendHTTPError` quoting a short,
    redacted excerpt of the body."""
    if response.ok:
        return response
    detail = excerpt(response.body, redact)
    if response.status == 404:
        raise NotFound(f"{response.request} answered 404" + (f": {detail}" if detail else ""))
    raise BackendHTTPError(response.request, response.status, response.reason, detail)


async def _read_bounded(
    response: aiohttp.ClientResponse, limit: int, name: str, *, truncate: bool = False
) -> bytes:
    declared = response.content_length
    if declared is not None and declared > limit and not truncate:
        raise BadResponse(f"{name}: the answer is {declared} bytes, over the limit of {limit}")
    chunks: list[bytes] = []
    total = 0
    async for chunk in response.content.iter_any():
        total += len(chunk)
        if total > limit:
            if truncate:
                chunks.append(chunk[: limit - (total - len(chunk))])
                break
            raise BadResponse(f"{name}: the answer is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc) or type(exc).__name__
    return text if len(text) < 300 else text[:297] + "..."
