"""`kubectl logs` from a Batch task's stdout.txt and stderr.txt: read whole, or followed by
polling with ocp-range from the last byte read (Batch has no streaming read)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from azure.batch.aio import BatchClient
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from ...sdk import LogOptions

FILES = ("stdout.txt", "stderr.txt")
#: Batch answers 416 for a range that starts at the end of the file (a file that shrank).
_NOTHING_NEW = 416


async def read_from(
    client: BatchClient, job_id: str, task_id: str, name: str, offset: int
) -> bytes:
    """The bytes of the task's file `name` from `offset` on; empty while it does not exist (the
    task has not started) or has nothing new."""
    try:
        if offset:
            # Ask for the size first: a range past the end is an error answer, not empty.
            props = await client.get_task_file_properties(job_id, task_id, name)
            if int(props.content_length or 0) <= offset:
                return b""
        stream = await client.download_task_file(
            job_id, task_id, name, ocp_range=f"bytes={offset}-" if offset else None
        )
        return b"".join([chunk async for chunk in stream])
    except ResourceNotFoundError:
        return b""
    except HttpResponseError as exc:
        if exc.status_code == _NOTHING_NEW:
            return b""
        raise


async def read_files(client: BatchClient, job_id: str, task_id: str) -> bytes:
    """stdout.txt then stderr.txt, whole."""
    parts = [await read_from(client, job_id, task_id, name, 0) for name in FILES]
    return b"".join(parts)


async def follow_files(
    client: BatchClient,
    job_id: str,
    task_id: str,
    finished: Callable[[], bool],
    interval: float,
    options: LogOptions,
) -> AsyncIterator[bytes]:
    """What the task writes, as it writes it, until the task has completed (or the pod is gone)
    and everything it wrote was sent."""
    offsets = dict.fromkeys(FILES, 0)
    if options.tail_lines is not None:
        # Start from the last lines written so far, then follow from the end.
        history = b""
        for name in FILES:
            data = await read_from(client, job_id, task_id, name, 0)
            offsets[name] = len(data)
            history += data
        lines = history.splitlines(keepends=True)
        shown = lines[-options.tail_lines :] if options.tail_lines else []
        if shown:
            yield b"".join(shown)
    while True:
        last_round = finished()
        for name in FILES:
            data = await read_from(client, job_id, task_id, name, offsets[name])
            if data:
                offsets[name] += len(data)
                yield data
        if last_round:
            return
        await asyncio.sleep(min(interval, 2.0))
