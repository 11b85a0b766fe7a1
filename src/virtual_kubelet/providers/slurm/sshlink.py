"""The login node over asyncssh: one SSH connection kept open by the agent (opened on first use,
opened again when it drops), each Slurm command one exec channel on it, no terminal. The host
key must be in `ssh_known_hosts` (or ~/.ssh/known_hosts): there is no "accept any key"."""

from __future__ import annotations

import asyncio

import asyncssh

from .config import SlurmConfig


class SshLink:
    """One connection to `ssh_host`."""

    def __init__(self, config: SlurmConfig) -> None:
        self.config = config
        user, _, host = (config.ssh_host or "").rpartition("@")
        self.user = user or None
        self.host = host
        self._connection: asyncssh.SSHClientConnection | None = None
        self._lock = asyncio.Lock()

    async def connection(self) -> asyncssh.SSHClientConnection:
        async with self._lock:
            connection = self._connection
            if connection is not None and not connection.is_closed():
                return connection
            config = self.config
            options = asyncssh.SSHClientConnectionOptions(
                username=self.user,
                port=config.ssh_port,
                # () is asyncssh's default (~/.ssh/known_hosts); None would check nothing.
                known_hosts=str(config.ssh_known_hosts) if config.ssh_known_hosts else (),
                client_keys=[str(config.ssh_identity_file)] if config.ssh_identity_file else (),
                connect_timeout=config.call_timeout_seconds,
            )
            self._connection = await asyncssh.connect(self.host, options=options)
            return self._connection

    async def run(self, line: str, stdin: bytes | None) -> tuple[int, bytes, bytes]:
        """(exit status, stdout, stderr) of one remote command line."""
        connection = await self.connection()
        done = await connection.run(line, input=stdin, encoding=None, check=False)
        status = done.exit_status if done.exit_status is not None else 255
        return status, _bytes(done.stdout), _bytes(done.stderr)

    async def start(self, line: str) -> asyncssh.SSHClientProcess[bytes]:
        connection = await self.connection()
        return await connection.create_process(line, encoding=None)

    async def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            await self._connection.wait_closed()


def _bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value or "").encode()
