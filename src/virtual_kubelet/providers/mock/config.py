"""The mock provider's configuration: the `--provider-config` file, and per-pod settings read from
annotations (`mock.virtual-kubelet.io/...`)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ...sdk import InvalidInput, Pod, QuantityError, parse_quantity, read_mapping, validate

ANNOTATION = "mock.virtual-kubelet.io/"


class MockConfig(BaseModel):
    """`--provider-config` for the mock provider (JSON or YAML). Upstream's format, a mapping keyed
    by node name, is accepted too."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    cpu: str = "20"
    memory: str = "100Gi"
    pods: str = "110"
    ephemeral_storage: str = Field("100Gi", alias="ephemeral-storage")
    #: Extended resources, e.g. {"nvidia.com/gpu": "4"}.
    others: dict[str, str] = Field(default_factory=dict)
    provider_id: str | None = Field(None, alias="providerID")
    #: Pod IPs are handed out from here.
    pod_cidr: str = Field("10.244.0.0/16", alias="podCIDR")
    #: Seconds pods stay Pending (ContainerCreating) before Running. Annotation: startup-seconds.
    startup_seconds: float = Field(0.0, ge=0)
    #: Pods owned by a Job finish with exit code 0 after this many seconds (None: they run forever).
    complete_jobs_after_seconds: float | None = Field(None, ge=0)
    #: Inject failures for every pod: the first N calls fail; -1 means always. Annotations
    #: fail-create / fail-update / fail-delete ("N" or "always") override per pod.
    fail_create: int = Field(0, ge=-1)
    fail_update: int = Field(0, ge=-1)
    fail_delete: int = Field(0, ge=-1)
    #: Keep pods in a journal under the state directory so a restarted agent finds them again.
    persist: bool = False
    #: While this file exists, ping() fails (the node's Lease stops being renewed).
    unhealthy_file: str | None = None
    #: Push status changes (notify_pods); false makes the agent poll get_pod_status instead.
    push: bool = True
    #: Ask the agent to write pod volumes as files (the mock never reads them, so off by default).
    volumes: bool = False

    @field_validator("cpu", "memory", "pods", "ephemeral_storage")
    @classmethod
    def _quantity(cls, value: str) -> str:
        parse_quantity(value)
        return value

    @field_validator("others")
    @classmethod
    def _quantities(cls, value: dict[str, str]) -> dict[str, str]:
        for name, quantity in value.items():
            try:
                parse_quantity(quantity)
            except QuantityError as exc:
                raise ValueError(f"{name}: {exc}") from None
        return value

    @field_validator("pod_cidr")
    @classmethod
    def _cidr(cls, value: str) -> str:
        ipaddress.ip_network(value)
        return value


def load_config(path: Path | None, node_name: str) -> MockConfig:
    """Read and validate the config file; no file means defaults."""
    if path is None:
        return MockConfig()
    doc = read_mapping(path)
    if isinstance(doc.get(node_name), dict):
        doc = doc[node_name]
    return validate(MockConfig, doc, path)


def injected_count(pod: Pod, setting: str, default: int) -> int:
    value = pod.get("metadata", {}).get("annotations", {}).get(ANNOTATION + setting)
    if value is None:
        return default
    if value == "always":
        return -1
    try:
        return int(value)
    except ValueError:
        raise InvalidInput(
            f"annotation {ANNOTATION}{setting}={value!r} is not a number or 'always'"
        ) from None


def annotated_seconds(pod: Pod, name: str, default: float | None) -> float | None:
    value = pod.get("metadata", {}).get("annotations", {}).get(ANNOTATION + name)
    if value is None:
        return default
    try:
        return float(value)
    except ValueError:
        raise InvalidInput(f"annotation {ANNOTATION}{name}={value!r} is not a number") from None
