"""A container group (read with its instance view) as a pod status: phase, conditions, podIP and
one container status per container from its current state, previous state and restart count."""

from __future__ import annotations

import datetime
from typing import Any

from azure.mgmt.containerinstance import models as m

from ...sdk import Pod, PodStatus, rfc3339

__all__ = ["container_id", "pod_status"]

_PENDING_PROVISIONING = {"Pending", "Creating", "Accepted", "Repairing", "Updating"}


def _time(value: datetime.datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.UTC)
    return value.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def container_id(group: str, container: str) -> str:
    return f"aci://{group}/{container}"


def _state(state: m.ContainerState | None, fallback_reason: str) -> dict[str, Any]:
    name = (state.state if state else None) or "Waiting"
    if name == "Running":
        return {"running": {"startedAt": _time(state.start_time if state else None) or rfc3339()}}
    if name == "Terminated" and state is not None:
        code = state.exit_code if state.exit_code is not None else 0
        return {
            "terminated": {
                "exitCode": code,
                "reason": "Completed" if code == 0 else (state.detail_status or "Error"),
                "startedAt": _time(state.start_time),
                "finishedAt": _time(state.finish_time),
            }
        }
    reason = (state.detail_status if state else None) or fallback_reason
    return {"waiting": {"reason": reason}}


def _condition(kind: str, ok: bool, reason: str | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {"type": kind, "status": "True" if ok else "False"}
    if reason:
        found["reason"] = reason
    found["lastTransitionTime"] = None
    return found


def pod_status(pod: Pod, group: m.ContainerGroup | None, failure: str | None) -> PodStatus:
    """The status of `pod` run by `group` (None: not created yet). `failure` is why creating
    the group failed for good (ARM said so), shown as a Failed pod."""
    previous: dict[str, Any] = pod.get("status") or {}
    spec = pod["spec"]
    provisioning = (group.provisioning_state if group else None) or "Pending"
    by_name = {c.name: c for c in (group.containers if group else None) or []}
    statuses = []
    for container in spec.get("containers") or []:
        view = getattr(by_name.get(container["name"]), "instance_view", None)
        state = _state(view.current_state if view else None, "ContainerCreating")
        status: dict[str, Any] = {
            "name": container["name"],
            "image": container["image"],
            "imageID": "",
            "state": state,
            "ready": "running" in state,
            "started": "running" in state,
            "restartCount": int(view.restart_count or 0) if view else 0,
        }
        if group is not None:
            status["containerID"] = container_id(str(group.name), container["name"])
        if view is not None and view.previous_state is not None and view.previous_state.state:
            last = _state(view.previous_state, "")
            if "terminated" in last:
                status["lastState"] = last
        statuses.append(status)
    terminated = [s["state"]["terminated"] for s in statuses if "terminated" in s["state"]]
    running = any("running" in s["state"] for s in statuses)
    reason = message = None
    if failure is not None or provisioning in ("Failed", "Canceled"):
        phase, reason = "Failed", "ProviderFailed"
        message = failure or f"ACI provisioning {provisioning.lower()}"
    elif statuses and len(terminated) == len(statuses) and spec.get("restartPolicy") != "Always":
        failed = any(t["exitCode"] != 0 for t in terminated)
        phase = "Failed" if failed and spec.get("restartPolicy") != "OnFailure" else "Succeeded"
        if failed and spec.get("restartPolicy") == "OnFailure":
            phase = "Running"  # ACI restarts it
    elif running:
        phase = "Running"
    else:
        phase = "Pending"
        if provisioning in _PENDING_PROVISIONING:
            reason, message = "ProviderPending", f"ACI provisioning state: {provisioning}"
    ready = phase == "Running" and all(s["ready"] for s in statuses)
    now = rfc3339()
    conditions = [
        _condition("PodScheduled", True),
        _condition("Initialized", group is not None and provisioning not in ("Failed",)),
        _condition("ContainersReady", ready),
        _condition("Ready", ready),
    ]
    old = {c.get("type"): c for c in previous.get("conditions") or []}
    for condition in conditions:
        before = old.get(condition["type"])
        keep = before is not None and before.get("status") == condition["status"]
        condition["lastTransitionTime"] = (before or {}).get("lastTransitionTime") if keep else now
    result: PodStatus = {
        "phase": phase,
        "conditions": conditions,
        "containerStatuses": statuses,
        "startTime": previous.get("startTime") or now,
    }
    if reason:
        result["reason"] = reason
    if message:
        result["message"] = message
    ip = group.ip_address.ip if group is not None and group.ip_address is not None else None
    if ip:
        result["podIP"] = ip
        result["podIPs"] = [{"ip": ip}]
    return result
