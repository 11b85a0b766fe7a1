"""The Azure clients: a credential chosen by the config, and ACI's async management client with
the SDK's own retry policy (429 and 5xx retried with exponential back-off, Retry-After honoured)
and long-running operations polled the way ARM documents them (Azure-AsyncOperation or Location,
Retry-After). Each failed attempt is reported to a callback, so a throttled or failing call is
visible on the pod it was for while the SDK retries it."""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable
from typing import Any

from azure.core.credentials_async import AsyncTokenCredential
from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import AsyncRetryPolicy, SansIOHTTPPolicy
from azure.identity.aio import (
    ClientSecretCredential,
    ManagedIdentityCredential,
    WorkloadIdentityCredential,
)
from azure.mgmt.containerinstance.aio import ContainerInstanceManagementClient

from ...sdk import Pod
from .config import AzureConfig

__all__ = ["API_VERSION", "AttemptFailed", "current_pod", "make_client", "make_credential"]

log = logging.getLogger(__name__)

API_VERSION = "2023-05-01"

#: The pod an ARM call is made for, read by the attempt recorder.
current_pod: contextvars.ContextVar[Pod | None] = contextvars.ContextVar("aci_pod", default=None)

#: (the pod or None, HTTP status, ARM error code, seconds ARM asked to wait or None)
AttemptFailed = Callable[[Pod | None, int, str, float | None], None]


def _transport_options(config: AzureConfig) -> dict[str, Any]:
    return {"connection_verify": str(config.ca_file)} if config.ca_file else {}


def make_credential(config: AzureConfig) -> AsyncTokenCredential:
    """The credential of `config.auth` (validated by the config already)."""
    options: dict[str, Any] = _transport_options(config)
    if config.authority_host:
        options["authority"] = config.authority_host
    if config.auth == "client_secret":
        assert config.tenant_id is not None
        assert config.client_id is not None
        return ClientSecretCredential(
            config.tenant_id, config.client_id, config.secret(), **options
        )
    if config.auth == "workload_identity":
        return WorkloadIdentityCredential(
            tenant_id=config.tenant_id,
            client_id=config.client_id,
            token_file_path=str(config.federated_token_file)
            if config.federated_token_file
            else None,
            **options,
        )
    options.pop("authority", None)
    return ManagedIdentityCredential(client_id=config.client_id, **options)


class _AttemptRecorder(SansIOHTTPPolicy[Any, Any]):
    """Sees every attempt (it sits after the retry policy) and reports the failed ones."""

    def __init__(self, on_failure: AttemptFailed) -> None:
        self.on_failure = on_failure

    def on_response(
        self, request: PipelineRequest[Any], response: PipelineResponse[Any, Any]
    ) -> None:
        status = response.http_response.status_code
        if status == 429 or status >= 500:
            headers = response.http_response.headers
            code = headers.get("x-ms-failure-cause") or ""
            try:
                body = response.http_response.text()
                code = code or _error_code(body)
            except Exception:  # a streamed body: the status says enough
                pass
            retry_after = headers.get("Retry-After")
            try:
                wait = float(retry_after) if retry_after else None
            except ValueError:
                wait = None
            self.on_failure(current_pod.get(), status, code, wait)


def _error_code(body: str) -> str:
    import orjson

    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ""
    error = doc.get("error") if isinstance(doc, dict) else None
    return str(error.get("code") or "") if isinstance(error, dict) else ""


def make_client(
    config: AzureConfig, credential: AsyncTokenCredential, on_failure: AttemptFailed
) -> ContainerInstanceManagementClient:
    retry = AsyncRetryPolicy(
        retry_total=config.max_retries,
        retry_backoff_factor=config.retry_backoff_seconds,
        retry_backoff_max=config.retry_backoff_max_seconds,
        # Connection resets and read timeouts are retried too (ARM behind a flaky network).
        retry_connect=config.max_retries,
        retry_read=config.max_retries,
    )
    return ContainerInstanceManagementClient(
        credential,
        config.subscription_id,
        base_url=config.arm_endpoint,
        api_version=API_VERSION,
        polling_interval=config.lro_poll_seconds,
        retry_policy=retry,
        per_retry_policies=[_AttemptRecorder(on_failure)],
        credential_scopes=[config.arm_endpoint + "/.default"]
        if "management.azure.com" not in config.arm_endpoint
        else None,
        **_transport_options(config),
    )
