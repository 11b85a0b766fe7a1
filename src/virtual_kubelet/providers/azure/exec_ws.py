"""`kubectl exec` through ACI's executeCommand: ARM answers with a WebSocket URL and a password;
the client sends the password as its first message, then the terminal's input, and receives the
command's output until the service closes the socket.

What ACI's protocol cannot carry is said, not faked: the command is one line split at spaces
(arguments holding spaces are refused), stdout and stderr arrive as one stream, the terminal
size is fixed by the request (a later resize is not sent), and no exit code comes back (0 is
returned when the session ends normally)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl as ssl_module

import aiohttp

from ...sdk import ContainerIO, InvalidInput, TermSize

__all__ = ["DEFAULT_SIZE", "command_line", "first_size", "run_session"]

log = logging.getLogger(__name__)

#: rows, cols when the client sends no size (the original provider's default).
DEFAULT_SIZE = (60, 120)


def command_line(command: list[str]) -> str:
    if not command:
        raise InvalidInput("no command")
    bad = [a for a in command if not a or any(c.isspace() for c in a)]
    if bad:
        raise InvalidInput(
            "ACI runs exec commands as one line split at spaces: an argument cannot be empty or "
            f"hold whitespace ({bad[0]!r})"
        )
    return " ".join(command)


async def first_size(io: ContainerIO, wait: float = 2.0) -> tuple[int, int]:
    """The terminal's size if the client sends one soon (kubectl sends it at once with -t)."""
    if not io.tty or io.resize is None:
        return DEFAULT_SIZE
    sizes = aiter(io.resize)
    try:
        size: TermSize = await asyncio.wait_for(anext(sizes), wait)
    except (TimeoutError, StopAsyncIteration):
        return DEFAULT_SIZE
    return size.height or DEFAULT_SIZE[0], size.width or DEFAULT_SIZE[1]


async def run_session(
    url: str, password: str, io: ContainerIO, ssl: ssl_module.SSLContext | None = None
) -> int:
    """Carry `io` over the exec WebSocket until the service closes it."""
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(url, ssl=ssl if ssl is not None else True, heartbeat=30) as ws,
    ):
        await ws.send_str(password)

        async def pump_in() -> None:
            if io.stdin is None:
                return
            while chunk := await io.stdin.read():
                await ws.send_bytes(chunk)

        feeder = asyncio.create_task(pump_in())
        try:
            async for message in ws:
                if message.type == aiohttp.WSMsgType.TEXT:
                    data = message.data.encode()
                elif message.type == aiohttp.WSMsgType.BINARY:
                    data = message.data
                else:
                    break
                if io.stdout is not None:
                    await io.stdout.write(data)
        finally:
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await feeder
    return 0
