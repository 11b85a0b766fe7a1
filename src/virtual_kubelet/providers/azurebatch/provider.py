"""The `azurebatch` provider: each pod is one Azure Batch task in a job per node on a configured
pool. Status comes from one list-tasks call per poll for the whole job; logs from the task's
stdout.txt and stderr.txt."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from azure.batch import models
from azure.batch.aio import BatchClient
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from ...sdk import (
    InvalidInput,
    LogOptions,
    Node,
    Pod,
    PodCallback,
    PodRecords,
    PodStatus,
    Provider,
    ProviderConfigError,
    ProviderContext,
    deep_copy,
    key_of,
    poll_loop,
    read_mapping,
    rfc3339,
    uid_of,
    validate,
)
from . import tasks
from .client import (
    BatchCallFailed,
    code_of,
    describe,
    is_auth_failure,
    is_throttled,
    make_client,
    status_of,
)
from .config import AzureBatchConfig
from .logs import follow_files, read_files
from .status import pod_status, state_of

log = logging.getLogger(__name__)

#: Volumes made of API objects: accepted, but a Batch task cannot see them (the agent's files are
#: not on the pool's nodes); their values reach a task only through env.
_UNMOUNTED_VOLUMES = ("configMap", "secret", "downwardAPI", "projected", "emptyDir")


@dataclass
class Record:
    """A pod this provider runs: the pod as kept (env values blanked) and its tasks, one per
    container in order."""

    pod: Pod
    task_ids: list[str]
    deleting: bool = False
    #: When its tasks were added (monotonic; 0 for adopted pods): a poll begun later that does
    #: not list a task means the task is gone.
    added: float = 0.0
    #: When a poll first missed one of its tasks (RFC 3339), or None.
    lost_at: str | None = None


def _fingerprint(pod: Pod) -> str:
    """What a status change is reported for: the phase and each container's state."""
    status = pod["status"]
    return json.dumps(
        [status["phase"], [c["state"] for c in status["containerStatuses"]]], sort_keys=True
    )


def _kept(pod: Pod) -> Pod:
    """The pod as kept on disk and in memory: env values may come from Secrets, so only names."""
    kept: Pod = deep_copy(pod)
    for container in kept["spec"].get("containers") or []:
        for entry in container.get("env") or []:
            if "value" in entry:
                entry["value"] = ""
    kept.pop("status", None)
    return kept


class AzureBatchProvider(Provider):
    description = "Pods as Azure Batch tasks: one job per node on a configured pool (azure-batch)."

    def __init__(self, context: ProviderContext) -> None:
        super().__init__(context)
        path = context.config_path
        if path is None:
            raise ProviderConfigError(
                "the azurebatch provider needs --provider-config (account_url, account_name, "
                "pool_id; see docs/providers/azurebatch.md)"
            )
        self.config = validate(AzureBatchConfig, read_mapping(path), path)
        if self.config.auth == "shared-key":
            try:
                self.config.account_key()  # fail at start with a clear error, never print it
            except ValueError as exc:
                raise ProviderConfigError(f"provider config {path}: {exc}") from None
        self.job_id = tasks.job_id(self.config, context.node_name)
        self.root = context.state_dir / "azurebatch" / self.job_id
        self._client: BatchClient | None = None
        self.records: PodRecords[Record] = PodRecords(self._with_status)  # by namespace/name
        self.tasks: dict[str, models.BatchTask] = {}  # by task id, as of the last poll
        self.polled_once = False
        self.tasks_as_of = 0.0  # when the last successful poll began (monotonic)
        self.poll_error: str | None = None
        self.auth_error: str | None = None
        self.job_ready = False
        self.use_containers: bool | None = None
        self.notify: PodCallback | None = None
        self.poll_now = asyncio.Event()
        #: Pods are created concurrently: one of them reads the pool and adds the job.
        self.setup_lock = asyncio.Lock()
        self.poller: asyncio.Task[None] | None = None

    # --- life cycle -------------------------------------------------------------------------

    @property
    def client(self) -> BatchClient:
        if self._client is None:
            try:
                self._client = make_client(self.config)
            except ValueError as exc:
                raise BatchCallFailed(str(exc)) from None
        return self._client

    async def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)
        for pod_file in sorted(self.root.glob("*.json")):
            try:
                pod = json.loads(pod_file.read_text())
            except (OSError, ValueError):
                log.warning("skipping unreadable %s", pod_file)
                continue
            self.records[key_of(pod)] = Record(pod=pod, task_ids=tasks.task_ids(pod))
        await self.poll()
        self.poller = asyncio.create_task(
            poll_loop(self.poll_now, self.config.poll_seconds, self.poll, self._report_changes),
            name="azurebatch-poll",
        )

    async def stop(self) -> None:
        if self.poller is not None:
            self.poller.cancel()
            await asyncio.gather(self.poller, return_exceptions=True)
        if self._client is not None:
            await self._client.close()

    def notify_pods(self, callback: PodCallback) -> None:
        self.notify = callback

    def wants_volume_files(self) -> bool:
        return False  # a Batch task cannot read the agent's files

    # --- calls ------------------------------------------------------------------------------

    def _failed(self, exc: HttpResponseError, what: str) -> Exception:
        """The exception to raise for a failed call: credentials mark the node NotReady,
        throttling says it was retried, a 400 means the pod can never run as given."""
        text = describe(exc)
        if is_auth_failure(exc):
            self.auth_error = f"Azure Batch refused the credentials ({text})"
            self._drop_client()
            return BatchCallFailed(f"{what}: {self.auth_error}")
        if is_throttled(exc):
            return BatchCallFailed(
                f"{what}: Azure Batch is throttling or unavailable ({text}); retried "
                f"{self.config.retry_attempts} times, the agent retries with back-off"
            )
        if status_of(exc) == 400:
            return InvalidInput(f"{what}: {text}")
        return BatchCallFailed(f"{what}: {text}")

    def _drop_client(self) -> None:
        """Build the client again on next use: a fixed key file is read again."""
        client, self._client = self._client, None
        if client is not None:
            task = asyncio.ensure_future(client.close())
            task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

    async def _ensure_job(self) -> None:
        if self.job_ready:
            return
        try:
            await self.client.get_job(self.job_id)
        except ResourceNotFoundError:
            job = models.BatchJobCreateOptions(
                id=self.job_id,
                display_name=f"virtual-kubelet node {self.context.node_name}"[:1024],
                pool_info=models.BatchPoolInfo(pool_id=self.config.pool_id),
            )
            try:
                await self.client.create_job(job)
                log.info("added Batch job %s on pool %s", self.job_id, self.config.pool_id)
            except HttpResponseError as exc:
                if code_of(exc) != "JobExists":
                    raise self._failed(exc, f"adding job {self.job_id}") from None
        except HttpResponseError as exc:
            raise self._failed(exc, f"reading job {self.job_id}") from None
        self.job_ready = True

    async def _containers(self) -> bool:
        if self.use_containers is None:
            if self.config.containers != "auto":
                self.use_containers = self.config.containers == "yes"
            else:
                try:
                    pool = await self.client.get_pool(self.config.pool_id)
                except HttpResponseError as exc:
                    raise self._failed(exc, f"reading pool {self.config.pool_id}") from None
                vm = pool.virtual_machine_configuration
                self.use_containers = vm is not None and vm.container_configuration is not None
                log.info(
                    "pool %s %s containers",
                    self.config.pool_id,
                    "runs" if self.use_containers else "does not run",
                )
        return self.use_containers

    # --- polling ----------------------------------------------------------------------------

    async def poll(self) -> None:
        """Every task of this node's job in one list call."""
        began = time.monotonic()
        try:
            found = {t.id: t async for t in self.client.list_tasks(self.job_id)}
        except ResourceNotFoundError:
            found = {}  # no job yet: no tasks
        except HttpResponseError as exc:
            failed = self._failed(exc, "listing tasks")
            self.poll_error = str(failed)
            log.warning("%s", failed)
            return
        except BatchCallFailed as exc:
            self.poll_error = str(exc)
            return
        except Exception as exc:  # connection refused, timeouts: the node goes NotReady
            self.poll_error = f"Azure Batch does not answer: {type(exc).__name__}: {exc}"
            log.warning("%s", self.poll_error)
            return
        self.tasks = found
        self.tasks_as_of = began
        self.polled_once = True
        self.poll_error = None
        self.auth_error = None

    def _report_changes(self) -> None:
        if self.poll_error is None:  # a failed poll knows nothing new
            self.records.report_changes(self.notify, _fingerprint)

    def _with_status(self, record: Record) -> Pod:
        pod: Pod = deep_copy(record.pod)
        found = [self.tasks.get(t) for t in record.task_ids]
        why = ""
        if None in found and self.polled_once:
            why = "task added, not yet listed by Batch"
        # Listed by a poll that began after the add, and not there: deleted outside the agent.
        if None in found and self.polled_once and self.tasks_as_of > record.added:
            record.lost_at = record.lost_at or rfc3339()
        refs = [f"{self.job_id}/{t}" for t in record.task_ids]
        pod["status"] = pod_status(
            record.pod, found, refs, self.context.internal_ip, why, record.lost_at
        )
        return pod

    # --- pods -------------------------------------------------------------------------------

    def _check(self, pod: Pod) -> None:
        unmounted = []
        for volume in pod["spec"].get("volumes") or []:
            kind = next((k for k in _UNMOUNTED_VOLUMES if k in volume), None)
            if kind is None:
                other = next((k for k in volume if k != "name"), "unknown")
                raise InvalidInput(
                    f"volume {volume.get('name')!r}: azurebatch cannot give a Batch task {other} "
                    "volumes (use the pool's mount configuration, or env)"
                )
            if kind != "projected" or not str(volume.get("name", "")).startswith("kube-api-access"):
                unmounted.append(volume.get("name"))
        if unmounted:
            log.warning(
                "pod %s: volumes %s are not mounted: Batch tasks cannot see the agent's files",
                key_of(pod),
                ", ".join(str(n) for n in unmounted),
            )

    async def create_pod(self, pod: Pod) -> None:
        key = key_of(pod)
        known = self.records.get(key)
        if known is not None and uid_of(known.pod) == uid_of(pod):
            return  # added (or adopted) already: never twice
        self._check(pod)
        async with self.setup_lock:
            use_containers = await self._containers()
            await self._ensure_job()
        built = tasks.build(pod, self.config, use_containers)
        kept = _kept(pod)
        kept["status"] = {"startTime": rfc3339()}
        pod_file = self.root / f"{uid_of(pod)}.json"
        pod_file.write_text(json.dumps(kept))  # before the add: a crash in between is adopted
        for task in built:
            try:
                await self.client.create_task(self.job_id, task)
                log.info("pod %s: added Batch task %s to job %s", key, task.id, self.job_id)
            except HttpResponseError as exc:
                if code_of(exc) == "TaskExists":
                    log.info("pod %s: task %s exists already, adopting it", key, task.id)
                    continue
                if status_of(exc) == 400:
                    pod_file.unlink(missing_ok=True)
                if code_of(exc) == "JobNotFound" or status_of(exc) == 404:
                    self.job_ready = False  # deleted behind our back: added again on the retry
                raise self._failed(exc, f"adding task {task.id}") from None
        self.records[key] = Record(pod=kept, task_ids=[t.id for t in built], added=time.monotonic())
        self.poll_now.set()

    async def update_pod(self, pod: Pod) -> None:
        record = self.records.record_of(pod)
        # A Batch task's command and image cannot change; labels and annotations are kept.
        record.pod["metadata"] = deep_copy(pod["metadata"])

    async def delete_pod(self, pod: Pod) -> None:
        key = key_of(pod)
        record = self.records.record_of(pod)
        record.deleting = True
        try:
            for task_id in record.task_ids:
                task = self.tasks.get(task_id)
                if task is None or state_of(task) != "completed":
                    with contextlib.suppress(ResourceNotFoundError):
                        await self.client.terminate_task(self.job_id, task_id)
                with contextlib.suppress(ResourceNotFoundError):
                    await self.client.delete_task(self.job_id, task_id)
                self.tasks.pop(task_id, None)
        except HttpResponseError as exc:
            record.deleting = False
            raise self._failed(exc, f"deleting the tasks of {key}") from None
        log.info("pod %s: its Batch tasks are terminated and deleted", key)
        self.records.forget(key)
        (self.root / f"{uid_of(pod)}.json").unlink(missing_ok=True)

    async def get_pod(self, namespace: str, name: str) -> Pod | None:
        return self.records.get_pod(namespace, name)

    async def get_pod_status(self, namespace: str, name: str) -> PodStatus | None:
        return self.records.get_pod_status(namespace, name)

    async def list_pods(self) -> list[Pod]:
        return self.records.list_pods()

    # --- node -------------------------------------------------------------------------------

    async def ping(self) -> None:
        """Healthy while Batch answers the poll with these credentials (NotReady otherwise, with
        this message as the reason)."""
        if self.auth_error is not None:
            raise RuntimeError(self.auth_error)
        if self.poll_error is not None:
            raise RuntimeError(self.poll_error)

    async def configure_node(self, node: Node) -> None:
        status = node.setdefault("status", {})
        capacity = {
            "cpu": self.config.cpu,
            "memory": self.config.memory,
            "pods": str(self.config.max_pods),
        }
        status["capacity"] = capacity
        status["allocatable"] = dict(capacity)
        status.setdefault("nodeInfo", {})["containerRuntimeVersion"] = "azurebatch://"
        node.setdefault("spec", {})["providerID"] = (
            f"azurebatch://{self.config.account_name}/{self.config.pool_id}/{self.job_id}"
        )

    # --- kubelet API ------------------------------------------------------------------------

    def _task_for(self, namespace: str, pod: str, container: str) -> str:
        # One task per container: a Batch task has no init containers.
        record = self.records.container_record(namespace, pod, container, init_containers=False)
        names = [c["name"] for c in record.pod["spec"]["containers"]]
        return record.task_ids[names.index(container)]

    async def get_container_logs(
        self, namespace: str, pod: str, container: str, options: LogOptions
    ) -> AsyncIterator[bytes]:
        task_id = self._task_for(namespace, pod, container)
        key = f"{namespace}/{pod}"

        def finished() -> bool:
            task = self.tasks.get(task_id)
            return key not in self.records or (task is not None and state_of(task) == "completed")

        if not options.follow:
            data = await read_files(self.client, self.job_id, task_id)
            yield _tail(data, options)
            return
        async for chunk in follow_files(
            self.client,
            self.job_id,
            task_id,
            finished,
            self.config.poll_seconds,
            options,
        ):
            yield chunk


def _tail(data: bytes, options: LogOptions) -> bytes:
    if options.tail_lines is None:
        return data
    if options.tail_lines == 0:
        return b""
    lines = data.splitlines(keepends=True)
    return b"".join(lines[-options.tail_lines :])
