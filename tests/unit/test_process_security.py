"""The process provider's user switching (runAsUser, runAsGroup, supplementalGroups, fsGroup,
runAsNonRoot) with real processes: effective values, the container's and exec sessions' ids, and
the kubelet's CreateContainerConfigError for runAsNonRoot violations."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from virtual_kubelet.providers.process.launch import (
    ConfigError,
    LaunchError,
    Security,
    effective_security,
    identity,
)
from virtual_kubelet.sdk import ContainerIO, Pod

from .test_process_provider import Harness, make_pod, run_test, sh, status_of
from .test_process_provider_api import Capture

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")


def waiting(reason: str) -> Callable[[Pod], bool]:
    return lambda p: (status_of(p)["state"].get("waiting") or {}).get("reason") == reason


def test_effective_values_container_over_pod() -> None:
    pod = make_pod(
        "p",
        [{"name": "main", "securityContext": {"runAsUser": 4242, "runAsNonRoot": False}}],
        securityContext={
            "runAsUser": 5,
            "runAsGroup": 6,
            "runAsNonRoot": True,
            "supplementalGroups": [10, 11],
            "fsGroup": 9,
        },
    )
    container = pod["spec"]["containers"][0]
    assert effective_security(pod, container) == Security(4242, 6, False, (10, 11), 9)
    assert effective_security(make_pod("q", [{"name": "main"}]), {"name": "main"}) == Security()
    # fsGroup is added to the supplementary groups, as the kubelet does.
    assert identity(pod, container, agent_uid=0) == {"uid": 4242, "gid": 6, "groups": [9, 10, 11]}
    # No runAsGroup: the uid's primary group in the password database, else 0 (as runc).
    nobody = make_pod("n", [{"name": "main"}], securityContext={"runAsUser": 65534})
    assert identity(nobody, {"name": "main"}, agent_uid=0) == {
        "uid": 65534,
        "gid": 65534,
        "groups": [],
    }
    unknown = make_pod("u", [{"name": "main"}], securityContext={"runAsUser": 4242424})
    assert identity(unknown, {"name": "main"}, agent_uid=0) == {
        "uid": 4242424,
        "gid": 0,
        "groups": [],
    }
    # Nothing set: the agent's user, unchanged.
    assert identity(make_pod("h", [{"name": "main"}]), {"name": "main"}, agent_uid=0) is None


def test_run_as_non_root_and_non_root_agent_errors() -> None:
    def check(sc: dict[str, object], agent_uid: int) -> None:
        pod = make_pod("p", [{"name": "main"}], securityContext=sc)
        identity(pod, pod["spec"]["containers"][0], agent_uid=agent_uid)

    with pytest.raises(ConfigError, match=r"^container's runAsUser breaks non-root policy \(pod"):
        check({"runAsNonRoot": True, "runAsUser": 0}, agent_uid=1000)
    with pytest.raises(ConfigError, match="container has runAsNonRoot and image will run as root"):
        check({"runAsNonRoot": True}, agent_uid=0)
    check({"runAsNonRoot": True}, agent_uid=1000)  # runs as the agent's uid 1000
    check({"runAsNonRoot": True, "runAsUser": 1000}, agent_uid=0)
    with pytest.raises(LaunchError, match=r"^cannot switch to user 1000: the agent does not run"):
        check({"runAsUser": 1000}, agent_uid=1001)


@needs_root
def test_container_and_exec_run_as_the_pod_user(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        pod = make_pod(
            "ids",
            [sh("id -u; id -g; id -G; exec sleep 30")],
            securityContext={
                "runAsUser": 65534,
                "runAsGroup": 65534,
                "supplementalGroups": [1234],
            },
        )
        await h.provider.create_pod(pod)
        running = await h.running("ids")
        await h.wait("ids", lambda _: h.log_text(running).count("\n") >= 3)
        lines = [line.split(" ", 3)[3] for line in h.log_text(running).splitlines()]
        assert lines == ["65534", "65534", "65534 1234"]
        # The shim itself keeps its privileges: it wrote the log as root.
        assert (h.state_dir / "process" / pod["metadata"]["uid"]).stat().st_uid == 0
        out = Capture()
        io = ContainerIO(stdin=None, stdout=out, stderr=Capture())
        argv = ["sh", "-c", "id -u; id -g; id -G; pwd >/dev/null && echo cwd-ok"]
        code = await h.provider.run_in_container("default", "ids", "main", argv, io)
        assert (code, out.data) == (0, b"65534\n65534\n65534 1234\ncwd-ok\n")

    run_test(tmp_path, body)


def test_run_as_non_root_with_uid_0_is_create_container_config_error(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        pod = make_pod(
            "root",
            [sh("exec sleep 30", securityContext={"runAsUser": 0})],
            securityContext={"runAsNonRoot": True},
        )
        await h.provider.create_pod(pod)
        bad = await h.wait("root", waiting("CreateContainerConfigError"))
        uid = pod["metadata"]["uid"]
        assert status_of(bad)["state"]["waiting"]["message"] == (
            f'container\'s runAsUser breaks non-root policy (pod: "root_default({uid})", '
            "container: main)"
        )
        # Retried like other configuration errors; the provider keeps working.
        await h.wait("root", lambda p: status_of(p)["restartCount"] >= 1)
        await h.provider.create_pod(make_pod("good", [sh("exec sleep 30")]))
        await h.running("good")

    run_test(tmp_path, body)
