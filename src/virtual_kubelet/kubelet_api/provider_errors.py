"""The one mapping from what a provider raised to what a kubelet API client is told.

`NotFound` -> 404, `InvalidInput` -> 400, a hook the provider does not have (`MissingHook`, or
`NotImplementedError` raised by the hook itself) -> 501, anything else -> 500 with the details only
in the agent's log (an exception's text can carry anything, a pod's secrets included). The HTTP
dispatcher answers with it; exec and attach, whose response (101) is already sent when the provider
runs, write the same message into the Status on their error stream.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InvalidInput, NotFound

__all__ = ["MissingHook", "ProviderFailure", "provider_failure"]


class MissingHook(NotImplementedError):
    """The provider does not implement the optional hook a route needs (see `Capabilities`)."""

    def __init__(self, hook: str, provider: object) -> None:
        super().__init__(f"{hook} is not implemented by the {type(provider).__name__} provider")
        self.hook = hook


@dataclass(frozen=True)
class ProviderFailure:
    """What to tell the client about a failed provider call."""

    status: int
    message: str

    @property
    def unexpected(self) -> bool:
        """Not one of the errors with a meaning to the core: worth a traceback in the log."""
        return self.status == 500


def provider_failure(exc: Exception) -> ProviderFailure:
    """The HTTP status and message for `exc`, raised by a provider hook (or a route using one)."""
    if isinstance(exc, NotFound):
        return ProviderFailure(404, str(exc) or "not found")
    if isinstance(exc, InvalidInput):
        return ProviderFailure(400, str(exc) or "invalid request")
    if isinstance(exc, NotImplementedError):
        return ProviderFailure(501, str(exc) or "not implemented by the provider")
    return ProviderFailure(500, f"unexpected {type(exc).__name__}; details in the agent's log")
