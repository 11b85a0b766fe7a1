"""The `azure` provider: each pod is one Azure Container Instances container group, created with
ACI's async management client, read back (with its instance view) on every poll, and deleted with
the pod. Groups are tagged with the node and pod, so a restarted agent adopts its groups instead
of creating them again."""

from __future__ import annotations

import asyncio
import logging
import ssl as ssl_module
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
)
from azure.mgmt.containerinstance import models as m

from ...sdk import (
    SPEC_HASH_ANNOTATION,
    ContainerIO,
    InvalidInput,
    LogOptions,
    Node,
    NotFound,
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
    secret_env_names,
    uid_of,
    validate,
)
from . import arm, exec_ws, logs, naming
from .cluster import Cluster
from .config import AzureConfig, from_environment
from .status import pod_status
from .translate import Inputs, container_group

__all__ = ["AzureProvider"]

log = logging.getLogger(__name__)

TAG_SPEC_HASH = "SpecHash"
_SECRET_VOLUMES = ("secret", "configMap", "projected", "downwardAPI")


@dataclass
class Record:
    """A pod this provider runs (env values blanked) and what ARM last said of its group."""

    pod: Pod
    group_name: str
    group: m.ContainerGroup | None = None
    #: Why the group could not be created (ARM's final answer), shown as a Failed pod.
    failure: str | None = None
    deleting: bool = False
    #: Instance-view events already turned into pod Events: (container, name, first time, message).
    events_seen: set[tuple[str, str, str, str]] = field(default_factory=set)


def _fingerprint(pod: Pod) -> bytes:
    """What a status change is reported for: all but the conditions' times and messages."""
    status = pod["status"]
    return orjson.dumps(
        {k: v for k, v in status.items() if k != "conditions"}, option=orjson.OPT_SORT_KEYS
    ) + orjson.dumps([(c["type"], c["status"]) for c in status["conditions"]])


def _without_env_values(pod: Pod) -> Pod:
    kept: Pod = deep_copy(pod)
    for kind in ("initContainers", "containers"):
        for container in kept["spec"].get(kind) or []:
            for entry in container.get("env") or []:
                entry["value"] = ""
    return kept


def _arm_message(exc: HttpResponseError) -> str:
    error = getattr(exc, "error", None)
    code = getattr(error, "code", None) or exc.reason or "error"
    text = getattr(error, "message", None) or ""
    if exc.status_code is None or exc.status_code < 300:
        # A long-running operation that ended Failed: its poll itself answered 200.
        return f"the operation failed with {code}: {text}".strip().rstrip(":")
    return f"ARM answered {exc.status_code} {code}: {text}".strip().rstrip(":")


def _pod_of_group(group: m.ContainerGroup) -> Pod:
    """The pod a listed group runs, as far as its tags and containers tell (for adoption)."""
    tags = group.tags or {}
    annotations = {}
    if tags.get(TAG_SPEC_HASH):
        annotations[SPEC_HASH_ANNOTATION] = tags[TAG_SPEC_HASH]
    return {
        "metadata": {
            "namespace": tags.get(naming.TAG_NAMESPACE, ""),
            "name": tags.get(naming.TAG_NAME, ""),
            "uid": tags.get(naming.TAG_UID, ""),
            "annotations": annotations,
        },
        "spec": {
            "restartPolicy": group.restart_policy or "Always",
            "containers": [{"name": c.name, "image": c.image} for c in group.containers or []],
        },
    }


class AzureProvider(Provider):
    description = "Pods as Azure Container Instances container groups (ARM, api 2023-05-01)."

    def __init__(self, context: ProviderContext) -> None:
        super().__init__(context)
        path = context.config_path
        try:
            doc = from_environment(read_mapping(path) if path else {})
        except ValueError as exc:
            raise ProviderConfigError(str(exc)) from None
        self.config = validate(AzureConfig, doc, path or Path("(environment)"))
        self.cluster = Cluster(self.config.kubeconfig)
        self.credential: Any = None
        self.client: Any = None
        self.records: PodRecords[Record] = PodRecords(self._with_status)  # by namespace/name
        self.notify: PodCallback | None = None
        self.poll_error: str | None = None
        self.poll_now = asyncio.Event()
        self.poller: asyncio.Task[None] | None = None
        self.creations: set[asyncio.Task[None]] = set()

    # --- life cycle -------------------------------------------------------------------------

    async def start(self) -> None:
        # The SDK logs every request and token at INFO: too much at the agent's default level,
        # and the provider says what matters (failed attempts, refused credentials) itself.
        debug = logging.getLogger().level <= logging.DEBUG
        logging.getLogger("azure").setLevel(logging.DEBUG if debug else logging.WARNING)
        self.credential = arm.make_credential(self.config)
        self.client = arm.make_client(self.config, self.credential, self._attempt_failed)
        await self._adopt()
        self.poller = asyncio.create_task(
            poll_loop(
                self.poll_now,
                self.config.poll_seconds,
                self.poll,
                self._report_changes,
                on_error=lambda _: log.exception("ACI poll failed"),
            ),
            name="aci-poll",
        )

    async def stop(self) -> None:
        tasks = [t for t in (self.poller, *self.creations) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.cluster.close()
        if self.client is not None:
            await self.client.close()
        if self.credential is not None:
            await self.credential.close()

    def notify_pods(self, callback: PodCallback) -> None:
        self.notify = callback

    def wants_volume_files(self) -> bool:
        return True  # secret and configMap files become ACI secret volumes

    # --- ARM --------------------------------------------------------------------------------

    def _attempt_failed(self, pod: Pod | None, status: int, code: str, wait: float | None) -> None:
        """A throttled or failing ARM answer, retried by the SDK: said on the pod it was for."""
        after = f"; retrying in {wait:g} s as ARM asked" if wait is not None else "; retrying"
        message = f"ACI answered {status}{' ' + code if code else ''}{after}"
        log.warning("ARM call%s: %s", f" for {key_of(pod)}" if pod else "", message)
        if pod is not None:
            reason = "ARMThrottled" if status == 429 else "ARMServerError"
            self.cluster.event(pod, "Warning", reason, message, key=f"arm-{status}")

    async def _list_groups(self) -> list[m.ContainerGroup]:
        """This node's groups in the resource group (by their NodeName tag)."""
        groups = []
        async for group in self.client.container_groups.list_by_resource_group(
            self.config.resource_group
        ):
            if (group.tags or {}).get(naming.TAG_NODE) == self.context.node_name:
                groups.append(group)
        return groups

    async def _adopt(self) -> None:
        try:
            groups = await self._list_groups()
        except (HttpResponseError, ClientAuthenticationError) as exc:
            self._set_poll_error(exc)
            return
        for group in groups:
            pod = _pod_of_group(group)
            if pod["metadata"]["name"]:
                self.records[key_of(pod)] = Record(pod=pod, group_name=str(group.name), group=group)
        if groups:
            log.info("found %d container groups of this node in ACI", len(groups))

    def _set_poll_error(self, exc: Exception) -> None:
        if isinstance(exc, ClientAuthenticationError):
            message = f"Microsoft Entra ID refused the agent's credentials: {exc.message}"
        elif isinstance(exc, HttpResponseError):
            message = _arm_message(exc)
        else:
            message = f"{type(exc).__name__}: {exc}"
        if message != self.poll_error:
            log.warning("reading ACI failed: %s", message)
        self.poll_error = message

    # --- polling ----------------------------------------------------------------------------

    async def poll(self) -> None:
        """One list of the resource group, then the instance view of each of our groups."""
        try:
            listed = {str(g.name): g for g in await self._list_groups()}
        except (HttpResponseError, ClientAuthenticationError) as exc:
            self._set_poll_error(exc)
            return
        if self.poll_error is not None:
            log.info("ACI answers again")
        self.poll_error = None

        async def refresh(record: Record) -> None:
            if record.group_name not in listed:
                if record.group is not None and not record.deleting:
                    record.group = None  # gone from ACI (deleted behind our back)
                return
            try:
                record.group = await self.client.container_groups.get(
                    self.config.resource_group, record.group_name
                )
            except ResourceNotFoundError:
                record.group = None
            except HttpResponseError as exc:
                log.info("reading group %s: %s", record.group_name, _arm_message(exc))
                return
            self._events_of(record)

        await asyncio.gather(*(refresh(r) for r in list(self.records.values())))

    def _events_of(self, record: Record) -> None:
        """The instance view's container events (pulling, pulled, started, killing) as pod Events."""
        for container in (record.group.containers if record.group else None) or []:
            view = container.instance_view
            events: list[m.Event] = (view.events if view else None) or []
            for event in events:
                seen = (
                    str(container.name),
                    str(event.name),
                    str(event.first_timestamp),
                    str(event.message),
                )
                if seen in record.events_seen:
                    continue
                record.events_seen.add(seen)
                kind = "Warning" if str(event.type) == "Warning" else "Normal"
                self.cluster.event(
                    record.pod,
                    kind,
                    str(event.name or "ACIEvent"),
                    f"container {container.name}: {event.message or event.name}",
                )

    def _report_changes(self) -> None:
        self.records.report_changes(self.notify, _fingerprint)

    def _with_status(self, record: Record) -> Pod:
        pod: Pod = deep_copy(record.pod)
        pod["status"] = pod_status(record.pod, record.group, record.failure)
        return pod

    # --- pods -------------------------------------------------------------------------------

    def _volume_files(self, pod: Pod) -> dict[str, dict[str, bytes]]:
        """The files the agent wrote for each secret-like volume (top level: ACI secret volumes
        are flat)."""
        found: dict[str, dict[str, bytes]] = {}
        for volume in pod["spec"].get("volumes") or []:
            if not any(kind in volume for kind in _SECRET_VOLUMES):
                continue
            root = self.context.volume_path(pod, volume["name"])
            files: dict[str, bytes] = {}
            for entry in sorted(root.iterdir()) if root.is_dir() else []:
                if entry.name.startswith(".."):
                    continue
                if entry.is_dir():
                    raise InvalidInput(
                        f"volume {volume['name']}: ACI secret volumes are flat; "
                        f"{entry.name}/ is a directory (use items without '/' in path)"
                    )
                files[entry.name] = entry.read_bytes()
            found[str(volume["name"])] = files
        return found

    async def create_pod(self, pod: Pod) -> None:
        key, uid = key_of(pod), uid_of(pod)
        known = self.records.get(key)
        if (
            known is not None
            and uid_of(known.pod) == uid
            and (known.group or known.failure is None)
        ):
            if known.group is not None and not known.pod["spec"].get("volumes"):
                known.pod = self._kept(pod)  # adopted: now with the whole spec
            return  # already created (or adopted): never twice
        meta = pod["metadata"]
        name = naming.group_name(meta["namespace"], meta["name"])
        token = arm.current_pod.set(pod)
        try:
            try:
                existing = await self.client.container_groups.get(self.config.resource_group, name)
            except ResourceNotFoundError:
                existing = None
            if existing is not None:
                tags = existing.tags or {}
                if (
                    tags.get(naming.TAG_UID) == uid
                    and tags.get(naming.TAG_NODE) == self.context.node_name
                ):
                    self.records[key] = Record(pod=self._kept(pod), group_name=name, group=existing)
                    return  # created before a crash: adopt, never create again
                if (tags.get(naming.TAG_NAMESPACE), tags.get(naming.TAG_NAME)) != (
                    meta["namespace"],
                    meta["name"],
                ):
                    name = naming.group_name(meta["namespace"], meta["name"], hashed=True)
            inputs = Inputs(
                # Named by the agent when it resolved the env; None (no marker): all secure.
                secure_env=secret_env_names(pod),
                volume_files=self._volume_files(pod),
                registry_auth=await self.cluster.registry_auth(pod),
                azure_file_keys=await self.cluster.azure_file_keys(pod),
            )
            group = container_group(pod, self.config, self.context.node_name, inputs)
            spec_hash = (meta.get("annotations") or {}).get(SPEC_HASH_ANNOTATION)
            if spec_hash and group.tags is not None:
                group.tags[TAG_SPEC_HASH] = str(spec_hash)[:256]
            try:
                poller = await self.client.container_groups.begin_create_or_update(
                    self.config.resource_group, name, group
                )
            except HttpResponseError as exc:
                if (
                    exc.status_code is not None
                    and 400 <= exc.status_code < 500
                    and exc.status_code not in (408, 409, 429)
                ):
                    raise InvalidInput(_arm_message(exc)) from None
                raise RuntimeError(_arm_message(exc)) from None
        finally:
            arm.current_pod.reset(token)
        record = Record(pod=self._kept(pod), group_name=name)
        self.records[key] = record
        log.info("pod %s is container group %s", key, name)
        task = asyncio.create_task(self._await_provisioning(key, record, poller))
        self.creations.add(task)
        task.add_done_callback(self.creations.discard)
        self.poll_now.set()

    def _kept(self, pod: Pod) -> Pod:
        return _without_env_values(pod)

    async def _await_provisioning(self, key: str, record: Record, poller: Any) -> None:
        """Follow the create's long-running operation as ARM documents it; its final failure
        (after the SDK's retries) fails the pod with ARM's reason instead of leaving it Pending."""
        token = arm.current_pod.set(record.pod)
        try:
            record.group = await poller.result()
        except HttpResponseError as exc:
            record.failure = f"ACI could not create the container group: {_arm_message(exc)}"
            self.cluster.event(record.pod, "Warning", "ProviderFailed", record.failure)
        except ClientAuthenticationError as exc:
            self._set_poll_error(exc)
        finally:
            arm.current_pod.reset(token)
        self.poll_now.set()

    async def update_pod(self, pod: Pod) -> None:
        record = self.records.record_of(pod)
        # A container group's containers cannot change in place; labels and annotations stay.
        record.pod["metadata"] = deep_copy(pod["metadata"])

    async def delete_pod(self, pod: Pod) -> None:
        key = key_of(pod)
        record = self.records.get(key)
        if record is None or (uid_of(pod) and uid_of(record.pod) != uid_of(pod)):
            raise NotFound(key)
        record.deleting = True
        token = arm.current_pod.set(record.pod)
        try:
            poller = await self.client.container_groups.begin_delete(
                self.config.resource_group, record.group_name
            )
            await poller.result()
        except ResourceNotFoundError:
            pass
        except HttpResponseError as exc:
            record.deleting = False
            raise RuntimeError(_arm_message(exc)) from None
        finally:
            arm.current_pod.reset(token)
        self.records.forget(key)

    async def get_pod(self, namespace: str, name: str) -> Pod | None:
        return self.records.get_pod(namespace, name)

    async def get_pod_status(self, namespace: str, name: str) -> PodStatus | None:
        return self.records.get_pod_status(namespace, name)

    async def list_pods(self) -> list[Pod]:
        return self.records.list_pods(deleting=False)

    # --- node -------------------------------------------------------------------------------

    async def ping(self) -> None:
        """Healthy while ARM answers the status poll (the node goes NotReady with why, e.g.
        refused credentials, otherwise)."""
        if self.poll_error is not None:
            raise RuntimeError(self.poll_error)

    async def configure_node(self, node: Node) -> None:
        status = node.setdefault("status", {})
        capacity = {
            "cpu": self.config.capacity.cpu,
            "memory": self.config.capacity.memory,
            "pods": self.config.capacity.pods,
        }
        if self.config.capacity.gpu != "0":
            capacity["nvidia.com/gpu"] = self.config.capacity.gpu
        status["capacity"] = capacity
        status["allocatable"] = dict(capacity)
        status.setdefault("nodeInfo", {})["containerRuntimeVersion"] = "aci://2023-05-01"
        labels = node.setdefault("metadata", {}).setdefault("labels", {})
        labels["topology.kubernetes.io/region"] = self.config.region
        node.setdefault("spec", {})["providerID"] = (
            f"azure:///subscriptions/{self.config.subscription_id}/resourceGroups/"
            f"{self.config.resource_group}/providers/Microsoft.ContainerInstance/virtualNodes/"
            f"{self.context.node_name}"
        )

    # --- kubelet API ------------------------------------------------------------------------

    def _running(self, record: Record, container: str) -> bool:
        key = key_of(record.pod)
        if self.records.get(key) is not record or record.group is None:
            return False
        for c in record.group.containers or []:
            if c.name == container:
                state: m.ContainerState | None = getattr(c.instance_view, "current_state", None)
                if state is None or str(state.state) != "Terminated":
                    return True
                return bool(record.pod["spec"].get("restartPolicy", "Always") != "Never")
        return False

    async def get_container_logs(
        self, namespace: str, pod: str, container: str, options: LogOptions
    ) -> AsyncIterator[bytes]:
        record = self.records.container_record(namespace, pod, container)
        if options.previous:
            raise InvalidInput("ACI keeps only the current run's log: --previous is not available")

        async def fetch(tail: int | None) -> str:
            try:
                found = await self.client.containers.list_logs(
                    self.config.resource_group,
                    record.group_name,
                    container,
                    tail=tail,
                    timestamps=True,
                )
            except ResourceNotFoundError:
                return ""
            return str(found.content or "")

        async for chunk in logs.follow_logs(
            fetch, options, lambda: self._running(record, container), self.config.poll_seconds
        ):
            yield chunk

    async def run_in_container(
        self, namespace: str, pod: str, container: str, command: list[str], io: ContainerIO
    ) -> int:
        record = self.records.container_record(namespace, pod, container)
        line = exec_ws.command_line(command)
        rows, cols = await exec_ws.first_size(io)
        try:
            answer = await self.client.containers.execute_command(
                self.config.resource_group,
                record.group_name,
                container,
                m.ContainerExecRequest(
                    command=line,
                    terminal_size=m.ContainerExecRequestTerminalSize(rows=rows, cols=cols),
                ),
            )
        except ResourceNotFoundError:
            raise NotFound(f"container {container} in pod {namespace}/{pod}") from None
        except HttpResponseError as exc:
            raise InvalidInput(_arm_message(exc)) from None
        ssl = None
        if self.config.ca_file is not None:
            ssl = ssl_module.create_default_context(cafile=str(self.config.ca_file))
        return await exec_ws.run_session(
            str(answer.web_socket_uri), str(answer.password), io, ssl=ssl
        )
