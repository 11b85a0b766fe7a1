"""The cri provider's `--provider-config`: where the runtime is, how long a call may take, where
container logs go, the restart back-off and the node's capacity. Validated with one clear error.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from ...sdk import QuantityError, parse_quantity


def grpc_target(endpoint: str) -> str:
    """The grpc channel target of a CRI endpoint: `unix:///abs/path` as is, `tcp://host:port`
    as `host:port`."""
    if endpoint.startswith("unix://"):
        return endpoint
    return endpoint.removeprefix("tcp://")


def _check_endpoint(value: str) -> str:
    if value.startswith("unix://"):
        if not value.removeprefix("unix://").startswith("/"):
            raise ValueError(f"{value!r}: a unix endpoint needs an absolute path (unix:///run/x)")
        return value
    if value.startswith("tcp://"):
        host, _, port = value.removeprefix("tcp://").rpartition(":")
        if host and port.isdigit() and 0 < int(port) < 65536:
            return value
    raise ValueError(f"{value!r} is neither unix:///path nor tcp://host:port")


class RegistryAuth(BaseModel):
    """Credentials for one registry host (used when a pod has no imagePullSecret for it)."""

    model_config = ConfigDict(extra="forbid")

    username: str
    password: SecretStr


class Capacity(BaseModel):
    """The node's capacity; by default what the agent's host has."""

    model_config = ConfigDict(extra="forbid")

    cpu: str | None = None
    memory: str | None = None
    pods: int = Field(110, gt=0)

    @field_validator("cpu", "memory")
    @classmethod
    def _quantity(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_quantity(value)
            except QuantityError as exc:
                raise ValueError(f"{value!r} is not a quantity ({exc})") from None
        return value


class CriConfig(BaseModel):
    """Every key of the cri provider's config file."""

    model_config = ConfigDict(extra="forbid")

    #: The runtime service: `unix:///run/containerd/containerd.sock` or `tcp://host:port`.
    runtime_endpoint: str
    #: The image service; the runtime endpoint when not set.
    image_endpoint: str | None = None
    #: Where the runtime writes container logs (must be readable here): `<state dir>/cri-logs`.
    log_root: Path | None = None
    #: A sandbox image to make sure of at start-up (pulled if missing); the runtime's own setting
    #: decides which image sandboxes use.
    pause_image: str | None = None
    #: The cluster's DNS servers for dnsPolicy ClusterFirst (the kubelet's --cluster-dns); without
    #: them such pods get the runtime host's resolv.conf, as the kubelet falls back to.
    cluster_dns: list[str] = Field(default_factory=list)
    #: The cgroup parent of every sandbox ("" lets the runtime choose).
    cgroup_parent: str = ""
    #: How long one CRI call may take before it counts as failed (pulls have their own).
    call_timeout_seconds: float = Field(10.0, gt=0)
    pull_timeout_seconds: float = Field(300.0, gt=0)
    #: How often container states are read from the runtime.
    poll_interval_seconds: float = Field(1.0, gt=0, le=60)
    #: The kubelet's crash-loop back-off: first delay, ceiling, and how long a run must last to
    #: reset it.
    restart_backoff_seconds: float = Field(10.0, gt=0)
    restart_backoff_max_seconds: float = Field(300.0, gt=0)
    restart_backoff_reset_seconds: float = Field(600.0, gt=0)
    #: The cluster to read pods' imagePullSecrets from (default: $KUBECONFIG, ~/.kube/config, or
    #: in-cluster).
    kubeconfig: str | None = None
    #: Default registry credentials by host (`127.0.0.1:5000`), for images without a pull secret.
    registry_auth: dict[str, RegistryAuth] = Field(default_factory=dict)
    capacity: Capacity = Field(default_factory=Capacity)

    @field_validator("runtime_endpoint")
    @classmethod
    def _runtime(cls, value: str) -> str:
        return _check_endpoint(value)

    @field_validator("cluster_dns")
    @classmethod
    def _dns(cls, value: list[str]) -> list[str]:
        for server in value:
            try:
                ipaddress.ip_address(server)
            except ValueError:
                raise ValueError(f"{server!r} is not an IP address") from None
        return value

    @field_validator("image_endpoint")
    @classmethod
    def _image(cls, value: str | None) -> str | None:
        return None if value is None else _check_endpoint(value)

    @property
    def images_at(self) -> str:
        return self.image_endpoint or self.runtime_endpoint
