"""The process provider's restart decision without processes: which exits restart a container,
after which back-off, and what its waiting state says meanwhile (the kubelet's rules)."""

from __future__ import annotations

import pytest

from virtual_kubelet.providers.process.restarts import (
    BackOffSettings,
    Restart,
    RunEnd,
    Terminate,
    decide,
    should_restart,
)

SETTINGS = BackOffSettings(initial=10.0, maximum=300.0, reset_after=600.0)
POD = "web_default(1234)"


def after(
    end: RunEnd,
    backoff: float = 0.0,
    *,
    policy: str = "Always",
    halted: bool = False,
    forced: bool = False,
) -> Restart | Terminate:
    """The decision for app container "app" of POD."""
    return decide(
        end,
        container="app",
        pod=POD,
        policy=policy,
        init=False,
        backoff=backoff,
        settings=SETTINGS,
        halted=halted,
        forced=forced,
    )


@pytest.mark.parametrize(
    ("policy", "code", "init", "restarts"),
    [
        ("Always", 0, False, True),
        ("Always", 1, False, True),
        ("OnFailure", 0, False, False),
        ("OnFailure", 2, False, True),
        ("Never", 1, False, False),
        # Init containers run until they succeed, unless the policy is Never.
        ("Always", 0, True, False),
        ("Always", 1, True, True),
        ("OnFailure", 1, True, True),
        ("Never", 1, True, False),
    ],
)
def test_restart_policy(policy: str, code: int, init: bool, restarts: bool) -> None:
    assert should_restart(policy, code, init=init) is restarts


def test_a_halted_pod_never_restarts_and_a_forced_restart_always_does() -> None:
    assert not should_restart("Always", 1, init=False, halted=True, forced=True)
    assert should_restart("Never", 0, init=False, forced=True)


def test_crash_loop_back_off_doubles_to_its_ceiling() -> None:
    delays = []
    backoff = 0.0
    for _ in range(8):
        decision = after(RunEnd(exit_code=1, ran_for=1.0), backoff)
        assert isinstance(decision, Restart)
        delays.append(decision.delay)
        backoff = decision.backoff
    # The first restart is immediate, then 10 s, 20 s, ... up to 300 s.
    assert delays == [0.0, 10.0, 20.0, 40.0, 80.0, 160.0, 300.0, 300.0]


def test_waiting_reasons() -> None:
    first = after(RunEnd(exit_code=1, ran_for=1.0))
    assert first == Restart(delay=0.0, backoff=10.0, reason="ContainerCreating", message="")
    looping = after(RunEnd(exit_code=1, ran_for=1.0), backoff=20.0)
    assert looping == Restart(
        delay=20.0,
        backoff=40.0,
        reason="CrashLoopBackOff",
        message=f"back-off 20s restarting failed container=app pod={POD}",
    )
    hook = after(RunEnd(exit_code=137, ran_for=1.0, hook_error="boom"))
    assert isinstance(hook, Restart)
    assert (hook.reason, hook.message) == ("PostStartHookError", "boom")
    # A start error keeps its own reason even in the back-off.
    refused = after(
        RunEnd(exit_code=128, start_error="no", start_reason="CreateContainerConfigError"),
        backoff=10.0,
    )
    assert isinstance(refused, Restart)
    assert (refused.delay, refused.reason, refused.message) == (
        10.0,
        "CreateContainerConfigError",
        "no",
    )


def test_a_long_run_resets_the_back_off() -> None:
    decision = after(RunEnd(exit_code=1, ran_for=600.0), backoff=300.0)
    assert isinstance(decision, Restart)
    assert (decision.delay, decision.backoff) == (0.0, 10.0)


def test_a_forced_restart_is_immediate_and_keeps_the_back_off() -> None:
    decision = after(RunEnd(exit_code=0, ran_for=1.0), backoff=80.0, policy="Never", forced=True)
    assert decision == Restart(delay=0.0, backoff=80.0, reason="ContainerCreating", message="")


def test_terminate() -> None:
    assert after(RunEnd(exit_code=0), policy="OnFailure") == Terminate()
    assert after(RunEnd(exit_code=1), halted=True) == Terminate()
