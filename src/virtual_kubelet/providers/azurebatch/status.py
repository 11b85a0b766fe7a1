"""A Batch task as a pod status: active/preparing -> Pending, running -> Running, completed ->
Succeeded or Failed by the exit code and the failure information."""

from __future__ import annotations

import datetime
from typing import Any

from azure.batch import models

from ...sdk import Pod, PodStatus, rfc3339


def state_of(task: models.BatchTask | None) -> str:
    """The task's state as Batch spells it (active, preparing, running, completed)."""
    if task is None:
        return "active"
    return str(getattr(task.state, "value", task.state))


def _time(value: datetime.datetime | None) -> str | None:
    return None if value is None else rfc3339(value)


def _conditions(phase: str, since: str) -> list[dict[str, Any]]:
    ready = "True" if phase == "Running" else "False"
    scheduled = "True"
    return [
        {"type": "PodScheduled", "status": scheduled, "lastTransitionTime": since},
        {"type": "Initialized", "status": "True", "lastTransitionTime": since},
        {"type": "ContainersReady", "status": ready, "lastTransitionTime": since},
        {"type": "Ready", "status": ready, "lastTransitionTime": since},
    ]


def pod_status(pod: Pod, task: models.BatchTask | None, host_ip: str, why: str = "") -> PodStatus:
    """The status of `pod` whose task is `task` (None: added, not yet seen by a poll)."""
    container = pod["spec"]["containers"][0]
    started = pod.get("status", {}).get("startTime") or rfc3339()
    base: dict[str, Any] = {
        "name": container["name"],
        "image": container.get("image", ""),
        "imageID": "",
        "restartCount": 0,
        "ready": False,
    }
    state = state_of(task)
    info = task.execution_info if task is not None else None
    if task is None or state in ("active", "preparing"):
        reason = "TaskPreparing" if state == "preparing" else "TaskQueued"
        message = why or f"Batch task is {state}"
        phase = "Pending"
        base["state"] = {"waiting": {"reason": reason, "message": message}}
    elif state == "running":
        phase = "Running"
        base["ready"] = True
        base["started"] = True
        base["state"] = {
            "running": {"startedAt": _time(info.start_time if info else None) or started}
        }
    else:
        exit_code = info.exit_code if info is not None else None
        failure = info.failure_info if info is not None else None
        terminated: dict[str, Any] = {
            "exitCode": exit_code if exit_code is not None else 1,
            "startedAt": _time(info.start_time if info else None) or started,
            "finishedAt": _time(info.end_time if info else None) or rfc3339(),
        }
        if failure is not None:
            terminated["reason"] = failure.code or "TaskFailed"
            terminated["message"] = failure.message or ""
        elif exit_code == 0:
            terminated["reason"] = "Completed"
        else:
            terminated["reason"] = "Error"
        phase = "Succeeded" if exit_code == 0 and failure is None else "Failed"
        base["state"] = {"terminated": terminated}
    since = _time(task.state_transition_time if task is not None else None) or started
    status: PodStatus = {
        "phase": phase,
        "startTime": started,
        "hostIP": host_ip,
        "conditions": _conditions(phase, since),
        "containerStatuses": [base],
    }
    if phase in ("Succeeded", "Failed") and base["state"]["terminated"].get("message"):
        status["message"] = base["state"]["terminated"]["message"]
    return status
