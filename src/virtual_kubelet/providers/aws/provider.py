"""The `aws` provider: each pod is one AWS Fargate task in an ECS cluster.

create_pod registers the pod's task definition and runs it (RunTask, FARGATE, awsvpc); one poll
loop reads every task of the node with DescribeTasks, 100 tasks a call, and pushes the statuses;
delete_pod stops the task (StopTask with a reason; ECS waits the container's stopTimeout, set
from the pod's grace period, before SIGKILL). After a restart the node's tasks are found with one
ListTasks on the node's `startedBy` and their tags name the pods, so nothing is run twice.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ...sdk import (
    SPEC_HASH_ANNOTATION,
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
    uid_of,
    validate,
)
from . import taskdef
from .clients import AwsCallFailed, AwsClients, describe_error, failed, is_auth_error
from .config import AwsConfig
from .logs import stream_log, stream_name
from .status import pod_status

log = logging.getLogger(__name__)

#: DescribeTasks takes at most 100 task ARNs per call.
DESCRIBE_BATCH = 100


@dataclass
class Record:
    """A pod this provider runs: the pod as given (env values blanked) and its task."""

    pod: Pod
    task_arn: str
    task_definition_arn: str | None = None
    #: The task as last described (None until the first DescribeTasks answers with it).
    task: dict[str, Any] | None = None
    #: ECS answered MISSING for it (stopped tasks are forgotten by ECS after about an hour).
    missing: bool = False
    deleting: bool = False


def _fingerprint(pod: Pod) -> str:
    """What a status change is reported for: all but the conditions' times and messages."""
    status = pod["status"]
    return json.dumps(
        {k: v for k, v in status.items() if k != "conditions"}, sort_keys=True
    ) + json.dumps([(c["type"], c["status"]) for c in status.get("conditions", [])])


def _without_env_values(pod: Pod) -> Pod:
    """The pod as kept in memory: env values may be secrets, so only names stay."""
    kept: Pod = deep_copy(pod)
    for kind in ("initContainers", "containers"):
        for container in kept["spec"].get(kind) or []:
            for entry in container.get("env") or []:
                if "value" in entry:
                    entry["value"] = ""
    return kept


def _tags(task: dict[str, Any]) -> dict[str, str]:
    return {str(t.get("key")): str(t.get("value")) for t in task.get("tags") or []}


def _pod_from_task(task: dict[str, Any]) -> Pod | None:
    """The pod a task of this node runs, rebuilt from its tags and containers (after a restart)."""
    tags = _tags(task)
    try:
        namespace, name, uid = (
            tags[taskdef.NAMESPACE_TAG],
            tags[taskdef.NAME_TAG],
            tags[taskdef.UID_TAG],
        )
    except KeyError:
        return None
    annotations = {}
    if taskdef.SPEC_HASH_TAG in tags:
        annotations[SPEC_HASH_ANNOTATION] = tags[taskdef.SPEC_HASH_TAG]
    inits = set(filter(None, tags.get(taskdef.INIT_CONTAINERS_TAG, "").split(",")))
    every = [
        {"name": c.get("name", ""), "image": c.get("image", "")}
        for c in task.get("containers") or []
    ]
    containers = [c for c in every if c["name"] not in inits]
    init_containers = [c for c in every if c["name"] in inits]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "namespace": namespace,
            "name": name,
            "uid": uid,
            "annotations": annotations,
        },
        "spec": {"containers": containers, "initContainers": init_containers},
        "status": {},
    }


def _redact(text: str, pod: Pod) -> str:
    """`text` without any env value of the pod (an AWS error may quote a request parameter)."""
    for kind in ("initContainers", "containers"):
        for container in pod["spec"].get(kind) or []:
            for entry in container.get("env") or []:
                value = entry.get("value") or ""
                if len(value) >= 4:
                    text = text.replace(value, "***")
    return text


@dataclass
class Health:
    """What the last AWS calls said about the credentials and the cluster."""

    auth_error: str | None = None
    poll_error: str | None = None


class AwsProvider(Provider):
    description = "Pods as AWS Fargate tasks in an ECS cluster (RunTask, DescribeTasks, awslogs)."

    def __init__(self, context: ProviderContext) -> None:
        super().__init__(context)
        path = context.config_path
        if path is None:
            raise ProviderConfigError(
                "the aws provider needs --provider-config (at least `subnets`); "
                "see docs/providers/aws.md"
            )
        self.config = validate(AwsConfig, read_mapping(path), path)
        self.clients: AwsClients | None = None
        self.records: PodRecords[Record] = PodRecords(self._with_status)  # by namespace/name
        self.health = Health()
        self.notify: PodCallback | None = None
        self.poll_now = asyncio.Event()
        self.poller: asyncio.Task[None] | None = None

    # --- life cycle -------------------------------------------------------------------------

    @property
    def aws(self) -> AwsClients:
        assert self.clients is not None, "start() first"
        return self.clients

    async def start(self) -> None:
        self.clients = await AwsClients.open(self.config)
        if self.config.create_log_group:
            await self._ensure_log_group()
        await self._adopt()
        self.poller = asyncio.create_task(
            poll_loop(
                self.poll_now,
                self.config.poll_seconds,
                self.poll,  # which reports what changed itself
                # Never let the loop die: the next round tries again.
                on_error=lambda _: log.exception("ECS status poll failed"),
            ),
            name="aws-poll",
        )

    async def stop(self) -> None:
        if self.poller is not None:
            self.poller.cancel()
            await asyncio.gather(self.poller, return_exceptions=True)
        if self.clients is not None:
            await self.clients.close()

    def notify_pods(self, callback: PodCallback) -> None:
        self.notify = callback

    def wants_volume_files(self) -> bool:
        return False  # nothing is mounted from the agent's disk into a Fargate task

    async def _call(self, name: str, method: Any, **kwargs: Any) -> Any:
        """One AWS call; after botocore's retries, an auth error marks the node NotReady and any
        failure is an AwsCallFailed naming the call."""
        try:
            answer = await method(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            if is_auth_error(exc):
                self.health.auth_error = describe_error(name, exc)
            raise failed(name, exc) from None
        self.health.auth_error = None
        return answer

    async def _ensure_log_group(self) -> None:
        try:
            await self._call(
                "CloudWatch Logs CreateLogGroup",
                self.aws.logs.create_log_group,
                logGroupName=self.config.log_group,
            )
            log.info("created CloudWatch log group %s", self.config.log_group)
        except AwsCallFailed as exc:
            if exc.code != "ResourceAlreadyExistsException":
                # Not fatal: the group may exist under a policy that forbids creating it.
                log.warning("could not create log group %s: %s", self.config.log_group, exc)

    async def _adopt(self) -> None:
        """Every task this node started (one ListTasks per desired status, paged), described
        with tags: the records a restarted agent adopts."""
        arns: list[str] = []
        try:
            for desired in ("RUNNING", "STOPPED"):
                token: str | None = None
                while True:
                    request: dict[str, Any] = {
                        "cluster": self.config.cluster,
                        "startedBy": taskdef.started_by(self.context.node_name),
                        "desiredStatus": desired,
                    }
                    if token:
                        request["nextToken"] = token
                    page = await self._call("ECS ListTasks", self.aws.ecs.list_tasks, **request)
                    arns.extend(page.get("taskArns") or [])
                    token = page.get("nextToken")
                    if not token:
                        break
        except AwsCallFailed as exc:
            # Not fatal: the agent starts NotReady (ping) and adopts on the first good poll.
            self.health.poll_error = str(exc)
            log.warning("listing this node's ECS tasks failed: %s", exc)
            return
        tasks = await self._describe(list(dict.fromkeys(arns)))
        for task in tasks.values():
            if _tags(task).get(taskdef.NODE_TAG) != self.context.node_name:
                continue  # another node's, under the same startedBy hash
            pod = _pod_from_task(task)
            if pod is None:
                continue
            key = key_of(pod)
            known = self.records.get(key)
            if known is not None and not self._newer(task, known.task):
                continue
            self.records[key] = Record(
                pod=pod,
                task_arn=task["taskArn"],
                task_definition_arn=task.get("taskDefinitionArn"),
                task=task,
            )
        if self.records:
            log.info("found %d ECS tasks of this node", len(self.records))

    @staticmethod
    def _newer(task: dict[str, Any], than: dict[str, Any] | None) -> bool:
        if than is None:
            return True
        if (task.get("lastStatus") == "STOPPED") != (than.get("lastStatus") == "STOPPED"):
            return task.get("lastStatus") != "STOPPED"
        return bool(
            (task.get("createdAt") or 0)
            and (task.get("createdAt") or 0) > (than.get("createdAt") or 0)
        )

    # --- polling ----------------------------------------------------------------------------

    async def _describe(self, arns: list[str]) -> dict[str, dict[str, Any]]:
        """The tasks by ARN, DescribeTasks 100 at a time; tasks ECS does not know are absent."""
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(arns), DESCRIBE_BATCH):
            batch = arns[start : start + DESCRIBE_BATCH]
            answer = await self._call(
                "ECS DescribeTasks",
                self.aws.ecs.describe_tasks,
                cluster=self.config.cluster,
                tasks=batch,
                include=["TAGS"],
            )
            for task in answer.get("tasks") or []:
                found[task["taskArn"]] = task
        return found

    async def poll(self) -> None:
        """One round: every task of the node described, every changed status pushed."""
        records = [r for r in self.records.values() if not r.deleting]
        try:
            tasks = await self._describe([r.task_arn for r in records])
            self.health.poll_error = None
        except AwsCallFailed as exc:
            self.health.poll_error = str(exc)
            log.warning("reading the node's ECS tasks failed: %s", exc)
            return
        for record in records:
            task = tasks.get(record.task_arn)
            if task is None:
                record.missing = True
            else:
                record.task, record.missing = task, False
        self._report_changes()

    def _with_status(self, record: Record) -> Pod:
        pod: Pod = deep_copy(record.pod)
        if record.task is None and not record.missing:
            # Just run, not yet described: ECS accepted it, so it is Pending.
            task: dict[str, Any] | None = {"taskArn": record.task_arn, "lastStatus": "PROVISIONING"}
        else:
            task = None if record.missing else record.task
        pod["status"] = pod_status(record.pod, task, self.context.internal_ip)
        return pod

    def _report_changes(self) -> None:
        self.records.report_changes(self.notify, _fingerprint)

    # --- pods -------------------------------------------------------------------------------

    async def create_pod(self, pod: Pod) -> None:
        key, uid = key_of(pod), uid_of(pod)
        known = self.records.get(key)
        if known is not None and uid_of(known.pod) == uid and not known.deleting:
            known.pod = _without_env_values(pod)  # adopted: keep the full spec from now on
            return  # already running: never a second RunTask
        plan = taskdef.plan(pod, self.config, self.context.node_name, self.aws.region)
        try:
            registered = await self._call(
                "ECS RegisterTaskDefinition",
                self.aws.ecs.register_task_definition,
                **plan.register,
            )
            definition_arn = registered["taskDefinition"]["taskDefinitionArn"]
            answer = await self._call(
                "ECS RunTask",
                self.aws.ecs.run_task,
                taskDefinition=definition_arn,
                clientToken=uid,
                **plan.run,
            )
        except AwsCallFailed as exc:
            message = _redact(str(exc), pod)
            if exc.code in ("InvalidParameterException", "ClientException"):
                raise InvalidInput(message) from None
            raise AwsCallFailed(message, exc.code) from None
        tasks = answer.get("tasks") or []
        if not tasks:
            reasons = "; ".join(
                f"{f.get('reason', '')} {f.get('detail', '')}".strip()
                for f in answer.get("failures") or []
            )
            raise AwsCallFailed(f"ECS RunTask started no task: {reasons or 'no reason given'}", "")
        task = tasks[0]
        self.records[key] = Record(
            pod=_without_env_values(pod),
            task_arn=task["taskArn"],
            task_definition_arn=definition_arn,
            task=task,
        )
        log.info(
            "pod %s is ECS task %s (%s vCPU, %s MiB)",
            key,
            task["taskArn"],
            plan.size.cpu / 1024,
            plan.size.memory,
        )
        self.poll_now.set()

    async def update_pod(self, pod: Pod) -> None:
        record = self.records.record_of(pod)
        # A running task's definition cannot change; labels and annotations are kept.
        record.pod["metadata"] = deep_copy(pod["metadata"])

    async def delete_pod(self, pod: Pod) -> None:
        key = key_of(pod)
        record = self.records.record_of(pod)
        record.deleting = True
        stopped = record.task is not None and record.task.get("lastStatus") == "STOPPED"
        if not stopped and not record.missing:
            try:
                await self._call(
                    "ECS StopTask",
                    self.aws.ecs.stop_task,
                    cluster=self.config.cluster,
                    task=record.task_arn,
                    reason=f"pod {key} deleted (virtual-kubelet node {self.context.node_name})"[
                        :255
                    ],
                )
            except AwsCallFailed as exc:
                if exc.code not in ("InvalidParameterException",):
                    record.deleting = False
                    raise
        if record.task_definition_arn:
            try:
                await self._call(
                    "ECS DeregisterTaskDefinition",
                    self.aws.ecs.deregister_task_definition,
                    taskDefinition=record.task_definition_arn,
                )
            except AwsCallFailed as exc:
                log.warning("could not deregister %s: %s", record.task_definition_arn, exc)
        self.records.forget(key)

    async def get_pod(self, namespace: str, name: str) -> Pod | None:
        return self.records.get_pod(namespace, name)

    async def get_pod_status(self, namespace: str, name: str) -> PodStatus | None:
        return self.records.get_pod_status(namespace, name)

    async def list_pods(self) -> list[Pod]:
        return self.records.list_pods()

    # --- node -------------------------------------------------------------------------------

    async def ping(self) -> None:
        """Healthy while AWS accepts the credentials and the status poll answers (the node goes
        NotReady with this message otherwise)."""
        if self.health.auth_error is not None:
            raise RuntimeError(f"AWS refused the credentials: {self.health.auth_error}")
        if self.health.poll_error is not None:
            raise RuntimeError(f"ECS does not answer: {self.health.poll_error}")
        if not self.records:
            # Nothing polled: check the credentials and the cluster with one cheap call.
            answer = await self._call(
                "ECS DescribeClusters",
                self.aws.ecs.describe_clusters,
                clusters=[self.config.cluster],
            )
            active = [c for c in answer.get("clusters") or [] if c.get("status") == "ACTIVE"]
            if not active:
                raise RuntimeError(f"ECS cluster {self.config.cluster} is not ACTIVE or missing")

    async def configure_node(self, node: Node) -> None:
        status = node.setdefault("status", {})
        capacity = {
            "cpu": self.config.capacity.cpu,
            "memory": self.config.capacity.memory,
            "pods": str(self.config.capacity.pods),
        }
        status["capacity"] = capacity
        status["allocatable"] = dict(capacity)
        status.setdefault("nodeInfo", {})["containerRuntimeVersion"] = "fargate://ecs"
        labels = node.setdefault("metadata", {}).setdefault("labels", {})
        labels["topology.kubernetes.io/region"] = self.aws.region
        node.setdefault("spec", {})["providerID"] = (
            f"aws:///{self.aws.region}/{self.config.cluster.rsplit('/', 1)[-1]}/"
            f"{self.context.node_name}"
        )

    # --- kubelet API ------------------------------------------------------------------------

    async def get_container_logs(
        self, namespace: str, pod: str, container: str, options: LogOptions
    ) -> AsyncIterator[bytes]:
        key = f"{namespace}/{pod}"
        record = self.records.container_record(namespace, pod, container)
        task_arn = record.task_arn

        def running() -> bool:
            current = self.records.get(key)
            return (
                current is not None
                and current.task_arn == task_arn
                and not current.missing
                and (current.task or {}).get("lastStatus") != "STOPPED"
            )

        async for chunk in stream_log(
            self.aws.logs,
            self.config.log_group,
            stream_name(self.config.log_stream_prefix, container, task_arn),
            options,
            running,
            self.config.log_poll_seconds,
        ):
            yield chunk
