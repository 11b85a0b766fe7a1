"""Which env names of a pod the agent filled from Secrets: the marker on the pod a provider gets.

The agent resolves every container's `env` and `envFrom` before a provider sees the pod, so the
provider receives plain `{"name", "value"}` pairs and cannot tell a Secret's value from a
literal. While resolving, the agent records the names (never the values) that took their value
from a Secret in one annotation on the copy it hands to the provider; that copy is never written
to the API server. `secret_env_names` reads it back.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import orjson

from .types import Pod

__all__ = ["SECRET_ENV_ANNOTATION", "encode_secret_env", "secret_env_names"]

#: The annotation on the pod given to `create_pod` / `update_pod`: compact JSON
#: `{container name: [env names]}`, sorted, holding only containers with at least one such name.
SECRET_ENV_ANNOTATION = "virtual-kubelet.io/secret-env"

# Most pods use no Secret at all; one shared string keeps the marker free for them.
_NONE = "{}"


def encode_secret_env(names: Mapping[str, Iterable[str]]) -> str:
    """The annotation value for container name -> Secret-sourced env names (agent side)."""
    doc = {container: sorted(set(found)) for container, found in sorted(names.items()) if found}
    if not doc:
        return _NONE
    return orjson.dumps(doc).decode()


def secret_env_names(pod: Pod) -> dict[str, frozenset[str]] | None:
    """Container name -> the env names whose values came from Secrets, in `pod` as the agent
    gave it to the provider.

    Marked: each `valueFrom.secretKeyRef`, each key of an `envFrom` `secretRef` (with its
    prefix), and each value whose `$(VAR)` expansion used one of those. A later literal or
    ConfigMap value of the same name unmarks it. A container without such names is absent.

    None when the pod carries no (or an unreadable) marker, e.g. it did not come through the
    agent's env resolution: then any value may be a secret, and a careful provider treats all
    of them as secret.
    """
    raw = ((pod.get("metadata") or {}).get("annotations") or {}).get(SECRET_ENV_ANNOTATION)
    if not isinstance(raw, str):
        return None
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict):
        return None
    result: dict[str, frozenset[str]] = {}
    for container, names in doc.items():
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            return None
        result[str(container)] = frozenset(names)
    return result
