"""`kubectl logs` from CloudWatch Logs: GetLogEvents on the container's awslogs stream
(`<prefix>/<container>/<task id>`), with tail, since and timestamps, and follow by polling with
`nextForwardToken` until the task has stopped and the stream is drained."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator, Callable
from typing import Any

from botocore.exceptions import ClientError

from ...sdk import LogOptions, format_line
from .clients import error_code, failed

__all__ = ["stream_log", "stream_name"]

#: GetLogEvents returns at most 10,000 events per call.
_PAGE = 10_000


def stream_name(prefix: str, container: str, task_arn: str) -> str:
    """The awslogs stream of a container of a task, as ECS names it."""
    return f"{prefix}/{container}/{task_arn.rsplit('/', 1)[-1]}"


def _line(event: dict[str, Any], options: LogOptions) -> bytes:
    when = datetime.datetime.fromtimestamp(event.get("timestamp", 0) / 1000, datetime.UTC)
    text = str(event.get("message", ""))
    data = text.encode() if text.endswith("\n") else text.encode() + b"\n"
    return format_line(when, data, options)


async def stream_log(
    logs: Any,
    group: str,
    stream: str,
    options: LogOptions,
    running: Callable[[], bool],
    poll_seconds: float,
) -> AsyncIterator[bytes]:
    """The stream's lines as `options` ask; with follow, new lines every `poll_seconds` while
    `running()` (the task has not stopped), then what is left."""
    request: dict[str, Any] = {"logGroupName": group, "logStreamName": stream}
    since = options.since()
    if since is not None:
        request["startTime"] = int(since.timestamp() * 1000)
    if options.tail_lines is not None:
        if options.tail_lines == 0:
            first: dict[str, Any] = {"startFromHead": False, "limit": 1}
            skip_first_page = True
        else:
            first = {"startFromHead": False, "limit": min(options.tail_lines, _PAGE)}
            skip_first_page = False
    else:
        first = {"startFromHead": True, "limit": _PAGE}
        skip_first_page = False
    token: str | None = None
    while True:
        call = {**request, **(first if token is None else {"startFromHead": True})}
        if token is not None:
            call["nextToken"] = token
        try:
            page = await logs.get_log_events(**call)
        except ClientError as exc:
            if error_code(exc) != "ResourceNotFoundException":
                raise failed("CloudWatch Logs GetLogEvents", exc) from None
            # No stream yet: the container has not written (or not started).
            page = None
        if page is not None:
            if not skip_first_page:
                for event in page.get("events") or []:
                    yield _line(event, options)
            skip_first_page = False
            next_token = page.get("nextForwardToken")
            drained = not page.get("events") or next_token == token
            token = next_token
            if not drained and token is not None:
                continue  # more pages now
        if not options.follow:
            return
        still_running = running()
        if not still_running and page is not None and not page.get("events"):
            return
        if not still_running and page is None:
            return
        await asyncio.sleep(poll_seconds)
