"""The Batch SDK client (azure-batch, `azure.batch.aio`) built from the config, and what its
errors mean for a pod or the node: throttling, refused credentials, a task that exists already."""

from __future__ import annotations

import logging
from typing import Any

from azure.batch.aio import BatchClient
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.exceptions import HttpResponseError

from .config import AzureBatchConfig

# azure-core logs every request at INFO; the agent's log is for what matters (its HTTP logging
# policy redacts Authorization, but request lines for every poll are noise).
logging.getLogger("azure").setLevel(logging.WARNING)
# azure-batch 15.1 tries to parse the error body of a streamed file download before reading it
# and warns with a traceback on every 404/416; the status alone is what we act on.
logging.getLogger("azure.batch._utils.model_base").setLevel(logging.ERROR)

#: Answers that mean "the credentials are wrong", never worth retrying quickly.
AUTH_STATUSES = (401, 403)
#: Answers that mean "slow down" or "try again": retried with back-off.
THROTTLE_STATUSES = (429, 503)


def make_client(config: AzureBatchConfig) -> BatchClient:
    """A client for the account, signing with the account key (SharedKey) or an Entra ID token.
    Raises ValueError (without the key) when the key is missing."""
    options: dict[str, Any] = {
        "retry_total": config.retry_attempts,
        "retry_backoff_factor": 0.8,
        "retry_backoff_max": 30,
        "connection_timeout": config.call_timeout_seconds,
        "read_timeout": config.call_timeout_seconds,
    }
    if config.auth == "entra-id":
        from azure.identity.aio import DefaultAzureCredential

        return BatchClient(config.account_url, DefaultAzureCredential(), **options)
    credential = AzureNamedKeyCredential(config.account_name, config.account_key())
    return BatchClient(config.account_url, credential, **options)


def code_of(exc: HttpResponseError) -> str:
    """The Batch error code (e.g. TaskExists, AuthenticationFailed), or ''."""
    error = getattr(exc, "error", None)
    return str(getattr(error, "code", "") or "")


def status_of(exc: HttpResponseError) -> int:
    return int(exc.status_code or 0)


def describe(exc: HttpResponseError) -> str:
    """One line for logs and Events: status, code and Batch's message (never the request)."""
    error = getattr(exc, "error", None)
    said = getattr(error, "message", None)  # Batch's {"lang": ..., "value": ...}
    said = getattr(said, "value", said)
    message = str(said or exc.reason or "").splitlines()
    text = message[0] if message else ""
    code = code_of(exc)
    return f"Azure Batch answered {status_of(exc)}{f' {code}' if code else ''}: {text}".rstrip(": ")


def is_auth_failure(exc: HttpResponseError) -> bool:
    return status_of(exc) in AUTH_STATUSES


def is_throttled(exc: HttpResponseError) -> bool:
    return status_of(exc) in THROTTLE_STATUSES


class BatchCallFailed(RuntimeError):
    """A Batch call failed in a way the agent should retry (its Event carries this message)."""
