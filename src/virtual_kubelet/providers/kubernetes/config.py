"""`--provider-config` of the `kubernetes` provider: where the target cluster is, how source
namespaces map to target namespaces, who we are (the cluster identity written into labels), how
pods are rewritten for the target, and an optional capacity override. Unknown keys are refused so
a typo never falls back to a default silently; every error names the key."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ...sdk import ProviderConfigError, QuantityError, parse_quantity, read_mapping, validate

__all__ = [
    "CapacityConfig",
    "CciConfig",
    "CciNetworkConfig",
    "ClusterConfig",
    "KubernetesConfig",
    "NamespaceConfig",
    "ObjectRef",
    "PodRewriteConfig",
    "SecretRef",
    "load_config",
]

_LABEL_VALUE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class SecretRef(BaseModel):
    """A key of a Secret in the source cluster."""

    model_config = ConfigDict(extra="forbid")

    namespace: str
    name: str
    key: str = "kubeconfig"


class ObjectRef(BaseModel):
    """A namespaced object in the target cluster."""

    model_config = ConfigDict(extra="forbid")

    namespace: str
    name: str


class ClusterConfig(BaseModel):
    """How to reach one API server: a kubeconfig file (or, for the target, a kubeconfig held in
    a Secret of the source cluster, read at start-up) and, optionally, one of its contexts."""

    model_config = ConfigDict(extra="forbid")

    kubeconfig: Path | None = None
    kubeconfig_secret: SecretRef | None = None
    context: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> ClusterConfig:
        if self.kubeconfig is not None and self.kubeconfig_secret is not None:
            raise ValueError("give kubeconfig or kubeconfig_secret, not both")
        return self


class NamespaceConfig(BaseModel):
    """Source namespace -> target namespace. `map` wins; otherwise `template` with `{namespace}`
    and `{cluster}` (the cluster identity): `"{namespace}"` keeps the name, `"{namespace}-{cluster}"`
    adds a suffix. With `map_only`, a namespace missing from `map` is refused."""

    model_config = ConfigDict(extra="forbid")

    template: str = "{namespace}"
    map: dict[str, str] = Field(default_factory=dict)
    map_only: bool = False

    @field_validator("template")
    @classmethod
    def _template(cls, value: str) -> str:
        if "{namespace}" not in value:
            raise ValueError("must contain {namespace} (every source namespace needs its own)")
        try:
            value.format(namespace="x", cluster="y")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"only {{namespace}} and {{cluster}} may be used ({exc})") from None
        return value

    @field_validator("map")
    @classmethod
    def _targets(cls, value: dict[str, str]) -> dict[str, str]:
        for source, target in value.items():
            if not _LABEL_VALUE.match(target) or len(target) > 63:
                raise ValueError(f"{source!r} -> {target!r}: not a valid namespace name")
        return value


class PodRewriteConfig(BaseModel):
    """What changes on the way to the target. Our node's scheduling constraints never travel
    (its taint's toleration, nodeName, node affinity, nodeSelector keys naming it); these add the
    target's own."""

    model_config = ConfigDict(extra="forbid")

    #: Tolerations added to every pod in the target.
    tolerations: list[dict[str, object]] = Field(default_factory=list)
    #: nodeSelector entries added to every pod in the target.
    node_selector: dict[str, str] = Field(default_factory=dict)
    #: Toleration keys removed (besides `virtual-kubelet.io/provider`, our node's own taint).
    remove_toleration_keys: list[str] = Field(default_factory=list)
    #: nodeSelector keys removed (besides `kubernetes.io/hostname`, `type` and `kubernetes.io/role`).
    remove_node_selector_keys: list[str] = Field(default_factory=list)
    #: The service-account token the pod gets in the target: `source` (a token of its own
    #: service account minted in the source cluster, so it talks to its home API server),
    #: `target` (the target namespace's `default` service account, injected by the target's
    #: admission) or `none` (no token).
    service_account: Literal["source", "target", "none"] = "target"
    #: With `service_account: source`: the home API server's URL as the pods in the target reach
    #: it (default: the source kubeconfig's server).
    source_api_server: str | None = None
    #: With `service_account: source`: the lifetime asked for each token (renewed at 80 %).
    token_expiration_seconds: int = Field(default=3600, ge=600)

    @field_validator("source_api_server")
    @classmethod
    def _server(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError("must be an http(s):// URL")
        return value


class CapacityConfig(BaseModel):
    """Fixed capacity advertised instead of the target's Ready nodes' (a quota)."""

    model_config = ConfigDict(extra="forbid")

    cpu: str
    memory: str
    pods: int = Field(default=110, ge=1)

    @field_validator("cpu", "memory")
    @classmethod
    def _quantity(cls, value: str) -> str:
        try:
            parse_quantity(value)
        except QuantityError as exc:
            raise ValueError(str(exc)) from None
        return value


class CciNetworkConfig(BaseModel):
    """CCI's network object, created in every namespace we use (values from the CCI console)."""

    model_config = ConfigDict(extra="forbid")

    name: str = "vk-network"
    vpc_id: str
    subnet_id: str
    network_id: str
    security_group_id: str
    project_id: str
    domain_id: str
    available_zone: str
    cidr: str


class CciConfig(BaseModel):
    """Mode `huawei-cci`: where CCI and IAM are, and the credentials file."""

    model_config = ConfigDict(extra="forbid")

    #: The CCI endpoint, e.g. https://cci.cn-north-4.myhuaweicloud.com
    api_server: str
    #: The IAM endpoint, e.g. https://iam.cn-north-4.myhuaweicloud.com
    iam_endpoint: str
    #: The IAM project (region) the token is scoped to, e.g. cn-north-4.
    project: str
    #: A YAML/JSON file with `domain`, `user` and `password` (never logged).
    credentials_file: Path
    #: A CA bundle for both endpoints (default: the system's).
    ca_file: Path | None = None
    #: The namespace flavor annotation's value.
    flavor: str = "general-computing"
    network: CciNetworkConfig

    @field_validator("api_server", "iam_endpoint")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("must be an http(s):// URL")
        return value


class KubernetesConfig(BaseModel):
    """The whole `--provider-config` of the `kubernetes` provider."""

    model_config = ConfigDict(extra="forbid")

    #: `kubernetes`: the target is any Kubernetes cluster (`target`); `huawei-cci`: the target is
    #: Huawei Cloud Container Instance (`cci`).
    mode: Literal["kubernetes", "huawei-cci"] = "kubernetes"
    #: The cluster the pods run in (mode kubernetes).
    target: ClusterConfig = Field(default_factory=ClusterConfig)
    cci: CciConfig | None = None
    #: The cluster our node is in (its ConfigMaps and Secrets are reflected). Default: the
    #: agent's own ($KUBECONFIG, ~/.kube/config, or in-cluster).
    source: ClusterConfig = Field(default_factory=ClusterConfig)
    #: This cluster's identity in labels and annotations of what we create in the target.
    cluster_id: str
    namespaces: NamespaceConfig = Field(default_factory=NamespaceConfig)
    pods: PodRewriteConfig = Field(default_factory=PodRewriteConfig)
    capacity: CapacityConfig | None = None
    #: Instead: what this ResourceQuota of the target leaves (hard minus used).
    capacity_quota: ObjectRef | None = None
    #: Copy the Services of the source namespaces with offloaded pods into the target
    #: namespaces (same name, selector and ports), so pods find their peers there by name.
    reflect_services: bool = False
    #: How often the capacity is recomputed from the target's nodes and pods (seconds).
    capacity_refresh_seconds: float = Field(default=30.0, gt=0)

    @field_validator("cluster_id")
    @classmethod
    def _cluster_id(cls, value: str) -> str:
        if not _LABEL_VALUE.match(value) or len(value) > 30:
            raise ValueError(
                "must be 1-30 lowercase letters, digits or '-' (it goes into label values)"
            )
        return value

    @model_validator(mode="after")
    def _target_named(self) -> KubernetesConfig:
        if self.mode == "huawei-cci":
            if self.cci is None:
                raise ValueError("mode huawei-cci needs the cci mapping (endpoints, credentials)")
            if self.capacity is None:
                raise ValueError("mode huawei-cci needs capacity (CCI has no nodes to sum)")
        elif self.target.kubeconfig is None and self.target.kubeconfig_secret is None:
            raise ValueError("target.kubeconfig (a file) or target.kubeconfig_secret is required")
        if self.capacity is not None and self.capacity_quota is not None:
            raise ValueError("give capacity or capacity_quota, not both")
        if self.source.kubeconfig_secret is not None:
            raise ValueError("source.kubeconfig_secret: only the target may come from a Secret")
        return self


def load_config(path: Path | None) -> KubernetesConfig:
    """The validated configuration; ProviderConfigError naming what is wrong."""
    if path is None:
        raise ProviderConfigError(
            "the kubernetes provider needs --provider-config (target.kubeconfig, cluster_id)"
        )
    return validate(KubernetesConfig, read_mapping(path), path)
