"""What comes after a container's run ended: restart it (now, or after a back-off, showing which
waiting reason) or leave it terminated. The kubelet's rules for `restartPolicy` and the crash-loop
back-off, as pure functions of their inputs: no clock, no files, no processes (a provider reads the
clock and applies the decision to its container). Shared by the process and cri providers.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "BackOffSettings",
    "Restart",
    "RunEnd",
    "Terminate",
    "decide",
    "go_duration",
    "should_restart",
]


def go_duration(seconds: float) -> str:
    """A duration as Go prints it (the kubelet's back-off messages): 10s, 1m20s, 5m0s, 500ms."""
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    minutes, rest = divmod(seconds, 60)
    text = f"{round(rest, 3):g}s"
    if minutes >= 60:
        hours, minutes = divmod(int(minutes), 60)
        return f"{hours}h{int(minutes)}m{text}"
    return f"{int(minutes)}m{text}" if minutes else text


@dataclass(frozen=True)
class BackOffSettings:
    """The crash-loop back-off: the first delay, its ceiling, and how long a run must last for
    the next restart to be immediate again."""

    initial: float
    maximum: float
    reset_after: float


@dataclass(frozen=True)
class RunEnd:
    """How a run ended, as far as the decision goes."""

    exit_code: int
    #: Seconds from its start to its exit (0 for a run that never started).
    ran_for: float = 0.0
    #: Why it could not start (None: it started), and the waiting reason that goes with it.
    start_error: str | None = None
    start_reason: str = "RunContainerError"
    #: Why its postStart hook failed (None: no hook, or it succeeded).
    hook_error: str | None = None


@dataclass(frozen=True)
class Restart:
    """Start the container again after `delay` seconds (0: at once), waiting with `reason` and
    `message` meanwhile; `backoff` is the container's back-off from now on."""

    delay: float
    backoff: float
    reason: str
    message: str


@dataclass(frozen=True)
class Terminate:
    """Leave the container terminated."""


def should_restart(
    policy: str, exit_code: int, *, init: bool, halted: bool = False, forced: bool = False
) -> bool:
    """The kubelet's rule: never once the pod halts (deleted, past its deadline); always when
    the restart is forced (a changed image); init containers until they succeed unless the
    policy is Never; app containers always (Always) or after a failure (OnFailure)."""
    if halted:
        return False
    if forced:
        return True
    if init:
        return exit_code != 0 and policy != "Never"
    return policy == "Always" or (policy == "OnFailure" and exit_code != 0)


def decide(
    end: RunEnd,
    *,
    container: str,
    pod: str,
    policy: str,
    init: bool,
    backoff: float,
    settings: BackOffSettings,
    halted: bool = False,
    forced: bool = False,
) -> Restart | Terminate:
    """What to do with container `container` of pod `pod` (the kubelet's `name_namespace(uid)`)
    after `end`, given its current `backoff` (0 before the first restart)."""
    if not should_restart(policy, end.exit_code, init=init, halted=halted, forced=forced):
        return Terminate()
    if forced:
        delay, backoff_after = 0.0, backoff
    else:
        if end.ran_for >= settings.reset_after:
            backoff = 0.0
        # As the kubelet: the first restart is immediate, then 10 s, 20 s, ... up to 300 s.
        delay = backoff
        backoff_after = settings.initial if delay == 0 else min(delay * 2, settings.maximum)
    if end.start_error is not None:
        reason, message = end.start_reason, end.start_error
    elif delay > 0:
        reason = "CrashLoopBackOff"
        message = f"back-off {go_duration(delay)} restarting failed container={container} pod={pod}"
    elif end.hook_error is not None:
        # The kubelet's waiting reason until the next start (its SyncPod error).
        reason, message = "PostStartHookError", end.hook_error
    else:
        reason, message = "ContainerCreating", ""
    return Restart(delay=delay, backoff=backoff_after, reason=reason, message=message)
