"""The mock provider's pretend container runtime: logs, a tiny shell for exec, attach to a console,
an in-memory file system that `tar` (and so `kubectl cp`) can use, an echo server for port-forward,
and statistics that add up. Nothing here starts a process or opens a socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import io
import posixpath
import shlex
import sys
import tarfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ...sdk import (
    ContainerIO,
    DuplexStream,
    InvalidInput,
    LogOptions,
    NotFound,
    TermSize,
    format_line,
    rfc3339,
    select_history,
)

#: Annotation: seconds between "tick" lines each container writes to its log.
LOG_EVERY = "mock.virtual-kubelet.io/log-every-seconds"
_CPU_NANOCORES = 1_000_000  # 1m of a core per container, so `kubectl top` has something to show
_MEMORY_BASE = 8 * 1024 * 1024


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _env(container: dict[str, Any]) -> dict[str, str]:
    """The container's env as `kubectl exec -- env` shows it. Names and values are interned:
    thousands of pods repeat the same ones (the service links the agent adds to every pod), and
    each container keeps its env for as long as it runs."""
    return {_shared(e["name"]): _shared(e.get("value", "")) for e in container.get("env") or []}


def _shared(value: Any) -> Any:
    return sys.intern(value) if isinstance(value, str) else value


@dataclass(slots=True)
class MockContainer:
    pod_key: str
    name: str
    image: str
    env: dict[str, str]
    started: datetime.datetime = field(default_factory=_now)
    log: list[tuple[datetime.datetime, bytes]] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    running: bool = True
    ticker: asyncio.Task[None] | None = None
    #: See `changed`: made only when someone waits, so a quiet container (thousands of them on
    #: a big node) holds no Event.
    _changed: asyncio.Event | None = None

    @property
    def changed(self) -> asyncio.Event:
        """Set (and replaced) when output is written or the container stops."""
        if self._changed is None:
            self._changed = asyncio.Event()
        return self._changed

    def write(self, data: bytes) -> None:
        """Append to the container's output (what `kubectl logs` shows), line by line."""
        for line in data.splitlines(keepends=True):
            self.log.append((_now(), line if line.endswith(b"\n") else line + b"\n"))
        self._wake()

    def stop(self) -> None:
        self.running = False
        if self.ticker is not None:
            self.ticker.cancel()
        self._wake()

    def _wake(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    def _digest(self) -> int:
        return int.from_bytes(
            hashlib.sha256(f"{self.pod_key}/{self.name}".encode()).digest()[:2], "big"
        )

    def stats(self, now: datetime.datetime) -> dict[str, Any]:
        elapsed = max((now - self.started).total_seconds(), 0.001)
        rate = _CPU_NANOCORES + self._digest() * 100
        memory = _MEMORY_BASE + self._digest() * 1024
        stamp = rfc3339(now)
        return {
            "name": self.name,
            "startTime": rfc3339(self.started),
            "cpu": {
                "time": stamp,
                "usageNanoCores": rate,
                "usageCoreNanoSeconds": int(rate * elapsed),
            },
            "memory": {
                "time": stamp,
                "workingSetBytes": memory,
                "usageBytes": memory,
                "rssBytes": memory // 2,
            },
        }


class MockRuntime:
    def __init__(self) -> None:
        self.containers: dict[tuple[str, str], MockContainer] = {}
        self.started = _now()

    # --- lifecycle (called by the provider) -------------------------------------------------------

    def start_pod(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        every = (meta.get("annotations") or {}).get(LOG_EVERY)
        for spec in pod["spec"]["containers"]:
            env = _env(spec)
            container = MockContainer(
                key, _shared(spec["name"]), _shared(spec.get("image", "")), env
            )
            container.write(
                f"mock: container {spec['name']} of pod {key} started (image {container.image})\n".encode()
            )
            if every:
                with contextlib.suppress(ValueError):
                    container.ticker = asyncio.create_task(_tick(container, float(every)))
            self.containers[(key, spec["name"])] = container

    def update_env(self, pod: dict[str, Any]) -> None:
        """Give running containers the env of `pod` (what `kubectl exec -- env` shows)."""
        meta = pod["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        for spec in pod["spec"]["containers"]:
            container = self.containers.get((key, spec["name"]))
            if container is not None:
                container.env = _env(spec)

    def finish_pod(self, key: str) -> None:
        """Its containers exited: logs stay readable, exec no longer works."""
        for (pod_key, _), container in self.containers.items():
            if pod_key == key:
                container.stop()

    def stop_pod(self, key: str) -> None:
        for (pod_key, name), container in list(self.containers.items()):
            if pod_key == key:
                container.stop()
                del self.containers[(pod_key, name)]

    def _get(self, namespace: str, pod: str, container: str) -> MockContainer:
        found = self.containers.get((f"{namespace}/{pod}", container))
        if found is None:
            raise NotFound(f"container {container!r} not found in pod {namespace}/{pod}")
        return found

    # --- logs -------------------------------------------------------------------------------------

    async def logs(
        self, namespace: str, pod: str, container: str, options: LogOptions
    ) -> AsyncIterator[bytes]:
        target = self._get(namespace, pod, container)
        if options.previous:
            raise InvalidInput(
                f"previous terminated container {container!r} in pod {pod!r} not found"
            )
        history = select_history(target.log, options)
        for when, line in history:
            yield format_line(when, line, options)
        if not options.follow:
            return
        seen = len(target.log)
        while target.running:
            changed = target.changed
            await changed.wait()
            for when, line in target.log[seen:]:
                yield format_line(when, line, options)
            seen = len(target.log)

    # --- exec and attach --------------------------------------------------------------------------

    async def exec(
        self, namespace: str, pod: str, container: str, command: list[str], io_: ContainerIO
    ) -> int:
        target = self._get(namespace, pod, container)
        if not target.running:
            raise InvalidInput(f"container {container!r} is not running")
        return await _Shell(target, io_).run(command)

    async def attach(
        self, namespace: str, pod: str, container: str, io_: ContainerIO
    ) -> int | None:
        """The container's console: what is typed is echoed to its output (and its log)."""
        target = self._get(namespace, pod, container)
        seen = len(target.log)

        async def show() -> None:
            nonlocal seen
            while target.running and io_.stdout is not None:
                changed = target.changed
                await changed.wait()
                for _, line in target.log[seen:]:
                    await io_.stdout.write(line)
                seen = len(target.log)

        viewer = asyncio.create_task(show())
        try:
            if io_.stdin is None:
                while target.running:
                    await target.changed.wait()
            else:
                while data := await io_.stdin.read():
                    target.write(data)
        finally:
            viewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await viewer
        return None

    # --- port-forward -----------------------------------------------------------------------------

    async def port_forward(self, namespace: str, pod: str, port: int, stream: DuplexStream) -> None:
        if not any(k[0] == f"{namespace}/{pod}" for k in self.containers):
            raise NotFound(f"pod {namespace}/{pod} is not running")
        while data := await stream.read(65536):  # an echo server on every port
            await stream.write(data)
        await stream.close()

    # --- stats ------------------------------------------------------------------------------------

    def summary(self, node_name: str, pods: list[dict[str, Any]]) -> dict[str, Any]:
        now = _now()
        stamp = rfc3339(now)
        pod_stats = []
        total_rate = total_cpu = total_memory = 0
        for pod in pods:
            meta = pod["metadata"]
            key = f"{meta['namespace']}/{meta['name']}"
            containers = [c.stats(now) for (k, _), c in self.containers.items() if k == key]
            if not containers:
                continue
            rate = sum(c["cpu"]["usageNanoCores"] for c in containers)
            cpu = sum(c["cpu"]["usageCoreNanoSeconds"] for c in containers)
            memory = sum(c["memory"]["workingSetBytes"] for c in containers)
            total_rate, total_cpu, total_memory = (
                total_rate + rate,
                total_cpu + cpu,
                total_memory + memory,
            )
            pod_stats.append(
                {
                    "podRef": {
                        "name": meta["name"],
                        "namespace": meta["namespace"],
                        "uid": meta.get("uid", ""),
                    },
                    "startTime": pod.get("status", {}).get("startTime", stamp),
                    "containers": containers,
                    "cpu": {"time": stamp, "usageNanoCores": rate, "usageCoreNanoSeconds": cpu},
                    "memory": {"time": stamp, "workingSetBytes": memory, "usageBytes": memory},
                }
            )
        node_memory = total_memory + _MEMORY_BASE
        return {
            "node": {
                "nodeName": node_name,
                "startTime": rfc3339(self.started),
                "cpu": {
                    "time": stamp,
                    "usageNanoCores": total_rate + 1,
                    "usageCoreNanoSeconds": total_cpu + 1,
                },
                "memory": {
                    "time": stamp,
                    "workingSetBytes": node_memory,
                    "usageBytes": node_memory,
                },
            },
            "pods": pod_stats,
        }


async def _tick(container: MockContainer, every: float) -> None:
    count = 0
    while container.running:
        await asyncio.sleep(every)
        count += 1
        container.write(f"tick {count}\n".encode())


class _Shell:
    """A handful of commands, enough to test exec end to end without any real process."""

    def __init__(self, container: MockContainer, io_: ContainerIO) -> None:
        self.container = container
        self.io = io_
        self.size = TermSize(0, 0)

    async def out(self, data: bytes) -> None:
        if self.io.stdout is not None:
            await self.io.stdout.write(data)

    async def err(self, data: bytes) -> None:
        target = self.io.stderr or self.io.stdout  # with a tty, stderr goes to the terminal
        if target is not None:
            await target.write(data)

    async def stdin_bytes(self) -> bytes:
        chunks = []
        if self.io.stdin is not None:
            while data := await self.io.stdin.read():
                chunks.append(data)
        return b"".join(chunks)

    async def run(self, argv: list[str]) -> int:
        if not argv:
            raise InvalidInput("empty command")
        if argv[0] in ("sh", "/bin/sh", "bash") and len(argv) >= 3 and argv[1] == "-c":
            argv = shlex.split(argv[2])
            if not argv:
                return 0
        name, args = posixpath.basename(argv[0]), argv[1:]
        handler: Callable[[list[str]], Awaitable[int]] | None = getattr(
            self, f"cmd_{name.replace('-', '_')}", None
        )
        if handler is None:
            await self.err(f"mock: {argv[0]}: command not found\n".encode())
            return 127
        return await handler(args)

    async def cmd_echo(self, args: list[str]) -> int:
        await self.out((" ".join(args) + "\n").encode())
        return 0

    async def cmd_stderr(self, args: list[str]) -> int:
        await self.err((" ".join(args) + "\n").encode())
        return 0

    async def cmd_cat(self, args: list[str]) -> int:
        if args:
            for path in args:
                data = self.container.files.get(posixpath.normpath(path))
                if data is None:
                    await self.err(f"cat: {path}: No such file or directory\n".encode())
                    return 1
                await self.out(data)
            return 0
        if self.io.stdin is not None:
            while data := await self.io.stdin.read():
                await self.out(data)
        return 0

    async def cmd_env(self, args: list[str]) -> int:
        await self.out("".join(f"{k}={v}\n" for k, v in self.container.env.items()).encode())
        return 0

    async def cmd_exit(self, args: list[str]) -> int:
        try:
            return int(args[0]) % 256 if args else 0
        except ValueError:
            await self.err(f"exit: {args[0]}: numeric argument required\n".encode())
            return 2

    async def cmd_true(self, args: list[str]) -> int:
        return 0

    async def cmd_false(self, args: list[str]) -> int:
        return 1

    async def cmd_sleep(self, args: list[str]) -> int:
        await asyncio.sleep(float(args[0]) if args else 0)
        return 0

    async def cmd_ls(self, args: list[str]) -> int:
        prefix = posixpath.normpath(args[0]) if args else "/"
        for path in sorted(self.container.files):
            if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
                await self.out((path + "\n").encode())
        return 0

    async def cmd_size(self, args: list[str]) -> int:
        """Print the terminal size (after the client's first resize message)."""
        if self.io.resize is not None:
            async for size in self.io.resize:
                await self.out(f"{size.width}x{size.height}\n".encode())
                return 0
        await self.out(b"no terminal\n")
        return 0

    async def cmd_watch_size(self, args: list[str]) -> int:
        """Print every terminal size until stdin ends (ctrl-D) or the client goes."""
        if self.io.resize is None:
            await self.out(b"no terminal\n")
            return 0

        async def watch() -> None:
            assert self.io.resize is not None
            async for size in self.io.resize:
                await self.out(f"size {size.width}x{size.height}\r\n".encode())

        watcher = asyncio.create_task(watch())
        try:
            if self.io.stdin is not None:
                while data := await self.io.stdin.read():
                    if b"\x04" in data or b"q" in data:
                        break
            else:
                await watcher
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        return 0

    async def cmd_tar(self, args: list[str]) -> int:
        """`tar -xmf - [-C dir]` and `tar cf - path...`: what `kubectl cp` runs."""
        flags, paths, directory = "", [], "/"
        i = 0
        while i < len(args):
            arg = args[i]
            if arg == "-C" and i + 1 < len(args):
                directory, i = args[i + 1], i + 2
                continue
            if arg.startswith("--"):
                i += 1
                continue
            if not flags and not arg.startswith("/") and set(arg.lstrip("-")) <= set("xcmfvzp"):
                flags = arg.lstrip("-")
            elif arg == "-" and "f" in flags:
                pass
            else:
                paths.append(arg)
            i += 1
        files = self.container.files
        if "x" in flags:
            data = await self.stdin_bytes()
            try:
                with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as archive:
                    for member in archive.getmembers():
                        if not member.isfile():
                            continue
                        target = posixpath.normpath(posixpath.join("/", directory, member.name))
                        extracted = archive.extractfile(member)
                        files[target] = extracted.read() if extracted else b""
            except tarfile.TarError as exc:
                await self.err(f"tar: {exc}\n".encode())
                return 2
            return 0
        if "c" in flags:
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w") as archive:
                for wanted in paths or ["/"]:
                    root = posixpath.normpath(wanted)
                    for path, content in sorted(files.items()):
                        if path == root or path.startswith(root.rstrip("/") + "/"):
                            info = tarfile.TarInfo(path.lstrip("/"))
                            info.size = len(content)
                            info.mode = 0o644
                            archive.addfile(info, io.BytesIO(content))
            await self.out(buffer.getvalue())
            return 0
        await self.err(b"tar: you must specify one of -c or -x\n")
        return 2
