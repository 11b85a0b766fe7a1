"""A pod's status from its job (Slurm's state and reason) and its job directory (each container's
start time and exit code, written by the batch script), as a kubelet would report it.

PENDING -> Pending with Slurm's reason (`Resources`, `Priority`, `PartitionConfig`, ...) in the
pod's and the containers' messages; RUNNING -> Running; COMPLETED -> Succeeded; FAILED, TIMEOUT,
OUT_OF_MEMORY, CANCELLED, NODE_FAIL, ... -> Failed with a reason and the exit code. A job killed
for exceeding its memory (`slurmstepd: error: Exceeded job memory limit` in the job's output, or
OUT_OF_MEMORY) is `OOMKilled` with exit code 137.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...sdk import Pod, PodStatus, rfc3339
from .jobs import JobInfo

OOM_MARKERS = ("Exceeded job memory limit", "oom-kill", "Out Of Memory")
#: Pod reasons for the ways a job ends other than by its own exit code.
ENDED_BY_SLURM = {
    "TIMEOUT": ("DeadlineExceeded", "the job reached its time limit (activeDeadlineSeconds)"),
    "DEADLINE": ("DeadlineExceeded", "the job reached its deadline"),
    "CANCELLED": ("SlurmJobCancelled", "the job was cancelled in Slurm"),
    "NODE_FAIL": ("NodeFail", "the job's node failed"),
    "BOOT_FAIL": ("NodeFail", "the job's node failed to boot"),
    "PREEMPTED": ("Preempted", "the job was preempted"),
    "OUT_OF_MEMORY": ("OOMKilled", "the job exceeded its memory limit"),
}


@dataclass(frozen=True)
class ContainerRun:
    """What the batch script recorded for one container."""

    started: str | None
    exit_code: int | None
    finished: str | None


def read_run(job_dir: Path, name: str) -> ContainerRun:
    status = job_dir / "status"
    try:
        started: str | None = (status / f"{name}.started").read_text().strip() or None
    except OSError:
        started = None
    try:
        code, _, finished = (status / f"{name}.exit").read_text().strip().partition(" ")
        return ContainerRun(started, int(code), finished or None)
    except (OSError, ValueError):
        return ContainerRun(started, None, None)


def out_of_memory(job_dir: Path) -> bool:
    try:
        text = (job_dir / "slurm-job.out").read_text(errors="replace")
    except OSError:
        return False
    return any(marker in text for marker in OOM_MARKERS)


def _base(container: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": container["name"],
        "image": container.get("image", ""),
        "imageID": "",
        "restartCount": 0,
    }


def _short_time(stamp: str | None) -> str | None:
    # The script writes nanoseconds; the API wants RFC 3339 (seconds are enough here).
    return stamp.split(".", 1)[0] + "Z" if stamp else None


def _epoch_time(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def _container_status(
    container: dict[str, Any],
    run: ContainerRun,
    job: JobInfo | None,
    job_id: str | None,
    oom: bool,
    pending_message: str,
) -> dict[str, Any]:
    status = _base(container)
    if job_id:
        status["containerID"] = f"slurm://{job_id}/{container['name']}"
    now = rfc3339()
    if run.exit_code is not None:
        code = run.exit_code
        reason = (
            "OOMKilled" if oom and code in (137, 9) else ("Completed" if code == 0 else "Error")
        )
        status.update(
            ready=False,
            started=False,
            state={
                "terminated": {
                    "exitCode": code,
                    "reason": reason,
                    "startedAt": _short_time(run.started) or now,
                    "finishedAt": _short_time(run.finished) or now,
                }
            },
        )
        return status
    if job is None or job.finished:
        code = 137 if oom else (job.exit_code if job and job.exit_code else 137)
        if oom:
            reason = "OOMKilled"
        elif job is None:
            reason = "SlurmJobLost"
        else:
            reason = ENDED_BY_SLURM.get(job.state, ("Error", ""))[0]
        ended = _epoch_time(job.end_time) if job and job.end_time else now
        terminated: dict[str, Any] = {"exitCode": code, "reason": reason, "finishedAt": ended}
        if run.started:
            terminated["startedAt"] = _short_time(run.started)
        status.update(ready=False, started=False, state={"terminated": terminated})
        return status
    if run.started and job.state in ("RUNNING", "COMPLETING", "CONFIGURING", "SUSPENDED"):
        status.update(
            ready=True, started=True, state={"running": {"startedAt": _short_time(run.started)}}
        )
        return status
    waiting = {"reason": "SlurmJobPending", "message": pending_message}
    if job.state != "PENDING":
        waiting = {"reason": "ContainerCreating", "message": f"Slurm job {job_id} is {job.state}"}
    status.update(ready=False, started=False, state={"waiting": waiting})
    return status


def conditions(initialized: bool, ready: bool, message: str | None) -> list[dict[str, Any]]:
    now = rfc3339()

    def condition(kind: str, ok: bool, why: str) -> dict[str, Any]:
        c: dict[str, Any] = {"type": kind, "status": "True" if ok else "False"}
        c["lastTransitionTime"] = now
        if not ok:
            c["reason"] = why
            if message:
                c["message"] = message
        return c

    return [
        condition("PodScheduled", True, ""),
        condition("Initialized", initialized, "ContainersNotInitialized"),
        condition("ContainersReady", ready, "ContainersNotReady"),
        condition("Ready", ready, "ContainersNotReady"),
    ]


def pod_status(
    pod: Pod, job: JobInfo | None, job_id: str | None, job_dir: Path, host_ip: str
) -> PodStatus:
    """The pod's status now. `job` is None when Slurm no longer (or not yet) knows the job."""
    spec = pod["spec"]
    oom = (job is not None and job.state == "OUT_OF_MEMORY") or (
        (job is None or job.finished) and out_of_memory(job_dir)
    )
    pending_message = (
        f"Slurm job {job_id} is pending: {job.reason}" if job and job.state == "PENDING" else ""
    )
    inits = [
        _container_status(c, read_run(job_dir, c["name"]), job, job_id, oom, pending_message)
        for c in spec.get("initContainers") or []
    ]
    mains = [
        _container_status(c, read_run(job_dir, c["name"]), job, job_id, oom, pending_message)
        for c in spec.get("containers") or []
    ]
    terminated = [s["state"]["terminated"] for s in mains if "terminated" in s["state"]]
    initialized = all("terminated" in s["state"] for s in inits) and not any(
        s["state"]["terminated"]["exitCode"] for s in inits
    )
    status: PodStatus = {
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "podIP": host_ip,
        "podIPs": [{"ip": host_ip}],
        "startTime": (pod.get("status") or {}).get("startTime") or rfc3339(),
        "containerStatuses": mains,
        "qosClass": (pod.get("status") or {}).get("qosClass", "BestEffort"),
    }
    if inits:
        status["initContainerStatuses"] = inits
    message: str | None = None
    if job is not None and job.state == "PENDING":
        phase, message = "Pending", pending_message
        status["reason"] = "SlurmJobPending"
    elif job is not None and not job.finished:
        phase = "Running" if any(s.get("started") for s in mains) else "Pending"
    elif (
        len(terminated) == len(mains)
        and initialized
        and all(t["exitCode"] == 0 for t in terminated)
        and (job is None or job.state == "COMPLETED")
    ):
        phase = "Succeeded"
    else:
        phase = "Failed"
        if oom:
            status["reason"], message = "OOMKilled", "the job exceeded its memory limit"
        elif job is None and len(terminated) < len(mains):
            status["reason"] = "SlurmJobLost"
            message = f"Slurm job {job_id} left Slurm's queue without a recorded result"
        elif job is not None and job.state in ENDED_BY_SLURM:
            status["reason"], message = ENDED_BY_SLURM[job.state]
        else:
            codes = ", ".join(
                f"{s['name']}={s['state']['terminated']['exitCode']}"
                for s in mains
                if "terminated" in s["state"]
            )
            status["reason"], message = "Error", f"Slurm job {job_id} failed (exit codes {codes})"
        if message:
            status["message"] = message
    if phase == "Pending" and message:
        status["message"] = message
    ready = phase == "Running" and all(s.get("ready") for s in mains)
    status["phase"] = phase
    status["conditions"] = conditions(initialized, ready, message)
    return status
