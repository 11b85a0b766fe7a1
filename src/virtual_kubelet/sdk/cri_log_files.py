"""Reading log files in the CRI log format (what containerd writes for a container, and what the
process provider's shims write): history, follow across rotations, and `kubectl logs` options.

A record is `<RFC3339Nano> <stdout|stderr> <F|P> <text>\\n`; `P` records are parts of a longer line
that the next `F` record of the same stream completes. A log is `<name>.log` plus, after a
rotation, `<name>.log.1` (older). Followers notice rotations by the file's inode. This module only
reads files; the blocking parts run in threads. Shared by the process and cri providers.
"""

from __future__ import annotations

import asyncio
import datetime
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import BinaryIO

from .container_logs import LogOptions, format_line, select_history

__all__ = [
    "Assembler",
    "Follower",
    "files_of",
    "read_lines",
    "read_with_position",
    "stream_log",
    "tail_message",
]

Line = tuple[datetime.datetime, bytes]

POLL_SECONDS = 0.1


def _parse_time(text: bytes) -> datetime.datetime:
    # Nanoseconds do not fit a datetime: keep microseconds.
    stamp = text.decode("ascii", "replace").rstrip("Z")
    if "." in stamp:
        head, fraction = stamp.split(".", 1)
        stamp = f"{head}.{fraction[:6].ljust(6, '0')}"
    return datetime.datetime.fromisoformat(stamp).replace(tzinfo=datetime.UTC)


class Assembler:
    """CRI records in, complete lines out (partial records joined per stream)."""

    def __init__(self) -> None:
        self.partial: dict[bytes, bytes] = {}

    def feed(self, record: bytes) -> tuple[datetime.datetime, bytes, bytes] | None:
        """(time, stream, line with its newline) once a line is complete, else None."""
        parts = record.rstrip(b"\n").split(b" ", 3)
        if len(parts) < 3:
            return None
        try:
            when = _parse_time(parts[0])
        except ValueError:
            return None
        stream, tag = parts[1], parts[2]
        content = parts[3] if len(parts) == 4 else b""
        if tag == b"P":
            self.partial[stream] = self.partial.get(stream, b"") + content
            return None
        return when, stream, self.partial.pop(stream, b"") + content + b"\n"


def files_of(log: Path) -> list[Path]:
    """The files of one run's log, oldest first."""
    return [p for p in (log.with_name(log.name + ".1"), log) if p.exists()]


def read_lines(log: Path) -> list[Line]:
    """Every complete line of a run's log (blocking: call in a thread)."""
    return read_with_position(log)[0]


#: The kubelet's limits for a termination message taken from the logs (FallbackToLogsOnError).
TAIL_LINES = 80
TAIL_BYTES = 2048


def tail_message(log: Path) -> str:
    """The last lines of a run's output as the kubelet cuts them for a FallbackToLogsOnError
    termination message (80 lines, then the last 2 KiB); blocking."""
    lines = read_lines(log)[-TAIL_LINES:]
    data = b"".join(line for _, line in lines)[-TAIL_BYTES:]
    return data.decode("utf-8", "replace")


def read_with_position(
    log: Path,
) -> tuple[list[Line], tuple[int, int] | None, Assembler]:
    """The complete lines, where they end in the current file (inode, offset), and the partial
    line read so far, so that a follower can go on from exactly there."""
    assembler = Assembler()
    lines: list[Line] = []
    position: tuple[int, int] | None = None
    for path in files_of(log):
        try:
            with path.open("rb") as handle:
                inode = os.fstat(handle.fileno()).st_ino
                data = handle.read()
        except OSError:
            continue
        end = data.rfind(b"\n") + 1
        for record in data[:end].splitlines(keepends=True):
            if (found := assembler.feed(record)) is not None:
                lines.append((found[0], found[2]))
        if path == log:
            position = (inode, end)
    return lines, position, assembler


class Follower:
    """Reads the new records of a log file as they are written, across rotations."""

    def __init__(
        self,
        path: Path,
        position: tuple[int, int] | None = None,
        assembler: Assembler | None = None,
    ) -> None:
        """Start at `position` (inode, offset) if the file is still that inode, at its start
        otherwise (it was rotated, or is not there yet)."""
        self.path = path
        self._file: BinaryIO | None = None
        self._inode: int | None = None
        self._buffer = b""
        self.assembler = assembler or Assembler()
        self._open(position)

    @classmethod
    def at_end(cls, path: Path) -> Follower:
        """Only what is written from now on."""
        try:
            info = path.stat()
        except OSError:
            return cls(path)
        return cls(path, (info.st_ino, info.st_size))

    def _open(self, position: tuple[int, int] | None) -> None:
        try:
            handle = self.path.open("rb")
        except OSError:
            self._file, self._inode = None, None
            return
        self._inode = os.fstat(handle.fileno()).st_ino
        if position is not None and position[0] == self._inode:
            handle.seek(position[1])
        self._file = handle

    def read(self) -> list[tuple[datetime.datetime, bytes, bytes]]:
        """Whatever complete lines were written since the last call (bounded, non-blocking)."""
        lines = (self.assembler.feed(record) for record in self._records())
        return [line for line in lines if line is not None]

    def read_raw(self) -> list[tuple[bytes, bytes]]:
        """(stream, bytes) as written since the last call, partial lines included (attach)."""
        found: list[tuple[bytes, bytes]] = []
        for record in self._records():
            parts = record.rstrip(b"\n").split(b" ", 3)
            if len(parts) >= 3:
                text = parts[3] if len(parts) == 4 else b""
                found.append((parts[1], text if parts[2] == b"P" else text + b"\n"))
        return found

    def _records(self) -> list[bytes]:
        found: list[bytes] = []
        for _ in range(64):  # at most 4 MiB per call; the caller comes back
            chunk = self._file.read(65536) if self._file is not None else b""
            if not chunk:
                if not self._rotated():
                    break
                continue
            self._buffer += chunk
            *records, self._buffer = self._buffer.split(b"\n")
            found.extend(record + b"\n" for record in records)
        return found

    def _rotated(self) -> bool:
        """Switch to the new file if the shim rotated (or created) it; whether it did."""
        try:
            inode = os.stat(self.path).st_ino
        except OSError:
            return False
        if inode == self._inode:
            return False
        if self._file is not None:
            self._file.close()
        self._buffer = b""
        self._open(None)
        return self._file is not None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


async def stream_log(
    log: Path, options: LogOptions, running: Callable[[], bool]
) -> AsyncIterator[bytes]:
    """A run's log as `kubectl logs` wants it; with follow, until `running()` turns false and
    the file is drained."""
    history, position, assembler = await asyncio.to_thread(read_with_position, log)
    for when, line in select_history(history, options):
        yield format_line(when, line, options)
    if not options.follow:
        return
    follower = Follower(log, position, assembler)
    try:
        while True:
            alive = running()
            for when, _, line in follower.read():
                yield format_line(when, line, options)
            if not alive:
                return
            await asyncio.sleep(POLL_SECONDS)
    finally:
        follower.close()
