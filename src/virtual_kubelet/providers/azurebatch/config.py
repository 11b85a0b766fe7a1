"""The azurebatch provider's `--provider-config`: which Batch account and pool, where the account
key comes from, how pods become tasks (containers, slots) and how often to poll. Validated with one
clear error; the key itself is read only when the client is built and never kept in the config."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class AzureBatchConfig(BaseModel):
    """Every key of the azurebatch provider's config file."""

    model_config = ConfigDict(extra="forbid")

    #: The account's endpoint, e.g. https://myaccount.westeurope.batch.azure.com
    account_url: str
    #: The Batch account name (signs SharedKey requests).
    account_name: str
    #: Where the account key is: a file holding it (a mounted Secret) ...
    account_key_file: Path | None = None
    #: ... or an environment variable of the agent holding it (default AZURE_BATCH_ACCOUNT_KEY).
    account_key_env: str = "AZURE_BATCH_ACCOUNT_KEY"
    #: `shared-key` (the account key above) or `entra-id` (azure-identity's
    #: DefaultAzureCredential: workload identity, managed identity, AZURE_CLIENT_SECRET...).
    auth: Literal["shared-key", "entra-id"] = "shared-key"
    #: The pool every task runs on; it must exist.
    pool_id: str
    #: Tasks of this node go into job `<job_prefix><node name>` (made on first use).
    job_prefix: str = "vk-"
    #: Whether tasks run as containers (containerSettings with the pod's image): `auto` asks the
    #: pool whether it has a container configuration.
    containers: Literal["auto", "yes", "no"] = "auto"
    #: Extra `docker run` options for container tasks (containerRunOptions).
    container_run_options: str = ""
    #: When set, a pod's CPU request becomes requiredSlots = ceil(cpu / cpu_per_slot) (the pool's
    #: taskSlotsPerNode must allow it). Unset: every task takes one slot.
    cpu_per_slot: float | None = Field(None, gt=0)
    #: Seconds between two status polls (one list-tasks call for the job, whatever the pods).
    poll_seconds: float = Field(5.0, gt=0)
    #: Retries of a throttled (429) or unavailable (503) request inside one call, honouring
    #: Retry-After, before the call fails and the agent's own back-off (with an Event) takes over.
    retry_attempts: int = Field(3, ge=0)
    #: Seconds one Batch request may take.
    call_timeout_seconds: float = Field(30.0, gt=0)
    #: What the node advertises.
    cpu: str = "100"
    memory: str = "400Gi"
    max_pods: int = Field(200, gt=0)

    @field_validator("account_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value.rstrip("/")

    @field_validator("pool_id", "account_name")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("account_key_file")
    @classmethod
    def _home(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value is not None else None

    @model_validator(mode="after")
    def _prefix(self) -> AzureBatchConfig:
        if not all(c.isalnum() or c in "-_" for c in self.job_prefix) or len(self.job_prefix) > 20:
            raise ValueError(
                f"job_prefix {self.job_prefix!r}: up to 20 letters, digits, hyphens, underscores"
            )
        return self

    def account_key(self) -> str:
        """The account key, from the file or the environment; a clear error (without the key)
        when neither has it."""
        if self.account_key_file is not None:
            try:
                key = self.account_key_file.read_text().strip()
            except OSError as exc:
                raise ValueError(
                    f"account_key_file {self.account_key_file}: {exc.strerror}"
                ) from None
            if not key:
                raise ValueError(f"account_key_file {self.account_key_file} is empty")
            return key
        key = os.environ.get(self.account_key_env, "").strip()
        if not key:
            raise ValueError(
                f"no account key: set account_key_file, or the environment variable "
                f"{self.account_key_env}"
            )
        return key
