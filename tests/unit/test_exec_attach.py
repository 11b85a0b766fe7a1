"""exec/attach sessions end the provider's call with the client, and only then."""

from __future__ import annotations

import asyncio

from virtual_kubelet.kubelet_api.streaming.exec_attach import _run_provider
from virtual_kubelet.streams import ContainerIO


def _io() -> ContainerIO:
    return ContainerIO(stdin=None, stdout=None, stderr=None, tty=False, resize=None)


def test_a_silent_exec_is_cancelled_when_the_client_goes_away() -> None:
    started, cleaned_up = asyncio.Event(), asyncio.Event()

    async def silent_command(io: ContainerIO) -> int | None:
        started.set()
        try:
            await asyncio.Event().wait()  # neither reads nor writes: never notices by itself
        finally:
            cleaned_up.set()
        return 0

    async def scenario() -> tuple[tuple[int | None, BaseException | None], bool]:
        client_gone = asyncio.Event()
        session = asyncio.create_task(_run_provider(silent_command, _io(), client_gone))
        await started.wait()
        client_gone.set()
        async with asyncio.timeout(5):
            result = await session
        return result, cleaned_up.is_set()

    assert asyncio.run(scenario()) == ((None, None), True)


def test_a_finished_exec_reports_its_exit_code_and_errors() -> None:
    async def exits(io: ContainerIO) -> int | None:
        return 3

    async def fails(io: ContainerIO) -> int | None:
        raise BrokenPipeError("client closed stdout")

    async def scenario() -> list[tuple[int | None, BaseException | None]]:
        client_here = asyncio.Event()
        return [
            await _run_provider(exits, _io(), client_here),
            await _run_provider(fails, _io(), client_here),
        ]

    assert asyncio.run(scenario()) == [(3, None), (None, None)]


def test_a_cancelled_session_cancels_the_provider_call() -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def waits(io: ContainerIO) -> int | None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return 0

    async def scenario() -> bool:
        session = asyncio.create_task(_run_provider(waits, _io(), asyncio.Event()))
        await started.wait()
        session.cancel()
        await asyncio.gather(session, return_exceptions=True)
        return cancelled.is_set()

    assert asyncio.run(scenario())
