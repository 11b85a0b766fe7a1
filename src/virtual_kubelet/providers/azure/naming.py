"""Container group names and tags: a pod's group is named stably from its namespace and name
within ACI's rules (1-63 characters of [a-z0-9-], no leading, trailing or doubled hyphen), and its
tags say which node and which pod it belongs to, so a restarted agent finds its groups again."""

from __future__ import annotations

import hashlib
import re

from ...sdk import Pod

__all__ = ["MAX_NAME", "TAG_NAME", "TAG_NAMESPACE", "TAG_NODE", "TAG_UID", "group_name", "tags"]

MAX_NAME = 63
# The original provider's tag names, kept so its groups are recognisable in the portal.
TAG_NODE = "NodeName"
TAG_NAMESPACE = "Namespace"
TAG_NAME = "PodName"
TAG_UID = "UID"
TAG_CLUSTER = "ClusterName"
TAG_CREATED = "CreationTimestamp"

_INVALID = re.compile(r"[^a-z0-9-]+")
_HYPHENS = re.compile(r"-{2,}")


def group_name(namespace: str, name: str, *, hashed: bool = False) -> str:
    """`namespace-name` when that is a valid group name as is; otherwise (or with `hashed`, after
    a clash) a cleaned, truncated form ending in a hash of the exact namespace and name."""
    plain = f"{namespace}-{name}"
    cleaned = _HYPHENS.sub("-", _INVALID.sub("-", plain.lower())).strip("-")
    if not hashed and cleaned == plain and len(plain) <= MAX_NAME:
        return plain
    digest = hashlib.sha256(f"{namespace}/{name}".encode()).hexdigest()[:10]
    head = cleaned[: MAX_NAME - len(digest) - 1].rstrip("-")
    return f"{head}-{digest}" if head else digest


def tags(pod: Pod, node_name: str, cluster: str | None) -> dict[str, str]:
    meta = pod["metadata"]
    found = {
        TAG_NODE: node_name,
        TAG_NAMESPACE: str(meta["namespace"]),
        TAG_NAME: str(meta["name"]),
        TAG_UID: str(meta.get("uid") or ""),
        TAG_CREATED: str(meta.get("creationTimestamp") or ""),
    }
    if cluster:
        found[TAG_CLUSTER] = cluster
    return found
