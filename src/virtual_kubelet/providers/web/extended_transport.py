"""The shared `Transport` plus what only the extended protocol needs: a WebSocket to the backend
(exec, attach, port-forward), on the same connection pool, TLS settings and bearer token.

A refused upgrade is mapped by its status, as every other call is: 404 `NotFound`, 400
`InvalidInput`, 401/403 an authentication error naming the token file (never the token), 501
"not supported by the backend", anything else a `BackendHTTPError`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import aiohttp

from ...sdk import InvalidInput, NotFound
from .errors import BackendHTTPError, BackendUnavailable
from .extended_wire import SUBPROTOCOL
from .transport import Transport

__all__ = ["ExtendedTransport", "auth_hint"]

#: Largest message accepted from the backend on a WebSocket.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
_REASONS = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 501: "Not Implemented"}


def auth_hint(transport: Transport) -> str:
    """What to check after a 401 or 403, naming the token file but never its content."""
    if transport.token is not None:
        return f"check the bearer token in {transport.token.path} (its value is not shown)"
    if transport.tls.cert_file is not None:
        return f"check the client certificate {transport.tls.cert_file}"
    return "the backend requires credentials: set token_file (or a tls client certificate)"


class ExtendedTransport(Transport):
    @classmethod
    def like(cls, base: Transport) -> ExtendedTransport:
        """A transport to the same backend with the same settings as `base`."""
        return cls(
            base.endpoint,
            token=base.token,
            tls=base.tls,
            request_timeout=base.request_timeout,
            retry=base.retry,
            max_json_bytes=base.max_json_bytes,
        )

    async def websocket(
        self, path: str, query: Sequence[tuple[str, str]]
    ) -> aiohttp.ClientWebSocketResponse:
        """Open a WebSocket with the protocol's subprotocol; the upgrade is bounded by
        `request_timeout` and not retried (an exec must not run twice)."""
        if self._session is None:
            raise RuntimeError("Transport.start() was not called")
        name = f"GET {path}"
        headers = {"User-Agent": self.headers["User-Agent"]}
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token.token()}"
        try:
            async with asyncio.timeout(self.request_timeout):
                return await self._session.ws_connect(
                    self.endpoint.url(path),
                    params=list(query),
                    headers=headers,
                    protocols=(SUBPROTOCOL,),
                    max_msg_size=MAX_MESSAGE_BYTES,
                    autoping=True,
                )
        except aiohttp.WSServerHandshakeError as exc:
            status = exc.status
            if status == 404:
                raise NotFound(
                    f"{name} answered 404: no such pod or container in the backend"
                ) from None
            if status == 400:
                raise InvalidInput(
                    f"{name} answered 400: the backend refused the request"
                ) from None
            if status in (401, 403):
                raise BackendHTTPError(name, status, _REASONS[status], auth_hint(self)) from None
            if status == 501:
                raise NotImplementedError(
                    f"{name}: the backend does not support it (501)"
                ) from None
            if status == 101:
                raise BackendHTTPError(
                    name, status, "Switching Protocols", f"but not to {SUBPROTOCOL}: {exc.message}"
                ) from None
            raise BackendHTTPError(name, status, _REASONS.get(status, "")) from None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            what = "timed out" if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__
            raise BackendUnavailable(
                f"{name}: no answer from the backend at {self.endpoint.describe()}: {what}"
            ) from None
