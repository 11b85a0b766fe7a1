"""The `slurm` provider: each pod is one Slurm batch job, submitted with `sbatch` on the Slurm CLI
(or POST job/submit to slurmrestd) and tracked for all pods at once with one `squeue --json` call
(or GET jobs) per poll."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...sdk import (
    ContainerIO,
    InvalidInput,
    LogOptions,
    Node,
    NodeCallback,
    Pod,
    PodCallback,
    PodRecords,
    PodStatus,
    Provider,
    ProviderContext,
    deep_copy,
    key_of,
    poll_loop,
    read_mapping,
    rfc3339,
    uid_of,
    validate,
)
from ...sdk.cri_log_files import stream_log
from . import jobs, script
from .cli import SlurmCallFailed, SlurmCli
from .config import SlurmConfig
from .node import SINFO_FORMAT, capacity_of, parse_sinfo, unavailable, unusable_reason
from .rest import SlurmRest
from .status import pod_status

log = logging.getLogger(__name__)

#: The node condition saying whether new jobs can start in the partition (with Slurm's reason).
AVAILABLE_CONDITION = "SlurmAvailable"


@dataclass
class Record:
    """A pod this provider runs: the pod (env values blanked), its job and its directory."""

    pod: Pod
    job_dir: Path
    job_id: str | None = None
    deleting: bool = False
    #: When sbatch returned (monotonic); a poll begun earlier cannot know the job yet.
    submitted: float = 0.0


def _fingerprint(pod: Pod) -> str:
    """What a status change is reported for: all but the conditions' times and messages."""
    status = pod["status"]
    return json.dumps(
        {k: v for k, v in status.items() if k != "conditions"}, sort_keys=True
    ) + json.dumps([(c["type"], c["status"]) for c in status["conditions"]])


def _without_env_values(pod: Pod) -> Pod:
    """The pod as kept on disk and in memory: env values may be secrets, so only names stay."""
    kept: Pod = deep_copy(pod)
    for kind in ("initContainers", "containers"):
        for container in kept["spec"].get(kind) or []:
            for entry in container.get("env") or []:
                if "value" in entry:
                    entry["value"] = ""
    return kept


class SlurmProvider(Provider):
    description = "Pods as Slurm batch jobs (the Slurm CLI, here or over ssh, or slurmrestd)."

    def __init__(self, context: ProviderContext) -> None:
        super().__init__(context)
        path = context.config_path
        self.config = validate(SlurmConfig, read_mapping(path), path) if path else SlurmConfig()
        self.root = self.config.work_root or context.state_dir / "slurm"
        self.cli = SlurmCli(self.config)
        self.rest = SlurmRest(self.config) if self.config.backend == "rest" else None
        # Jobs are the token's user's with slurmrestd's JWT auth, else ours.
        self.user = self.config.rest_user_name or jobs.current_user()
        self.records: PodRecords[Record] = PodRecords(self._with_status)  # by namespace/name
        self.jobs: dict[str, jobs.JobInfo] = {}  # by pod UID, as of the last poll
        self.jobs_as_of = 0.0  # when the last successful poll began (monotonic)
        self.use_json = True
        self.poll_error: str | None = None
        self.polled = asyncio.Event()
        self.poll_now = asyncio.Event()
        self.notify: PodCallback | None = None
        self.poller: asyncio.Task[None] | None = None
        self.capacity: dict[str, str] | None = None
        self.unusable: str | None = None  # why no node of the partition can run jobs
        #: (reason, message) while no new job can start in the partition (the node condition).
        self.unavailable: tuple[str, str] | None = None
        self.node: Node | None = None  # as last configured, for pushed capacity changes
        self.node_callback: NodeCallback | None = None
        self.refresher: asyncio.Task[None] | None = None

    # --- life cycle -------------------------------------------------------------------------

    async def start(self) -> None:
        (self.root / "pods").mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)
        for pod_file in sorted((self.root / "pods").glob("*/pod.json")):
            try:
                pod = json.loads(pod_file.read_text())
            except (OSError, ValueError):
                log.warning("skipping unreadable %s", pod_file)
                continue
            record = Record(pod=pod, job_dir=pod_file.parent)
            job_id_file = pod_file.parent / "job-id"
            if job_id_file.exists():
                record.job_id = job_id_file.read_text().strip() or None
            self.records[key_of(pod)] = record
        await self.poll()
        # A job submitted just before a crash, before its id was written: found by its UID.
        for record in self.records.values():
            job = self.jobs.get(uid_of(record.pod))
            if job is not None and record.job_id != job.job_id:
                record.job_id = job.job_id
                (record.job_dir / "job-id").write_text(job.job_id)
        self.poller = asyncio.create_task(
            poll_loop(self.poll_now, self.config.poll_seconds, self.poll, self._report_changes),
            name="slurm-poll",
        )
        self.refresher = asyncio.create_task(self._refresh_node_forever(), name="slurm-nodes")

    async def stop(self) -> None:
        tasks = [t for t in (self.poller, self.refresher) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.rest is not None:
            await self.rest.close()
        await self.cli.close()

    def notify_pods(self, callback: PodCallback) -> None:
        self.notify = callback

    # --- polling ----------------------------------------------------------------------------

    async def poll(self) -> None:
        """One call for every job: squeue --json (or scontrol show job where there is no JSON)."""
        node = self.context.node_name
        began = time.monotonic()
        try:
            if self.rest is not None:
                self.jobs = jobs.parse_squeue_json(await self.rest.jobs_json(), node, self.user)
            elif self.use_json:
                try:
                    text = await self.cli.run("squeue", "--json")
                    self.jobs = jobs.parse_squeue_json(text, node, self.user)
                except SlurmCallFailed as exc:
                    if "unrecognized option" not in str(exc) and "invalid option" not in str(exc):
                        raise
                    log.info("squeue has no --json here: reading scontrol show job instead")
                    self.use_json = False
            if self.rest is None and not self.use_json:
                text = await self.cli.run("scontrol", "show", "job", "--oneliner", "--all")
                self.jobs = jobs.parse_scontrol(text, node, self.user)
            self.poll_error = None
            self.jobs_as_of = began
        except (SlurmCallFailed, ValueError) as exc:
            self.poll_error = str(exc)
            log.warning("reading Slurm's jobs failed: %s", exc)
        self.polled.set()
        self.polled = asyncio.Event()

    def _report_changes(self) -> None:
        if self.poll_error is None:  # a failed poll knows nothing new
            self.records.report_changes(self.notify, _fingerprint)

    async def _next_poll(self) -> None:
        waiting = self.polled
        self.poll_now.set()
        await waiting.wait()

    def _job_of(self, record: Record) -> jobs.JobInfo | None:
        """The record's job as of the last poll; None only when Slurm answered without it."""
        uid = uid_of(record.pod)
        job = self.jobs.get(uid)
        if job is not None or record.job_id is None:
            return job
        if self.jobs_as_of == 0.0 or self.poll_error is not None:
            # Slurm cannot be read: what the job directory shows, never "lost" (the node is
            # NotReady meanwhile, see ping).
            started = any(
                (record.job_dir / "status" / f"{c['name']}.started").exists()
                for c in record.pod["spec"].get("containers") or []
            )
            state = "RUNNING" if started else "PENDING"
            return jobs.JobInfo(record.job_id, uid, state, "Slurm does not answer", 0, 0, 0)
        if record.submitted >= self.jobs_as_of:
            # Submitted after the last poll began: Slurm has it, we have not asked yet.
            return jobs.JobInfo(record.job_id, uid, "PENDING", "submitted", 0, 0, 0)
        return None

    def _with_status(self, record: Record) -> Pod:
        pod: Pod = deep_copy(record.pod)
        job = self._job_of(record)
        pod["status"] = pod_status(
            record.pod, job, record.job_id, record.job_dir, self.context.internal_ip
        )
        return pod

    # --- pods -------------------------------------------------------------------------------

    async def create_pod(self, pod: Pod) -> None:
        key, uid = key_of(pod), uid_of(pod)
        known = self.records.get(key)
        if known is not None and uid_of(known.pod) == uid:
            return  # already submitted (or adopted): never twice
        job_dir = self.root / "pods" / uid
        volume_paths = {
            v["name"]: str(self.context.volume_path(pod, v["name"]))
            for v in pod["spec"].get("volumes") or []
        }
        files = script.build(pod, self.config, self.context.node_name, str(job_dir), volume_paths)
        for sub in ("env", "logs", "status"):
            (job_dir / sub).mkdir(parents=True, exist_ok=True)
        job_dir.chmod(0o700)
        (job_dir / "env").chmod(0o700)
        for name, content in files.env_files.items():
            env_file = job_dir / "env" / f"{name}.env"
            env_file.touch(mode=0o600)
            env_file.write_bytes(content)
        (job_dir / "stamp.pl").write_text(script.STAMP_PL)
        (job_dir / "job.sh").write_text(files.script)
        kept = _without_env_values(pod)
        kept.setdefault("status", {})["startTime"] = rfc3339()
        (job_dir / "pod.json").write_text(json.dumps(kept))
        record = Record(pod=kept, job_dir=job_dir)
        existing = self.jobs.get(uid)
        if existing is not None:
            record.job_id = existing.job_id  # submitted before a crash: adopt, never resubmit
        else:
            try:
                record.job_id = await self._submit(files, job_dir)
            except SlurmCallFailed as exc:
                shutil.rmtree(job_dir, ignore_errors=True)
                refused = ("invalid", "Invalid", "not available", "Requested node configuration")
                if any(word in str(exc) for word in refused):
                    raise InvalidInput(f"Slurm refused the job: {exc}") from None
                raise
            record.submitted = time.monotonic()
            (job_dir / "job-id").write_text(record.job_id)
        self.records[key] = record
        log.info("pod %s is Slurm job %s", key, record.job_id)
        self.poll_now.set()

    async def _submit(self, files: script.JobFiles, job_dir: Path) -> str:
        """The new job's id."""
        if self.rest is not None:
            environment = {"PATH": script.DEFAULT_PATH, "HOME": str(job_dir)}
            return await self.rest.submit(files.script, files.sbatch_args, environment)
        out = await self.cli.run("sbatch", *files.sbatch_args, str(job_dir / "job.sh"))
        return out.strip().split(";", 1)[0]

    async def _signal(self, job_id: str, signal: str, *, full: bool = False) -> None:
        """scancel --signal (the steps only, unless `full`), or slurmrestd's DELETE, which
        always signals every process of the job, the batch script included."""
        if self.rest is not None:
            await self.rest.signal(job_id, signal)
        else:
            await self.cli.run(
                "scancel", f"--signal={signal}", *(["--full"] if full else []), job_id
            )

    async def update_pod(self, pod: Pod) -> None:
        record = self.records.record_of(pod)
        # A running job's spec cannot change; labels and annotations are kept for list_pods.
        record.pod["metadata"] = deep_copy(pod["metadata"])

    async def delete_pod(self, pod: Pod) -> None:
        key = key_of(pod)
        record = self.records.record_of(pod)
        record.deleting = True
        grace = (pod.get("metadata") or {}).get("deletionGracePeriodSeconds")
        if grace is None:
            grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
        job = self.jobs.get(uid_of(pod))
        if record.job_id is not None and (job is None or not job.finished):
            await self._cancel(record.job_id, float(grace))
        self.records.forget(key)
        shutil.rmtree(record.job_dir, ignore_errors=True)

    async def _cancel(self, job_id: str, grace: float) -> None:
        """SIGTERM to every container (each is a job step), SIGKILL to every process of the job
        and cancel once the grace period is over (or at once for a pending job or grace 0).
        The TERM leaves out the batch script and the srun processes in it: srun would take a
        TERM as a reason to kill its step at once, instead of letting the container stop."""
        deadline = time.monotonic() + grace
        job = next((j for j in self.jobs.values() if j.job_id == job_id), None)
        if grace > 0 and job is not None and job.state == "RUNNING":
            try:
                await self._signal(job_id, "TERM")
            except SlurmCallFailed as exc:
                log.warning("scancel --signal=TERM %s: %s", job_id, exc)
            while time.monotonic() < deadline - 0.5:
                await asyncio.wait_for(self._next_poll(), self.config.call_timeout_seconds)
                job = next((j for j in self.jobs.values() if j.job_id == job_id), None)
                if job is None or job.finished:
                    return
        try:
            await self._signal(job_id, "KILL", full=True)
            if self.rest is None:
                await self.cli.run("scancel", job_id)
        except SlurmCallFailed as exc:
            # Already over is fine; anything else must be retried by the agent.
            if "already completing or completed" not in str(exc) and "Invalid job id" not in str(
                exc
            ):
                raise

    async def get_pod(self, namespace: str, name: str) -> Pod | None:
        return self.records.get_pod(namespace, name)

    async def get_pod_status(self, namespace: str, name: str) -> PodStatus | None:
        return self.records.get_pod_status(namespace, name)

    async def list_pods(self) -> list[Pod]:
        return self.records.list_pods()

    # --- node -------------------------------------------------------------------------------

    async def ping(self) -> None:
        """Healthy while Slurm answers the status poll and some node of the partition can run
        jobs (the node goes NotReady with this message otherwise). A drained node or a partition
        set DOWN still runs its jobs: that is the SlurmAvailable condition, not NotReady, so
        Kubernetes does not evict pods whose jobs go on."""
        if self.poll_error is not None:
            raise RuntimeError(f"Slurm does not answer: {self.poll_error}")
        if self.unusable is not None:
            raise RuntimeError(self.unusable)

    def notify_node_status(self, callback: NodeCallback) -> None:
        self.node_callback = callback

    async def _read_nodes(self) -> bool:
        """Capacity, usability and availability from sinfo; whether the capacity or the
        availability changed."""
        try:
            if self.rest is not None:
                nodes = await self.rest.nodes()
            else:
                nodes = parse_sinfo(
                    await self.cli.run("sinfo", "--noheader", "--Node", f"--format={SINFO_FORMAT}")
                )
        except SlurmCallFailed as exc:
            log.warning("reading Slurm's nodes failed: %s", exc)
            return False
        self.unusable = unusable_reason(nodes, self.config.partition)
        available = unavailable(nodes, self.config.partition)
        capacity = capacity_of(nodes, self.config.partition)
        changed = capacity != self.capacity or available != self.unavailable
        if available != self.unavailable:
            log.info("Slurm: %s", available[1] if available else "new jobs can start again")
        self.capacity, self.unavailable = capacity, available
        return changed

    async def _refresh_node_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.capacity_refresh_seconds)
            if await self._read_nodes() and self.node_callback and self.node is not None:
                node = deep_copy(self.node)
                self._describe(node)
                self.node = node
                self.node_callback(node)

    async def configure_node(self, node: Node) -> None:
        if self.capacity is None:
            await self._read_nodes()
        self._describe(node)
        self.node = deep_copy(node)

    def _describe(self, node: Node) -> None:
        status = node.setdefault("status", {})
        capacity = dict(self.capacity or {"cpu": "0", "memory": "0"})
        capacity["pods"] = str(self.config.max_pods)
        status["capacity"] = capacity
        status["allocatable"] = dict(capacity)
        reason, message = self.unavailable or (
            "SlurmPartitionUp",
            "new jobs can start" + (f" in partition {p}" if (p := self.config.partition) else ""),
        )
        condition = {
            "type": AVAILABLE_CONDITION,
            "status": "False" if self.unavailable else "True",
            "reason": reason,
            "message": message,
        }
        conditions = status.setdefault("conditions", [])
        conditions[:] = [c for c in conditions if c.get("type") != AVAILABLE_CONDITION]
        conditions.append(condition)
        info = status.setdefault("nodeInfo", {})
        info["containerRuntimeVersion"] = "slurm://"
        node.setdefault("spec", {})["providerID"] = f"slurm://{self.context.node_name}"

    # --- kubelet API ------------------------------------------------------------------------

    async def get_container_logs(
        self, namespace: str, pod: str, container: str, options: LogOptions
    ) -> AsyncIterator[bytes]:
        record = self.records.container_record(namespace, pod, container)
        uid = uid_of(record.pod)
        exit_file = record.job_dir / "status" / f"{container}.exit"

        def running() -> bool:
            job = self.jobs.get(uid)
            return (
                f"{namespace}/{pod}" in self.records
                and not exit_file.exists()
                and job is not None
                and not job.finished
            )

        async for chunk in stream_log(
            record.job_dir / "logs" / f"{container}.log", options, running
        ):
            yield chunk

    async def run_in_container(
        self, namespace: str, pod: str, container: str, command: list[str], io: ContainerIO
    ) -> int:
        record = self.records.container_record(namespace, pod, container)
        job = self.jobs.get(uid_of(record.pod))
        if record.job_id is None or job is None or job.state != "RUNNING":
            raise InvalidInput(f"pod {namespace}/{pod} is not running in Slurm")
        if not command:
            raise InvalidInput("no command")
        if io.tty:
            raise InvalidInput("the slurm provider runs exec without a terminal: drop -t")
        env_file = record.job_dir / "env" / f"{container}.env"
        # The command runs as a step beside the job's, with the container's env and directory.
        argv = [
            "--jobid",
            record.job_id,
            "--overlap",
            "--ntasks=1",
            "--nodes=1",
            "--quiet",
            f"--chdir={record.job_dir}",
            "--export=NONE",
            "/bin/bash",
            "-c",
            'envs=(); while IFS= read -r -d "" kv; do envs+=("$kv"); done < "$0";'
            ' exec env -i "${envs[@]}" "$@"',
            str(env_file),
            *command,
        ]
        process = await self.cli.start("srun", *argv)

        async def pump_in() -> None:
            try:
                if io.stdin is not None:
                    while chunk := await io.stdin.read():
                        await process.write(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass
            finally:
                with contextlib.suppress(OSError, RuntimeError):
                    process.close_stdin()

        async def pump_out(read: Any, sink: Any) -> None:
            while chunk := await read():
                if sink is not None:
                    await sink.write(chunk)

        feeder = asyncio.create_task(pump_in())
        finished = False
        try:
            await asyncio.gather(
                pump_out(process.read_stdout, io.stdout), pump_out(process.read_stderr, io.stderr)
            )
            code = await process.wait()
            finished = True
        finally:
            feeder.cancel()
            if not finished:
                await process.kill()
        return code & 0xFF
