"""Pod status from the process provider's records, with the kubelet's rules: container states,
the pod phase (the kubelet's getPhase) and the PodReadyToStartContainers, Initialized,
ContainersReady, Ready and PodScheduled conditions. Pure functions, except that condition
transition times are remembered in the record."""

from __future__ import annotations

import datetime
from typing import Any

from ...sdk import rfc3339
from ...sdk.restart_policy import go_duration as go_duration  # moved to the SDK
from .state import ContainerRecord, PodRecord

TERMINAL = ("Succeeded", "Failed")


def timestamp(epoch: float) -> str:
    return rfc3339(datetime.datetime.fromtimestamp(epoch, datetime.UTC))


def containers_of(pod: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [c for c in (pod.get("spec") or {}).get(kind) or [] if isinstance(c, dict)]


def container_status(record: ContainerRecord, container: dict[str, Any]) -> dict[str, Any]:
    image = str(container.get("image") or record.image)
    status: dict[str, Any] = {
        "name": record.name,
        "image": image,
        "imageID": f"process://{image}",
        "ready": record.ready,
        "started": record.started,
        "restartCount": record.restart_count,
    }
    if record.container_id:
        status["containerID"] = f"process://{record.container_id}"
    if record.state == "running" and record.started_at is not None:
        status["state"] = {"running": {"startedAt": timestamp(record.started_at)}}
    elif record.state == "terminated" and record.terminated is not None:
        status["state"] = {"terminated": dict(record.terminated)}
    else:
        waiting: dict[str, Any] = {"reason": record.reason or "ContainerCreating"}
        if record.message:
            waiting["message"] = record.message
        status["state"] = {"waiting": waiting}
    status["lastState"] = (
        {"terminated": dict(record.last_terminated)} if record.last_terminated else {}
    )
    return status


def phase(record: PodRecord) -> str:
    """The kubelet's getPhase for the records' current states."""
    if record.phase is not None:
        return record.phase
    pod = record.pod
    policy = (pod.get("spec") or {}).get("restartPolicy") or "Always"
    if not record.init_done:
        return "Pending"
    running = waiting = stopped = succeeded = 0
    for container in containers_of(pod, "containers"):
        state = record.containers[container["name"]]
        if state.state == "running":
            running += 1
        elif state.state == "terminated":
            stopped += 1
            if (state.terminated or {}).get("exitCode") == 0:
                succeeded += 1
        elif state.last_terminated is not None:
            stopped += 1  # waiting to be restarted
        else:
            waiting += 1
    if waiting:
        return "Pending"
    if running:
        return "Running"
    if stopped:
        if policy == "Always":
            return "Running"
        if stopped == succeeded:
            return "Succeeded"
        if policy == "Never":
            return "Failed"
        return "Running"
    return "Pending"


def _condition(
    record: PodRecord, kind: str, ok: bool, reason: str = "", message: str = ""
) -> dict[str, Any]:
    wanted = "True" if ok else "False"
    previous = record.conditions.get(kind)
    if previous is None or previous[0] != wanted:
        record.conditions[kind] = [wanted, rfc3339()]
    condition: dict[str, Any] = {
        "type": kind,
        "status": wanted,
        "lastProbeTime": None,
        "lastTransitionTime": record.conditions[kind][1],
    }
    if not ok and reason:
        condition["reason"] = reason
    if not ok and message:
        condition["message"] = message
    return condition


def conditions(record: PodRecord, pod_phase: str) -> list[dict[str, Any]]:
    pod = record.pod
    incomplete = [
        c["name"]
        for c in containers_of(pod, "initContainers")
        if (record.containers[c["name"]].terminated or {}).get("exitCode") != 0
        or record.containers[c["name"]].state != "terminated"
    ]
    initialized = record.init_done or not incomplete
    unready = [
        c["name"]
        for c in containers_of(pod, "containers")
        if not record.containers[c["name"]].ready
    ]
    ready = not unready and pod_phase not in TERMINAL
    if pod_phase == "Succeeded":
        reason, message = "PodCompleted", ""
    else:
        reason = "ContainersNotReady"
        message = f"containers with unready status: [{' '.join(unready)}]" if unready else ""
    return [
        _condition(record, "PodReadyToStartContainers", True),
        _condition(
            record,
            "Initialized",
            initialized,
            "ContainersNotInitialized",
            f"containers with incomplete status: [{' '.join(incomplete)}]",
        ),
        _condition(record, "Ready", ready, reason, message),
        _condition(record, "ContainersReady", ready, reason, message),
        _condition(record, "PodScheduled", True),
    ]


def pod_status(record: PodRecord, host_ip: str) -> dict[str, Any]:
    pod = record.pod
    given = pod.get("status") or {}
    ips = [i["ip"] for i in given.get("podIPs") or [] if isinstance(i, dict) and i.get("ip")]
    if record.pod_ip:
        ips = [record.pod_ip]  # its own network namespace: this address and no other
    if not ips:
        ips = [str(given.get("podIP") or host_ip)]
    pod_phase = phase(record)
    status: dict[str, Any] = {
        "phase": pod_phase,
        "conditions": conditions(record, pod_phase),
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "podIP": ips[0],
        "podIPs": [{"ip": ip} for ip in ips],
        "startTime": record.start_time,
        "containerStatuses": [
            container_status(record.containers[c["name"]], c)
            for c in containers_of(pod, "containers")
        ],
    }
    init = containers_of(pod, "initContainers")
    if init:
        status["initContainerStatuses"] = [
            container_status(record.containers[c["name"]], c) for c in init
        ]
    if record.reason:
        status["reason"] = record.reason
    if record.message:
        status["message"] = record.message
    return status
