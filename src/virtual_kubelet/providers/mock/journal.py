"""What the mock's journal (`persist: true`) keeps of a pod: everything but env values, which the
agent resolved and which may come from Secrets; they must never reach a disk."""

from __future__ import annotations

from ...sdk import Pod, deep_copy
from .config import ANNOTATION

#: The spec hash a pod reloaded from the journal reports while its env values are missing.
ENV_AT_REST = "env-values-not-persisted"
#: Marks a journaled pod whose env values were blanked (never sent to the API server).
_ENV_BLANKED = ANNOTATION + "env-values-blanked"


def at_rest(pod: Pod) -> Pod:
    """The pod as the journal keeps it: env values blanked, since the agent resolved them and
    they may come from Secrets, which must never reach a disk."""
    containers = [
        *(pod.get("spec", {}).get("initContainers") or []),
        *(pod.get("spec", {}).get("containers") or []),
    ]
    if not any(c.get("env") for c in containers):
        return pod
    stored: Pod = deep_copy(pod)
    for kind in ("initContainers", "containers"):
        for container in stored.get("spec", {}).get(kind) or []:
            if container.get("env"):
                container["env"] = [{"name": e["name"], "value": ""} for e in container["env"]]
    stored["metadata"].setdefault("annotations", {})[_ENV_BLANKED] = "true"
    return stored


def had_env_values(pod: Pod) -> bool:
    """Whether `pod` was journaled with its env values blanked (the marker is removed)."""
    return (pod.get("metadata", {}).get("annotations") or {}).pop(_ENV_BLANKED, None) is not None
