"""The azure provider's `--provider-config`: which subscription, resource group and region the
container groups live in, how the agent signs in to Microsoft Entra ID (client secret, managed
identity or workload identity), and the node's advertised capacity. Validated with one clear error;
keys missing from the file are read from the environment variables the original provider used
(AZURE_TENANT_ID, AZURE_SUBSCRIPTION_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET, ACI_RESOURCE_GROUP,
ACI_REGION)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

__all__ = ["ANNOTATION_PREFIX", "AzureConfig", "Capacity", "from_environment"]

#: Pod annotations read by the provider (GPU SKU, DNS label) start with this.
ANNOTATION_PREFIX = "azure.virtual-kubelet.io/"

#: Config key -> environment variable, for keys absent from the file.
_ENV = {
    "tenant_id": "AZURE_TENANT_ID",
    "subscription_id": "AZURE_SUBSCRIPTION_ID",
    "client_id": "AZURE_CLIENT_ID",
    "client_secret": "AZURE_CLIENT_SECRET",
    "resource_group": "ACI_RESOURCE_GROUP",
    "region": "ACI_REGION",
}


class Capacity(BaseModel):
    """What the node advertises (ACI has no per-node limit; the defaults are the original's)."""

    model_config = ConfigDict(extra="forbid")

    cpu: str = "10000"
    memory: str = "4Ti"
    pods: str = "5000"
    #: nvidia.com/gpu; "0" advertises none.
    gpu: str = "0"


class AzureConfig(BaseModel):
    """Every key of the azure provider's config file."""

    model_config = ConfigDict(extra="forbid")

    # Each key also takes the original chart's name (providers.azure.subscriptionId, ...).
    subscription_id: str = Field(validation_alias=AliasChoices("subscription_id", "subscriptionId"))
    resource_group: str = Field(validation_alias=AliasChoices("resource_group", "aciResourceGroup"))
    region: str = Field(validation_alias=AliasChoices("region", "aciRegion"))
    tenant_id: str | None = Field(None, validation_alias=AliasChoices("tenant_id", "tenantId"))
    #: How the agent signs in: `client_secret` (a service principal), `managed_identity` (the
    #: VM's or a user-assigned identity: client_id picks one), `workload_identity` (a federated
    #: token file, AZURE_FEDERATED_TOKEN_FILE, as AKS projects it). Default: client_secret when
    #: a secret is given, workload_identity when a token file is, managed_identity otherwise.
    auth: Literal["client_secret", "managed_identity", "workload_identity"] | None = None
    client_id: str | None = Field(None, validation_alias=AliasChoices("client_id", "clientId"))
    client_secret: SecretStr | None = Field(
        None, validation_alias=AliasChoices("client_secret", "clientKey")
    )
    #: A file holding the client secret (a mounted Secret), read at start and on every token.
    client_secret_file: Path | None = None
    federated_token_file: Path | None = None
    #: Entra ID host (sovereign clouds, Azure Stack): `https://login.microsoftonline.com`.
    authority_host: str | None = None
    #: Azure Resource Manager endpoint.
    arm_endpoint: str = "https://management.azure.com"
    #: A CA bundle trusted for the Entra ID and ARM endpoints beyond the system's (a TLS proxy).
    ca_file: Path | None = None
    #: The node runs in AKS (the chart's `targetAKS`): keys not given are read from the AKS
    #: cluster's cloud config `aks_credential_file` (tenantId, subscriptionId, aadClientId,
    #: aadClientSecret or `msi` with userAssignedIdentityID, resourceGroup, location), as the
    #: original did.
    target_aks: bool = Field(False, validation_alias=AliasChoices("target_aks", "targetAKS"))
    aks_credential_file: Path = Path("/etc/kubernetes/azure.json")
    #: The cluster's name, written into each container group's tags (ClusterName).
    cluster_name: str | None = None
    #: A subnet (ARM id) delegated to Microsoft.ContainerInstance: groups get private IPs there.
    subnet_id: str | None = None
    #: The cluster to read pods' Secrets (imagePullSecrets, azureFile keys) from and
    #: write Events to (default: $KUBECONFIG, ~/.kube/config, or in-cluster).
    kubeconfig: str | None = None
    #: Seconds between two status reads (one list of the resource group for every pod).
    poll_seconds: float = Field(5.0, gt=0)
    #: ARM retries of a throttled (429) or failing (5xx) call, with exponential back-off from
    #: `retry_backoff_seconds` up to `retry_backoff_max_seconds` (Retry-After wins when sent).
    max_retries: int = Field(4, ge=0)
    retry_backoff_seconds: float = Field(0.8, gt=0)
    retry_backoff_max_seconds: float = Field(60.0, gt=0)
    #: Seconds between two polls of a long-running operation when ARM sends no Retry-After.
    lro_poll_seconds: float = Field(5.0, gt=0)
    capacity: Capacity = Field(default_factory=Capacity)

    @field_validator("subscription_id", "resource_group", "region")
    @classmethod
    def _present(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value.strip()

    @field_validator("resource_group")
    @classmethod
    def _rg(cls, value: str) -> str:
        if len(value) > 90 or not all(c.isalnum() or c in "-_.()" for c in value):
            raise ValueError(f"{value!r} is not a resource group name")
        return value

    @field_validator("arm_endpoint", "authority_host")
    @classmethod
    def _https(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("https://"):
            raise ValueError("must be an https:// URL (tokens are only sent over TLS)")
        return value.rstrip("/") if value else value

    @model_validator(mode="after")
    def _auth(self) -> AzureConfig:
        if self.auth is None:
            if self.client_secret is not None or self.client_secret_file is not None:
                self.auth = "client_secret"
            elif self.federated_token_file is not None or os.environ.get(
                "AZURE_FEDERATED_TOKEN_FILE"
            ):
                self.auth = "workload_identity"
            else:
                self.auth = "managed_identity"
        if self.auth == "client_secret":
            missing = [k for k in ("tenant_id", "client_id") if not getattr(self, k)]
            if self.client_secret is None and self.client_secret_file is None:
                missing.append("client_secret (or client_secret_file)")
            if missing:
                raise ValueError(f"auth client_secret needs {', '.join(missing)}")
        if self.auth == "workload_identity" and not (self.tenant_id and self.client_id):
            raise ValueError("auth workload_identity needs tenant_id and client_id")
        return self

    def secret(self) -> str:
        """The client secret, from the file when one is named (it may have been rotated)."""
        if self.client_secret_file is not None:
            try:
                return self.client_secret_file.read_text().strip()
            except OSError as exc:
                raise ValueError(
                    f"client_secret_file {self.client_secret_file}: {exc.strerror}"
                ) from None
        return self.client_secret.get_secret_value() if self.client_secret else ""


def _given(doc: dict[str, Any], key: str) -> bool:
    """Whether `doc` sets `key` under its own or the original chart's name."""
    field = AzureConfig.model_fields[key]
    alias = field.validation_alias
    names = [key, *(n for n in getattr(alias, "choices", []) if isinstance(n, str))]
    return any(doc.get(n) not in (None, "") for n in names)


def _aks_cloud_config(path: Path) -> dict[str, Any]:
    """The keys an AKS node's cloud config gives (its service principal or managed identity)."""
    import json

    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"targetAKS: cannot read the AKS cloud config {path}: {exc}") from None
    found: dict[str, Any] = {
        "tenant_id": doc.get("tenantId"),
        "subscription_id": doc.get("subscriptionId"),
        "resource_group": doc.get("resourceGroup"),
        "region": doc.get("location"),
    }
    if doc.get("aadClientId") == "msi":
        found["auth"] = "managed_identity"
        found["client_id"] = doc.get("userAssignedIdentityID") or None
    else:
        found["client_id"] = doc.get("aadClientId")
        found["client_secret"] = doc.get("aadClientSecret")
    return {k: v for k, v in found.items() if v}


def from_environment(doc: dict[str, Any]) -> dict[str, Any]:
    """`doc` with the keys it lacks taken from the environment (the original's variables), then,
    with targetAKS, from the AKS cloud config."""
    merged = dict(doc)
    for key, variable in _ENV.items():
        value = os.environ.get(variable)
        if not _given(merged, key) and value:
            merged[key] = value
    if merged.get("target_aks") or merged.get("targetAKS"):
        path = Path(str(merged.get("aks_credential_file") or "/etc/kubernetes/azure.json"))
        for key, value in _aks_cloud_config(path).items():
            if key == "auth" or not _given(merged, key):
                if key == "auth" and (merged.get("auth") or _given(merged, "client_secret")):
                    continue
                merged[key] = value
    return merged
