"""The Slurm command line, run as asyncio subprocesses (never blocking the event loop), at most
`max_concurrent_calls` at once, each with a timeout, here or on a login node through the system
ssh or asyncssh (`ssh_client`). Errors carry Slurm's own words."""

from __future__ import annotations

import asyncio
import os
import shlex
from typing import Any

import asyncssh

from .config import SlurmConfig
from .sshlink import SshLink


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
        self.link = (
            SshLink(config)
            if config.ssh_host is not None and config.ssh_client == "asyncssh"
            else None
        )

    def remote_line(self, name: str, *args: str) -> str:
        """`name args...` as one quoted command line for the login node, SLURM_CONF in it."""
        config = self.config
        remote = [config.command(name), *args]
        if config.slurm_conf is not None:
            remote = ["env", f"SLURM_CONF={config.slurm_conf}", *remote]
        return " ".join(shlex.quote(part) for part in remote)

    def argv(self, name: str, *args: str) -> list[str]:
        """The command line of `name args...`: here, or on the login node through the system
        ssh (one quoted remote command line)."""
        config = self.config
        if config.ssh_host is None:
            return [config.command(name), *args]
        line = self.remote_line(name, *args)
        return [config.ssh_command, *config.ssh_options, config.ssh_host, "--", line]

    async def close(self) -> None:
        if self.link is not None:
            await self.link.close()

    async def run(self, name: str, *args: str, stdin: bytes | None = None) -> str:
        """stdout of `name args...`; SlurmCallFailed if it exits non-zero or times out."""
        if self.link is not None:
            return await self._run_asyncssh(name, args, stdin)
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
        return _result(name, process.returncode or 0, out, err)

    async def _run_asyncssh(self, name: str, args: tuple[str, ...], stdin: bytes | None) -> str:
        assert self.link is not None
        line = self.remote_line(name, *args)
        async with self._slots:
            try:
                status, out, err = await asyncio.wait_for(
                    self.link.run(line, stdin), self.config.call_timeout_seconds
                )
            except TimeoutError:
                raise SlurmCallFailed(
                    name, f"no answer within {self.config.call_timeout_seconds:g} s"
                ) from None
            except (OSError, asyncssh.Error) as exc:
                raise SlurmCallFailed(name, f"ssh to {self.config.ssh_host}: {exc}") from None
        return _result(name, status, out, err)

    async def start(self, name: str, *args: str) -> Started:
        """`name args...` started with stdin, stdout and stderr as pipes (for exec)."""
        if self.link is not None:
            try:
                return Started(await self.link.start(self.remote_line(name, *args)))
            except (OSError, asyncssh.Error) as exc:
                raise SlurmCallFailed(name, f"ssh to {self.config.ssh_host}: {exc}") from None
        try:
            process = await asyncio.create_subprocess_exec(
                *self.argv(name, *args),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=self.env,
            )
        except OSError as exc:
            raise SlurmCallFailed(name, f"cannot run: {exc.strerror}") from None
        return Started(process)


def _result(name: str, status: int, out: bytes, err: bytes) -> str:
    text = err.decode(errors="replace").strip()
    if status != 0:
        last = text.splitlines()[-1] if text else f"exit status {status}"
        raise SlurmCallFailed(name, last, text)
    return out.decode(errors="replace")


class Started:
    """A started command, local subprocess or asyncssh channel, behind one small interface."""

    def __init__(self, process: Any) -> None:
        self.process = process
        self.local = isinstance(process, asyncio.subprocess.Process)

    async def write(self, data: bytes) -> None:
        self.process.stdin.write(data)
        await self.process.stdin.drain()

    def close_stdin(self) -> None:
        if self.local:
            self.process.stdin.close()
        else:
            self.process.stdin.write_eof()

    async def read_stdout(self) -> bytes:
        return bytes(await self.process.stdout.read(65536))

    async def read_stderr(self) -> bytes:
        return bytes(await self.process.stderr.read(65536))

    async def wait(self) -> int:
        if self.local:
            return int(await self.process.wait())
        done = await self.process.wait(check=False)
        return int(done.exit_status if done.exit_status is not None else 255)

    async def kill(self) -> None:
        if self.local:
            if self.process.returncode is None:
                self.process.kill()
                await self.process.wait()
        else:
            self.process.close()
