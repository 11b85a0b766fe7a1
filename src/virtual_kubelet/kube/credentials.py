"""Bearer tokens for `KubeClient`, obtained without ever blocking the event loop.

Three sources, as in client-go: a static token, a token file (re-read at most once a minute,
because in-cluster service-account tokens rotate), and a kubeconfig `exec` credential plugin.

The plugin runs as an asyncio subprocess, one run at a time: concurrent requests share the run in
flight. Its token is cached until its `expirationTimestamp`, and refreshed in the background once
two thirds of its lifetime have passed, so that a slow plugin delays no request (the node Lease
among them) while the current token is still good. Only a request that finds no valid token waits.

Failures become `CredentialError` (an `ApiError`), so `KubeClient.request()` keeps raising one
error type. No token ever appears in a message, a log line or a repr.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .config import ClientConfig, ExecPlugin
from .errors import CredentialError

log = logging.getLogger(__name__)

TOKEN_FILE_MAX_AGE = 60.0  # seconds between re-reads of a token file
PLUGIN_TIMEOUT = 60.0  # a plugin that runs longer is killed
_REFRESH_AFTER = 2 / 3  # of a plugin token's lifetime, refresh in the background
_RETRY_AFTER_FAILURE = 5.0  # seconds before a failed background refresh is tried again


@dataclass(frozen=True)
class _Token:
    value: str = field(repr=False)
    refresh_at: float | None  # monotonic; None: never expires
    expires_at: float | None  # monotonic

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def due(self, now: float) -> bool:
        return self.refresh_at is not None and now >= self.refresh_at


class Credentials:
    """The bearer token of one `ClientConfig`; `close()` stops a background refresh."""

    def __init__(
        self, config: ClientConfig, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._config = config
        self._clock = clock
        self._token: _Token | None = None
        self._refresh: asyncio.Task[_Token] | None = None
        self._retry_at = 0.0
        self._file_read_at: float | None = None
        self._file_lock = asyncio.Lock()  # one read of the token file at a time

    async def bearer_token(self) -> str | None:
        """The token to send now (None: send none). Raises CredentialError."""
        if self._config.exec_plugin is not None:
            return await self._plugin_token(self._config.exec_plugin)
        if self._config.token_file is not None:
            return await self._file_token(self._config.token_file)
        return self._config.token

    def invalidate(self) -> None:
        """The server refused the token (401): the next request fetches or reads a new one."""
        if self._config.exec_plugin is not None:
            self._token = None
        self._file_read_at = None

    async def close(self) -> None:
        if self._refresh is not None and not self._refresh.done():
            self._refresh.cancel()
            with contextlib.suppress(asyncio.CancelledError, CredentialError):
                await self._refresh

    # --- exec plugin ----------------------------------------------------------------------------

    async def _plugin_token(self, plugin: ExecPlugin) -> str:
        now = self._clock()
        token = self._token
        if token is not None and not token.expired(now):
            if token.due(now) and now >= self._retry_at:
                self._start_refresh(plugin)
            return token.value
        # No valid token: wait for a run, shared with every other request that needs one. The
        # shield keeps a cancelled request from killing the run the others are waiting for.
        return (await asyncio.shield(self._start_refresh(plugin))).value

    def _start_refresh(self, plugin: ExecPlugin) -> asyncio.Task[_Token]:
        if self._refresh is None or self._refresh.done():
            self._refresh = asyncio.create_task(
                self._run_plugin(plugin), name=f"credential plugin {plugin.command}"
            )
            self._refresh.add_done_callback(self._refreshed)
        return self._refresh

    def _refreshed(self, task: asyncio.Task[_Token]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is None:
            self._token = task.result()
            return
        self._retry_at = self._clock() + _RETRY_AFTER_FAILURE
        if self._token is not None and not self._token.expired(self._clock()):
            log.warning("%s; the current token stays in use until it expires", error)

    async def _run_plugin(self, plugin: ExecPlugin) -> _Token:
        name = repr(plugin.command)
        env = dict(os.environ, **dict(plugin.env))
        env["KUBERNETES_EXEC_INFO"] = json.dumps(
            {
                "apiVersion": plugin.api_version,
                "kind": "ExecCredential",
                "spec": {"interactive": False},
            }
        )
        started = self._clock()
        try:
            process = await asyncio.create_subprocess_exec(
                plugin.command,
                *plugin.args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
            )
        except OSError as exc:
            raise CredentialError(f"credential plugin {name} did not run: {exc}") from None
        try:
            async with asyncio.timeout(PLUGIN_TIMEOUT):
                stdout, stderr = await process.communicate()
        except TimeoutError:
            raise CredentialError(
                f"credential plugin {name} did not finish within {PLUGIN_TIMEOUT:.0f} s"
            ) from None
        finally:
            if process.returncode is None:  # timed out or cancelled: leave no plugin behind
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if process.returncode != 0:
            raise CredentialError(
                f"credential plugin {name} exited with {process.returncode}: "
                f"{stderr.decode(errors='replace').strip()[-500:]}"
            )
        return self._parse(name, stdout, started)

    def _parse(self, name: str, stdout: bytes, started: float) -> _Token:
        try:
            status = json.loads(stdout)["status"]
            token = status.get("token")
            stamp = status.get("expirationTimestamp")
        except (ValueError, KeyError, TypeError, AttributeError):
            raise CredentialError(
                f"credential plugin {name} printed no ExecCredential status"
            ) from None
        if not token or not isinstance(token, str):
            raise CredentialError(
                f"credential plugin {name} returned no token (client certificates from plugins "
                "are not supported)"
            )
        if not stamp:
            return _Token(token, refresh_at=None, expires_at=None)
        try:
            expires = datetime.datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
            lifetime = (expires - datetime.datetime.now(datetime.UTC)).total_seconds()
        except (ValueError, TypeError):
            raise CredentialError(
                f"credential plugin {name} printed an invalid expirationTimestamp"
            ) from None
        # Lifetime counts from when the plugin started: its run may have taken a while.
        now = self._clock()
        expires_at = now + lifetime
        return _Token(
            token,
            refresh_at=started + (expires_at - started) * _REFRESH_AFTER,
            expires_at=expires_at,
        )

    # --- token file ----------------------------------------------------------------------------

    async def _file_token(self, path: Path) -> str | None:
        if self._fresh_file_token():
            return self._token.value if self._token else None
        async with self._file_lock:
            if self._fresh_file_token():  # another request read it while this one waited
                return self._token.value if self._token else None
            try:
                text = await asyncio.to_thread(path.read_text)
            except (OSError, UnicodeDecodeError) as exc:
                reason = getattr(exc, "strerror", None) or type(exc).__name__
                if self._token is None:
                    raise CredentialError(f"cannot read token file {path}: {reason}") from None
                log.warning(
                    "cannot re-read token file %s (%s); using the token read before", path, reason
                )
            else:
                value = text.strip()
                self._token = _Token(value, refresh_at=None, expires_at=None) if value else None
            self._file_read_at = self._clock()
            return self._token.value if self._token else None

    def _fresh_file_token(self) -> bool:
        return (
            self._file_read_at is not None
            and self._clock() - self._file_read_at < TOKEN_FILE_MAX_AGE
        )
