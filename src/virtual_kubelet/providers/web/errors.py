"""What can go wrong talking to a backend, as exceptions whose messages are safe to show.

Each message names the request (`POST /createPod`) and what happened, and is what the core puts
in the pod's Warning Event and condition. A backend's error body is quoted only after `Redactor`
has removed every value the request carried that may be secret (env values, Secret data,
service-account tokens), and only a short single-line excerpt of it.

`NotFound` (404, by status code) and `InvalidInput` come from the SDK; the rest are failures the
core retries.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from ...sdk import ProviderError

__all__ = [
    "BackendError",
    "BackendHTTPError",
    "BackendUnavailable",
    "BadResponse",
    "Redactor",
    "env_values",
    "excerpt",
]

#: Longest excerpt of a backend's error body quoted in a message.
EXCERPT_CHARS = 200
#: Values shorter than this are not redacted: "1" or "on" would blank half of any message, and a
#: secret that short is not protected by anything.
MIN_REDACTED_CHARS = 4


class BackendError(ProviderError):
    """The backend could not do what was asked (the core retries and reports it)."""


class BackendUnavailable(BackendError):
    """The request never got an HTTP answer (refused, reset, DNS, timeout), even after retries."""


class BackendHTTPError(BackendError):
    """The backend answered with an HTTP error status."""

    def __init__(self, request: str, status: int, reason: str, body: str = "") -> None:
        self.request = request
        self.status = status
        self.reason = reason
        detail = f": {body}" if body else ""
        super().__init__(f"{request} answered {status} {reason}{detail}".rstrip())


class BadResponse(BackendError):
    """The backend answered 2xx with a body that is not what the protocol says (garbage or
    oversized JSON, a wrong shape)."""


class Redactor:
    """Removes known sensitive values from text before it reaches a log, Event or error."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        # Longest first, so a value containing another is removed whole.
        self._values = sorted(
            {v for v in values if isinstance(v, str) and len(v) >= MIN_REDACTED_CHARS},
            key=len,
            reverse=True,
        )

    def __call__(self, text: str) -> str:
        for value in self._values:
            if value in text:
                text = text.replace(value, "[redacted]")
        return text

    def __bool__(self) -> bool:
        return bool(self._values)


def excerpt(body: bytes, redact: Redactor | None = None) -> str:
    """A short, single-line, redacted excerpt of a backend's answer, for a message."""
    text = body[: EXCERPT_CHARS * 4].decode("utf-8", errors="replace")
    if redact is not None:
        text = redact(text)
    text = " ".join(text.split())
    if len(text) > EXCERPT_CHARS:
        text = text[: EXCERPT_CHARS - 3] + "..."
    return text


def env_values(pod: dict[str, Any]) -> Iterator[str]:
    """Every env value of `pod`'s containers: the agent resolved them, and any may come from a
    Secret, so none may be echoed back into a message."""
    spec = pod.get("spec") or {}
    for kind in ("initContainers", "containers", "ephemeralContainers"):
        for container in spec.get(kind) or []:
            for var in container.get("env") or []:
                value = var.get("value") if isinstance(var, dict) else None
                if isinstance(value, str):
                    yield value
