"""Streaming calls proxied to the target API server: container logs (follow, tail, since,
previous, timestamps), byte for byte as the target's kubelet sends them.

Uses its own connection pool (long-lived streams must not hold the API client's connections) and
the same credentials; a refused request becomes NotFound, InvalidInput or an error naming the
target's status, never quoting credentials.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import orjson

from ...sdk import InvalidInput, LogOptions, NotFound, ProviderError
from ...sdk.kube_api import ClientConfig, Credentials, path

__all__ = ["TargetStreams"]

_ERROR_BODY_LIMIT = 500


class TargetStreams:
    """Streams from one target API server."""

    def __init__(
        self,
        config: ClientConfig,
        auth: Callable[[], Awaitable[dict[str, str]]] | None = None,
    ) -> None:
        self._auth = auth
        self._config = config
        self._credentials = Credentials(config)
        self._ssl = config.ssl_context()
        self._session: aiohttp.ClientSession | None = None

    @property
    def server_hostname(self) -> str | None:
        return self._config.tls_server_name

    def session(self) -> aiohttp.ClientSession:
        return self._http()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                base_url=self._config.server,
                connector=aiohttp.TCPConnector(ssl=self._ssl if self._ssl is not None else False),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            )
        return self._session

    async def headers(self) -> dict[str, str]:
        if self._auth is not None:
            return await self._auth()
        token = await self._credentials.bearer_token()
        return {"Authorization": f"Bearer {token}"} if token else {}

    async def close(self) -> None:
        await self._credentials.close()
        if self._session is not None:
            await self._session.close()

    async def logs(
        self, namespace: str, name: str, container: str, options: LogOptions
    ) -> AsyncIterator[bytes]:
        params: dict[str, str] = {"container": container}
        if options.follow:
            params["follow"] = "true"
        if options.previous:
            params["previous"] = "true"
        if options.timestamps:
            params["timestamps"] = "true"
        if options.tail_lines is not None:
            params["tailLines"] = str(options.tail_lines)
        if options.limit_bytes is not None:
            params["limitBytes"] = str(options.limit_bytes)
        if options.since_time is not None:
            params["sinceTime"] = options.since_time.strftime("%Y-%m-%dT%H:%M:%SZ")
        elif options.since_seconds is not None:
            params["sinceSeconds"] = str(options.since_seconds)
        url = path("v1", "pods", namespace, name, "log")
        try:
            async with self._http().get(
                url,
                params=params,
                headers=await self.headers(),
                server_hostname=self._config.tls_server_name,
            ) as response:
                if response.status >= 400:
                    raise _refused(response.status, await response.content.read(_ERROR_BODY_LIMIT))
                async for chunk in response.content.iter_any():
                    yield chunk
        except aiohttp.ClientError as exc:
            raise ProviderError(f"target cluster: logs of {namespace}/{name}: {exc}") from exc


def _refused(status: int, body: bytes) -> Exception:
    try:
        message = str(orjson.loads(body).get("message", ""))
    except (orjson.JSONDecodeError, AttributeError):
        message = body.decode(errors="replace").strip()
    text = f"target cluster answered {status}: {message}"
    if status == 404:
        return NotFound(text)
    if status == 400:
        return InvalidInput(text)
    return ProviderError(text)
