"""Pod status from the runtime's container statuses and the provider's pod state, with the
kubelet's rules: container states and reasons (Completed, Error, OOMKilled, ErrImagePull, ...),
the phase (the kubelet's getPhase) and the pod conditions. Pure functions, except that condition
transition times are remembered in the state."""

from __future__ import annotations

import datetime
from typing import Any

from ...sdk import rfc3339
from .client import cri
from .state import ContainerState, PodState

TERMINAL = ("Succeeded", "Failed")


def nano_time(nanoseconds: int) -> str | None:
    """A CRI timestamp (nanoseconds since the epoch) as metav1.Time; None for 0 (never)."""
    if not nanoseconds:
        return None
    return rfc3339(datetime.datetime.fromtimestamp(nanoseconds / 1e9, datetime.UTC))


def terminated_of(status: Any, container_id: str) -> dict[str, Any]:
    """A v1 ContainerStateTerminated from an exited CRI ContainerStatus."""
    reason = status.reason or ("Completed" if status.exit_code == 0 else "Error")
    terminated: dict[str, Any] = {
        "exitCode": int(status.exit_code),
        "reason": reason,
        "startedAt": nano_time(status.started_at),
        "finishedAt": nano_time(status.finished_at),
        "containerID": f"containerd://{container_id}",
    }
    if status.message:
        terminated["message"] = status.message
    return terminated


def running(state: ContainerState) -> bool:
    return state.status is not None and state.status.state == cri.CONTAINER_RUNNING


def container_status(state: ContainerState, container: dict[str, Any]) -> dict[str, Any]:
    cri_status = state.status
    result: dict[str, Any] = {
        "name": state.name,
        "image": str(container.get("image") or ""),
        "imageID": str(cri_status.image_ref) if cri_status is not None else "",
        "restartCount": state.restart_count,
        "ready": False,
        "started": False,
        "lastState": {"terminated": state.last_terminated}
        if state.last_terminated and not state.done
        else {},
    }
    if state.container_id:
        result["containerID"] = f"containerd://{state.container_id}"
    if running(state):
        result["state"] = {"running": {"startedAt": nano_time(cri_status.started_at)}}
        # Until its probes have had their say (probes.py): started after the startup probe,
        # ready after the readiness probe; without them, at once.
        probed = state.probed_id == state.container_id
        result["started"] = state.started if probed else False
        result["ready"] = (state.ready if probed else False) and not state.init
    elif state.done and state.last_terminated:
        result["state"] = {"terminated": state.last_terminated}
        # A finished run's previous one is what lastState shows.
        result["lastState"] = {}
    else:
        waiting: dict[str, Any] = {"reason": state.waiting_reason or "ContainerCreating"}
        if state.waiting_message:
            waiting["message"] = state.waiting_message
        result["state"] = {"waiting": waiting}
    return result


def phase(state: PodState) -> str:
    """The kubelet's getPhase. A pod that failed for good (deadline exceeded, init container
    failed) is Failed once none of its containers runs: as the kubelet's status manager, a pod is
    never terminal while it may still hold running containers."""
    if state.failed_reason and not any(running(c) for c in state.containers.values()):
        return "Failed"
    if not state.init_done:
        return "Pending"
    policy = (state.pod.get("spec") or {}).get("restartPolicy") or "Always"
    run = wait = stopped = succeeded = 0
    for container in state.app_containers:
        if running(container):
            run += 1
        elif container.done:
            stopped += 1
            succeeded += (container.last_terminated or {}).get("exitCode") == 0
        elif container.last_terminated is not None:
            run += 1  # restarting (back-off): the kubelet counts it as running
        else:
            wait += 1
    if wait:
        return "Pending"
    if run:
        return "Running"
    if stopped and stopped == succeeded:
        return "Succeeded"
    if policy == "Always":
        return "Running"
    return "Failed" if stopped else "Pending"


def _condition(state: PodState, kind: str, ok: bool, reason: str = "", message: str = "") -> Any:
    wanted = "True" if ok else "False"
    previous = state.transitions.get(kind)
    if previous is None or previous[0] != wanted:
        state.transitions[kind] = (wanted, rfc3339())
    condition: dict[str, Any] = {
        "type": kind,
        "status": wanted,
        "lastProbeTime": None,
        "lastTransitionTime": state.transitions[kind][1],
    }
    if not ok and reason:
        condition["reason"] = reason
    if not ok and message:
        condition["message"] = message
    return condition


def pod_status(state: PodState, host_ip: str) -> dict[str, Any]:
    pod_phase = phase(state)
    statuses = {
        name: container_status(c, state.spec_of(name)) for name, c in state.containers.items()
    }
    unready = [c.name for c in state.app_containers if not statuses[c.name]["ready"]]
    incomplete = [
        c.name
        for c in state.init_containers
        if not (c.done and (c.last_terminated or {}).get("exitCode") == 0)
    ]
    ready = not unready and pod_phase not in TERMINAL
    if pod_phase == "Succeeded":
        reason, message = "PodCompleted", ""
    else:
        reason = "ContainersNotReady"
        message = f"containers with unready status: [{' '.join(unready)}]" if unready else ""
    ips = [state.pod_ip] if state.pod_ip else []
    if not ips and (state.pod.get("spec") or {}).get("hostNetwork") and state.sandbox_id:
        # The runtime gives a host-network sandbox no address of its own: as the kubelet does,
        # the pod's IP is the node's (what the downward API's status.podIP then carries).
        ips = [host_ip]
    status: dict[str, Any] = {
        "phase": pod_phase,
        "conditions": [
            _condition(state, "PodReadyToStartContainers", state.sandbox_id is not None),
            _condition(
                state,
                "Initialized",
                not incomplete,
                "ContainersNotInitialized",
                f"containers with incomplete status: [{' '.join(incomplete)}]",
            ),
            _condition(state, "Ready", ready, reason, message),
            _condition(state, "ContainersReady", ready, reason, message),
            _condition(state, "PodScheduled", True),
        ],
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "startTime": state.start_time,
        "containerStatuses": [statuses[c.name] for c in state.app_containers],
    }
    if ips:
        status["podIP"] = ips[0]
        status["podIPs"] = [{"ip": ip} for ip in ips]
    if state.init_containers:
        status["initContainerStatuses"] = [statuses[c.name] for c in state.init_containers]
    if state.failed_reason and pod_phase == "Failed":
        status["reason"] = state.failed_reason
        status["message"] = state.failed_message
    return status
