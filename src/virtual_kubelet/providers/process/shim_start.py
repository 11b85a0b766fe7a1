"""Starting one run of a container: what it executes (see launch.py) and the files its shim
reads, prepared in threads, then the shim itself, waited for until the container started (or
failed to start).

A container must never run twice. A shim that has not started its container within
SHIM_START_TIMEOUT, or whose start is cancelled, is killed with its whole session before the
caller goes on, so it cannot start the container late, next to the next run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from typing import IO, Any

from ...sdk import ProviderContext
from .config import ProcessConfig
from .gpus import visible_devices_env
from .launch import Launch, build
from .network import NETNS_DIR
from .runtime import HostSetup, PodRuntime, signal_group
from .shim_protocol import SHIM_MODULE, LaunchSpec, RunState, ShimSpec, write_record
from .state import Layout, save_launch

#: A shim that has not started its container by then is killed and the run counts as failed.
SHIM_START_TIMEOUT = 60.0


class ShimStartTimeout(Exception):
    """The shim did not start the container in time and was killed (the message says so)."""


class RunStarter:
    """Prepares and starts the runs of the pods' containers."""

    def __init__(self, config: ProcessConfig, context: ProviderContext, host: HostSetup) -> None:
        self.config = config
        self.context = context
        self.host = host

    def build(self, runtime: PodRuntime, container: dict[str, Any], run: int) -> Launch:
        """What run `run` executes (blocking: directories may be created; run it in a thread);
        ConfigError, LaunchError or OSError if it cannot be. The files of older runs go first:
        their logs are not reachable any more."""
        layout, pod = runtime.layout, runtime.record.pod
        layout.forget_runs_before(str(container["name"]), run - 1)
        launch = build(
            pod,
            container,
            config=self.config,
            layout=layout,
            volume_dir=lambda volume: self.context.volume_path(pod, volume),
            bind=self.host.bind_mounts,
        )
        gpus = runtime.record.containers[str(container["name"])].gpus
        if gpus:
            # The devices the supervisor assigned win over what the pod says, as with a device
            # plugin: another container's GPUs must not be reachable by naming them.
            launch.env.update(visible_devices_env(gpus))
        return launch

    def write_files(
        self, runtime: PodRuntime, container: dict[str, Any], run: int, launch: Launch
    ) -> tuple[ShimSpec, IO[bytes]]:
        """The cgroups, launch and spec files of run `run`, and the shim log opened for the shim
        (blocking: run it in a thread)."""
        layout, record = runtime.layout, runtime.record
        name = str(container["name"])
        cgroups = self.host.cgroups
        spec = ShimSpec(
            run=run,
            cwd=launch.cwd,
            log_path=str(layout.log(name, run)),
            state_path=str(layout.state(name, run)),
            exit_path=str(layout.exit(name, run)),
            shown_argv0=launch.shown_argv0,
            user=launch.user,
            log_max_bytes=self.config.log_max_bytes,
            stdin_fifo=str(layout.fifo(name)) if container.get("stdin") else None,
            stdin_once=bool(container.get("stdinOnce")),
            tty=bool(container.get("tty")),
            cgroups=cgroups.prepare(record.uid, name, container) if cgroups else [],
            rlimits=self.config.rlimits,
            netns=str(NETNS_DIR / record.netns) if record.netns else None,
            hide_netns=self.host.pod_networks,
        )
        # What holds or derives from env values ($(VAR) in argv, subPathExpr in mount sources)
        # goes to memory-backed storage; the shim reads it from there.
        launch_spec = LaunchSpec(argv=launch.argv, env=launch.env, mounts=launch.mounts)
        spec.launch_path = str(save_launch(layout, name, run, launch_spec))
        write_record(layout.spec(name, run), spec)
        if launch.termination_path == layout.termination(name):
            layout.termination(name).write_bytes(b"")  # a fresh message for each run
        return spec, layout.shim_log(name).open("ab")

    async def run_shim(self, layout: Layout, name: str, run: int, shim_log: IO[bytes]) -> int:
        """Start the shim of run `run` and wait until it started the container (or failed to);
        its first stage's exit code. If that takes over SHIM_START_TIMEOUT (ShimStartTimeout),
        or this task is cancelled, the shim is killed with its whole session first."""
        shim = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            SHIM_MODULE,
            "run",
            str(layout.spec(name, run)),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=shim_log,
            cwd=layout.container(name),
            start_new_session=True,
        )
        try:
            async with asyncio.timeout(SHIM_START_TIMEOUT):
                return await shim.wait()
        except BaseException as exc:
            # The first stage leads a session of its own whose only process group is its pid
            # (the daemon stays in it; the container leaves it, but dies with the daemon, and
            # its group is killed below if it got that far). Not reaped yet, so that pid cannot
            # belong to anyone else.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(shim.pid, signal.SIGKILL)
            started = RunState.read(layout.state(name, run))
            if started is not None:
                signal_group(started, signal.SIGKILL)
            await shim.wait()
            if isinstance(exc, TimeoutError):
                raise ShimStartTimeout(
                    f"the shim did not start the container within {SHIM_START_TIMEOUT:g} s and "
                    "was killed"
                ) from None
            raise
