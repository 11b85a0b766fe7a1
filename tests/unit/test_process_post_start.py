"""postStart hooks in the process provider, with real processes (no cluster): the hook runs in the
container's environment before any probe, a failed hook kills the container (preStop included)
and the restartPolicy applies, a hanging hook does not hold up a deletion, an adopted container's
hook is not run again; and `Handlers.hook`'s kubelet semantics and messages."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from virtual_kubelet.providers.process.probes import Handlers, go_quote, pod_desc

from .test_process_provider import (
    Harness,
    condition,
    free_port,
    kill_everything,
    make_pod,
    run_test,
    sh,
    status_of,
)


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


async def gone(h: Harness, name: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while await h.provider.get_pod("default", name) is not None:
        assert time.monotonic() < deadline, f"pod {name} not gone in {timeout} s"
        await asyncio.sleep(0.05)


def test_hook_runs_in_the_container_env_before_any_probe(tmp_path: Path) -> None:
    trace = tmp_path / "trace"

    async def body(h: Harness) -> None:
        hook = (
            f"echo hook-start >> {trace}; sleep 0.5; "
            f'echo "$HOSTNAME $GREETING" > hook-out; echo hook-end >> {trace}'
        )
        container = sh(
            "exec sleep 30",
            env=[{"name": "GREETING", "value": "hello"}],
            lifecycle={"postStart": {"exec": {"command": ["sh", "-c", hook]}}},
            readinessProbe={
                "exec": {"command": ["sh", "-c", f"echo ready-probe >> {trace}; cat hook-out"]},
                "periodSeconds": 0.1,
                "timeoutSeconds": 5,
            },
            livenessProbe={
                "exec": {"command": ["sh", "-c", f"echo live-probe >> {trace}"]},
                "periodSeconds": 0.1,
                "timeoutSeconds": 5,
            },
        )
        pod = make_pod("hooked", [container])
        await h.provider.create_pod(pod)
        ready = await h.wait("hooked", lambda p: condition(p, "Ready") == "True")
        assert status_of(ready)["restartCount"] == 0
        events = lines(trace)
        assert events[:2] == ["hook-start", "hook-end"], events
        assert set(events[2:]) <= {"ready-probe", "live-probe"}
        work = h.state_dir / "process" / pod["metadata"]["uid"] / "main" / "work"
        assert (work / "hook-out").read_text() == "hooked hello\n"
        # While the hook ran the container was being created: Pending, neither started nor ready.
        statuses = [(p["status"]["phase"], status_of(p)) for p in h.pushed]
        first_running = next(i for i, (_, s) in enumerate(statuses) if "running" in s["state"])
        assert first_running > 0
        for phase, status in statuses[:first_running]:
            assert phase == "Pending"
            assert status["state"]["waiting"]["reason"] == "ContainerCreating"
            assert status["started"] is False
            assert status["ready"] is False
        assert statuses[first_running][1]["started"] is True
        assert statuses[first_running][1]["ready"] is False  # the readiness probe decides

    run_test(tmp_path, body)


def test_failed_hook_kills_the_container_with_prestop_and_it_restarts(tmp_path: Path) -> None:
    trace = tmp_path / "trace"

    async def body(h: Harness) -> None:
        hook = ["sh", "-c", "echo nope >&2; exit 3"]
        container = sh(
            "exec sleep 30",
            lifecycle={
                "postStart": {"exec": {"command": hook}},
                "preStop": {"exec": {"command": ["sh", "-c", f"echo prestop >> {trace}"]}},
            },
        )
        pod = make_pod("failing", [container], terminationGracePeriodSeconds=5)
        await h.provider.create_pod(pod)
        restarted = await h.wait("failing", lambda p: status_of(p)["restartCount"] >= 2)
        last = status_of(restarted)["lastState"]["terminated"]
        assert last["exitCode"] == 143  # SIGTERM: the kill of a failed postStart hook
        assert last["reason"] == "Error"
        expected = (
            f'Exec lifecycle hook ([sh -c echo nope >&2; exit 3]) for Container "main" in Pod '
            f'"failing_default({pod["metadata"]["uid"]})" failed - error: '
            "command 'sh -c echo nope >&2; exit 3' exited with 3, message: \"nope\\n\""
        )
        assert last["message"] == f"PostStartHookError: {expected}"
        assert lines(trace)[:2] == ["prestop", "prestop"]  # killContainer runs preStop
        waiting = [status_of(p)["state"].get("waiting") or {} for p in h.pushed]
        # The first restart is immediate: the kubelet's waiting reason for it.
        assert {"reason": "PostStartHookError", "message": expected} in waiting
        assert any(w.get("reason") == "CrashLoopBackOff" for w in waiting)
        assert all(not status_of(p)["ready"] and not status_of(p)["started"] for p in h.pushed)

    run_test(tmp_path, body)


def test_failed_hook_with_restart_never_ends_terminated(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        container = sh(
            "exec sleep 30",
            lifecycle={"postStart": {"httpGet": {"path": "/hook", "port": free_port()}}},
        )
        pod = make_pod("once", [container], restart="Never")
        await h.provider.create_pod(pod)
        done = await h.wait("once", lambda p: p["status"]["phase"] == "Failed")
        status = status_of(done)
        assert status["restartCount"] == 0
        terminated = status["state"]["terminated"]
        assert terminated["exitCode"] == 143
        assert terminated["message"].startswith(
            'PostStartHookError: HTTP lifecycle hook (/hook) for Container "main" in Pod '
        )
        assert 'failed - error: Get "http://127.0.0.1:' in terminated["message"]

    run_test(tmp_path, body)


def test_deleting_a_pod_whose_hook_hangs_is_prompt(tmp_path: Path) -> None:
    hook_pid = tmp_path / "hook-pid"

    async def body(h: Harness) -> None:
        hook = f"echo $$ > {hook_pid}.tmp; mv {hook_pid}.tmp {hook_pid}; exec sleep 3600"
        container = sh(
            "exec sleep 3600", lifecycle={"postStart": {"exec": {"command": ["sh", "-c", hook]}}}
        )
        pod = make_pod("hanging", [container], terminationGracePeriodSeconds=30)
        await h.provider.create_pod(pod)
        deadline = time.monotonic() + 10
        while not hook_pid.exists():
            assert time.monotonic() < deadline, "the hook did not start"
            await asyncio.sleep(0.05)
        pid = int(hook_pid.read_text())
        hanging = await h.provider.get_pod("default", "hanging")
        assert hanging is not None
        assert hanging["status"]["phase"] == "Pending"
        assert status_of(hanging)["state"]["waiting"]["reason"] == "ContainerCreating"
        began = time.monotonic()
        await h.provider.delete_pod(pod)
        await gone(h, "hanging")
        assert time.monotonic() - began < 5  # the hook was abandoned, the container got SIGTERM
        deadline = time.monotonic() + 5
        while _proc_state(pid) != "Z":  # gone (or a zombie)
            assert time.monotonic() < deadline, "the hook's process was left running"
            await asyncio.sleep(0.05)
        final = h.pushed[-1]
        assert status_of(final)["state"]["terminated"]["exitCode"] == 143

    run_test(tmp_path, body)


def _proc_state(pid: int) -> str:
    """The state letter of process `pid` ("Z" too if there is none)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "Z"


def test_adopted_containers_do_not_run_their_hook_again(tmp_path: Path) -> None:
    hooks = tmp_path / "hooks"
    probes = tmp_path / "probes"
    hang = tmp_path / "hang"
    done_hook = ["sh", "-c", f"echo ran >> {hooks}"]
    hanging_hook = ["sh", "-c", f"echo ran >> {hang}; exec sleep 3600"]
    ready_probe = {
        "exec": {"command": ["sh", "-c", f"echo probe >> {probes}"]},
        "periodSeconds": 0.1,
        "timeoutSeconds": 5,
    }
    finished = make_pod(
        "finished",
        [
            sh(
                "exec sleep 3600",
                lifecycle={"postStart": {"exec": {"command": done_hook}}},
                readinessProbe=ready_probe,
            )
        ],
    )
    # The agent dies while this one's hook runs: the restarted agent does not run it again and
    # the container counts as started and ready (no probes to say otherwise).
    interrupted = make_pod(
        "interrupted",
        [sh("exec sleep 3600", lifecycle={"postStart": {"exec": {"command": hanging_hook}}})],
    )

    async def first_agent() -> None:
        harness = Harness(tmp_path)
        await harness.start()
        await harness.provider.create_pod(finished)
        await harness.provider.create_pod(interrupted)
        await harness.wait("finished", lambda p: condition(p, "Ready") == "True")
        deadline = time.monotonic() + 10
        while not lines(hang):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        # No stop(), no delete: the loop just ends, as if the agent was killed.

    async def second_agent() -> None:
        harness = Harness(tmp_path)
        await harness.start()
        seen = len(lines(probes))
        ready = await harness.wait("interrupted", lambda p: status_of(p)["ready"] is True)
        assert "running" in status_of(ready)["state"]
        assert status_of(ready)["started"] is True
        assert condition(ready, "Ready") == "True"
        # The adopted container is probed again: its hook, had it run, would have come first.
        await harness.wait("finished", lambda p: len(lines(probes)) > seen + 2)
        assert lines(hooks) == ["ran"]
        assert lines(hang) == ["ran"]
        for name in ("finished", "interrupted"):
            pod = await harness.provider.get_pod("default", name)
            assert pod is not None
            assert status_of(pod)["restartCount"] == 0
        await harness.close()

    try:
        asyncio.run(first_agent())
        asyncio.run(second_agent())
    finally:
        kill_everything(tmp_path / "state")


# --- Handlers.hook: the kubelet's handler runner ---------------------------------------------


async def _subprocess(argv: list[str], timeout: float | None) -> tuple[int, bytes]:
    """An exec function that runs the command on this machine (as the provider does, minus the
    container's namespaces)."""
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await process.communicate()
    return process.returncode or 0, output


def test_hook_handlers_have_the_kubelets_semantics_and_messages() -> None:
    container = {"name": "app", "ports": [{"name": "web", "containerPort": 1}]}
    pod = {"metadata": {"name": "p", "namespace": "ns", "uid": "u-1"}}
    where = 'for Container "app" in Pod "p_ns(u-1)" failed - error:'

    async def main() -> None:
        handlers = Handlers("127.0.0.1")
        seen: list[str] = []

        async def failing(request: web.Request) -> web.Response:
            seen.append(f"{request.path} {request.headers['User-Agent']}")
            return web.Response(status=500)

        app = web.Application()
        app.router.add_get("/{tail:.*}", failing)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        closed = free_port()
        try:

            async def hook(handler: dict[str, Any]) -> tuple[bool, str]:
                return await handlers.hook(
                    handler,
                    {**container, "ports": [{"name": "web", "containerPort": port}]},
                    _subprocess,
                    pod=pod_desc(pod),
                )

            # exec: the exit code decides; the output is quoted in the message.
            assert await hook({"exec": {"command": ["true"]}}) == (True, "")
            ok, message = await hook({"exec": {"command": ["sh", "-c", 'printf "a\\"b"; exit 2']}})
            assert not ok
            assert message == (
                f'Exec lifecycle hook ([sh -c printf "a\\"b"; exit 2]) {where} '
                'command \'sh -c printf "a\\"b"; exit 2\' exited with 2, '
                'message: "a\\"b"'
            )
            ok, message = await hook({"exec": {"command": ["/nonexistent/cmd"]}})
            assert not ok
            assert message.startswith(f"Exec lifecycle hook ([/nonexistent/cmd]) {where} ")
            # httpGet: any response is a success (the kubelet looks at errors only).
            assert await hook({"httpGet": {"path": "/start", "port": "web"}}) == (True, "")
            assert seen == ["/start kube-lifecycle/1.36"]
            ok, message = await hook({"httpGet": {"path": "/x", "port": closed}})
            assert not ok
            assert message.startswith(
                f'HTTP lifecycle hook (/x) {where} Get "http://127.0.0.1:{closed}/x": '
            )
            ok, message = await hook({"httpGet": {"path": "/x", "port": "nope"}})
            assert not ok
            assert "neither a number nor a named port" in message
            # tcpSocket, sleep, and a handler of no known kind.
            assert await hook({"tcpSocket": {"port": port}}) == (True, "")
            ok, message = await hook({"tcpSocket": {"port": closed}})
            assert not ok
            assert message.startswith(f"TCP lifecycle hook ({closed}) {where} dial tcp ")
            began = time.monotonic()
            assert await hook({"sleep": {"seconds": 0.2}}) == (True, "")
            assert time.monotonic() - began >= 0.2
            ok, message = await hook({"grpc": {"port": 1}})
            assert not ok
            assert message.startswith("Cannot run handler: invalid handler")
        finally:
            await handlers.close()
            await runner.cleanup()

    asyncio.run(main())


def test_go_quote_and_pod_desc() -> None:
    assert go_quote('a"b\n\\') == '"a\\"b\\n\\\\"'
    assert go_quote("") == '""'
    assert pod_desc({"metadata": {"name": "n", "namespace": "s", "uid": "1"}}) == "n_s(1)"
