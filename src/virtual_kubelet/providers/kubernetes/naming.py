"""Names and labels of what this node creates in the target cluster.

Every remote object carries the owner label, whose value names this virtual node in this source
cluster; only objects carrying it are listed, adopted, updated or deleted, so a pod (or ConfigMap)
someone else created in a target namespace is never touched. Tracing labels and annotations lead
back to the source object.
"""

from __future__ import annotations

import hashlib
import re

from ...sdk import InvalidInput
from .config import NamespaceConfig

__all__ = [
    "OWNER_LABEL",
    "SOURCE_CLUSTER",
    "SOURCE_NAME",
    "SOURCE_NAMESPACE",
    "SOURCE_SERVICE_ACCOUNT",
    "SOURCE_UID",
    "NamespaceMapper",
    "owner_value",
]

_PREFIX = "offload.virtual-kubelet.io"
#: label: which virtual node (of which source cluster) owns the object.
OWNER_LABEL = f"{_PREFIX}/owner"
#: label: the source pod's UID (pods only).
SOURCE_UID = f"{_PREFIX}/source-uid"
#: annotations: where the object comes from.
SOURCE_CLUSTER = f"{_PREFIX}/source-cluster"
SOURCE_NAMESPACE = f"{_PREFIX}/source-namespace"
SOURCE_NAME = f"{_PREFIX}/source-name"
#: annotation: the source service account whose token the pod carries (service_account: source).
SOURCE_SERVICE_ACCOUNT = f"{_PREFIX}/source-service-account"

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


def owner_value(cluster_id: str, node_name: str) -> str:
    """The owner label's value: `<cluster>.<node>`, or a stable digest when that is not a valid
    label value (63 characters at most)."""
    value = f"{cluster_id}.{node_name}"
    if len(value) <= 63 and _LABEL_VALUE.match(value):
        return value
    digest = hashlib.sha256(value.encode()).hexdigest()[:16]
    return f"{cluster_id}.{digest}"


class NamespaceMapper:
    """Source namespace -> target namespace, as configured."""

    def __init__(self, config: NamespaceConfig, cluster_id: str) -> None:
        self._config = config
        self._cluster_id = cluster_id

    def target(self, namespace: str) -> str:
        """The target namespace of `namespace`; InvalidInput if it has none."""
        mapped = self._config.map.get(namespace)
        if mapped is not None:
            return mapped
        if self._config.map_only:
            raise InvalidInput(
                f"namespace {namespace!r} is not in the kubernetes provider's namespaces.map "
                "(map_only is set)"
            )
        name = self._config.template.format(namespace=namespace, cluster=self._cluster_id)
        if len(name) > 63 or not _DNS_LABEL.match(name):
            raise InvalidInput(
                f"namespace {namespace!r} maps to {name!r} in the target, which is not a valid "
                "namespace name (at most 63 lowercase letters, digits or '-')"
            )
        return name
