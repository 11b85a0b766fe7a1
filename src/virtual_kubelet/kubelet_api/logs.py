"""`/containerLogs` options: parsing and validation as the kubelet does, and a filter that applies
them to timestamped lines (for providers that keep logs as lines; others honour options themselves).
"""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass

from ..kube.timefmt import parse


class InvalidLogOptions(ValueError):
    """A query parameter has a bad value (-> 400 with this message)."""


@dataclass(frozen=True)
class LogOptions:
    follow: bool = False
    previous: bool = False
    timestamps: bool = False
    tail_lines: int | None = None
    limit_bytes: int | None = None
    since_seconds: int | None = None
    since_time: datetime.datetime | None = None

    def since(self, now: datetime.datetime | None = None) -> datetime.datetime | None:
        """The earliest moment a line may have, from sinceSeconds or sinceTime."""
        if self.since_time is not None:
            return self.since_time
        if self.since_seconds is not None:
            now = now or datetime.datetime.now(datetime.UTC)
            return now - datetime.timedelta(seconds=self.since_seconds)
        return None


def _bool(name: str, value: str) -> bool:
    if value.lower() in ("true", "1"):
        return True
    if value.lower() in ("false", "0", ""):
        return False
    raise InvalidLogOptions(f"{name}={value!r} is not a boolean")


def _int(name: str, value: str, minimum: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise InvalidLogOptions(f"{name}={value!r} is not an integer") from None
    if number < minimum:
        raise InvalidLogOptions(f"{name} must be at least {minimum}, got {number}")
    return number


def parse_log_options(query: Mapping[str, list[str]]) -> LogOptions:
    def one(name: str) -> str | None:
        values = query.get(name)
        return values[-1] if values else None

    tail = one("tailLines")
    legacy_tail = one("tail")
    if tail is None and legacy_tail not in (None, "all"):
        tail = legacy_tail
    since_seconds = one("sinceSeconds")
    since_time = one("sinceTime")
    if since_seconds is not None and since_time is not None:
        raise InvalidLogOptions("sinceSeconds and sinceTime cannot both be set")
    parsed_since_time = None
    if since_time is not None:
        try:
            parsed_since_time = parse(since_time)
        except ValueError:
            raise InvalidLogOptions(f"sinceTime={since_time!r} is not an RFC 3339 time") from None
    stream = one("stream")
    if stream not in (None, "All", "Stdout", "Stderr"):
        raise InvalidLogOptions(f"stream={stream!r}; use All, Stdout or Stderr")
    return LogOptions(
        follow=_bool("follow", one("follow") or ""),
        previous=_bool("previous", one("previous") or ""),
        timestamps=_bool("timestamps", one("timestamps") or ""),
        tail_lines=_int("tailLines", tail, 0) if tail is not None else None,
        limit_bytes=_int("limitBytes", one("limitBytes") or "", 1) if one("limitBytes") else None,
        since_seconds=_int("sinceSeconds", since_seconds, 1) if since_seconds is not None else None,
        since_time=parsed_since_time,
    )


def format_line(when: datetime.datetime, data: bytes, options: LogOptions) -> bytes:
    if not options.timestamps:
        return data
    return when.strftime("%Y-%m-%dT%H:%M:%S.%f").encode() + b"000Z " + data


def select_history(
    lines: Iterable[tuple[datetime.datetime, bytes]], options: LogOptions
) -> list[tuple[datetime.datetime, bytes]]:
    """The recorded lines the options ask for (since, then tail), oldest first."""
    since = options.since()
    chosen = [(t, d) for t, d in lines if since is None or t >= since]
    if options.tail_lines is not None:
        chosen = chosen[-options.tail_lines :] if options.tail_lines else []
    return chosen


async def limit(chunks: AsyncIterator[bytes], options: LogOptions) -> AsyncIterator[bytes]:
    """Stop after limitBytes (cutting the last chunk), as the kubelet's limited writer does."""
    remaining = options.limit_bytes
    async for chunk in chunks:
        if remaining is None:
            yield chunk
            continue
        if remaining <= 0:
            return
        piece = chunk[:remaining]
        remaining -= len(piece)
        yield piece
        if remaining <= 0:
            return
