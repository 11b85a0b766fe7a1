"""The mock provider: pods "run" in memory, for tests, benchmarks and trying the agent out.

Pods go Running at once (or after a delay) with every condition, container status and a pod IP.
Behaviour can be steered per pod with annotations (`mock.virtual-kubelet.io/...`) or for all pods in
the config file: start-up delays, exit codes, how long a pod takes to stop, and injected failures of
create/update/delete. With `persist: true` its pods survive an agent restart (a journal in the state
directory), which is how adoption after a crash is tested. It never touches the network or disk
beyond that journal.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..sdk import (
    AGENT_VERSION,
    SPEC_HASH_ANNOTATION,
    Capabilities,
    ContainerIO,
    DuplexStream,
    InvalidInput,
    LogOptions,
    Node,
    NotFound,
    Pod,
    PodCallback,
    PodStatus,
    Provider,
    ProviderContext,
    QuantityError,
    deep_copy,
    key_of,
    parse_quantity,
    read_mapping,
    rfc3339,
    uid_of,
    validate,
)
from .mock_runtime import MockRuntime

log = logging.getLogger(__name__)

ANNOTATION = "mock.virtual-kubelet.io/"


class MockConfig(BaseModel):
    """`--provider-config` for the mock provider (JSON or YAML). Upstream's format, a mapping keyed
    by node name, is accepted too."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    cpu: str = "20"
    memory: str = "100Gi"
    pods: str = "110"
    ephemeral_storage: str = Field("100Gi", alias="ephemeral-storage")
    #: Extended resources, e.g. {"nvidia.com/gpu": "4"}.
    others: dict[str, str] = Field(default_factory=dict)
    provider_id: str | None = Field(None, alias="providerID")
    #: Pod IPs are handed out from here.
    pod_cidr: str = Field("10.244.0.0/16", alias="podCIDR")
    #: Seconds pods stay Pending (ContainerCreating) before Running. Annotation: startup-seconds.
    startup_seconds: float = Field(0.0, ge=0)
    #: Pods owned by a Job finish with exit code 0 after this many seconds (None: they run forever).
    complete_jobs_after_seconds: float | None = Field(None, ge=0)
    #: Inject failures for every pod: the first N calls fail; -1 means always. Annotations
    #: fail-create / fail-update / fail-delete ("N" or "always") override per pod.
    fail_create: int = Field(0, ge=-1)
    fail_update: int = Field(0, ge=-1)
    fail_delete: int = Field(0, ge=-1)
    #: Keep pods in a journal under the state directory so a restarted agent finds them again.
    persist: bool = False
    #: While this file exists, ping() fails (the node's Lease stops being renewed).
    unhealthy_file: str | None = None
    #: Push status changes (notify_pods); false makes the agent poll get_pod_status instead.
    push: bool = True
    #: Ask the agent to write pod volumes as files (the mock never reads them, so off by default).
    volumes: bool = False

    @field_validator("cpu", "memory", "pods", "ephemeral_storage")
    @classmethod
    def _quantity(cls, value: str) -> str:
        parse_quantity(value)
        return value

    @field_validator("others")
    @classmethod
    def _quantities(cls, value: dict[str, str]) -> dict[str, str]:
        for name, quantity in value.items():
            try:
                parse_quantity(quantity)
            except QuantityError as exc:
                raise ValueError(f"{name}: {exc}") from None
        return value

    @field_validator("pod_cidr")
    @classmethod
    def _cidr(cls, value: str) -> str:
        ipaddress.ip_network(value)
        return value


def load_config(path: Path | None, node_name: str) -> MockConfig:
    """Read and validate the config file; no file means defaults."""
    if path is None:
        return MockConfig()
    doc = read_mapping(path)
    if isinstance(doc.get(node_name), dict):
        doc = doc[node_name]
    return validate(MockConfig, doc, path)


def _injected(pod: Pod, setting: str, default: int) -> int:
    value = pod.get("metadata", {}).get("annotations", {}).get(ANNOTATION + setting)
    if value is None:
        return default
    if value == "always":
        return -1
    try:
        return int(value)
    except ValueError:
        raise InvalidInput(
            f"annotation {ANNOTATION}{setting}={value!r} is not a number or 'always'"
        ) from None


def _seconds(pod: Pod, name: str, default: float | None) -> float | None:
    value = pod.get("metadata", {}).get("annotations", {}).get(ANNOTATION + name)
    if value is None:
        return default
    try:
        return float(value)
    except ValueError:
        raise InvalidInput(f"annotation {ANNOTATION}{name}={value!r} is not a number") from None


class MockProvider(Provider):
    description = (
        "Pods run in memory; delays, exit codes and failures are configurable (tests, demos)."
    )

    def __init__(self, context: ProviderContext) -> None:
        super().__init__(context)
        self.config = load_config(context.config_path, context.node_name)
        self._pods: dict[str, Pod] = {}
        self._attempts: dict[tuple[str, str], int] = {}
        self._timers: dict[str, list[asyncio.TimerHandle]] = {}
        self._notify: PodCallback | None = None
        self._ips: Iterator[ipaddress.IPv4Address | ipaddress.IPv6Address] = ipaddress.ip_network(
            self.config.pod_cidr
        ).hosts()
        self._assigned: dict[str, str] = {}
        self._journal_path = context.state_dir / f"mock-{context.node_name}.jsonl"
        self.creations_path = context.state_dir / f"mock-{context.node_name}-creations.log"
        self._journal: Any = None
        self.runtime = MockRuntime()

    # --- provider lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        if not self.config.persist:
            return
        self.context.state_dir.mkdir(parents=True, exist_ok=True)
        if self._journal_path.exists():
            for line in self._journal_path.read_text().splitlines():
                with contextlib.suppress(ValueError, KeyError):
                    entry = json.loads(line)
                    if entry["op"] == "put":
                        self._pods[key_of(entry["pod"])] = entry["pod"]
                    elif entry["op"] == "del":
                        self._pods.pop(entry["key"], None)
        # Compact: one line per live pod.
        tmp = self._journal_path.with_suffix(".tmp")
        tmp.write_text(
            "".join(json.dumps({"op": "put", "pod": p}) + "\n" for p in self._pods.values())
        )
        for pod in self._pods.values():
            if _had_env_values(pod):
                # The journal keeps env names only (values may be Secrets): a stale spec hash
                # makes the agent send the pod again with its env resolved (update_pod).
                pod["metadata"].setdefault("annotations", {})[SPEC_HASH_ANNOTATION] = ENV_AT_REST
        tmp.replace(self._journal_path)
        self._journal = self._journal_path.open("a", buffering=1)
        loop = asyncio.get_running_loop()
        for key, pod in self._pods.items():
            self._assigned[uid_of(pod)] = pod.get("status", {}).get("podIP", "")
            if pod.get("status", {}).get("phase") == "Pending":
                loop.call_soon(self._start_containers, key, uid_of(pod))
            elif pod.get("status", {}).get("phase") == "Running":
                self.runtime.start_pod(pod)  # a fresh console: the old one was in memory

    async def stop(self) -> None:
        for handles in self._timers.values():
            for handle in handles:
                handle.cancel()
        if self._journal is not None:
            self._journal.close()
            self._journal = None

    def _record(self, op: str, key: str, pod: Pod | None = None) -> None:
        if self._journal is not None:
            if op == "put" and pod is not None:
                entry = {"op": "put", "pod": _at_rest(pod)}
            else:
                entry = {"op": "del", "key": key}
            self._journal.write(json.dumps(entry) + "\n")

    # --- pods -------------------------------------------------------------------------------------

    def _fail_if_injected(self, pod: Pod, operation: str, default: int) -> None:
        times = _injected(pod, f"fail-{operation}", default)
        if times == 0:
            return
        slot = (uid_of(pod), operation)
        self._attempts[slot] = attempt = self._attempts.get(slot, 0) + 1
        if times < 0 or attempt <= times:
            raise RuntimeError(f"mock: injected {operation} failure (attempt {attempt})")

    async def assign_pod_ips(self, pod: Pod) -> list[str] | None:
        uid = uid_of(pod)
        if uid not in self._assigned:
            self._assigned[uid] = str(next(self._ips))
        return [self._assigned[uid]]

    async def create_pod(self, pod: Pod) -> None:
        self._fail_if_injected(pod, "create", self.config.fail_create)
        key = key_of(pod)
        startup = _seconds(pod, "startup-seconds", self.config.startup_seconds) or 0.0
        stored = deep_copy(pod)
        status = stored.setdefault("status", {})
        ips = [i["ip"] for i in status.get("podIPs", [])] or (await self.assign_pod_ips(pod) or [])
        status.update(
            phase="Pending",
            hostIP=self.context.internal_ip,
            hostIPs=[{"ip": self.context.internal_ip}],
            podIP=ips[0],
            podIPs=[{"ip": ip} for ip in ips],
            startTime=rfc3339(),
            conditions=_conditions(initialized=False, ready=False),
            containerStatuses=[
                _waiting(c, "ContainerCreating") for c in stored["spec"]["containers"]
            ],
        )
        if stored["spec"].get("initContainers"):
            status["initContainerStatuses"] = [
                _waiting(c, "PodInitializing") for c in stored["spec"]["initContainers"]
            ]
        self._cancel_timers(key)
        self._pods[key] = stored
        if self.creations_path is not None and self.config.persist:
            with self.creations_path.open("a") as log_file:
                log_file.write(f"{uid_of(pod)} {key}\n")
        if startup > 0:
            self._later(key, startup, self._start_containers, key, uid_of(pod))
            self._changed(key)
        else:
            self._start_containers(key, uid_of(pod))

    def _start_containers(self, key: str, uid: str) -> None:
        pod = self._pods.get(key)
        if pod is None or uid_of(pod) != uid or pod["status"].get("phase") != "Pending":
            return
        now = rfc3339()
        status = pod["status"]
        status["phase"] = "Running"
        status["conditions"] = _conditions(initialized=True, ready=True)
        status["containerStatuses"] = [_running(c, now) for c in pod["spec"]["containers"]]
        self.runtime.start_pod(pod)
        if pod["spec"].get("initContainers"):
            status["initContainerStatuses"] = [
                _terminated(c, 0, now, now) for c in pod["spec"]["initContainers"]
            ]
        self._changed(key)
        run = _seconds(pod, "run-seconds", None)
        exit_code = pod.get("metadata", {}).get("annotations", {}).get(ANNOTATION + "exit-code")
        owned_by_job = any(
            o.get("kind") == "Job" for o in pod["metadata"].get("ownerReferences", [])
        )
        if run is None and exit_code is not None:
            run = 0.0
        if run is None and owned_by_job and self.config.complete_jobs_after_seconds is not None:
            run = self.config.complete_jobs_after_seconds
        if run is not None:
            code = int(exit_code) if exit_code not in (None, "") else 0
            self._later(key, run, self._finish, key, uid, code)

    def _finish(self, key: str, uid: str, exit_code: int) -> None:
        pod = self._pods.get(key)
        if pod is None or uid_of(pod) != uid or pod["status"].get("phase") != "Running":
            return
        if pod["spec"].get("restartPolicy", "Always") == "Always":
            return  # a real kubelet would restart it; the mock keeps it running
        self.runtime.finish_pod(key)
        now = rfc3339()
        status = pod["status"]
        started = {
            s["name"]: s["state"].get("running", {}).get("startedAt", now)
            for s in status["containerStatuses"]
        }
        status["containerStatuses"] = [
            _terminated(c, exit_code, started.get(c["name"], now), now)
            for c in pod["spec"]["containers"]
        ]
        status["phase"] = "Succeeded" if exit_code == 0 else "Failed"
        status["conditions"] = _conditions(initialized=True, ready=False, reason="PodCompleted")
        self._changed(key)

    async def update_pod(self, pod: Pod) -> None:
        self._fail_if_injected(pod, "update", self.config.fail_update)
        key = key_of(pod)
        current = self._pods.get(key)
        if current is None or uid_of(current) != uid_of(pod):
            raise NotFound(f"pod {key} is not running in the mock provider")
        status = current["status"]
        current.clear()
        current.update(deep_copy(pod))
        current["status"] = status
        self.runtime.update_env(pod)  # e.g. env values coming back after a restart
        self._changed(key)

    async def delete_pod(self, pod: Pod) -> None:
        key = key_of(pod)
        current = self._pods.get(key)
        if current is None or uid_of(current) != uid_of(pod):
            raise NotFound(f"pod {key} is not running in the mock provider")
        self._fail_if_injected(pod, "delete", self.config.fail_delete)
        if current.get("metadata", {}).get("deletionTimestamp") and current.get("_stopping"):
            return  # already stopping
        stop = _seconds(pod, "stop-seconds", 0.0) or 0.0
        grace = pod["metadata"].get("deletionGracePeriodSeconds")
        if grace is not None:
            stop = min(stop, float(grace))
        current["metadata"]["deletionTimestamp"] = pod["metadata"].get(
            "deletionTimestamp", rfc3339()
        )
        current["_stopping"] = True
        self._cancel_timers(key)
        if stop > 0:
            self._later(key, stop, self._stopped, key, uid_of(pod))
        else:
            self._stopped(key, uid_of(pod))

    def _stopped(self, key: str, uid: str) -> None:
        pod = self._pods.get(key)
        if pod is None or uid_of(pod) != uid:
            return
        del self._pods[key]
        self.runtime.stop_pod(key)
        self._assigned.pop(uid, None)
        self._cancel_timers(key)
        self._record("del", key)
        now = rfc3339()
        pod.pop("_stopping", None)
        status = pod["status"]
        started = {
            s["name"]: s["state"].get("running", {}).get("startedAt", now)
            for s in status.get("containerStatuses", [])
        }
        status["containerStatuses"] = [
            _terminated(c, 0, started.get(c["name"], now), now, reason="Completed")
            for c in pod["spec"]["containers"]
        ]
        if status.get("phase") not in ("Succeeded", "Failed"):
            status["phase"] = "Succeeded"
        status["conditions"] = _conditions(initialized=True, ready=False, reason="PodCompleted")
        if self._notify is not None:
            self._notify(pod)

    async def get_pod(self, namespace: str, name: str) -> Pod | None:
        pod = self._pods.get(f"{namespace}/{name}")
        return None if pod is None else _public(pod)

    async def get_pod_status(self, namespace: str, name: str) -> PodStatus | None:
        pod = self._pods.get(f"{namespace}/{name}")
        return None if pod is None else deep_copy(pod["status"])

    async def list_pods(self) -> list[Pod]:
        return [_public(p) for p in self._pods.values()]

    def wants_volume_files(self) -> bool:
        return self.config.volumes

    def capabilities(self) -> Capabilities:
        # `push: false` in the config makes the core poll, as for a provider without notify_pods.
        return dataclasses.replace(super().capabilities(), notify_pods=self.config.push)

    def notify_pods(self, callback: PodCallback) -> None:
        if not self.config.push:
            raise NotImplementedError("push disabled in the mock's config: poll instead")
        self._notify = callback

    # --- the kubelet API: the pretend runtime ------------------------------------------------------

    def get_container_logs(
        self, namespace: str, pod: str, container: str, options: LogOptions
    ) -> AsyncIterator[bytes]:
        return self.runtime.logs(namespace, pod, container, options)

    async def run_in_container(
        self, namespace: str, pod: str, container: str, command: list[str], io: ContainerIO
    ) -> int:
        return await self.runtime.exec(namespace, pod, container, command, io)

    async def attach_to_container(
        self, namespace: str, pod: str, container: str, io: ContainerIO
    ) -> int | None:
        return await self.runtime.attach(namespace, pod, container, io)

    async def port_forward(self, namespace: str, pod: str, port: int, stream: DuplexStream) -> None:
        await self.runtime.port_forward(namespace, pod, port, stream)

    async def get_stats_summary(self) -> dict[str, Any]:
        return self.runtime.summary(self.context.node_name, list(self._pods.values()))

    # --- node -------------------------------------------------------------------------------------

    async def configure_node(self, node: Node) -> None:
        resources = {
            "cpu": self.config.cpu,
            "memory": self.config.memory,
            "pods": self.config.pods,
            "ephemeral-storage": self.config.ephemeral_storage,
            **self.config.others,
        }
        node["status"]["capacity"] = dict(resources)
        node["status"]["allocatable"] = dict(resources)
        node["status"]["nodeInfo"]["containerRuntimeVersion"] = f"mock://{AGENT_VERSION}"
        if self.config.provider_id:
            node["spec"]["providerID"] = self.config.provider_id

    async def ping(self) -> None:
        marker = self.config.unhealthy_file
        if marker is None:
            return
        if await asyncio.to_thread(Path(marker).exists):
            raise RuntimeError(f"mock: unhealthy ({marker} exists)")

    # --- helpers ----------------------------------------------------------------------------------

    def _changed(self, key: str) -> None:
        pod = self._pods.get(key)
        if pod is None:
            return
        self._record("put", key, pod)
        if self._notify is not None:
            self._notify(_public(pod))

    def _later(self, key: str, delay: float, fn: Any, *args: Any) -> None:
        handle = asyncio.get_running_loop().call_later(delay, fn, *args)
        self._timers.setdefault(key, []).append(handle)

    def _cancel_timers(self, key: str) -> None:
        for handle in self._timers.pop(key, []):
            handle.cancel()


def _public(pod: Pod) -> Pod:
    copy: Pod = deep_copy(pod)
    copy.pop("_stopping", None)
    return copy


def _conditions(
    *, initialized: bool, ready: bool, reason: str | None = None
) -> list[dict[str, Any]]:
    now = rfc3339()

    def condition(kind: str, ok: bool, why: str | None = None) -> dict[str, Any]:
        c: dict[str, Any] = {
            "type": kind,
            "status": "True" if ok else "False",
            "lastTransitionTime": now,
        }
        if not ok and why:
            c["reason"] = why
        return c

    return [
        condition("PodReadyToStartContainers", True),
        condition("Initialized", initialized, "ContainersNotInitialized"),
        condition("Ready", ready, reason or "ContainersNotReady"),
        condition("ContainersReady", ready, reason or "ContainersNotReady"),
        condition("PodScheduled", True),
    ]


def _base(container: dict[str, Any]) -> dict[str, Any]:
    image = container.get("image", "")
    return {
        "name": container["name"],
        "image": image,
        "imageID": f"mock://{image}",
        "restartCount": 0,
    }


def _waiting(container: dict[str, Any], reason: str) -> dict[str, Any]:
    return {
        **_base(container),
        "ready": False,
        "started": False,
        "state": {"waiting": {"reason": reason}},
    }


def _running(container: dict[str, Any], started: str) -> dict[str, Any]:
    return {
        **_base(container),
        "containerID": f"mock://{container['name']}",
        "ready": True,
        "started": True,
        "state": {"running": {"startedAt": started}},
    }


def _terminated(
    container: dict[str, Any], code: int, started: str, finished: str, reason: str | None = None
) -> dict[str, Any]:
    return {
        **_base(container),
        "containerID": f"mock://{container['name']}",
        "ready": False,
        "started": False,
        "state": {
            "terminated": {
                "exitCode": code,
                "reason": reason or ("Completed" if code == 0 else "Error"),
                "startedAt": started,
                "finishedAt": finished,
            }
        },
    }


#: The spec hash a pod reloaded from the journal reports while its env values are missing.
ENV_AT_REST = "env-values-not-persisted"
#: Marks a journaled pod whose env values were blanked (never sent to the API server).
_ENV_BLANKED = ANNOTATION + "env-values-blanked"


def _at_rest(pod: Pod) -> Pod:
    """The pod as the journal keeps it: env values blanked, since the agent resolved them and
    they may come from Secrets, which must never reach a disk."""
    containers = [
        *(pod.get("spec", {}).get("initContainers") or []),
        *(pod.get("spec", {}).get("containers") or []),
    ]
    if not any(c.get("env") for c in containers):
        return pod
    stored: Pod = deep_copy(pod)
    for kind in ("initContainers", "containers"):
        for container in stored.get("spec", {}).get(kind) or []:
            if container.get("env"):
                container["env"] = [{"name": e["name"], "value": ""} for e in container["env"]]
    stored["metadata"].setdefault("annotations", {})[_ENV_BLANKED] = "true"
    return stored


def _had_env_values(pod: Pod) -> bool:
    """Whether `pod` was journaled with its env values blanked (the marker is removed)."""
    return (pod.get("metadata", {}).get("annotations") or {}).pop(_ENV_BLANKED, None) is not None
