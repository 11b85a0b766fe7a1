"""`GET /getContainerLogs`: the original query (`tail`, 0 = everything) plus the extended options
(`tailLines`, `sinceSeconds`, `sinceTime`, `timestamps`, `previous`, `follow`, `limitBytes`), as a
streamed `text/plain` body. A followed log ends when the container's run ends.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from aiohttp import web

from .runtime import BadRequest, Container, Run


@dataclass(frozen=True)
class LogQuery:
    tail: int | None
    since: datetime.datetime | None
    timestamps: bool
    previous: bool
    follow: bool
    limit_bytes: int | None

    @classmethod
    def parse(cls, query: web.MultiDictProxy[str]) -> LogQuery:
        def number(name: str) -> int | None:
            raw = query.get(name)
            if raw in (None, ""):
                return None
            try:
                value = int(raw)
            except ValueError:
                raise BadRequest(f"{name}={raw!r} is not an integer") from None
            if value < 0:
                raise BadRequest(f"{name} must be at least 0")
            return value

        def flag(name: str) -> bool:
            return query.get(name, "").lower() in ("1", "true")

        tail = number("tailLines")
        if tail is None:
            tail = number("tail") or None  # the original protocol: 0 means everything
        since: datetime.datetime | None = None
        if (seconds := number("sinceSeconds")) is not None:
            since = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=seconds)
        if raw := query.get("sinceTime"):
            if since is not None:
                raise BadRequest("sinceSeconds and sinceTime cannot both be set")
            try:
                since = datetime.datetime.fromisoformat(raw.replace("Z", "+00:00"))
            except ValueError:
                raise BadRequest(f"sinceTime={raw!r} is not an RFC 3339 time") from None
        return cls(
            tail=tail,
            since=since,
            timestamps=flag("timestamps"),
            previous=flag("previous"),
            follow=flag("follow"),
            limit_bytes=number("limitBytes"),
        )


def _line(when: datetime.datetime, data: bytes, query: LogQuery) -> bytes:
    if not query.timestamps:
        return data
    return when.strftime("%Y-%m-%dT%H:%M:%S.%f").encode() + b"000Z " + data


async def stream_logs(
    request: web.Request, container: Container, query: LogQuery
) -> web.StreamResponse:
    run: Run | None = container.previous if query.previous else container.current
    if run is None:
        which = "previous terminated" if query.previous else "started"
        raise BadRequest(f"container {container.name!r} has no {which} run")
    response = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
    await response.prepare(request)
    budget = query.limit_bytes

    async def send(data: bytes) -> bool:
        """False once limitBytes is reached."""
        nonlocal budget
        if budget is not None:
            data = data[:budget]
            budget -= len(data)
        await response.write(data)
        return budget is None or budget > 0

    history = [(t, d) for t, _, d in run.log if query.since is None or t >= query.since]
    if query.tail is not None:
        history = history[-query.tail :] if query.tail else []
    changed = run.changed  # taken before reading: a line written meanwhile sets it
    seen = len(run.log)
    for when, data in history:
        if not await send(_line(when, data, query)):
            return response
    follow = query.follow and not query.previous
    while follow and not run.over:
        await changed.wait()
        changed = run.changed
        for when, _, data in run.log[seen:]:
            if not await send(_line(when, data, query)):
                return response
        seen = len(run.log)
    await response.write_eof()
    return response
