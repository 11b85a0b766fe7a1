"""Errors a provider raises to tell the core what happened; everything else counts as a failure.

`NotFound` means "no such pod or container" (gone, 404); `InvalidInput` means "this request can
never succeed as asked" (400, not retried).
"""


class ProviderError(Exception):
    """Base of the errors with a defined meaning to the core."""


class NotFound(ProviderError):
    """The pod (or container) does not exist in the provider."""


class InvalidInput(ProviderError):
    """The request is malformed or unsupported; retrying it unchanged cannot help."""
