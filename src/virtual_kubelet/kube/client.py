"""A thin asyncio client for the Kubernetes API: JSON dicts in and out (orjson), nothing typed.

It knows HTTP verbs, patch content types, watch streams, client-side pacing, retries on throttling,
and how to turn an error Status into an `ApiError`. It knows nothing about pods or nodes. One
`KubeClient` owns one connection pool; give latency-critical work (the node lease) its own client.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any, Literal
from urllib.parse import quote

import aiohttp
import orjson

from .. import __version__
from .config import ClientConfig
from .credentials import Credentials
from .errors import ApiError
from .metrics import API_REQUEST_SECONDS, API_REQUESTS
from .ratelimit import TokenBucket

log = logging.getLogger(__name__)

PatchType = Literal["merge", "strategic", "json", "apply"]
_PATCH_CONTENT_TYPES = {
    "merge": "application/merge-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "json": "application/json-patch+json",
    "apply": "application/apply-patch+yaml",
}
_MAX_THROTTLE_RETRIES = 5
Params = Mapping[str, str | int | bool]


def path(
    api_version: str,
    plural: str,
    namespace: str | None = None,
    name: str | None = None,
    subresource: str | None = None,
) -> str:
    """The REST path of a collection or object: `path("v1", "pods", "ns", "p", "status")`."""
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    parts = [base]
    if namespace is not None:
        parts += ["namespaces", quote(namespace, safe="")]
    parts.append(plural)
    if name is not None:
        parts.append(quote(name, safe=""))
        if subresource:
            parts.append(subresource)
    return "/".join(parts)


def _params(params: Params | None) -> dict[str, str] | None:
    if not params:
        return None
    return {
        k: ("true" if v is True else "false" if v is False else str(v)) for k, v in params.items()
    }


class KubeClient:
    """Requests to one API server as one identity, paced by a token bucket."""

    def __init__(
        self,
        config: ClientConfig,
        *,
        name: str = "main",
        qps: float = 0,
        burst: int = 1000,
        max_connections: int = 100,
        user_agent: str | None = None,
        request_timeout: float = 60.0,
    ) -> None:
        self.config = config
        self.name = name
        self._credentials = Credentials(config)
        self._limiter = TokenBucket(qps, burst)
        self._ssl = config.ssl_context()
        self._max_connections = max_connections
        self._user_agent = user_agent or f"virtual-kubelet/{__version__}"
        self._timeout = request_timeout
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                ssl=self._ssl if self._ssl is not None else False,
                limit=self._max_connections,
                keepalive_timeout=60,
            )
            self._session = aiohttp.ClientSession(
                base_url=self.config.server,
                connector=connector,
                headers={"User-Agent": self._user_agent, "Accept": "application/json"},
                timeout=aiohttp.ClientTimeout(total=self._timeout),
            )
        return self._session

    async def close(self) -> None:
        await self._credentials.close()
        if self._session is not None:
            await self._session.close()

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @functools.cache  # noqa: B019 - one entry per (verb, status): bounded, lives with the client
    def _count(self, verb: str, status: int) -> Any:
        return API_REQUESTS.labels(self.name, verb, str(status))

    @functools.cache  # noqa: B019 - one entry per verb
    def _latency(self, verb: str) -> Any:
        return API_REQUEST_SECONDS.labels(self.name, verb)

    async def _headers(self, content_type: str | None = None) -> dict[str, str]:
        headers = {}
        token = await self._credentials.bearer_token()  # raises CredentialError, an ApiError
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    async def request(
        self,
        method: str,
        url: str,
        *,
        params: Params | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float | None = None,
    ) -> Any:
        """One API call; returns the parsed JSON body. Raises ApiError for error statuses."""
        data = orjson.dumps(body) if body is not None else None
        verb = method.lower()
        for attempt in range(_MAX_THROTTLE_RETRIES + 1):
            await self._limiter.acquire()
            headers = await self._headers(content_type if data is not None else None)
            started = time.monotonic()
            try:
                async with self._http().request(
                    method,
                    url,
                    params=_params(params),
                    data=data,
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=timeout or self._timeout),
                    server_hostname=self.config.tls_server_name,
                ) as response:
                    raw = await response.read()
                    status = response.status
                    retry_after = response.headers.get("Retry-After")
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                API_REQUESTS.labels(self.name, verb, "error").inc()
                raise ApiError(
                    0, "Unreachable", f"{method} {url}: {type(exc).__name__}: {exc}"
                ) from exc
            self._count(verb, status).inc()
            self._latency(verb).observe(time.monotonic() - started)
            if status < 400:
                return orjson.loads(raw) if raw else None
            error = _error(status, raw, method, url)
            if status == 401:
                self._credentials.invalidate()
            if status == 429 and attempt < _MAX_THROTTLE_RETRIES:
                delay = float(retry_after) if retry_after and retry_after.isdigit() else 1.0
                log.debug("throttled by the API server; retrying in %.1f s", delay)
                await asyncio.sleep(min(delay, 10.0))
                continue
            raise error
        raise AssertionError("unreachable")

    async def get(self, url: str, params: Params | None = None) -> Any:
        return await self.request("GET", url, params=params)

    async def create(self, url: str, body: Any, params: Params | None = None) -> Any:
        return await self.request("POST", url, body=body, params=params)

    async def replace(self, url: str, body: Any) -> Any:
        return await self.request("PUT", url, body=body)

    async def patch(
        self, url: str, body: Any, patch_type: PatchType = "merge", params: Params | None = None
    ) -> Any:
        return await self.request(
            "PATCH", url, body=body, content_type=_PATCH_CONTENT_TYPES[patch_type], params=params
        )

    async def delete(self, url: str, body: Any = None, params: Params | None = None) -> Any:
        return await self.request("DELETE", url, body=body, params=params)

    async def watch(self, url: str, params: Params) -> AsyncIterator[dict[str, Any]]:
        """Stream watch events (`{"type": ..., "object": ...}`) until the server ends the watch.

        Raises ApiError if the watch cannot be opened; connection loss ends the iteration with
        ApiError(0, ...). Lines are split by hand because objects can exceed any fixed line limit.
        """
        await self._limiter.acquire()
        headers = await self._headers()
        query = dict(params, watch=True)
        server_timeout = float(query.get("timeoutSeconds", 300))
        try:
            async with self._http().get(
                url,
                params=_params(query),
                headers=headers,
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=30, sock_read=server_timeout + 30
                ),
                server_hostname=self.config.tls_server_name,
            ) as response:
                API_REQUESTS.labels(self.name, "watch", str(response.status)).inc()
                if response.status >= 400:
                    raise _error(response.status, await response.read(), "WATCH", url)
                partial = b""
                async for chunk in response.content.iter_any():
                    lines = (partial + chunk).split(b"\n")
                    partial = lines.pop()  # an unfinished line, or b""
                    for line in lines:
                        if line.strip():
                            yield orjson.loads(line)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise ApiError(0, "Unreachable", f"WATCH {url}: {type(exc).__name__}: {exc}") from exc


def _error(status: int, raw: bytes, method: str, url: str) -> ApiError:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict) and body.get("kind") == "Status":
        return ApiError(status, body.get("reason", ""), body.get("message", ""), body)
    text = raw[:300].decode(errors="replace").strip()
    return ApiError(status, "", f"{method} {url}: {text}")
