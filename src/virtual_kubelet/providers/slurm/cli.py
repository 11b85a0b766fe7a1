"""The Slurm command line, run as asyncio subprocesses (never blocking the event loop), at most
`max_concurrent_calls` at once, each with a timeout, here or on a login node through the system
ssh. Errors carry Slurm's own words."""

from __future__ import annotations

import asyncio
import os
import shlex

from .config import SlurmConfig


class SlurmCallFailed(RuntimeError):
    """A Slurm command failed or could not run; `stderr` is what it said."""

    def __init__(self, argv0: str, message: str, stderr: str = "") -> None:
        super().__init__(f"{argv0}: {message}")
        self.stderr = stderr


class SlurmCli:
    """Runs `sbatch`, `squeue`, `scancel`, ... for one cluster."""

    def __init__(self, config: SlurmConfig) -> None:
        self.config = config
        self.env = dict(os.environ)
        if config.slurm_conf is not None:
            self.env["SLURM_CONF"] = str(config.slurm_conf)
        self._slots = asyncio.Semaphore(config.max_concurrent_calls)

    def argv(self, name: str, *args: str) -> list[str]:
        """The command line of `name args...`: here, or on the login node through ssh (one
        quoted remote command line, SLURM_CONF passed in it)."""
        config = self.config
        if config.ssh_host is None:
            return [config.command(name), *args]
        remote = [config.command(name), *args]
        if config.slurm_conf is not None:
            remote = ["env", f"SLURM_CONF={config.slurm_conf}", *remote]
        line = " ".join(shlex.quote(part) for part in remote)
        return [config.ssh_command, *config.ssh_options, config.ssh_host, "--", line]

    async def run(self, name: str, *args: str, stdin: bytes | None = None) -> str:
        """stdout of `name args...`; SlurmCallFailed if it exits non-zero or times out."""
        async with self._slots:
            try:
                process = await asyncio.create_subprocess_exec(
                    *self.argv(name, *args),
                    stdin=asyncio.subprocess.PIPE
                    if stdin is not None
                    else asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                    env=self.env,
                )
            except OSError as exc:
                raise SlurmCallFailed(name, f"cannot run: {exc.strerror}") from None
            try:
                out, err = await asyncio.wait_for(
                    process.communicate(stdin), self.config.call_timeout_seconds
                )
            except TimeoutError:
                process.kill()
                await process.wait()
                raise SlurmCallFailed(
                    name, f"no answer within {self.config.call_timeout_seconds:g} s"
                ) from None
        text = err.decode(errors="replace").strip()
        if process.returncode != 0:
            last = text.splitlines()[-1] if text else f"exit status {process.returncode}"
            raise SlurmCallFailed(name, last, text)
        return out.decode(errors="replace")
