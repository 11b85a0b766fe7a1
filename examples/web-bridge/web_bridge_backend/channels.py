"""exec, attach and port-forward over WebSocket: every binary message starts with one channel byte.

    0 stdin / data into the pod      (agent -> backend)
    1 stdout / data out of the pod   (backend -> agent)
    2 stderr                         (backend -> agent)
    3 status, JSON, the last message (backend -> agent): {"exitCode": N} or {"error": "..."}
    4 resize, JSON {"width", "height"} (agent -> backend)
    5 end of one channel, payload = that channel's byte (either way): 5 0 = stdin ended

exec with a tty runs the command on a pseudo-terminal that it owns (resizes reach it as SIGWINCH).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import inspect
import json
import logging
import os
import pty
import signal
import struct
import termios
from typing import Any

from aiohttp import WSMsgType, web

from . import SUBPROTOCOL
from .runtime import BadRequest, Container, PodRecord, container_env

log = logging.getLogger(__name__)

STDIN, STDOUT, STDERR, STATUS, RESIZE, CLOSE = range(6)


def frame(channel: int, payload: bytes = b"") -> bytes:
    return bytes([channel]) + payload


async def open_socket(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(protocols=[SUBPROTOCOL], max_msg_size=16 * 1024 * 1024)
    await ws.prepare(request)
    return ws


async def send_status(ws: web.WebSocketResponse, status: dict[str, Any]) -> None:
    with contextlib.suppress(ConnectionResetError, RuntimeError):
        await ws.send_bytes(frame(STATUS, json.dumps(status).encode()))
        await ws.close()


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "").lower() in ("1", "true")


# --- exec -----------------------------------------------------------------------------------------


async def exec_in(
    request: web.Request, record: PodRecord, container: Container
) -> web.StreamResponse:
    command = request.query.getall("command", [])
    if not command:
        raise BadRequest("exec needs at least one command= parameter")
    tty = _flag(request, "tty")
    ws = await open_socket(request)
    env = container_env(container.spec)
    cwd = container.spec.get("workingDir") or record.workdir
    master = slave = -1
    try:
        first: bytes | None = None
        if tty:
            # The client sends the terminal's size first: wait a moment for it, so the command
            # starts on a terminal of the right size (a quick `stty size` would say 0 0).
            first = await _first_message(ws, 1.0)
            master, slave = pty.openpty()
            if first is not None and first[0] == RESIZE:
                _set_size(master, first[1:])
                first = None
            process = await asyncio.create_subprocess_exec(
                *command,
                env={**env, "TERM": "xterm"},
                cwd=cwd,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                start_new_session=True,
                preexec_fn=_take_terminal,
            )
            os.close(slave)
            slave = -1
        else:
            process = await asyncio.create_subprocess_exec(
                *command,
                env=env,
                cwd=cwd,
                start_new_session=True,
                stdin=asyncio.subprocess.PIPE
                if _flag(request, "stdin")
                else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
    except OSError as exc:
        if slave >= 0:
            os.close(slave)
        if master >= 0:
            os.close(master)
        await ws.send_bytes(frame(STDERR, f"{command[0]}: {exc.strerror}\n".encode()))
        await send_status(ws, {"exitCode": 127 if isinstance(exc, FileNotFoundError) else 126})
        return ws
    try:
        if tty:
            code = await _run_on_terminal(ws, process, master, first)
        else:
            code = await _run_on_pipes(ws, process)
    finally:
        if master >= 0:
            os.close(master)
        if process.returncode is None:  # the client left: the command goes with it
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
    if code is not None:
        await send_status(ws, {"exitCode": code})
    return ws


def _take_terminal() -> None:
    """In the child (a new session): make the pty on stdin its controlling terminal."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


async def _run_on_pipes(
    ws: web.WebSocketResponse, process: asyncio.subprocess.Process
) -> int | None:
    assert process.stdout is not None
    assert process.stderr is not None
    outputs = asyncio.gather(
        _forward(process.stdout, ws, STDOUT), _forward(process.stderr, ws, STDERR)
    )
    stdin = process.stdin

    async def on_input(channel: int, payload: bytes) -> None:
        if stdin is None or stdin.is_closing():
            return
        if channel == STDIN:
            stdin.write(payload)
            with contextlib.suppress(ConnectionResetError, BrokenPipeError):
                await stdin.drain()
        elif channel == CLOSE and payload == bytes([STDIN]):
            stdin.close()

    reader = asyncio.create_task(_read_client(ws, on_input))
    try:
        done, _ = await asyncio.wait({outputs, reader}, return_when=asyncio.FIRST_COMPLETED)
        if outputs not in done:
            return None  # the client went away first
        return await process.wait()
    finally:
        reader.cancel()
        outputs.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionResetError):
            await asyncio.gather(reader, outputs, return_exceptions=True)


async def _first_message(ws: web.WebSocketResponse, timeout: float) -> bytes | None:
    try:
        message = await ws.receive(timeout)
    except TimeoutError:
        return None
    return message.data if message.type == WSMsgType.BINARY and message.data else None


def _set_size(master: int, payload: bytes) -> None:
    try:
        size = json.loads(payload)
        winsize = struct.pack("HHHH", int(size["height"]), int(size["width"]), 0, 0)
    except (ValueError, KeyError, TypeError, struct.error):
        log.warning("exec: ignored a resize that is not {width, height}: %r", payload[:80])
        return
    fcntl.ioctl(master, termios.TIOCSWINSZ, winsize)


async def _run_on_terminal(
    ws: web.WebSocketResponse,
    process: asyncio.subprocess.Process,
    master: int,
    first: bytes | None,
) -> int | None:
    loop = asyncio.get_running_loop()
    output: asyncio.Queue[bytes] = asyncio.Queue()

    def readable() -> None:
        try:
            data = os.read(master, 65536)
        except BlockingIOError:
            return
        except OSError:  # EIO: every holder of the terminal is gone
            data = b""
        if not data:
            loop.remove_reader(master)
        output.put_nowait(data)

    os.set_blocking(master, False)
    loop.add_reader(master, readable)

    async def pump() -> None:
        while data := await output.get():
            await ws.send_bytes(frame(STDOUT, data))

    async def write_all(data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(master, view) :]
            except BlockingIOError:  # the terminal's input buffer is full: let it drain
                await asyncio.sleep(0.01)
            except OSError:
                return  # the terminal is gone; the status follows

    async def on_input(channel: int, payload: bytes) -> None:
        if channel == STDIN:
            await write_all(payload)
        elif channel == RESIZE:
            _set_size(master, payload)
        elif channel == CLOSE and payload == bytes([STDIN]):
            await write_all(b"\x04")  # end of input on a terminal is ^D

    if first is not None:  # a message that came while the command was starting
        await on_input(first[0], first[1:])
    pumping = asyncio.create_task(pump())
    reader = asyncio.create_task(_read_client(ws, on_input))
    try:
        done, _ = await asyncio.wait({pumping, reader}, return_when=asyncio.FIRST_COMPLETED)
        if pumping not in done:
            return None
        return await process.wait()
    finally:
        loop.remove_reader(master)
        for task in (pumping, reader):
            task.cancel()
        await asyncio.gather(pumping, reader, return_exceptions=True)


async def _forward(stream: asyncio.StreamReader, ws: web.WebSocketResponse, channel: int) -> None:
    while data := await stream.read(65536):
        await ws.send_bytes(frame(channel, data))


async def _read_client(ws: web.WebSocketResponse, on_input: Any) -> None:
    """Hand every message from the agent to `on_input(channel, payload)` (a function or a
    coroutine function, awaited before the next message: that is the backpressure) until it
    closes."""
    async for message in ws:
        if message.type == WSMsgType.BINARY and message.data:
            result = on_input(message.data[0], message.data[1:])
            if inspect.isawaitable(result):
                await result
        elif message.type == WSMsgType.ERROR:
            break


# --- attach ---------------------------------------------------------------------------------------


async def attach_to(
    request: web.Request, record: PodRecord, container: Container
) -> web.StreamResponse:
    """Follow the container's output from now on; stdin goes to its process (if it has one)."""
    run = container.current
    if run is None or run.finished is not None:
        raise BadRequest(f"container {container.name!r} is not running")
    ws = await open_socket(request)
    process = run.process
    stdin = process.stdin if process is not None else None

    def on_input(channel: int, payload: bytes) -> None:
        if stdin is None or stdin.is_closing():
            return
        if channel == STDIN:
            stdin.write(payload)
        elif channel == CLOSE and payload == bytes([STDIN]) and container.spec.get("stdinOnce"):
            stdin.close()

    async def show() -> None:
        seen = len(run.log)
        while True:
            changed = run.changed
            for _, stream, line in run.log[seen:]:
                await ws.send_bytes(frame(stream, line))
            seen = len(run.log)
            if run.over:
                return
            await changed.wait()

    showing = asyncio.create_task(show())
    reader = asyncio.create_task(_read_client(ws, on_input))
    try:
        done, _ = await asyncio.wait({showing, reader}, return_when=asyncio.FIRST_COMPLETED)
        if showing in done:
            await send_status(ws, {"exitCode": run.exit_code})
        else:
            await ws.close()
    finally:
        for task in (showing, reader):
            task.cancel()
        await asyncio.gather(showing, reader, return_exceptions=True)
    return ws


# --- port-forward ---------------------------------------------------------------------------------


async def forward_port(request: web.Request, host: str, port: int) -> web.StreamResponse:
    """One forwarded connection: the pods share this host's network, so `port` is on `host`."""
    ws = await open_socket(request)
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError as exc:
        await send_status(ws, {"error": f"cannot connect to port {port}: {exc.strerror or exc}"})
        return ws

    async def on_input(channel: int, payload: bytes) -> None:
        if channel == STDIN:
            writer.write(payload)
            await writer.drain()
        elif channel == CLOSE and payload == bytes([STDIN]) and writer.can_write_eof():
            writer.write_eof()

    async def outbound() -> None:
        while data := await reader.read(65536):
            await ws.send_bytes(frame(STDOUT, data))
        await ws.send_bytes(frame(CLOSE, bytes([STDOUT])))

    sending = asyncio.create_task(outbound())
    receiving = asyncio.create_task(_read_client(ws, on_input))
    try:
        # The agent closes the WebSocket once both directions are done (or to abort).
        await asyncio.wait({receiving})
    finally:
        for task in (sending, receiving):
            task.cancel()
        await asyncio.gather(sending, receiving, return_exceptions=True)
        writer.close()
        await ws.close()
    return ws
