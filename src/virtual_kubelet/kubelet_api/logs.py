"""`/containerLogs` on the HTTP side: parsing and validating the query as the kubelet does, and
applying limitBytes to what the provider streams.

The options themselves and the helpers for providers (`LogOptions`, `select_history`,
`format_line`) belong to the provider SDK (`virtual_kubelet.sdk.container_logs`); they stay
importable from here for existing code.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

from ..kube.timefmt import parse
from ..sdk.container_logs import LogOptions, format_line, select_history

__all__ = [
    "InvalidLogOptions",
    "LogOptions",
    "format_line",
    "limit",
    "parse_log_options",
    "select_history",
]


class InvalidLogOptions(ValueError):
    """A query parameter has a bad value (-> 400 with this message)."""


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
