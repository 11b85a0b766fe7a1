"""Batch tasks as a pod status, one task per container: active/preparing -> waiting (Pending),
running -> running, completed -> terminated with the exit code and failure information. The pod is
Succeeded when every task completed with 0, Failed when every task completed and one did not."""

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


def _succeeded(task: models.BatchTask | None) -> bool:
    info = task.execution_info if task is not None else None
    return info is not None and info.exit_code == 0 and info.failure_info is None


#: A task that is gone: like the kubelet's ContainerStatusUnknown, exit code 137.
LOST = {
    "exitCode": 137,
    "reason": "TaskLost",
    "message": "the Batch task is gone (its task or job was deleted outside virtual-kubelet)",
}


def container_status(
    container: dict[str, Any],
    task: models.BatchTask | None,
    task_ref: str,
    started: str,
    why: str,
    lost_at: str | None = None,
) -> dict[str, Any]:
    """One container's status from its task (None: added and not yet listed, or gone since
    `lost_at`)."""
    shown: dict[str, Any] = {
        "name": container["name"],
        "image": container.get("image", ""),
        "imageID": "",
        "containerID": f"azurebatch://{task_ref}",
        "restartCount": 0,
        "ready": False,
        "started": False,
    }
    state = state_of(task)
    info = task.execution_info if task is not None else None
    if task is None and lost_at is not None:
        shown["state"] = {"terminated": {**LOST, "startedAt": started, "finishedAt": lost_at}}
    elif state in ("active", "preparing"):
        reason = "TaskPreparing" if state == "preparing" else "TaskQueued"
        shown["state"] = {"waiting": {"reason": reason, "message": why or f"Batch task is {state}"}}
    elif state == "running":
        shown["ready"] = shown["started"] = True
        begun = _time(info.start_time if info else None) or started
        shown["state"] = {"running": {"startedAt": begun}}
    else:
        exit_code = info.exit_code if info is not None else None
        failure = info.failure_info if info is not None else None
        terminated: dict[str, Any] = {
            "exitCode": exit_code if exit_code is not None else 1,
            "startedAt": _time(info.start_time if info else None) or started,
            "finishedAt": _time(info.end_time if info else None) or started,
            "containerID": shown["containerID"],
        }
        if failure is not None:
            terminated["reason"] = failure.code or "TaskFailed"
            terminated["message"] = failure.message or ""
        else:
            terminated["reason"] = "Completed" if exit_code == 0 else "Error"
        shown["state"] = {"terminated": terminated}
    return shown


def _phase(states: list[str], tasks: list[models.BatchTask | None]) -> str:
    if all(s == "completed" for s in states):
        return "Succeeded" if all(_succeeded(t) for t in tasks) else "Failed"
    if all(s in ("running", "completed") for s in states):
        return "Running"
    return "Pending"


def pod_status(
    pod: Pod,
    tasks: list[models.BatchTask | None],
    refs: list[str],
    host_ip: str,
    why: str = "",
    lost_at: str | None = None,
) -> PodStatus:
    """The status of `pod` whose containers' tasks are `tasks` (named `refs`), in order; with
    `lost_at`, a task that is None is gone (since then) rather than not yet listed."""
    containers = pod["spec"]["containers"]
    started = pod.get("status", {}).get("startTime") or rfc3339()
    statuses = [
        container_status(c, t, r, started, why, lost_at)
        for c, t, r in zip(containers, tasks, refs, strict=True)
    ]
    states = ["completed" if t is None and lost_at else state_of(t) for t in tasks]
    phase = _phase(states, tasks)
    ready = "True" if phase == "Running" and all(s["ready"] for s in statuses) else "False"
    moments = [t.state_transition_time for t in tasks if t is not None]
    since = _time(max(moments)) if moments else started
    status: PodStatus = {
        "phase": phase,
        "startTime": started,
        "hostIP": host_ip,
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": started},
            {"type": "Initialized", "status": "True", "lastTransitionTime": started},
            {"type": "ContainersReady", "status": ready, "lastTransitionTime": since},
            {"type": "Ready", "status": ready, "lastTransitionTime": since},
        ],
        "containerStatuses": statuses,
    }
    if phase == "Failed":
        messages = [
            f"{s['name']}: {s['state']['terminated']['message']}"
            for s in statuses
            if s["state"]["terminated"].get("message")
        ]
        if messages:
            status["message"] = "; ".join(messages)
    return status
