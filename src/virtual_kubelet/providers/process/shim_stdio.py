"""The shim's side of a container's stdio: its output into the run's log file, in the CRI format
`<RFC3339Nano> stdout|stderr F|P <text>` with size rotation, and `kubectl attach` input from the
stdin FIFO into the container's stdin, never blocking the shim.

Standard library only (see shim.py).
"""

from __future__ import annotations

import os
import selectors
import time
from pathlib import Path

#: Longest P(artial) record; longer unterminated output is split into several.
MAX_LINE = 16 * 1024


def rfc3339nano(ns: int | None = None) -> bytes:
    seconds, fraction = divmod(time.time_ns() if ns is None else ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)).encode() + b".%09dZ" % fraction


class LogWriter:
    """CRI log lines into a file that is rotated (one old file kept) when it grows too big."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.file = open(path, "ab", buffering=0)  # noqa: SIM115 - lives as long as the shim
        self.size = self.file.tell()
        #: Streams whose last record was a P(artial) one.
        self.open_lines: dict[str, bool] = {}

    def feed(self, stream: str, data: bytes) -> None:
        """Log a chunk of output: complete lines as F records; an unterminated tail at once as
        P records (so prompts reach `kubectl attach`), which a later F record completes."""
        stamp = rfc3339nano()
        name = stream.encode()
        *lines, rest = data.split(b"\n")
        records = [b"%s %s F %s\n" % (stamp, name, line) for line in lines]
        for start in range(0, len(rest), MAX_LINE):
            records.append(b"%s %s P %s\n" % (stamp, name, rest[start : start + MAX_LINE]))
        self.open_lines[stream] = bool(rest)
        self._write(records)

    def flush(self) -> None:
        """End every stream's unterminated line (its output ended without a newline)."""
        stamp = rfc3339nano()
        self._write([b"%s %s F \n" % (stamp, s.encode()) for s, o in self.open_lines.items() if o])
        self.open_lines.clear()

    def _write(self, records: list[bytes]) -> None:
        """Append whole records, rotating first whenever the next one would not fit."""
        batch: list[bytes] = []
        size = self.size
        for record in records:
            if size and size + len(record) > self.max_bytes:
                self._append(batch)
                batch, size = [], 0
                self._rotate()
            batch.append(record)
            size += len(record)
        self._append(batch)

    def _append(self, batch: list[bytes]) -> None:
        if batch:
            data = b"".join(batch)
            self.file.write(data)
            self.size += len(data)

    def _rotate(self) -> None:
        self.file.close()
        os.replace(self.path, self.path.with_name(self.path.name + ".1"))
        self.file = open(self.path, "ab", buffering=0)  # noqa: SIM115
        self.size = 0


class StdinFeeder:
    """Copies the stdin FIFO (written by `kubectl attach`) into the command's stdin without ever
    blocking the shim: what the command has not read yet is buffered, up to a limit."""

    LIMIT = 1 << 20

    def __init__(self, fifo: str, target: int, once: bool) -> None:
        self.fifo, self.target, self.once = fifo, target, once
        self.pending = b""
        self.fd: int | None = None
        self.paused = False
        self.done = False
        os.set_blocking(target, False)

    def open(self, selector: selectors.BaseSelector) -> None:
        # Non-blocking: a FIFO without writers then reads as "nothing yet", not as EOF.
        self.fd = os.open(self.fifo, os.O_RDONLY | os.O_NONBLOCK)
        selector.register(self.fd, selectors.EVENT_READ, "stdin")

    def readable(self, selector: selectors.BaseSelector) -> None:
        assert self.fd is not None
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return
        if data:
            self.pending += data
            self.flush(selector)
            return
        # The writer (one attach session) went away: stdinOnce closes the command's stdin.
        self._close_fifo(selector)
        if self.once:
            self.done = True
            self.flush(selector)
        else:
            self.open(selector)

    def flush(self, selector: selectors.BaseSelector) -> None:
        if self.target < 0:
            self.pending = b""
            return
        written = 0
        try:
            written = os.write(self.target, self.pending) if self.pending else 0
        except BlockingIOError:
            pass
        except OSError:
            self.pending = b""  # the command closed its stdin: what it did not read is lost
        self.pending = self.pending[written:]
        registered = self.target in selector.get_map()
        if self.pending and not registered:
            selector.register(self.target, selectors.EVENT_WRITE, "stdin-target")
        elif not self.pending and registered:
            selector.unregister(self.target)
        if self.fd is not None and not self.paused and len(self.pending) > self.LIMIT:
            selector.unregister(self.fd)  # back-pressure: read on once the command caught up
            self.paused = True
        elif self.fd is not None and self.paused and len(self.pending) <= self.LIMIT:
            selector.register(self.fd, selectors.EVENT_READ, "stdin")
            self.paused = False
        if self.done and not self.pending:
            self.stop(selector)

    def _close_fifo(self, selector: selectors.BaseSelector) -> None:
        if self.fd is not None:
            if not self.paused:
                selector.unregister(self.fd)
            os.close(self.fd)
            self.fd, self.paused = None, False

    def stop(self, selector: selectors.BaseSelector) -> None:
        self._close_fifo(selector)
        if self.target >= 0:
            if self.target in selector.get_map():
                selector.unregister(self.target)
            os.close(self.target)
            self.target = -1
