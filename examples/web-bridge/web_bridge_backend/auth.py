"""Who may call the backend: a bearer token read from a file (re-read whenever the file changes, so
it can be rotated without a restart) and, optionally, TLS with client certificates (mTLS).

A request without the right token gets 401 with `WWW-Authenticate: Bearer`; the token itself is
never logged nor echoed.
"""

from __future__ import annotations

import hmac
import logging
import os
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

log = logging.getLogger(__name__)


class TokenFile:
    """The expected token, from `path`, re-read when the file's identity, size or mtime change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[int, int, int, int] | None = None
        self._token = b""

    def current(self) -> bytes:
        try:
            info = os.stat(self.path)
        except OSError:
            log.warning("token file %s cannot be read: refusing every request", self.path)
            return b""
        seen = (info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
        if seen != self._seen:
            try:
                self._token = self.path.read_bytes().strip()
            except OSError:
                return b""
            self._seen = seen
            log.info("token file %s (re)read", self.path)
        return self._token

    def accepts(self, header: str | None) -> bool:
        expected = self.current()
        if not expected or not header or not header.startswith("Bearer "):
            return False
        return hmac.compare_digest(header[len("Bearer ") :].strip().encode(), expected)


def middleware(tokens: TokenFile | None) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def check(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if tokens is not None and not tokens.accepts(request.headers.get("Authorization")):
            log.warning(
                "refused %s %s: missing or wrong bearer token", request.method, request.path
            )
            return web.Response(
                status=401,
                text="unauthorized: missing or wrong bearer token\n",
                headers={"WWW-Authenticate": 'Bearer realm="web-bridge"'},
            )
        return await handler(request)

    return check


def server_tls(cert: Path, key: Path, client_ca: Path | None) -> ssl.SSLContext:
    """TLS for the listener; with `client_ca`, every client must present a certificate from it."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    if client_ca is not None:
        context.load_verify_locations(client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context
