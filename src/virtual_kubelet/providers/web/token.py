"""A bearer token kept in a file that something else refreshes (an OIDC refresher sidecar, a
projected service-account token): read when first needed and read again whenever the file changes.

The file is `stat`ed at most once a second (not read on every request); the token is stripped of
surrounding white space. Its value never appears in a message: errors name the file only.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from .errors import BackendError

__all__ = ["TokenFile", "TokenFileError"]

#: How often the file is checked for a change, at most.
CHECK_INTERVAL_S = 1.0


class TokenFileError(BackendError):
    """The token file cannot be read or is empty (no request is sent without its token)."""


class TokenFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._token: str | None = None
        self._signature: tuple[int, int, int] | None = None
        self._checked_at = float("-inf")

    def token(self) -> str:
        """The current token; re-read if the file changed since it was last read."""
        now = time.monotonic()
        if self._token is not None and now - self._checked_at < CHECK_INTERVAL_S:
            return self._token
        self._checked_at = now
        try:
            stat = os.stat(self.path)
        except OSError as exc:
            raise TokenFileError(
                f"bearer token file {self.path} cannot be read: {exc.strerror}"
            ) from None
        signature = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        if self._token is not None and signature == self._signature:
            return self._token
        try:
            text = self.path.read_text(encoding="utf-8", errors="strict")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise TokenFileError(
                f"bearer token file {self.path} cannot be read: {reason}"
            ) from None
        token = text.strip()
        if not token:
            raise TokenFileError(f"bearer token file {self.path} is empty")
        if any(c in token for c in "\r\n"):
            raise TokenFileError(f"bearer token file {self.path} holds more than one line")
        self._token, self._signature = token, signature
        return token
