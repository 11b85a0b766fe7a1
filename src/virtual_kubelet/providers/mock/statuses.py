"""Status shapes the mock reports: pod conditions and container states, as a kubelet writes them."""

from __future__ import annotations

from typing import Any

from ...sdk import Pod, deep_copy, rfc3339


def public_copy(pod: Pod) -> Pod:
    copy: Pod = deep_copy(pod)
    copy.pop("_stopping", None)
    return copy


def pod_conditions(
    *, initialized: bool, ready: bool, reason: str | None = None
) -> list[dict[str, Any]]:
    now = rfc3339()

    def condition(kind: str, ok: bool, why: str | None = None) -> dict[str, Any]:
        c: dict[str, Any] = {
            "type": kind,
            "status": "True" if ok else "False",
            "lastTransitionTime": now,
        }
        if not ok and why:
            c["reason"] = why
        return c

    return [
        condition("PodReadyToStartContainers", True),
        condition("Initialized", initialized, "ContainersNotInitialized"),
        condition("Ready", ready, reason or "ContainersNotReady"),
        condition("ContainersReady", ready, reason or "ContainersNotReady"),
        condition("PodScheduled", True),
    ]


def container_base(container: dict[str, Any]) -> dict[str, Any]:
    image = container.get("image", "")
    return {
        "name": container["name"],
        "image": image,
        "imageID": f"mock://{image}",
        "restartCount": 0,
    }


def waiting_state(container: dict[str, Any], reason: str) -> dict[str, Any]:
    return {
        **container_base(container),
        "ready": False,
        "started": False,
        "state": {"waiting": {"reason": reason}},
    }


def running_state(container: dict[str, Any], started: str) -> dict[str, Any]:
    return {
        **container_base(container),
        "containerID": f"mock://{container['name']}",
        "ready": True,
        "started": True,
        "state": {"running": {"startedAt": started}},
    }


def terminated_state(
    container: dict[str, Any], code: int, started: str, finished: str, reason: str | None = None
) -> dict[str, Any]:
    return {
        **container_base(container),
        "containerID": f"mock://{container['name']}",
        "ready": False,
        "started": False,
        "state": {
            "terminated": {
                "exitCode": code,
                "reason": reason or ("Completed" if code == 0 else "Error"),
                "startedAt": started,
                "finishedAt": finished,
            }
        },
    }
