"""The process provider's kubelet API with real processes: exec (pipes and tty), logs (follow,
previous), attach, port-forward, stats; and bind mounts / cgroup limits where the host allows."""

from __future__ import annotations

import asyncio
import datetime
import os
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from virtual_kubelet.providers.process.launch import volume_env_name
from virtual_kubelet.providers.process.shim_protocol import alive
from virtual_kubelet.sdk import ContainerIO, InvalidInput, LogOptions, NotFound, TermSize
from virtual_kubelet.streams import QueueInput, ResizeQueue

from .test_process_provider import (
    Harness,
    free_port,
    make_pod,
    run_test,
    sh,
    status_of,
    until,
)


class Capture:
    """An OutputStream that keeps what it was sent."""

    def __init__(self) -> None:
        self.data = b""
        self.closed = False

    async def write(self, data: bytes) -> None:
        self.data += data

    async def close(self) -> None:
        self.closed = True


async def collect(h: Harness, name: str, options: LogOptions, container: str = "main") -> bytes:
    chunks = [c async for c in h.provider.get_container_logs("default", name, container, options)]
    return b"".join(chunks)


# --- exec ------------------------------------------------------------------------------------


def test_exec_pipes_stdin_and_returns_exit_codes(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        pod = make_pod("ex", [sh("exec sleep 30", env=[{"name": "SECRETISH", "value": "v1"}])])
        await h.provider.create_pod(pod)
        await h.running("ex")

        stdin, stdout, stderr = QueueInput(), Capture(), Capture()
        stdin.feed(b"hello ")
        stdin.feed(b"world\n")
        stdin.feed_eof()
        io = ContainerIO(stdin=stdin, stdout=stdout, stderr=stderr)
        code = await h.provider.run_in_container("default", "ex", "main", ["cat"], io)
        assert (code, stdout.data) == (0, b"hello world\n")

        out, err = Capture(), Capture()
        script = 'echo "$SECRETISH"; pwd; echo warn >&2; exit 7'
        io = ContainerIO(stdin=None, stdout=out, stderr=err)
        code = await h.provider.run_in_container("default", "ex", "main", ["sh", "-c", script], io)
        workdir = h.state_dir / "process" / pod["metadata"]["uid"] / "main" / "work"
        assert (code, out.data, err.data) == (7, f"v1\n{workdir}\n".encode(), b"warn\n")

        err = Capture()
        io = ContainerIO(stdin=None, stdout=Capture(), stderr=err)
        code = await h.provider.run_in_container("default", "ex", "main", ["nosuchcmd", "x"], io)
        assert code == 127
        assert b'exec: "nosuchcmd": executable file not found in $PATH' in err.data

        io = ContainerIO(stdin=None, stdout=Capture(), stderr=None)
        killed = ["sh", "-c", "kill -TERM $$"]
        assert await h.provider.run_in_container("default", "ex", "main", killed, io) == 143

        with pytest.raises(NotFound):
            await h.provider.run_in_container("default", "ex", "nope", ["true"], io)
        with pytest.raises(NotFound):
            await h.provider.run_in_container("default", "nope", "main", ["true"], io)

    run_test(tmp_path, body)


def test_exec_with_tty_gets_a_terminal_of_the_requested_size(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        await h.provider.create_pod(make_pod("tty", [sh("exec sleep 30")]))
        await h.running("tty")
        stdin, stdout, resize = QueueInput(), Capture(), ResizeQueue()
        resize.put(TermSize(width=100, height=30))
        io = ContainerIO(stdin=stdin, stdout=stdout, stderr=None, tty=True, resize=resize)
        script = "tty; read line; stty size; exit 3"
        task = asyncio.create_task(
            h.provider.run_in_container("default", "tty", "main", ["sh", "-c", script], io)
        )
        await until(lambda: b"/dev/pts/" in stdout.data)
        stdin.feed(b"go\n")
        code = await asyncio.wait_for(task, 10)
        assert code == 3
        assert b"30 100" in stdout.data
        resize.close()

    run_test(tmp_path, body)


# --- logs ------------------------------------------------------------------------------------


def test_logs_follow_sees_new_lines_and_ends_with_the_container(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        script = "for i in 1 2 3 4 5; do echo line $i; sleep 0.15; done"
        await h.provider.create_pod(make_pod("follow", [sh(script)], restart="Never"))
        await h.running("follow")
        chunks: list[bytes] = []
        began = time.monotonic()
        stream = h.provider.get_container_logs("default", "follow", "main", LogOptions(follow=True))
        async for chunk in stream:
            chunks.append(chunk)
        data = b"".join(chunks)
        assert data == b"".join(b"line %d\n" % i for i in range(1, 6))
        assert time.monotonic() - began < 10

        stamped = await collect(h, "follow", LogOptions(timestamps=True, tail_lines=2))
        lines = stamped.splitlines()
        assert [line.split(b" ", 1)[1] for line in lines] == [b"line 4", b"line 5"]
        assert lines[0].split(b" ")[0].endswith(b"Z")

        later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
        assert await collect(h, "follow", LogOptions(since_time=later)) == b""

    run_test(tmp_path, body)


def test_previous_logs_after_a_restart(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        script = (
            "n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count; echo run $n; "
            '[ "$n" -gt 1 ] && exec sleep 30; exit 1'
        )
        await h.provider.create_pod(make_pod("prev", [sh(script)]))
        with pytest.raises(InvalidInput, match="waiting to start"):
            await collect(h, "prev", LogOptions())
        pod = await h.wait(
            "prev",
            lambda p: status_of(p)["restartCount"] == 1 and "running" in status_of(p)["state"],
        )
        assert status_of(pod)["lastState"]["terminated"]["exitCode"] == 1
        await until(lambda: "run 2" in h.log_text(pod, run=2))
        assert await collect(h, "prev", LogOptions()) == b"run 2\n"
        assert await collect(h, "prev", LogOptions(previous=True)) == b"run 1\n"

        await h.provider.create_pod(make_pod("fresh", [sh("exec sleep 30")]))
        await h.running("fresh")
        with pytest.raises(InvalidInput, match="previous terminated container"):
            await collect(h, "fresh", LogOptions(previous=True))
        with pytest.raises(NotFound):
            await collect(h, "fresh", LogOptions(), container="other")

    run_test(tmp_path, body)


def test_log_rotation_keeps_one_old_file(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        script = (
            "i=0; while [ $i -lt 400 ]; do i=$((i+1)); echo line-$i-xxxxxxxxxxxxxxxxxxxxx; done"
        )
        pod = make_pod("rot", [sh(script)], restart="Never")
        await h.provider.create_pod(pod)
        await h.wait("rot", lambda p: p["status"]["phase"] == "Succeeded")
        folder = h.state_dir / "process" / pod["metadata"]["uid"] / "main"
        assert (folder / "1.log.1").exists()
        assert (folder / "1.log").stat().st_size <= 8192
        tail = await collect(h, "rot", LogOptions(tail_lines=1))
        assert tail == b"line-400-xxxxxxxxxxxxxxxxxxxxx\n"

    run_test(tmp_path, body, {"log_max_bytes": 8192})


# --- attach and port-forward ------------------------------------------------------------------


def test_attach_streams_output_and_feeds_stdin(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        container = sh("while read line; do echo got $line; done; echo bye", stdin=True)
        await h.provider.create_pod(make_pod("att", [container]))
        await h.running("att")
        stdin, stdout = QueueInput(), Capture()
        io = ContainerIO(stdin=stdin, stdout=stdout, stderr=Capture())
        task = asyncio.create_task(h.provider.attach_to_container("default", "att", "main", io))
        await asyncio.sleep(0.2)  # let attach open the FIFO
        stdin.feed(b"one\n")
        await until(lambda: b"got one" in stdout.data)
        stdin.feed(b"two\n")
        await until(lambda: b"got two" in stdout.data)
        stdin.feed_eof()
        assert await asyncio.wait_for(task, 10) is None  # the client left; the container runs on

    run_test(tmp_path, body)


def test_port_forward_reaches_the_pod_and_refusals_are_clear(tmp_path: Path) -> None:
    port = free_port()

    class Stream:
        def __init__(self, request: bytes) -> None:
            self.input = QueueInput()
            self.input.feed(request)
            self.input.feed_eof()
            self.received = b""
            self.closed = False

        async def read(self, n: int = 65536) -> bytes:
            return await self.input.read(n)

        async def write(self, data: bytes) -> None:
            self.received += data

        async def close(self) -> None:
            self.closed = True

    async def body(h: Harness) -> None:
        server = {
            "name": "main",
            "command": [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
            "readinessProbe": {"tcpSocket": {"port": port}, "periodSeconds": 0.1},
        }
        await h.provider.create_pod(make_pod("pf", [server]))
        await h.wait("pf", lambda p: status_of(p)["ready"])
        stream = Stream(b"GET / HTTP/1.0\r\n\r\n")
        await h.provider.port_forward("default", "pf", port, stream)
        assert stream.received.startswith(b"HTTP/1.0 200")
        assert stream.closed
        closed_port = free_port()
        with pytest.raises(RuntimeError, match=f"127.0.0.1:{closed_port}"):
            await h.provider.port_forward("default", "pf", closed_port, Stream(b""))

    run_test(tmp_path, body)


# --- stats and node ---------------------------------------------------------------------------


def test_stats_show_a_busy_process(tmp_path: Path) -> None:
    busy = "import time\nend = time.time() + 30\nwhile time.time() < end: pass\n"

    async def body(h: Harness) -> None:
        container = {"name": "main", "command": [sys.executable, "-c", busy]}
        await h.provider.create_pod(make_pod("busy", [container]))
        await h.running("busy")
        await h.provider.get_stats_summary()
        await asyncio.sleep(0.5)
        summary = await h.provider.get_stats_summary()
        pod = next(p for p in summary["pods"] if p["podRef"]["name"] == "busy")
        cpu = pod["containers"][0]["cpu"]
        memory = pod["containers"][0]["memory"]
        assert cpu["usageCoreNanoSeconds"] > 50_000_000
        assert cpu["usageNanoCores"] > 50_000_000  # > 50m of a core
        assert memory["workingSetBytes"] > 1_000_000
        assert pod["cpu"]["usageNanoCores"] == cpu["usageNanoCores"]
        node = summary["node"]
        assert node["nodeName"] == "node-1"
        assert node["cpu"]["usageCoreNanoSeconds"] > 0
        assert node["memory"]["workingSetBytes"] > 0

        node_object: dict[str, Any] = {"metadata": {}, "spec": {}, "status": {"nodeInfo": {}}}
        await h.provider.configure_node(node_object)
        capacity = node_object["status"]["capacity"]
        assert capacity["cpu"] == str(os.cpu_count())
        assert capacity["pods"] == "110"
        assert capacity["memory"].endswith("Ki")
        assert int(capacity["memory"][:-2]) > 0
        assert node_object["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("process://")
        assert await h.provider.assign_pod_ips(make_pod("x", [sh("true")])) == ["127.0.0.1"]

    run_test(tmp_path, body)


# --- mounts and limits (need root and a cooperative kernel) -----------------------------------


def test_volume_mounts_are_bind_mounted(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("bind mounts need root")
    mount = tmp_path / "mnt" / "config"
    message = tmp_path / "mnt" / "termination-log"

    async def body(h: Harness) -> None:
        if not h.provider.host.bind_mounts:
            pytest.skip("this host does not allow private mount namespaces")
        pod = make_pod(
            "mounts",
            [
                sh(
                    f"cat {mount}/key; touch {mount}/new 2>/dev/null || echo read-only; "
                    f'echo "${volume_env_name(str(mount))}"; '
                    f"echo bye > {message}; exec sleep 30",
                    volumeMounts=[{"name": "cfg", "mountPath": str(mount), "readOnly": True}],
                    terminationMessagePath=str(message),
                )
            ],
            volumes=[{"name": "cfg", "configMap": {"name": "cfg"}}],
        )
        volume = h.context.volume_path(pod, "cfg")
        volume.mkdir(parents=True)
        (volume / "key").write_text("value\n")
        await h.provider.create_pod(pod)
        await h.running("mounts")
        await until(lambda: "bye" in h.log_text(pod) or "read-only" in h.log_text(pod))
        await until(lambda: len(h.log_text(pod).splitlines()) >= 3)
        lines = [line.split(" ", 3)[3] for line in h.log_text(pod).splitlines()]
        assert lines[:3] == ["value", "read-only", str(mount)]
        # The host does not see the mount; exec does.
        assert not (mount / "key").exists()
        out = Capture()
        io = ContainerIO(stdin=None, stdout=out, stderr=Capture())
        code = await h.provider.run_in_container(
            "default", "mounts", "main", ["cat", f"{mount}/key"], io
        )
        assert (code, out.data) == (0, b"value\n")

    run_test(tmp_path, body, {"mounts": "auto"})


def test_memory_limit_goes_into_a_cgroup(tmp_path: Path) -> None:
    parent = f"vk-unit-{uuid.uuid4().hex[:8]}"

    async def body(h: Harness) -> None:
        cgroups = h.provider.host.cgroups
        if cgroups is None or "memory" not in cgroups.bases:
            pytest.skip("no writable cgroup v1 memory hierarchy")
        limits = {"limits": {"memory": "64Mi", "cpu": "500m"}}
        pod = make_pod("limited", [sh("cat /proc/self/cgroup; exec sleep 30", resources=limits)])
        await h.provider.create_pod(pod)
        await h.running("limited")
        folder = cgroups.bases["memory"] / pod["metadata"]["uid"] / "main"
        assert (folder / "memory.limit_in_bytes").read_text().strip() == str(64 * 1024 * 1024)
        run = h.run_file(pod)
        assert str(run["pid"]) in (folder / "cgroup.procs").read_text().split()
        if "cpu" in cgroups.bases:
            cpu = cgroups.bases["cpu"] / pod["metadata"]["uid"] / "main"
            assert (cpu / "cpu.cfs_quota_us").read_text().strip() == "50000"
        await h.provider.delete_pod(pod)
        await until(lambda: not folder.exists())

    try:
        run_test(tmp_path, body, {"cgroups": True, "cgroup_parent": parent})
    finally:
        from virtual_kubelet.providers.process.limits import _hierarchies

        for own in _hierarchies().values():
            target = own / parent
            if target.is_dir():
                for child in sorted(target.rglob("*"), reverse=True):
                    if child.is_dir():
                        os.rmdir(child)
                os.rmdir(target)


def test_attach_shows_prompts_without_newline_also_with_a_tty(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        script = "read first; printf 'prompt> '; read second; echo got $second; exec sleep 30"
        await h.provider.create_pod(make_pod("plain", [sh(script, stdin=True)]))
        await h.provider.create_pod(make_pod("tty", [sh(script, stdin=True, tty=True)]))
        for name in ("plain", "tty"):
            await h.running(name)
            stdin, stdout = QueueInput(), Capture()
            io = ContainerIO(stdin=stdin, stdout=stdout, stderr=None, tty=name == "tty")
            task = asyncio.create_task(h.provider.attach_to_container("default", name, "main", io))
            await asyncio.sleep(0.2)  # let attach open the FIFO
            stdin.feed(b"x\n")
            await until(lambda out=stdout: b"prompt> " in out.data)  # no newline yet
            stdin.feed(b"y\n")
            await until(lambda out=stdout: b"got y" in out.data)
            stdin.feed_eof()
            assert await asyncio.wait_for(task, 10) is None
        pod = await h.provider.get_pod("default", "tty")
        assert pod is not None
        logs = await collect(h, "tty", LogOptions())
        assert b"prompt> y\r\n" in logs  # the terminal echoed the input after the prompt

    run_test(tmp_path, body)


def test_a_killed_shim_takes_its_container_along_and_is_reported(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        pod = make_pod("victim", [sh("exec sleep 30")])
        await h.provider.create_pod(pod)
        await h.running("victim")
        run = h.run_file(pod)
        os.kill(run["shim_pid"], signal.SIGKILL)
        restarted = await h.wait("victim", lambda p: status_of(p)["restartCount"] >= 1)
        last = status_of(restarted)["lastState"]["terminated"]
        assert last["reason"] == "ContainerStatusUnknown"
        await until(lambda: not alive(run["pid"], run["pid_start"]))

    run_test(tmp_path, body)


def test_active_deadline_fails_the_pod(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        await h.provider.create_pod(
            make_pod("deadline", [sh("exec sleep 30")], activeDeadlineSeconds=1)
        )
        failed = await h.wait("deadline", lambda p: p["status"]["phase"] == "Failed")
        assert failed["status"]["reason"] == "DeadlineExceeded"
        await h.wait("deadline", lambda p: "terminated" in status_of(p)["state"])

    run_test(tmp_path, body)
