"""`kubectl logs` from ACI's listLogs. ACI returns a container's log as one string (up to 4 MB),
optionally the last N lines and with timestamps; follow is done by polling the tail with
timestamps and emitting only the lines newer than the last one emitted (the original provider had
no follow at all: azure-aci #147)."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator, Awaitable, Callable

from ...sdk import LogOptions, parse_time

__all__ = ["FOLLOW_TAIL", "follow_logs", "split_stamped"]

#: Lines asked for on each follow poll: more than a container writes between two polls, or the
#: surplus is lost (said in docs/providers/azure.md).
FOLLOW_TAIL = 2000

Fetch = Callable[[int | None], Awaitable[str]]


def split_stamped(content: str) -> list[tuple[datetime.datetime | None, str, bytes]]:
    """(time, time text, line with its newline) of each line of a `timestamps=true` log."""
    lines: list[tuple[datetime.datetime | None, str, bytes]] = []
    for raw in content.splitlines(keepends=True):
        stamp, sep, rest = raw.partition(" ")
        try:
            when = parse_time(stamp) if sep else None
        except ValueError:
            when = None
        if when is None:
            lines.append((None, "", raw.encode()))
        else:
            lines.append((when, stamp, rest.encode()))
    return lines


def _wanted(when: datetime.datetime | None, options: LogOptions) -> bool:
    since = options.since()
    return since is None or when is None or when >= since


def _render(stamp: str, data: bytes, options: LogOptions) -> bytes:
    if not data.endswith(b"\n"):
        data += b"\n"
    return f"{stamp} ".encode() + data if options.timestamps and stamp else data


async def follow_logs(
    fetch: Fetch, options: LogOptions, running: Callable[[], bool], poll_seconds: float
) -> AsyncIterator[bytes]:
    """The log as `options` ask; with follow, new lines until `running()` turns false.
    `fetch(tail)` returns listLogs' content with timestamps."""
    lines = split_stamped(await fetch(options.tail_lines))
    last: tuple[datetime.datetime | None, str, bytes] | None = None
    seen_at_last: set[bytes] = set()
    for line in lines:
        if _wanted(line[0], options):
            yield _render(line[1], line[2], options)
        last, seen_at_last = _advance(last, seen_at_last, line)
    while options.follow:
        still = running()
        await asyncio.sleep(poll_seconds)
        for line in split_stamped(await fetch(FOLLOW_TAIL)):
            if last is not None and not _newer(line, last, seen_at_last):
                continue
            yield _render(line[1], line[2], options)
            last, seen_at_last = _advance(last, seen_at_last, line)
        if not still:
            return


def _advance(
    last: tuple[datetime.datetime | None, str, bytes] | None,
    seen: set[bytes],
    line: tuple[datetime.datetime | None, str, bytes],
) -> tuple[tuple[datetime.datetime | None, str, bytes], set[bytes]]:
    if line[0] is None:
        return (last or line), seen
    if last is not None and last[0] == line[0]:
        return line, seen | {line[2]}
    return line, {line[2]}


def _newer(
    line: tuple[datetime.datetime | None, str, bytes],
    last: tuple[datetime.datetime | None, str, bytes],
    seen_at_last: set[bytes],
) -> bool:
    if line[0] is None or last[0] is None:
        return False
    if line[0] > last[0]:
        return True
    return line[0] == last[0] and line[2] not in seen_at_last
