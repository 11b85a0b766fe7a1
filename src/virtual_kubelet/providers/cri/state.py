"""What the cri provider knows about one pod and its containers between two looks at the runtime:
which sandbox and container are current, restarts and back-off, the waiting reason the kubelet
would show, and the last termination. The runtime holds the truth about running containers; this
holds what the runtime cannot say (why a container is not there yet, when to try again)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from ...sdk import Pod


@dataclass
class ContainerState:
    """One container of the pod, across its runs (attempts)."""

    name: str
    init: bool
    #: The current run's CRI container id (None: none created yet, or it failed to be).
    container_id: str | None = None
    #: The attempt number of the current run; the next run gets attempt + 1.
    attempt: int = 0
    restart_count: int = 0
    #: The previous run's CRI container id (kept so `kubectl logs --previous` has its file).
    previous_id: str | None = None
    previous_attempt: int | None = None
    backoff: float = 0.0
    #: Monotonic time before which nothing is retried (a back-off in progress).
    retry_at: float = 0.0
    waiting_reason: str = "ContainerCreating"
    waiting_message: str = ""
    #: The kubelet's image pull back-off: failures so far.
    pull_failures: int = 0
    #: The last CRI ContainerStatus of the current run.
    status: Any = None
    #: The run whose exit was already acted on (restart decided or terminated for good).
    handled_exit: str | None = None
    last_terminated: dict[str, Any] | None = None
    #: The next exit is for a new image: restart at once, whatever the policy.
    forced: bool = False
    #: Why the current run's postStart hook failed (it was stopped for that).
    hook_error: str | None = None
    #: Stays terminated (restartPolicy says no more runs).
    done: bool = False
    #: The run the probes below watch, their task, and what they found.
    probed_id: str | None = None
    probes: asyncio.Task[None] | None = field(default=None, repr=False)
    ready: bool = False
    started: bool = False


@dataclass
class PodState:
    pod: Pod
    sandbox_id: str | None = None
    pod_ip: str = ""
    start_time: str | None = None
    #: The sandbox's creation (seconds since the epoch): where activeDeadlineSeconds counts from.
    started_at: float | None = None
    containers: dict[str, ContainerState] = field(default_factory=dict)
    #: Set when the pod can never run (an init container failed for good, a bad spec).
    failed_reason: str | None = None
    failed_message: str = ""
    #: Condition -> (status, lastTransitionTime), so transition times only move on a change.
    transitions: dict[str, tuple[str, str]] = field(default_factory=dict)

    @classmethod
    def new(cls, pod: Pod) -> PodState:
        spec = pod.get("spec") or {}
        state = cls(pod=pod)
        for kind, init in (("initContainers", True), ("containers", False)):
            for container in spec.get(kind) or []:
                name = str(container["name"])
                state.containers[name] = ContainerState(name=name, init=init)
        return state

    def spec_of(self, name: str) -> dict[str, Any]:
        spec = self.pod.get("spec") or {}
        for kind in ("initContainers", "containers"):
            for container in spec.get(kind) or []:
                if container.get("name") == name:
                    return dict(container)
        raise KeyError(name)

    @property
    def init_containers(self) -> list[ContainerState]:
        return [c for c in self.containers.values() if c.init]

    @property
    def app_containers(self) -> list[ContainerState]:
        return [c for c in self.containers.values() if not c.init]

    @property
    def init_done(self) -> bool:
        return all(
            c.done and (c.last_terminated or {}).get("exitCode") == 0 for c in self.init_containers
        )
