"""What Slurm says about jobs, read in one call for all of them: `squeue --json` where the
installed Slurm has it (21.08+), else `scontrol show job --oneliner` (every Slurm). Only jobs of
this node (the comment `vk:<node>:<uid>`) submitted by this user are kept: nobody else's job is
ever looked at twice, let alone touched."""

from __future__ import annotations

import json
import os
import pwd
import shlex
from dataclasses import dataclass
from typing import Any

TERMINAL = {
    "COMPLETED",
    "FAILED",
    "TIMEOUT",
    "OUT_OF_MEMORY",
    "CANCELLED",
    "NODE_FAIL",
    "BOOT_FAIL",
    "DEADLINE",
    "PREEMPTED",
    "SPECIAL_EXIT",
    "REVOKED",
}


@dataclass(frozen=True)
class JobInfo:
    """One job as the provider needs it."""

    job_id: str
    uid: str  # the pod's UID, from the comment
    state: str  # PENDING, RUNNING, COMPLETED, FAILED, ...
    reason: str  # why it is pending or how it ended (Slurm's own word)
    exit_code: int  # the batch script's exit status (a signal N as 128 + N)
    start_time: int  # epoch seconds, 0 when not started
    end_time: int

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL


def current_user() -> str:
    return pwd.getpwuid(os.getuid()).pw_name


def _exit_status(raw: int) -> int:
    """A wait status (what Slurm stores) as a shell's exit code."""
    signal = raw & 0x7F
    return 128 + signal if signal else (raw >> 8) & 0xFF


def _owned(comment: str, user: str, job_user: str, prefix: str) -> str | None:
    if job_user != user or not comment.startswith(prefix):
        return None
    return comment[len(prefix) :] or None


def parse_squeue_json(text: str, node_name: str, user: str) -> dict[str, JobInfo]:
    """uid -> job, from `squeue --json` (the newest job when a UID has several)."""
    prefix = f"vk:{node_name}:"
    found: dict[str, JobInfo] = {}
    for job in json.loads(text).get("jobs") or []:
        uid = _owned(str(job.get("comment") or ""), user, str(job.get("user_name")), prefix)
        if uid is None:
            continue
        state = job.get("job_state") or "UNKNOWN"
        if isinstance(state, list):  # newer Slurm gives a list of flags
            state = state[0] if state else "UNKNOWN"
        info = JobInfo(
            job_id=str(job.get("job_id")),
            uid=uid,
            state=str(state),
            reason=str(job.get("state_reason") or ""),
            exit_code=_exit_status(_number(job.get("exit_code"))),
            start_time=_number(job.get("start_time")),
            end_time=_number(job.get("end_time")),
        )
        _keep_newest(found, info)
    return found


def _number(value: Any) -> int:
    if isinstance(value, dict):  # newer Slurm: {"set": true, "number": N} or {"return_code": ..}
        value = value.get("number", value.get("return_code", 0))
        if isinstance(value, dict):
            value = value.get("number", 0)
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _keep_newest(found: dict[str, JobInfo], info: JobInfo) -> None:
    known = found.get(info.uid)
    if known is None or int(info.job_id) > int(known.job_id):
        found[info.uid] = info


def parse_scontrol(text: str, node_name: str, user: str) -> dict[str, JobInfo]:
    """uid -> job, from `scontrol show job --oneliner` (one `Key=Value ...` line per job)."""
    prefix = f"vk:{node_name}:"
    found: dict[str, JobInfo] = {}
    for line in text.splitlines():
        fields = _fields(line)
        if "JobId" not in fields:
            continue
        job_user = fields.get("UserId", "").split("(", 1)[0]
        uid = _owned(fields.get("Comment", ""), user, job_user, prefix)
        if uid is None:
            continue
        code, _, signal = fields.get("ExitCode", "0:0").partition(":")
        exit_code = 128 + int(signal) if signal.isdigit() and int(signal) else int(code or 0)
        info = JobInfo(
            job_id=fields["JobId"],
            uid=uid,
            state=fields.get("JobState", "UNKNOWN"),
            reason=fields.get("Reason", "None"),
            exit_code=exit_code,
            start_time=0,
            end_time=0,
        )
        _keep_newest(found, info)
    return found


def _fields(line: str) -> dict[str, str]:
    fields = {}
    try:
        words = shlex.split(line)
    except ValueError:
        words = line.split()
    for word in words:
        key, sep, value = word.partition("=")
        if sep and key not in fields:
            fields[key] = value
    return fields
