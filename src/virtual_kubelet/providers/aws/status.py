"""An ECS task (as DescribeTasks returns it) as a pod status. Pure.

lastStatus PROVISIONING / PENDING / ACTIVATING -> Pending; RUNNING and the stopping states ->
Running; STOPPED -> Succeeded only when every essential container exited 0, else Failed with the
container's real exit code and the task's stop code and reason (the old provider called every
stopped task Succeeded). Container states come from the task's own `containers`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ...sdk import Pod, PodStatus, rfc3339

PENDING_STATES = ("PROVISIONING", "PENDING", "ACTIVATING")
#: A container ECS never started (image pull failed, a dependency failed) has no exit code; it
#: is reported as the kubelet reports a container that could not run.
NEVER_RAN_EXIT_CODE = 128


def timestamp(value: Any) -> str | None:
    """An RFC 3339 time (seconds) from botocore's datetime, or None."""
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return None


def pod_ip(task: dict[str, Any]) -> str | None:
    """The task's private IPv4 address, from its ENI attachment."""
    for attachment in task.get("attachments") or []:
        if attachment.get("type") != "ElasticNetworkInterface":
            continue
        for detail in attachment.get("details") or []:
            if detail.get("name") == "privateIPv4Address" and detail.get("value"):
                return str(detail["value"])
    return None


def _condition(kind: str, ok: bool, reason: str = "", message: str = "") -> dict[str, Any]:
    condition: dict[str, Any] = {
        "type": kind,
        "status": "True" if ok else "False",
        "lastTransitionTime": rfc3339(),
    }
    if reason:
        condition["reason"] = reason
    if message:
        condition["message"] = message
    return condition


def _container_status(
    spec: dict[str, Any], found: dict[str, Any] | None, task: dict[str, Any]
) -> dict[str, Any]:
    status: dict[str, Any] = {
        "name": spec["name"],
        "image": spec.get("image", ""),
        "imageID": (found or {}).get("imageDigest") or "",
        "restartCount": 0,
        "ready": False,
        "started": False,
    }
    if found and found.get("runtimeId"):
        status["containerID"] = f"ecs://{found['runtimeId']}"
    task_state = task.get("lastStatus", "")
    state = (found or {}).get("lastStatus") or ""
    started = timestamp(task.get("startedAt")) or timestamp(task.get("createdAt"))
    if state == "STOPPED" or task_state == "STOPPED":
        code = (found or {}).get("exitCode")
        terminated: dict[str, Any] = {
            "exitCode": NEVER_RAN_EXIT_CODE if code is None else int(code),
            "reason": "Completed" if code == 0 else ("Error" if code is not None else "StartError"),
            "finishedAt": timestamp(task.get("stoppedAt"))
            or timestamp(task.get("executionStoppedAt"))
            or rfc3339(),
        }
        if started:
            terminated["startedAt"] = started
        message = (found or {}).get("reason") or (
            "" if code is not None else task.get("stoppedReason")
        )
        if message:
            terminated["message"] = str(message)
        status["state"] = {"terminated": terminated}
    elif state == "RUNNING":
        healthy = (found or {}).get("healthStatus") != "UNHEALTHY"
        status.update(ready=healthy, started=True)
        status["state"] = {"running": {"startedAt": started or rfc3339()}}
    else:
        status["state"] = {
            "waiting": {
                "reason": "ContainerCreating",
                "message": f"ECS task is {task_state or 'being created'}",
            }
        }
    return status


def pod_status(pod: Pod, task: dict[str, Any] | None, host_ip: str) -> PodStatus:
    """The status of `pod` whose task is `task` (None: ECS does not know the task)."""
    spec = pod["spec"]
    previous = pod.get("status") or {}
    status: PodStatus = {
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "qosClass": previous.get("qosClass", "BestEffort"),
    }
    if task is None:
        status.update(
            phase="Failed",
            reason="TaskLost",
            message="ECS no longer knows this pod's task",
            startTime=previous.get("startTime") or rfc3339(),
            conditions=[_condition("Ready", False, "TaskLost")],
        )
        return status
    by_name = {c.get("name"): c for c in task.get("containers") or []}
    inits = [
        _container_status(c, by_name.get(c["name"]), task) for c in spec.get("initContainers") or []
    ]
    mains = [
        _container_status(c, by_name.get(c["name"]), task) for c in spec.get("containers") or []
    ]
    status["containerStatuses"] = mains
    if inits:
        status["initContainerStatuses"] = inits
    status["startTime"] = timestamp(task.get("createdAt")) or previous.get("startTime") or rfc3339()
    ip = pod_ip(task)
    if ip:
        status["podIP"] = ip
        status["podIPs"] = [{"ip": ip}]
    last = task.get("lastStatus", "")
    initialized = all(s["state"].get("terminated", {}).get("exitCode", 1) == 0 for s in inits)
    message = ""
    if last in PENDING_STATES or not last:
        phase = "Pending"
        message = f"ECS task is {last or 'being created'}"
    elif last != "STOPPED":
        phase = "Running"
    else:
        codes = [s["state"]["terminated"]["exitCode"] for s in mains]
        if codes and all(code == 0 for code in codes) and initialized:
            phase = "Succeeded"
        else:
            phase = "Failed"
            status["reason"] = str(task.get("stopCode") or "Error")
            failed = ", ".join(
                f"{s['name']}={s['state']['terminated']['exitCode']}"
                for s in inits + mains
                if s["state"]["terminated"]["exitCode"] != 0
            )
            message = str(task.get("stoppedReason") or "the task stopped")
            if failed:
                message += f" (exit codes: {failed})"
            status["message"] = message
    ready = phase == "Running" and all(s["ready"] for s in mains)
    status["phase"] = phase
    if phase == "Pending":
        status["message"] = message
    status["conditions"] = [
        _condition("PodScheduled", True),
        _condition("Initialized", initialized or not inits),
        _condition("ContainersReady", ready),
        _condition("Ready", ready, "" if ready else "ContainersNotReady"),
    ]
    return status
