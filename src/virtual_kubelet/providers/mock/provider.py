"""The mock provider itself: pods kept in memory (and in the journal with `persist: true`).

Pods are held packed (`PackedStore`, a few hundred bytes each instead of ~15 KB of dicts): each
read is a private copy, so a change is written back with `self._pods[key] = pod`."""

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

from ...sdk import (
    AGENT_VERSION,
    SPEC_HASH_ANNOTATION,
    Capabilities,
    ContainerIO,
    DuplexStream,
    LogOptions,
    Node,
    NotFound,
    PackedStore,
    Packer,
    Pod,
    PodCallback,
    PodStatus,
    Provider,
    ProviderContext,
    key_of,
    rfc3339,
    uid_of,
)
from .config import ANNOTATION, annotated_seconds, injected_count, load_config
from .journal import ENV_AT_REST, at_rest, had_env_values
from .runtime import MockRuntime
from .statuses import (
    pod_conditions,
    running_state,
    terminated_state,
    waiting_state,
)

log = logging.getLogger(__name__)

#: Primed for pods; shared by every mock provider of the process.
_PACKER = Packer()


def _public(pod: Pod) -> Pod:
    """A pod read from the store (a private copy) as the agent may see it."""
    pod.pop("_stopping", None)
    return pod


class MockProvider(Provider):
    description = (
        "Pods run in memory; delays, exit codes and failures are configurable (tests, demos)."
    )

    def __init__(self, context: ProviderContext) -> None:
        super().__init__(context)
        self.config = load_config(context.config_path, context.node_name)
        self._pods: PackedStore[None] = PackedStore(_PACKER)
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
                    elif entry["op"] == "del" and entry["key"] in self._pods:
                        del self._pods[entry["key"]]
        # Compact: one line per live pod.
        tmp = self._journal_path.with_suffix(".tmp")
        tmp.write_text(
            "".join(json.dumps({"op": "put", "pod": p}) + "\n" for p in self._pods.values())
        )
        for key in list(self._pods):
            pod = self._pods[key]
            if had_env_values(pod):
                # The journal keeps env names only (values may be Secrets): a stale spec hash
                # makes the agent send the pod again with its env resolved (update_pod).
                pod["metadata"].setdefault("annotations", {})[SPEC_HASH_ANNOTATION] = ENV_AT_REST
                self._pods[key] = pod
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
                entry = {"op": "put", "pod": at_rest(pod)}
            else:
                entry = {"op": "del", "key": key}
            self._journal.write(json.dumps(entry) + "\n")

    # --- pods -------------------------------------------------------------------------------------

    def _fail_if_injected(self, pod: Pod, operation: str, default: int) -> None:
        times = injected_count(pod, f"fail-{operation}", default)
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
        startup = annotated_seconds(pod, "startup-seconds", self.config.startup_seconds) or 0.0
        # Our own top level and status; the rest is only read, and packed (copied) when stored.
        stored = dict(pod)
        status = stored["status"] = dict(pod.get("status") or {})
        ips = [i["ip"] for i in status.get("podIPs", [])] or (await self.assign_pod_ips(pod) or [])
        status.update(
            phase="Pending",
            hostIP=self.context.internal_ip,
            hostIPs=[{"ip": self.context.internal_ip}],
            podIP=ips[0],
            podIPs=[{"ip": ip} for ip in ips],
            startTime=rfc3339(),
            conditions=pod_conditions(initialized=False, ready=False),
            containerStatuses=[
                waiting_state(c, "ContainerCreating") for c in stored["spec"]["containers"]
            ],
        )
        if stored["spec"].get("initContainers"):
            status["initContainerStatuses"] = [
                waiting_state(c, "PodInitializing") for c in stored["spec"]["initContainers"]
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
        status["conditions"] = pod_conditions(initialized=True, ready=True)
        status["containerStatuses"] = [running_state(c, now) for c in pod["spec"]["containers"]]
        self.runtime.start_pod(pod)
        if pod["spec"].get("initContainers"):
            status["initContainerStatuses"] = [
                terminated_state(c, 0, now, now) for c in pod["spec"]["initContainers"]
            ]
        self._pods[key] = pod
        self._changed(key)
        run = annotated_seconds(pod, "run-seconds", None)
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
            terminated_state(c, exit_code, started.get(c["name"], now), now)
            for c in pod["spec"]["containers"]
        ]
        status["phase"] = "Succeeded" if exit_code == 0 else "Failed"
        status["conditions"] = pod_conditions(initialized=True, ready=False, reason="PodCompleted")
        self._pods[key] = pod
        self._changed(key)

    async def update_pod(self, pod: Pod) -> None:
        self._fail_if_injected(pod, "update", self.config.fail_update)
        key = key_of(pod)
        current = self._pods.get(key)
        if current is None or uid_of(current) != uid_of(pod):
            raise NotFound(f"pod {key} is not running in the mock provider")
        self._pods[key] = {**pod, "status": current["status"]}
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
        stop = annotated_seconds(pod, "stop-seconds", 0.0) or 0.0
        grace = pod["metadata"].get("deletionGracePeriodSeconds")
        if grace is not None:
            stop = min(stop, float(grace))
        current["metadata"]["deletionTimestamp"] = pod["metadata"].get(
            "deletionTimestamp", rfc3339()
        )
        current["_stopping"] = True
        self._pods[key] = current
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
            terminated_state(c, 0, started.get(c["name"], now), now, reason="Completed")
            for c in pod["spec"]["containers"]
        ]
        if status.get("phase") not in ("Succeeded", "Failed"):
            status["phase"] = "Succeeded"
        status["conditions"] = pod_conditions(initialized=True, ready=False, reason="PodCompleted")
        if self._notify is not None:
            self._notify(pod)

    async def get_pod(self, namespace: str, name: str) -> Pod | None:
        pod = self._pods.get(f"{namespace}/{name}")
        return None if pod is None else _public(pod)

    async def get_pod_status(self, namespace: str, name: str) -> PodStatus | None:
        pod = self._pods.get(f"{namespace}/{name}")
        return None if pod is None else pod["status"]

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
