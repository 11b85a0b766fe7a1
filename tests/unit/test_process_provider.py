"""The process provider with real processes (no cluster): running, exits, restarts and back-off,
termination messages, init containers, graceful deletion, adoption after an agent "crash",
config errors. Every test kills whatever processes its pods left (see `Harness.close`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from virtual_kubelet.providers.process import ProcessProvider
from virtual_kubelet.providers.process.config import ProviderConfigError, load_config
from virtual_kubelet.providers.process.launch import volume_env_name
from virtual_kubelet.providers.process.shim_protocol import alive
from virtual_kubelet.providers.process.state import memory_backed
from virtual_kubelet.providers.process.status import go_duration
from virtual_kubelet.sdk import NotFound, Pod, ProviderContext

#: Tests use env-mode mounts and no cgroups unless they test those (no changes to the host).
BASE_CONFIG: dict[str, Any] = {
    "mounts": "env",
    "cgroups": False,
    "restart_backoff_seconds": 0.2,
}


def make_pod(
    name: str,
    containers: list[dict[str, Any]],
    *,
    restart: str = "Always",
    init: list[dict[str, Any]] | None = None,
    **spec: Any,
) -> Pod:
    for container in [*containers, *(init or [])]:
        container.setdefault("image", "busybox:1.36")
    body: dict[str, Any] = {"restartPolicy": restart, "containers": containers, **spec}
    if init:
        body["initContainers"] = init
    return {
        "metadata": {"name": name, "namespace": "default", "uid": str(uuid.uuid4())},
        "spec": body,
    }


def sh(script: str, name: str = "main", **extra: Any) -> dict[str, Any]:
    return {"name": name, "command": ["sh", "-c", script], **extra}


def status_of(pod: Pod | None, container: str = "main") -> dict[str, Any]:
    assert pod is not None
    statuses = pod["status"]["containerStatuses"] + pod["status"].get("initContainerStatuses", [])
    return next(s for s in statuses if s["name"] == container)


def condition(pod: Pod, kind: str) -> str:
    return next(c["status"] for c in pod["status"]["conditions"] if c["type"] == kind)


class Harness:
    """A provider on a temporary state dir, plus waiting helpers and thorough clean-up."""

    def __init__(self, root: Path, config: dict[str, Any] | None = None) -> None:
        self.root = root
        self.state_dir = root / "state"
        self.config = {**BASE_CONFIG, **(config or {})}
        config_path = root / "config.yaml"
        config_path.write_text(yaml.safe_dump(self.config))
        self.context = ProviderContext(
            node_name="node-1",
            operating_system="linux",
            internal_ip="127.0.0.1",
            daemon_port=10250,
            config_path=config_path,
            state_dir=self.state_dir,
            volumes_dir=root / "volumes",
        )
        self.provider = ProcessProvider(self.context)
        self.pushed: list[Pod] = []

    async def start(self) -> ProcessProvider:
        await self.provider.start()
        self.provider.notify_pods(self.pushed.append)
        return self.provider

    async def wait(self, name: str, predicate: Callable[[Pod], bool], timeout: float = 15.0) -> Pod:
        deadline = time.monotonic() + timeout
        pod = None
        while time.monotonic() < deadline:
            pod = await self.provider.get_pod("default", name)
            if pod is not None and predicate(pod):
                return pod
            await asyncio.sleep(0.05)
        status = json.dumps(pod and pod["status"], indent=1)
        raise AssertionError(f"pod {name}: condition not met in {timeout} s; status: {status}")

    async def running(self, name: str, container: str = "main") -> Pod:
        return await self.wait(name, lambda p: "running" in status_of(p, container)["state"])

    def run_file(self, pod: Pod, container: str = "main", run: int = 1) -> dict[str, Any]:
        uid = pod["metadata"]["uid"]
        path = self.state_dir / "process" / uid / container / f"state.{run}.json"
        data: dict[str, Any] = json.loads(path.read_text())
        return data

    def log_text(self, pod: Pod, container: str = "main", run: int = 1) -> str:
        uid = pod["metadata"]["uid"]
        return (self.state_dir / "process" / uid / container / f"{run}.log").read_text()

    async def close(self) -> None:
        await self.provider.stop()
        kill_everything(self.state_dir)


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll `predicate` until it holds; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def kill_everything(state_dir: Path) -> None:
    """Kill every shim of `state_dir` (found by command line, so shims still starting are caught
    too; their containers die with them) and every recorded container process group."""
    for _ in range(5):
        found = False
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                cmdline = (entry / "cmdline").read_bytes()
                if b"providers.process.shim" in cmdline and str(state_dir).encode() in cmdline:
                    os.kill(int(entry.name), signal.SIGKILL)
                    found = True
        try:
            records = list((state_dir / "process").glob("*/*/state.*.json"))
        except OSError:  # a pod's files being removed meanwhile (its deletion's clean-up)
            records, found = [], True  # look again
        for path in records:
            with contextlib.suppress(OSError, ValueError):
                run = json.loads(path.read_text())
                if alive(run["pid"], run["pid_start"]):
                    os.killpg(run["pgid"], signal.SIGKILL)
                    found = True
        if not found:
            return
        time.sleep(0.1)


def run_test(
    root: Path, body: Callable[[Harness], Any], config: dict[str, Any] | None = None
) -> None:
    async def main() -> None:
        harness = Harness(root, config)
        try:
            await harness.start()
            await body(harness)
        finally:
            await harness.close()

    try:
        asyncio.run(main())
    finally:
        kill_everything(root / "state")


# --- running, exits, messages --------------------------------------------------------------------


def test_runs_command_with_env_and_timestamped_log(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        pod = make_pod(
            "hello",
            [
                sh(
                    'echo "hello $(WHO)"; echo "host=$HOSTNAME"; echo oops >&2; '
                    'test -n "$PATH" && echo has-path; pwd; exec sleep 30',
                    env=[{"name": "WHO", "value": "world"}],
                )
            ],
        )
        await h.provider.create_pod(pod)
        running = await h.running("hello")
        assert running["status"]["phase"] == "Running"
        assert condition(running, "Ready") == "True"
        assert status_of(running)["ready"] is True
        assert running["status"]["podIP"] == "127.0.0.1"
        await until(lambda: "oops" in h.log_text(pod))
        lines = h.log_text(pod).splitlines()
        stamp, stream, tag, text = lines[0].split(" ", 3)
        assert stamp.endswith("Z")
        assert len(stamp.split(".")[1]) == 10
        assert (stream, tag, text) == ("stdout", "F", "hello world")
        assert "stdout F host=hello" in lines[1]
        assert any(" stderr F oops" in line for line in lines)
        assert any(line.endswith("has-path") for line in lines)
        workdir = h.state_dir / "process" / pod["metadata"]["uid"] / "main" / "work"
        assert any(line.endswith(str(workdir)) for line in lines)
        assert h.pushed
        assert h.pushed[-1]["metadata"]["name"] == "hello"

    run_test(tmp_path, body)


def test_exit_zero_with_restart_never_succeeds(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        await h.provider.create_pod(make_pod("ok", [sh("echo done")], restart="Never"))
        pod = await h.wait("ok", lambda p: p["status"]["phase"] == "Succeeded")
        terminated = status_of(pod)["state"]["terminated"]
        assert terminated["exitCode"] == 0
        assert terminated["reason"] == "Completed"
        assert condition(pod, "Ready") == "False"
        assert h.pushed[-1]["status"]["phase"] == "Succeeded"

    run_test(tmp_path, body)


def test_exit_code_and_termination_messages(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        pod = make_pod(
            "fails",
            [
                sh('echo "the reason" > "$VK_TERMINATION_MESSAGE_PATH"; exit 3'),
                sh(
                    "echo line1; echo last words; exit 4",
                    name="fallback",
                    terminationMessagePolicy="FallbackToLogsOnError",
                ),
                sh("echo not a message; exit 5", name="nofallback"),
            ],
            restart="Never",
        )
        await h.provider.create_pod(pod)
        done = await h.wait("fails", lambda p: p["status"]["phase"] == "Failed")
        main = status_of(done)["state"]["terminated"]
        assert (main["exitCode"], main["reason"], main["message"]) == (3, "Error", "the reason\n")
        fallback = status_of(done, "fallback")["state"]["terminated"]
        assert fallback["exitCode"] == 4
        assert fallback["message"] == "line1\nlast words\n"
        assert "message" not in status_of(done, "nofallback")["state"]["terminated"]

    run_test(tmp_path, body)


def test_crash_loop_backs_off_exponentially(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        await h.provider.create_pod(make_pod("crash", [sh("echo boom; exit 1")]))
        seen: list[str] = []

        def backing_off(_: Pod) -> bool:
            # From every pushed status, so that no short back-off can slip between two polls.
            seen.clear()
            for pushed in h.pushed:
                waiting = status_of(pushed)["state"].get("waiting") or {}
                if waiting.get("reason") == "CrashLoopBackOff" and waiting["message"] not in seen:
                    seen.append(waiting["message"])
            return len(seen) >= 3

        pod = await h.wait("crash", backing_off)
        uid = pod["metadata"]["uid"]
        assert seen[:3] == [
            f"back-off {d} restarting failed container=main pod=crash_default({uid})"
            for d in ("200ms", "400ms", "800ms")
        ]
        status = status_of(pod)
        assert status["restartCount"] >= 2
        assert status["lastState"]["terminated"]["exitCode"] == 1
        assert status["lastState"]["terminated"]["reason"] == "Error"
        assert pod["status"]["phase"] == "Running"  # it will be restarted

    run_test(tmp_path, body, {"max_restart_backoff_seconds": 5})


def test_nonexistent_command_is_run_container_error(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        await h.provider.create_pod(make_pod("bad", [{"name": "main", "command": ["nosuchcmd"]}]))
        await h.provider.create_pod(make_pod("nocmd", [{"name": "main", "image": "unknown"}]))

        def waiting(reason: str) -> Callable[[Pod], bool]:
            return lambda p: (status_of(p)["state"].get("waiting") or {}).get("reason") == reason

        bad = await h.wait("bad", waiting("RunContainerError"))
        state = status_of(bad)["state"]["waiting"]
        assert state["message"] == 'exec: "nosuchcmd": executable file not found in $PATH'
        assert status_of(bad)["lastState"]["terminated"]["reason"] == "StartError"
        nocmd = await h.wait("nocmd", waiting("RunContainerError"))
        assert "has no command" in status_of(nocmd)["state"]["waiting"]["message"]
        # ... retried like a crash, and the provider keeps working.
        await h.wait("bad", lambda p: status_of(p)["restartCount"] >= 2)
        await h.provider.create_pod(make_pod("good", [sh("exec sleep 30")]))
        await h.running("good")

    run_test(tmp_path, body)


def test_image_config_supplies_the_command(tmp_path: Path) -> None:
    root = tmp_path / "image-root"
    (root / "bin").mkdir(parents=True)
    tool = root / "bin" / "greet"
    tool.write_text('#!/bin/sh\necho "greetings $*"\n')
    tool.chmod(0o755)

    async def body(h: Harness) -> None:
        pod = make_pod(
            "img",
            [{"name": "main", "image": "example.com/greeter:2.0", "args": ["from", "args"]}],
            restart="Never",
        )
        await h.provider.create_pod(pod)
        await h.wait("img", lambda p: p["status"]["phase"] == "Succeeded")
        lines = h.log_text(pod).splitlines()
        assert lines[0].endswith("greetings from args")
        assert lines[1].endswith(str(root))  # root is the default working directory

    config = {
        "images": {
            "example.com/greeter": {"command": ["sh", "-c", "greet $0 $1; pwd"], "root": str(root)}
        }
    }
    run_test(tmp_path, body, config)


def test_init_containers_run_in_order_before_app_containers(tmp_path: Path) -> None:
    trace = tmp_path / "trace"

    async def body(h: Harness) -> None:
        pod = make_pod(
            "init",
            [sh(f"echo app >> {trace}; exec sleep 30")],
            init=[
                sh(f"sleep 0.2; echo first >> {trace}", name="first"),
                sh(f"echo second >> {trace}", name="second"),
            ],
        )
        await h.provider.create_pod(pod)
        early = await h.provider.get_pod("default", "init")
        assert early is not None
        assert early["status"]["phase"] == "Pending"
        assert condition(early, "Initialized") == "False"
        running = await h.running("init")
        assert condition(running, "Initialized") == "True"
        for name in ("first", "second"):
            assert status_of(running, name)["state"]["terminated"]["reason"] == "Completed"
        await until(lambda: "app" in trace.read_text())
        assert trace.read_text().split() == ["first", "second", "app"]

        failing = make_pod(
            "initfail", [sh("exec sleep 30")], init=[sh("exit 7", name="boom")], restart="Never"
        )
        await h.provider.create_pod(failing)
        failed = await h.wait("initfail", lambda p: p["status"]["phase"] == "Failed")
        assert status_of(failed, "boom")["state"]["terminated"]["exitCode"] == 7
        assert "waiting" in status_of(failed)["state"]  # the app container never ran

    run_test(tmp_path, body)


# --- probes ------------------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_readiness_http_probe_makes_the_pod_ready(tmp_path: Path) -> None:
    port = free_port()

    async def body(h: Harness) -> None:
        server = {
            "name": "main",
            "command": [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
            "ports": [{"name": "http", "containerPort": port}],
            "readinessProbe": {
                "httpGet": {
                    "path": "/",
                    "port": "http",
                    "httpHeaders": [{"name": "X-A", "value": "b"}],
                },
                "periodSeconds": 0.2,
                "timeoutSeconds": 2,
            },
        }
        await h.provider.create_pod(make_pod("web", [server]))
        await h.running("web")
        ready = await h.wait("web", lambda p: condition(p, "Ready") == "True")
        assert status_of(ready)["ready"] is True
        assert condition(ready, "ContainersReady") == "True"

    run_test(tmp_path, body)


def test_liveness_failure_restarts_the_container(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        container = sh(
            "exec sleep 30",
            livenessProbe={
                "exec": {"command": ["sh", "-c", "exit 1"]},
                "periodSeconds": 0.2,
                "failureThreshold": 2,
                "timeoutSeconds": 5,
            },
        )
        pod = make_pod("live", [container], terminationGracePeriodSeconds=2)
        await h.provider.create_pod(pod)
        await h.running("live")
        restarted = await h.wait("live", lambda p: status_of(p)["restartCount"] >= 1)
        last = status_of(restarted)["lastState"]["terminated"]
        assert last["reason"] == "Error"
        assert last["exitCode"] == 143  # SIGTERM
        assert "failed liveness probe" in last["message"]

    run_test(tmp_path, body)


def test_startup_probe_gates_started_and_readiness(tmp_path: Path) -> None:
    marker = tmp_path / "started"

    async def body(h: Harness) -> None:
        container = sh(
            f"sleep 0.5; touch {marker}; exec sleep 30",
            startupProbe={
                "exec": {"command": ["test", "-f", str(marker)]},
                "periodSeconds": 0.2,
                "failureThreshold": 50,
                "timeoutSeconds": 5,
            },
        )
        await h.provider.create_pod(make_pod("startup", [container]))
        started = await h.wait("startup", lambda p: status_of(p)["started"] is True)
        first_running = next(p for p in h.pushed if "running" in status_of(p)["state"])
        assert status_of(first_running)["started"] is False
        assert status_of(first_running)["ready"] is False
        assert status_of(started)["ready"] is True
        assert marker.exists()

    run_test(tmp_path, body)


# --- deletion ---------------------------------------------------------------------------------


def test_delete_runs_prestop_then_sigterm_then_sigkill_after_grace(tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    stubborn = (
        "import signal, sys, time\n"
        f"def term(*_):\n    open({str(trace)!r}, 'a').write('term\\n')\n"
        "signal.signal(signal.SIGTERM, term)\n"
        "print('up', flush=True)\n"
        "while True: time.sleep(0.1)\n"
    )

    async def body(h: Harness) -> None:
        container = {
            "name": "main",
            "command": [sys.executable, "-c", stubborn],
            "lifecycle": {
                "preStop": {"exec": {"command": ["sh", "-c", f"echo prestop >> {trace}"]}}
            },
        }
        pod = make_pod("stubborn", [container], terminationGracePeriodSeconds=30)
        await h.provider.create_pod(pod)
        await h.running("stubborn")
        pod_dir = h.state_dir / "process" / pod["metadata"]["uid"]
        run = h.run_file(pod)
        deleting = {**pod, "metadata": {**pod["metadata"], "deletionGracePeriodSeconds": 1}}
        began = time.monotonic()
        await h.provider.delete_pod(deleting)
        assert time.monotonic() - began < 0.5  # the waiting happens in the background
        await h.provider.delete_pod(deleting)  # idempotent
        deadline = time.monotonic() + 15
        while await h.provider.get_pod("default", "stubborn") is not None:
            assert time.monotonic() < deadline, "pod not gone"
            await asyncio.sleep(0.05)
        elapsed = time.monotonic() - began
        assert elapsed >= 1.0
        assert trace.read_text().split() == ["prestop", "term"]
        assert not alive(run["pid"], run["pid_start"])
        final = h.pushed[-1]
        assert final["status"]["phase"] == "Failed"
        terminated = status_of(final)["state"]["terminated"]
        assert terminated["exitCode"] == 137
        # Its files go right after the final status (in a thread: poll, do not race it).
        await until(lambda: not pod_dir.exists())
        with pytest.raises(NotFound):
            await h.provider.delete_pod(deleting)
        assert await h.provider.list_pods() == []

    run_test(tmp_path, body)


def test_delete_of_a_cooperative_pod_is_quick_and_reports_exit_codes(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        pod = make_pod("polite", [sh("trap 'exit 0' TERM; while true; do sleep 0.1; done")])
        await h.provider.create_pod(pod)
        await h.running("polite")
        began = time.monotonic()
        await h.provider.delete_pod(pod)
        deadline = time.monotonic() + 10
        while await h.provider.get_pod("default", "polite") is not None:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        assert time.monotonic() - began < 5
        final = h.pushed[-1]
        assert final["status"]["phase"] == "Succeeded"
        assert status_of(final)["state"]["terminated"]["exitCode"] == 0

    run_test(tmp_path, body)


# --- adoption after an agent crash -----------------------------------------------------------


def test_restarted_agent_adopts_running_containers(tmp_path: Path) -> None:
    pod = make_pod(
        "survivor", [sh("i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.1; done")]
    )
    shared: dict[str, Any] = {}

    async def first_agent() -> None:
        harness = Harness(tmp_path)
        await harness.start()
        await harness.provider.create_pod(pod)
        await harness.running("survivor")
        shared["run"] = harness.run_file(pod)
        # No stop(), no delete: the loop just ends, as if the agent was killed.

    async def second_agent() -> None:
        harness = Harness(tmp_path)
        await harness.start()
        pods = await harness.provider.list_pods()
        assert [p["metadata"]["uid"] for p in pods] == [pod["metadata"]["uid"]]
        assert pods[0]["status"]["phase"] == "Running"
        assert "running" in status_of(pods[0])["state"]
        assert status_of(pods[0])["restartCount"] == 0
        run = harness.run_file(pod)
        assert run == shared["run"]  # same shim, same container pid
        assert alive(run["pid"], run["pid_start"])
        container_dir = harness.state_dir / "process" / pod["metadata"]["uid"] / "main"
        assert not (container_dir / "state.2.json").exists()  # no second process
        # Its output kept flowing into the log.
        lines = harness.log_text(pod).splitlines()
        await until(lambda: len(harness.log_text(pod).splitlines()) > len(lines))
        await harness.provider.delete_pod(pod)
        deadline = time.monotonic() + 10
        while await harness.provider.get_pod("default", "survivor") is not None:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        assert not alive(run["pid"], run["pid_start"])
        await harness.provider.stop()

    try:
        asyncio.run(first_agent())
        run = shared["run"]
        assert alive(run["pid"], run["pid_start"]), "the container died with the agent"
        assert alive(run["shim_pid"], run["shim_start"])
        asyncio.run(second_agent())
    finally:
        kill_everything(tmp_path / "state")


def test_exit_while_the_agent_was_down_is_accounted_for(tmp_path: Path) -> None:
    pod = make_pod("brief", [sh("sleep 0.3; exit 2")], restart="Never")

    async def first_agent() -> None:
        harness = Harness(tmp_path)
        await harness.start()
        await harness.provider.create_pod(pod)
        await harness.running("brief")

    async def second_agent() -> None:
        harness = Harness(tmp_path)
        await harness.start()
        done = await harness.wait("brief", lambda p: p["status"]["phase"] == "Failed")
        assert status_of(done)["state"]["terminated"]["exitCode"] == 2
        await harness.close()

    try:
        asyncio.run(first_agent())
        exit_file = tmp_path / "state/process" / pod["metadata"]["uid"] / "main/exit.1.json"
        deadline = time.monotonic() + 10
        while not exit_file.exists():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        asyncio.run(second_agent())
    finally:
        kill_everything(tmp_path / "state")


# --- env values stay off the state directory ---------------------------------------------------


def files_containing(root: Path, needle: bytes) -> list[Path]:
    return [
        path
        for path in root.rglob("*")
        if path.is_file() and not path.is_fifo() and needle in path.read_bytes()
    ]


def test_env_values_and_what_derives_from_them_stay_off_the_state_directory(
    tmp_path: Path,
) -> None:
    value = f"s3cr3t-{uuid.uuid4().hex}"
    shown = tmp_path / "shown"

    async def body(h: Harness) -> None:
        # The value in env, in argv ($(VAR) expanded) and in a mount source (subPathExpr).
        pod = make_pod(
            "private",
            [
                sh(
                    f'echo "$(TOKEN)" > {shown}; exec sleep 30',
                    env=[{"name": "TOKEN", "value": value}],
                    volumeMounts=[
                        {"name": "scratch", "mountPath": "/s", "subPathExpr": "$(TOKEN)"}
                    ],
                )
            ],
            volumes=[{"name": "scratch", "emptyDir": {}}],
        )
        h.context.volume_path(pod, "scratch").mkdir(parents=True)
        await h.provider.create_pod(pod)
        await h.running("private")
        await until(lambda: shown.exists() and shown.read_text() == f"{value}\n")
        code, output = await h.provider._exec_capture(
            h.provider._pods[pod["metadata"]["uid"]], "main", ["sh", "-c", "echo $TOKEN"], 10
        )
        assert (code, output) == (0, f"{value}\n".encode())
        assert (h.state_dir / "process" / pod["metadata"]["uid"] / "pod.json").exists()
        assert files_containing(h.state_dir, value.encode()) == []
        private = h.context.pods_dir / pod["metadata"]["uid"] / "process"
        assert {p.relative_to(private) for p in files_containing(private, value.encode())} == {
            Path("env.json"),
            Path("main/launch.1.json"),
        }
        assert (await h.provider.get_pod("default", "private")) is not None

    run_test(tmp_path, body)


def test_a_pods_directory_on_disk_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def body(h: Harness) -> None:
        pass

    with caplog.at_level(logging.WARNING):
        run_test(tmp_path, body)  # tmp_path/volumes, on the disk tmp_path is on
    on_disk = [r.getMessage() for r in caplog.records if "not memory-backed" in r.getMessage()]
    if memory_backed(tmp_path):
        assert on_disk == []
    else:
        assert len(on_disk) == 1
        assert str(tmp_path / "volumes") in on_disk[0]
        assert "--volumes-dir" in on_disk[0]


def test_start_errors_show_the_command_as_written_not_expanded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    value = f"s3cr3t-{uuid.uuid4().hex}"
    env = [{"name": "TOKEN", "value": value}]

    async def body(h: Harness) -> None:
        await h.provider.create_pod(
            make_pod("argv", [{"name": "main", "command": ["$(TOKEN)"], "env": env}])
        )
        failed = await h.wait(
            "argv", lambda p: (status_of(p)["state"].get("waiting") or {}).get("message", "") != ""
        )
        message = status_of(failed)["state"]["waiting"]["message"]
        assert message == 'exec: "$(TOKEN)": executable file not found in $PATH'
        assert files_containing(h.state_dir, value.encode()) == []
        assert value not in caplog.text

    with caplog.at_level(logging.DEBUG):
        run_test(tmp_path, body)


def test_env_lost_with_the_memory_backed_storage_is_resolved_again_before_a_restart(
    tmp_path: Path,
) -> None:
    """A reboot empties the memory-backed pods directory: the adopted pod reports a stale spec
    hash, so the core sends it again, and its container restarts only with its env back."""
    shown = tmp_path / "shown"
    pod = make_pod(
        "again",
        [sh(f'echo "$TOKEN" >> {shown}; exec sleep 30', env=[{"name": "TOKEN", "value": "t1"}])],
    )

    async def first_agent() -> None:
        harness = Harness(tmp_path)
        await harness.start()
        await harness.provider.create_pod(pod)
        await harness.running("again")
        await until(lambda: shown.exists() and shown.read_text() == "t1\n")

    async def second_agent() -> None:
        harness = Harness(tmp_path)
        await harness.start()
        try:
            adopted = await harness.wait(
                "again", lambda p: "terminated" in status_of(p).get("lastState", {})
            )
            # Its exit is accounted for, but it does not start without its env.
            assert status_of(adopted)["restartCount"] == 0
            assert adopted["metadata"]["annotations"]["virtual-kubelet.io/spec-hash"] == "env-lost"
            assert "TOKEN" in [e["name"] for e in adopted["spec"]["containers"][0]["env"]]
            await harness.provider.update_pod(pod)
            again = await harness.wait("again", lambda p: status_of(p)["restartCount"] == 1)
            assert "virtual-kubelet.io/spec-hash" not in again["metadata"].get("annotations", {})
            await harness.running("again")
            await until(lambda: shown.read_text() == "t1\nt1\n")
        finally:
            await harness.close()

    try:
        asyncio.run(first_agent())
        # A reboot: the containers and the memory-backed storage are gone, the state dir stays.
        kill_everything(tmp_path / "state")
        shutil.rmtree(tmp_path / "volumes")
        asyncio.run(second_agent())
    finally:
        kill_everything(tmp_path / "state")


# --- config and small pieces ------------------------------------------------------------------


def test_config_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ProviderConfigError, match="cannot read provider config"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("mounts: sideways\npods: 0\ntypo: 1\n")
    with pytest.raises(ProviderConfigError) as err:
        load_config(bad)
    message = str(err.value)
    assert "mounts" in message
    assert "pods" in message
    assert "typo" in message
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"images": {"busybox": {"command": ["sh"]}}, "pods": 7}))
    config = load_config(good)
    assert config.pods == 7
    assert config.image("busybox:1.36") is not None
    assert config.image("docker.io/busybox@sha256:abc") is None
    assert config.image("busybox@sha256:abc") is not None


def test_helpers() -> None:
    assert volume_env_name("/etc/my-config") == "VK_VOLUME_ETC_MY_CONFIG"
    assert volume_env_name("/var/run/secrets/kubernetes.io/serviceaccount/") == (
        "VK_VOLUME_VAR_RUN_SECRETS_KUBERNETES_IO_SERVICEACCOUNT"
    )
    assert volume_env_name("/") == "VK_VOLUME_ROOT"
    assert [go_duration(s) for s in (0.2, 10, 20, 80, 300, 1.5)] == [
        "200ms",
        "10s",
        "20s",
        "1m20s",
        "5m0s",
        "1.5s",
    ]


def test_env_mode_volume_variables_subpath_hostpath_and_message_in_a_volume(
    tmp_path: Path,
) -> None:
    host = tmp_path / "host"

    async def body(h: Harness) -> None:
        script = (
            'cat "$VK_VOLUME_ETC_APP/key"; cat "$VK_VOLUME_ETC_KEY"; echo "$VK_VOLUME_DATA"; '
            'echo "$VK_TERMINATION_MESSAGE_PATH"; '
            'echo from-volume > "$VK_TERMINATION_MESSAGE_PATH"; exit 1'
        )
        pod = make_pod(
            "envmode",
            [
                sh(
                    script,
                    volumeMounts=[
                        {"name": "cfg", "mountPath": "/etc/app"},
                        {"name": "cfg", "mountPath": "/etc/key", "subPath": "key"},
                        {"name": "host", "mountPath": "/data"},
                    ],
                    terminationMessagePath="/data/msg",
                )
            ],
            restart="Never",
            volumes=[
                {"name": "cfg", "configMap": {"name": "cfg"}},
                {"name": "host", "hostPath": {"path": str(host), "type": "DirectoryOrCreate"}},
            ],
        )
        volume = h.context.volume_path(pod, "cfg")
        volume.mkdir(parents=True)
        (volume / "key").write_text("value\n")
        await h.provider.create_pod(pod)
        done = await h.wait("envmode", lambda p: p["status"]["phase"] == "Failed")
        lines = [line.split(" ", 3)[3] for line in h.log_text(pod).splitlines()]
        assert lines == ["value", "value", str(host), str(host / "msg")]
        assert status_of(done)["state"]["terminated"]["message"] == "from-volume\n"
        assert (host / "msg").read_text() == "from-volume\n"

    run_test(tmp_path, body)
