"""What a provider needs to serve `kubectl logs`: the options of one request, and helpers for
providers that keep a container's log as timestamped lines.

The HTTP side (parsing and validating the query, applying limitBytes) stays in
`virtual_kubelet.kubelet_api.logs`; this module has no imports from the rest of the package.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["LogOptions", "format_line", "select_history"]


@dataclass(frozen=True)
class LogOptions:
    """The options of one `/containerLogs` request (`kubectl logs` flags)."""

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


def format_line(when: datetime.datetime, data: bytes, options: LogOptions) -> bytes:
    """One log line as the kubelet sends it: prefixed with its RFC 3339 nanosecond timestamp when
    the client asked for timestamps."""
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
