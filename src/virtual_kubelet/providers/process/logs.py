"""The process provider's side of `kubectl logs`: which run a request shows, and the tail of a
run's log used as a termination message. Reading the CRI-format files the shims write (history,
follow, rotations) is shared with the cri provider: `virtual_kubelet.sdk.cri_log_files`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ...sdk import InvalidInput
from ...sdk.cri_log_files import Follower as Follower
from ...sdk.cri_log_files import stream_log as stream_log
from ...sdk.cri_log_files import tail_message
from .state import ContainerRecord


def fallback_message(log: Path) -> str:
    """The last lines of a run's output (FallbackToLogsOnError), as the kubelet cuts them."""
    return tail_message(log)


def run_to_show(
    record: ContainerRecord,
    *,
    live: bool,
    previous: bool,
    log_exists: Callable[[int], bool],
    pod: str,
) -> int:
    """The run whose log `kubectl logs` shows for the container of `record` (`live`: it has a
    running run; `previous`: --previous); InvalidInput, with the kubelet's message, if none."""
    container = record.name
    if previous:
        if not record.last_run or not log_exists(record.last_run):
            raise InvalidInput(
                f'previous terminated container "{container}" in pod "{pod}" not found'
            )
        return record.last_run
    if (record.state in ("running", "terminated") or live) and record.run:
        return record.run  # (a run whose postStart hook runs is "waiting" but has a log)
    if record.last_run:
        return record.last_run
    raise InvalidInput(
        f'container "{container}" in pod "{pod}" is waiting to start: '
        f"{record.reason or 'ContainerCreating'}"
    )
