"""Pod status arithmetic: what to PATCH given the API's status and the provider's (pure functions).

The status subresource is written with a strategic merge patch that carries `metadata.uid` (so a
new pod with the same name is never patched by mistake) and only status fields: labels and
annotations written by others can never be overwritten, unlike upstream's full-object PUT.
Conditions merge by type, so conditions other controllers own survive.
"""

from __future__ import annotations

from typing import Any

from ..kube.timefmt import rfc3339

#: Status fields a provider may set; anything else it returns is ignored.
PROVIDER_FIELDS = (
    "phase",
    "message",
    "reason",
    "hostIP",
    "hostIPs",
    "podIP",
    "podIPs",
    "startTime",
    "containerStatuses",
    "initContainerStatuses",
    "ephemeralContainerStatuses",
)
TERMINAL = ("Succeeded", "Failed")
#: Our own condition, present only while the provider refuses a pod.
SYNC_CONDITION = "virtual-kubelet.io/ProviderSynced"
_TIMESTAMPS = ("lastProbeTime", "lastTransitionTime", "lastHeartbeatTime")


def _without_timestamps(condition: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in condition.items() if k not in _TIMESTAMPS}


def _same_condition(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return _without_timestamps(a) == _without_timestamps(b)


def status_patch(
    api_pod: dict[str, Any], provider_status: dict[str, Any], host_ips: list[str]
) -> dict[str, Any] | None:
    """The patch that brings `api_pod`'s status to the provider's view, or None if it is there."""
    current = api_pod.get("status", {})
    desired: dict[str, Any] = {
        k: provider_status[k] for k in PROVIDER_FIELDS if k in provider_status
    }
    if host_ips and not desired.get("hostIP"):
        desired["hostIP"] = host_ips[0]
        desired["hostIPs"] = [{"ip": ip} for ip in host_ips]
    if desired.get("podIP") and not desired.get("podIPs"):
        desired["podIPs"] = [{"ip": desired["podIP"]}]
    changed = {k: v for k, v in desired.items() if current.get(k) != v}
    existing = {c["type"]: c for c in current.get("conditions", [])}
    conditions = []
    for condition in provider_status.get("conditions", []):
        old = existing.get(condition.get("type", ""))
        if old is None or not _same_condition(old, condition):
            if old is not None and old.get("status") == condition.get("status"):
                condition = {**condition, "lastTransitionTime": old.get("lastTransitionTime")}
            conditions.append(condition)
    if not changed and not conditions:
        return None
    if conditions:
        changed["conditions"] = conditions
    return {"metadata": {"uid": api_pod["metadata"]["uid"]}, "status": changed}


def sync_condition(ok: bool, reason: str, message: str) -> dict[str, Any]:
    return {
        "type": SYNC_CONDITION,
        "status": "True" if ok else "False",
        "reason": reason,
        "message": message,
        "lastTransitionTime": rfc3339(),
    }


def failed_patch(api_pod: dict[str, Any], reason: str, message: str) -> dict[str, Any]:
    """Mark the pod Failed: the provider will never run it."""
    now = rfc3339()
    return {
        "metadata": {"uid": api_pod["metadata"]["uid"]},
        "status": {
            "phase": "Failed",
            "reason": reason,
            "message": message,
            "conditions": [
                sync_condition(False, reason, message),
                {"type": "Ready", "status": "False", "reason": reason, "lastTransitionTime": now},
            ],
        },
    }


def waiting_patch(api_pod: dict[str, Any], reason: str, message: str) -> dict[str, Any]:
    """Keep the pod Pending and say why in its conditions and container states (what `kubectl get
    pods` shows in STATUS, e.g. CreateContainerConfigError)."""
    containers = api_pod["spec"].get("containers", [])
    return {
        "metadata": {"uid": api_pod["metadata"]["uid"]},
        "status": {
            "conditions": [sync_condition(False, reason, message)],
            "containerStatuses": [
                {
                    "name": c["name"],
                    "image": c.get("image", ""),
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "started": False,
                    "state": {"waiting": {"reason": reason, "message": message}},
                }
                for c in containers
            ],
        },
    }


def has_failing_sync_condition(api_pod: dict[str, Any]) -> bool:
    return any(
        c.get("type") == SYNC_CONDITION and c.get("status") == "False"
        for c in api_pod.get("status", {}).get("conditions", [])
    )
