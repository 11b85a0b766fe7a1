"""The ECS and CloudWatch Logs clients (aiobotocore), and what their errors mean.

Credentials come from botocore's standard chain only (env, shared files / profile, IRSA web
identity, container and instance metadata); nothing here reads, stores or prints them. Throttling
and 5xx answers are retried by botocore itself, with the configured retry mode and attempts; an
error that survives the retries reaches the agent, which records it as a Warning Event on the
pod and tries again later.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
)

from ...sdk import ProviderConfigError
from .config import AwsConfig

__all__ = ["AwsCallFailed", "AwsClients", "describe_error", "is_auth_error", "is_not_found"]

#: Error codes that mean "these credentials are not accepted": the node goes NotReady.
AUTH_ERROR_CODES = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "AccessDenied",
        "AccessDeniedException",
        "ExpiredToken",
        "ExpiredTokenException",
        "AuthFailure",
        "MissingAuthenticationToken",
    }
)
THROTTLING_CODES = frozenset(
    {"ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded"}
)


# botocore logs whole request bodies at DEBUG (RegisterTaskDefinition's holds env values): its
# loggers stay at INFO or above whatever the agent's --log-level.
for _name in ("botocore", "aiobotocore"):
    if logging.getLogger(_name).getEffectiveLevel() < logging.INFO:
        logging.getLogger(_name).setLevel(logging.INFO)


class AwsCallFailed(RuntimeError):
    """An AWS call failed after botocore's retries; the message names the call, the error code
    and AWS's message (never a credential)."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


def error_code(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code") or "")
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return "NoCredentials"
    return type(exc).__name__


def is_auth_error(exc: BaseException) -> bool:
    return error_code(exc) in AUTH_ERROR_CODES or error_code(exc) == "NoCredentials"


def is_not_found(exc: BaseException) -> bool:
    code = error_code(exc)
    return code in ("ResourceNotFoundException", "ClusterNotFoundException") or (
        code == "InvalidParameterException" and "not found" in str(exc).lower()
    )


def describe_error(call: str, exc: BaseException) -> str:
    """One line: which call, which error code, AWS's message and how many retries were made."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        retries = exc.response.get("ResponseMetadata", {}).get("RetryAttempts")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = error.get("Code") or f"HTTP {status}"
        text = f"{call}: {code}: {error.get('Message') or 'no message'}"
        if retries:
            text += f" (after {int(retries) + 1} attempts)"
        if code in THROTTLING_CODES:
            text += " - AWS is throttling this account's API calls"
        return text
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return (
            f"{call}: no AWS credentials found (environment, shared credentials file, "
            "profile, web identity token or instance role)"
        )
    return f"{call}: {type(exc).__name__}: {exc}"


def failed(call: str, exc: BaseException) -> AwsCallFailed:
    return AwsCallFailed(describe_error(call, exc), error_code(exc))


@dataclass
class AwsClients:
    """Open ECS and Logs clients; `close()` releases their connections."""

    ecs: Any
    logs: Any
    region: str
    _stack: contextlib.AsyncExitStack

    @classmethod
    async def open(cls, config: AwsConfig) -> AwsClients:
        session = get_session()
        if config.profile:
            session.set_config_variable("profile", config.profile)
        region = config.region or session.get_config_variable("region")
        if not region:
            raise ProviderConfigError(
                "aws provider: no region (set `region` in the provider config, or AWS_REGION)"
            )
        client_config = AioConfig(
            retries={"mode": config.retry_mode, "total_max_attempts": config.max_attempts},
            connect_timeout=config.connect_timeout_seconds,
            read_timeout=config.read_timeout_seconds,
            user_agent_extra="virtual-kubelet-aws",
        )
        stack = contextlib.AsyncExitStack()
        try:
            ecs = await stack.enter_async_context(
                session.create_client(
                    "ecs",
                    region_name=region,
                    endpoint_url=config.ecs_endpoint_url,
                    config=client_config,
                )
            )
            logs = await stack.enter_async_context(
                session.create_client(
                    "logs",
                    region_name=region,
                    endpoint_url=config.logs_endpoint_url,
                    config=client_config,
                )
            )
        except (NoRegionError, BotoCoreError) as exc:
            await stack.aclose()
            raise ProviderConfigError(f"aws provider: cannot create AWS clients: {exc}") from None
        return cls(ecs=ecs, logs=logs, region=region, _stack=stack)

    async def close(self) -> None:
        await self._stack.aclose()
