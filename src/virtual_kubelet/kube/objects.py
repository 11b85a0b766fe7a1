"""Small helpers for Kubernetes objects held as JSON dicts (keys, copies, lookups)."""

from __future__ import annotations

from typing import Any

import orjson

Obj = dict[str, Any]


def key_of(obj: Obj) -> str:
    """`namespace/name`, or `name` for cluster-scoped objects."""
    meta = obj["metadata"]
    ns = meta.get("namespace")
    return f"{ns}/{meta['name']}" if ns else str(meta["name"])


def split_key(key: str) -> tuple[str, str]:
    """`"ns/name"` -> `("ns", "name")`."""
    namespace, _, name = key.partition("/")
    return namespace, name


def deep_copy(obj: Any) -> Any:
    """A deep copy of JSON data (several times faster than copy.deepcopy for API objects)."""
    return orjson.loads(orjson.dumps(obj))


def uid_of(obj: Obj) -> str:
    return str(obj.get("metadata", {}).get("uid", ""))
