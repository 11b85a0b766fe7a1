"""Streams into running containers: `kubectl exec` (pipes or a pty), the exec probes and hooks,
`kubectl attach` (the log followed, stdin through the container's FIFO) and port-forward
(connections made from inside the pod's network namespace when it has one).

Every command "in" a container is a `shim exec` child (see shim.py): it enters the container's
namespaces, cgroups, user and env itself, so nothing here changes the agent's own process. No
call blocks the event loop: fds are non-blocking and watched by the loop, and the one thread
(entering a network namespace) hands its socket back through a future.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import signal
import socket
import struct
import sys
import termios
import threading
from pathlib import Path
from typing import IO, Any

from ...sdk import ContainerIO, DuplexStream, InputStream, InvalidInput, OutputStream
from .logs import Follower
from .network import NETNS_DIR
from .runtime import PodRuntime, exit_code, finish, resolve
from .shim_protocol import SHIM_MODULE, ExitRecord
from .syscalls import enter_network_namespace

#: How long exec output may keep coming after the command exited (background children).
DRAIN_SECONDS = 1.0

#: What asyncio's subprocess functions take for stdin, stdout and stderr.
Stdio = int | IO[Any] | None


async def exec_process(
    runtime: PodRuntime,
    name: str,
    argv: list[str],
    *,
    bind_mounts: bool,
    stdin: Stdio,
    stdout: Stdio,
    stderr: Stdio,
    tty: bool = False,
) -> asyncio.subprocess.Process:
    """Start `argv` in the container's env, working directory, mounts and cgroups."""
    run = runtime.runs.get(name)
    if run is None or not run.container_alive():
        raise InvalidInput(f'container "{name}" is not running')
    if not runtime.layout.launch(name, run.run).exists():
        raise InvalidInput(
            f'the environment of container "{name}" is gone from memory-backed storage; '
            "it gets it back when it restarts"
        )
    args = [sys.executable, "-m", SHIM_MODULE, "exec", str(runtime.layout.spec(name, run.run))]
    fds: list[int] = []
    try:
        if bind_mounts:
            try:
                fds.append(os.open(f"/proc/{run.pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC))
            except OSError:
                raise InvalidInput(f'container "{name}" is not running') from None
            if not run.container_alive():  # the pid was reused between the checks
                raise InvalidInput(f'container "{name}" is not running')
            args += ["--ns-fd", str(fds[0])]
        if tty:
            args.append("--tty")
        args += ["--", *argv]
        return await asyncio.create_subprocess_exec(
            *args,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
            pass_fds=fds,
        )
    finally:
        for fd in fds:
            os.close(fd)


async def exec_capture(
    runtime: PodRuntime, name: str, argv: list[str], timeout: float | None, *, bind_mounts: bool
) -> tuple[int, bytes]:
    """Run a probe or hook command; its exit code and combined output. TimeoutError if it
    takes longer than `timeout` (it is killed then; None: no limit, but it is killed if the
    caller is cancelled)."""
    process = await exec_process(
        runtime,
        name,
        argv,
        bind_mounts=bind_mounts,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(timeout):
            output, _ = await process.communicate()
    finally:
        await _reap(process)
    return exit_code(process.returncode or 0), output


async def run_in_container(
    runtime: PodRuntime, name: str, command: list[str], io: ContainerIO, *, bind_mounts: bool
) -> int:
    """`kubectl exec`: run `command` in the container with `io`; its exit code."""
    if not command:
        raise InvalidInput("empty command")
    if io.tty:
        return await _exec_tty(runtime, name, command, io, bind_mounts)
    pipe, devnull = asyncio.subprocess.PIPE, asyncio.subprocess.DEVNULL
    process = await exec_process(
        runtime,
        name,
        command,
        bind_mounts=bind_mounts,
        stdin=pipe if io.stdin is not None else devnull,
        stdout=pipe if io.stdout is not None else devnull,
        stderr=pipe if io.stderr is not None else devnull,
    )
    tasks: list[asyncio.Task[Any]] = []
    try:
        pumps = []
        if io.stdout is not None and process.stdout is not None:
            pumps.append(asyncio.create_task(_copy_out(process.stdout, io.stdout)))
        if io.stderr is not None and process.stderr is not None:
            pumps.append(asyncio.create_task(_copy_out(process.stderr, io.stderr)))
        tasks.extend(pumps)
        if io.stdin is not None and process.stdin is not None:
            tasks.append(asyncio.create_task(_feed(io.stdin, process.stdin)))
        code = await process.wait()
        if pumps:
            await asyncio.wait(pumps, timeout=DRAIN_SECONDS)
        for pump in pumps:
            if pump.done() and not pump.cancelled() and (error := pump.exception()):
                raise error
        return exit_code(code)
    finally:
        await finish(tasks)
        await _reap(process)


async def _exec_tty(
    runtime: PodRuntime, name: str, command: list[str], io: ContainerIO, bind_mounts: bool
) -> int:
    master, slave = os.openpty()
    try:
        try:
            process = await exec_process(
                runtime,
                name,
                command,
                bind_mounts=bind_mounts,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                tty=True,
            )
        finally:
            os.close(slave)
    except BaseException:
        os.close(master)
        raise
    os.set_blocking(master, False)
    output = io.stdout or io.stderr

    async def pump_out() -> None:
        while data := await _read_fd(master):
            if output is not None:
                await output.write(data)

    async def pump_in() -> None:
        assert io.stdin is not None
        while data := await io.stdin.read(65536):
            await _write_fd(master, data)

    async def resize() -> None:
        assert io.resize is not None
        async for size in io.resize:
            winsize = struct.pack("HHHH", size.height, size.width, 0, 0)
            fcntl.ioctl(master, termios.TIOCSWINSZ, winsize)

    reader = asyncio.create_task(pump_out())
    tasks = [reader]
    if io.stdin is not None:
        tasks.append(asyncio.create_task(pump_in()))
    if io.resize is not None:
        tasks.append(asyncio.create_task(resize()))
    try:
        code = await process.wait()
        await asyncio.wait([reader], timeout=DRAIN_SECONDS)
        return exit_code(code)
    finally:
        await finish(tasks)
        await _reap(process)
        os.close(master)


async def attach(runtime: PodRuntime, name: str, io: ContainerIO) -> int | None:
    """`kubectl attach`: the run's output as it is logged, and stdin into its FIFO. The exit
    code if the run ended meanwhile (None if the client went away first)."""
    run = runtime.runs.get(name)
    if run is None:
        raise InvalidInput(f'container "{name}" is not running')
    wants_stdin = bool(runtime.container(name).get("stdin"))
    follower = Follower.at_end(runtime.layout.log(name, run.run))

    async def show() -> None:
        while True:
            ended = runtime.runs.get(name) is not run
            for stream, data in follower.read_raw():
                target = io.stdout
                if stream == b"stderr" and io.stderr is not None:
                    target = io.stderr
                if target is not None:
                    await target.write(data)
            if ended:
                return
            await asyncio.sleep(0.1)

    async def feed() -> None:
        assert io.stdin is not None
        if not wants_stdin:
            while await io.stdin.read(65536):
                pass  # the container has no stdin: what is typed goes nowhere
            return
        writer = await _open_fifo(runtime.layout.fifo(name))
        await _feed(io.stdin, writer)

    viewer = asyncio.create_task(show())
    tasks: list[asyncio.Task[None]] = [viewer]
    if io.stdin is not None:
        tasks.append(asyncio.create_task(feed()))
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if (error := task.exception()) is not None:
                raise error
    finally:
        await finish(tasks)
        follower.close()
    if runtime.runs.get(name) is run:
        return None
    ended = ExitRecord.read(runtime.layout.exit(name, run.run))
    return ended.exit_code if ended is not None else None


async def port_forward(runtime: PodRuntime, port: int, stream: DuplexStream, pod_ip: str) -> None:
    """Copy `stream` to and from a connection to `port` of the pod, until either side ends."""
    # As a kubelet dialling localhost inside the pod's network namespace: loopback first
    # (a server may listen there only), then the pod IP. Without a namespace of its own the
    # pod shares the host's network, whose loopback and address (the node's) these are.
    record = runtime.record
    netns = str(NETNS_DIR / record.netns) if record.netns else None
    reader = writer = None
    errors = []
    for host in dict.fromkeys(("127.0.0.1", pod_ip)):
        try:
            if netns is None:
                reader, writer = await asyncio.open_connection(host, port)
            else:
                reader, writer = await _connect_in(netns, host, port)
            break
        except OSError as exc:
            errors.append(f"{host}:{port}: {exc.strerror or exc}")
    if reader is None or writer is None:
        raise RuntimeError(
            f"cannot connect to port {port} of pod {record.key} ({'; '.join(errors)})"
        )

    async def upstream() -> None:
        while data := await stream.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()

    sender = asyncio.create_task(upstream())
    try:
        while data := await reader.read(65536):
            await stream.write(data)
        await stream.close()
    finally:
        await finish([sender])
        writer.close()


# --- fds, pipes and sockets ------------------------------------------------------------------------


async def _read_fd(fd: int) -> bytes:
    """Read a non-blocking fd from the event loop; b"" at EOF (EIO on a pty counts as EOF)."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            return os.read(fd, 65536)
        except BlockingIOError:
            pass
        except OSError as exc:
            if exc.errno == errno.EIO:
                return b""
            raise
        ready: asyncio.Future[None] = loop.create_future()
        loop.add_reader(fd, resolve, ready)
        try:
            await ready
        finally:
            loop.remove_reader(fd)


async def _write_fd(fd: int, data: bytes) -> None:
    loop = asyncio.get_running_loop()
    while data:
        try:
            data = data[os.write(fd, data) :]
            continue
        except BlockingIOError:
            pass
        ready: asyncio.Future[None] = loop.create_future()
        loop.add_writer(fd, resolve, ready)
        try:
            await ready
        finally:
            loop.remove_writer(fd)


async def _copy_out(reader: asyncio.StreamReader, output: OutputStream) -> None:
    while chunk := await reader.read(65536):
        await output.write(chunk)


async def _feed(source: InputStream, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await source.read(65536):
            writer.write(data)
            await writer.drain()
    except (BrokenPipeError, ConnectionResetError):
        return  # the command closed its stdin
    finally:
        writer.close()


async def _reap(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)  # our own child: its pid cannot be reused yet
        await process.wait()


async def _open_fifo(path: Path) -> asyncio.StreamWriter:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno in (errno.ENXIO, errno.ENOENT):
            raise InvalidInput("the container is not reading its stdin") from None
        raise
    loop = asyncio.get_running_loop()
    pipe = os.fdopen(fd, "wb", buffering=0)
    transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, pipe)
    return asyncio.StreamWriter(transport, protocol, None, loop)


async def socket_in(netns: str) -> socket.socket:
    """A TCP socket of network namespace `netns` (a path under /var/run/netns). A socket stays
    in the namespace it was created in, so a short-lived thread of its own enters the namespace
    (setns moves only the calling thread), creates the socket, hands it over through a future
    and ends: no other thread of the agent ever changes namespace (hence no executor, whose
    threads are reused), and the event loop never waits for the thread."""
    loop = asyncio.get_running_loop()
    created: asyncio.Future[socket.socket] = loop.create_future()

    def deliver(sock: socket.socket | None, error: OSError | None) -> None:
        if created.cancelled():  # the caller went away meanwhile
            if sock is not None:
                sock.close()
        elif error is not None:
            created.set_exception(error)
        elif sock is not None:
            created.set_result(sock)

    def work() -> None:
        sock: socket.socket | None = None
        error: OSError | None = None
        try:
            enter_network_namespace(netns)
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        except OSError as exc:
            error = exc
        try:
            loop.call_soon_threadsafe(deliver, sock, error)
        except RuntimeError:  # the loop is closed: nobody wants the socket any more
            if sock is not None:
                sock.close()

    threading.Thread(target=work, name="vk-netns-socket", daemon=True).start()
    return await created


async def _connect_in(
    netns: str, host: str, port: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to host:port from inside the pod's network namespace."""
    sock = await socket_in(netns)
    try:
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
    except BaseException:
        sock.close()
        raise
    return await asyncio.open_connection(sock=sock)
