"""Errors from the API server, carrying its Status reason so callers can branch on meaning."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """The API server answered with an error status (or could not be reached, status 0)."""

    def __init__(self, status: int, reason: str, message: str, body: dict[str, Any] | None = None):
        self.status = status
        self.reason = reason
        self.message = message
        self.body = body or {}
        super().__init__(f"{status} {reason}: {message}" if status else message)

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409

    @property
    def already_exists(self) -> bool:
        return self.status == 409 and self.reason == "AlreadyExists"

    @property
    def gone(self) -> bool:
        return self.status == 410 or self.reason in ("Expired", "Gone")

    @property
    def retryable(self) -> bool:
        """Worth retrying unchanged: throttling, timeouts, server errors, connection failures."""
        return self.status in (0, 429, 500, 502, 503, 504)


class CredentialError(ApiError):
    """No bearer token could be obtained (plugin failed, token file unreadable): the request was
    not sent. Status 0 like an unreachable server, so callers retry it the same way."""

    def __init__(self, message: str) -> None:
        super().__init__(0, "CredentialError", message)
