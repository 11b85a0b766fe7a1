"""What the pod controller knows about each pod it handed to the provider (`TrackedPod`), and the
spec hash that tells whether the provider's copy of a pod is current.

The hash travels with the pod as the annotation `virtual-kubelet.io/spec-hash`; a provider returns
it with the pods it lists, so a restarted agent knows which adopted pods need an update.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import orjson

from ..sdk import SPEC_HASH_ANNOTATION, Pod

__all__ = ["SPEC_HASH", "TrackedPod", "spec_hash"]

SPEC_HASH = SPEC_HASH_ANNOTATION
#: The parts of the spec a provider acts on; a change in any of them means `update_pod`.
_SPEC_FIELDS = (
    "containers",
    "initContainers",
    "ephemeralContainers",
    "activeDeadlineSeconds",
    "tolerations",
)


def spec_hash(pod: Pod) -> str:
    """What, when changed, makes the provider's copy stale (status never counts)."""
    meta = pod.get("metadata", {})
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k != SPEC_HASH}
    relevant = {
        "spec": {k: pod.get("spec", {}).get(k) for k in _SPEC_FIELDS},
        "labels": meta.get("labels") or {},
        "annotations": annotations,
    }
    return hashlib.sha256(orjson.dumps(relevant, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


@dataclass(slots=True)
class TrackedPod:
    """What we know about one pod in the provider (one per pod: slots keep it small)."""

    uid: str
    in_provider: bool = False
    spec_hash: str | None = None
    failures: int = 0
    gave_up: bool = False
    delete_requested: bool = False
    #: When the API object goes even if the provider still reports the pod, and the grace period
    #: it was computed from (a shortened grace period, e.g. a second `kubectl delete`, resets it).
    deletion_deadline: float | None = None
    deletion_grace: int | None = None
    #: The last API object seen before it was deleted (what `delete_pod` is given), or the
    #: provider's copy of an adopted pod.
    last_pod: Pod | None = None
    waiting_reason: str | None = None
