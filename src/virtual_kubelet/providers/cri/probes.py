"""A container's startup, liveness and readiness probes against the runtime, scheduled by the
SDK's `probe_loop` (the code the process provider uses): exec probes through `ExecSync`, httpGet
and tcpSocket against the pod's IP. Readiness sets the container's `ready`; a failed liveness or
startup probe stops the run (StopContainer within the grace period), and the restartPolicy and
back-off decide what follows, as with the kubelet."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from ...sdk.probes import Handlers, probe_loop
from .client import CriClient, CriError, cri
from .state import ContainerState

log = logging.getLogger(__name__)

#: Kills in progress (a task nobody references may be collected before it ends).
_kills: set[asyncio.Task[None]] = set()


def _spawn(kill: Coroutine[Any, Any, None]) -> None:
    task = asyncio.create_task(kill)
    _kills.add(task)
    task.add_done_callback(_kills.discard)


def exec_via(client: CriClient, container_id: str) -> Any:
    """The SDK handlers' exec callable: argv and timeout -> (exit code, output) via ExecSync."""

    async def run(argv: list[str], timeout: float | None) -> tuple[int, bytes]:
        seconds = math.ceil(timeout) if timeout else 0
        try:
            reply = await client.runtime(
                "ExecSync",
                cri.ExecSyncRequest(container_id=container_id, cmd=argv, timeout=seconds),
                timeout=(seconds or 3600) + 5,
            )
        except CriError as exc:
            if "timeout" in exc.details.lower():
                raise TimeoutError(exc.details) from None
            raise
        return int(reply.exit_code), bytes(reply.stdout) + bytes(reply.stderr)

    return run


def watch(
    container: ContainerState,
    spec: dict[str, Any],
    *,
    client: CriClient,
    handlers: Handlers,
    pod_ip: str,
    changed: Callable[[], None],
    kill: Callable[[str], Coroutine[Any, Any, None]],
) -> None:
    """Start the probes of the container's current run (cancelling those of an earlier run)."""
    if container.probes is not None:
        container.probes.cancel()
    assert container.container_id is not None
    container.probed_id = container.container_id
    startup, liveness, readiness = (
        spec.get(kind) if isinstance(spec.get(kind), dict) else None
        for kind in ("startupProbe", "livenessProbe", "readinessProbe")
    )
    container.started = startup is None
    container.ready = readiness is None and container.started
    if startup is None and liveness is None and readiness is None:
        container.probes = None
        changed()
        return
    started_at = container.status.started_at / 1e9 if container.status is not None else 0.0
    run_exec = exec_via(client, container.container_id)

    def check(probe: dict[str, Any]) -> Callable[[float], Awaitable[tuple[bool, str]]]:
        return lambda timeout: handlers.run(probe, spec, timeout, run_exec, pod_ip=pod_ip)

    def on_startup(ok: bool, message: str) -> None:
        if ok:
            container.started = True
            container.ready = readiness is None
            changed()
        else:
            _spawn(kill(f"Startup probe failed: {message}"))

    def on_liveness(ok: bool, message: str) -> None:
        if not ok:
            _spawn(kill(f"Liveness probe failed: {message}"))

    def on_readiness(ok: bool, message: str) -> None:
        if container.ready != ok:
            container.ready = ok
            changed()

    async def run_all() -> None:
        if startup is not None:
            await probe_loop(startup, check(startup), started_at, on_startup, until_success=True)
        loops = []
        if liveness is not None:
            loops.append(probe_loop(liveness, check(liveness), started_at, on_liveness))
        if readiness is not None:
            loops.append(probe_loop(readiness, check(readiness), started_at, on_readiness))
        await asyncio.gather(*loops)

    container.probes = asyncio.create_task(run_all(), name=f"probes of {container.name}")
    changed()


def stop(container: ContainerState) -> None:
    """The run ended (or the pod goes): its probes stop."""
    if container.probes is not None:
        container.probes.cancel()
        container.probes = None
    container.ready = False
