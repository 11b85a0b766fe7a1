"""`mode: interlink`: an interLink plugin (the "sidecar": Slurm, HTCondor, Apptainer, Docker,
Kubernetes, ...) spoken to directly, so existing plugins run behind this agent.

| call   | request                                                                    |
|--------|----------------------------------------------------------------------------|
| create | `POST /create`, one `RetrievedPodData` (or `[it]`: `interlink.create_body`) |
| status | `GET /status` with a JSON body: the pods, in batches; answered per pod     |
| ping   | `GET /status` with `[]`; an optional `PingResponse` (resources, taints)     |
| logs   | `GET /getLogs` with a `LogStruct` body, streamed                           |
| delete | `POST /delete`, the pod                                                    |

Any 2xx is success. The plugin reports container states only: the pod phase is derived here
(`interlink_wire.pod_status`). Statuses are polled in batches by this provider and pushed to the
agent (`notify_pods`). The plugin cannot list pods, so each pod and its job id are kept in a
journal (`interlink_state.py`): a restarted agent adopts them by JID. ConfigMaps, Secrets and
projected contents travel to the plugin (that is the contract) and are redacted from anything
quoted back in a message. Shapes and fields: `interlink_wire.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from ...sdk import (
    LogOptions,
    Node,
    NodeCallback,
    NotFound,
    Pod,
    PodCallback,
    PodStatus,
    Provider,
    ProviderContext,
    deep_copy,
    key_of,
    rfc3339,
    uid_of,
)
from .config import WebConfig
from .errors import BackendError, Redactor, env_values
from .interlink_state import Journal
from .interlink_wire import (
    JOB_ID_ANNOTATION,
    log_request,
    parse_create_answer,
    parse_ping,
    parse_statuses,
    pending_status,
    pod_status,
    retrieved_pod_data,
    sensitive_values,
)
from .node_status import NodeStatusKeeper
from .original import transport_for
from .transport import check

__all__ = ["InterlinkProvider"]

log = logging.getLogger(__name__)

_TERMINAL = ("Succeeded", "Failed")
PING_SOURCE = "GET /status (ping)"


class _Tracked:
    """One pod the plugin runs: our copy (with its JobID annotation), its job id, its status."""

    __slots__ = ("jid", "pod", "status")

    def __init__(self, pod: Pod, jid: str, status: PodStatus | None = None) -> None:
        self.pod = pod
        self.jid = jid
        self.status = status

    def public(self) -> Pod:
        pod: Pod = deep_copy(self.pod)
        if self.status is not None:
            pod["status"] = deep_copy(self.status)
        return pod


class InterlinkProvider(Provider):
    description = "Pods run by an interLink plugin (Slurm, HTCondor, Apptainer, ...)."

    def __init__(self, context: ProviderContext, config: WebConfig) -> None:
        super().__init__(context)
        self.config = config
        self.settings = config.interlink
        self.transport = transport_for(config)
        self.journal = Journal(context.state_dir / f"interlink-{context.node_name}.jsonl")
        self._pods: dict[str, _Tracked] = {}
        self._notify: PodCallback | None = None
        self._poll_now = asyncio.Event()
        self._poller: asyncio.Task[None] | None = None
        self._node = NodeStatusKeeper(config.node_failure_threshold)
        self._fixed_taints: set[str] = set()

    # --- life cycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        await self.transport.start()
        for key, (pod, jid) in (await asyncio.to_thread(self.journal.load)).items():
            self._pods[key] = _Tracked(pod, jid)
        if self._pods:
            log.info("interLink: %d pods from the journal, adopted by job id", len(self._pods))
        self._poller = asyncio.create_task(self._poll_forever(), name="interlink-status")
        log.info("web provider: interLink plugin at %s", self.transport.endpoint.describe())

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None
        self.journal.close()
        await self.transport.close()

    # --- pods -----------------------------------------------------------------------------------

    async def create_pod(self, pod: Pod) -> None:
        key = key_of(pod)
        data = await asyncio.to_thread(retrieved_pod_data, pod, self._volume_files(pod))
        redact = Redactor([*env_values(pod), *sensitive_values(data)])
        body = data if self.settings.create_body == "object" else [data]
        response = check(await self.transport.request("POST", "/create", body=body), redact)
        jid, said = parse_create_answer(response.body, uid_of(pod))
        if not said:
            log.warning(
                "%s: the plugin's answer to POST /create has no PodJID; using the pod's UID", key
            )
        ours: Pod = deep_copy(pod)
        ours["metadata"].setdefault("annotations", {})[JOB_ID_ANNOTATION] = jid
        tracked = _Tracked(ours, jid, pending_status(ours, start_time=rfc3339()))
        self._pods[key] = tracked
        self.journal.put(ours, jid)
        self._push(tracked)
        self._poll_now.set()

    async def update_pod(self, pod: Pod) -> None:
        # The plugin API has no update: keep the new spec (and, after a restart, the env values
        # the journal could not keep) for the calls that send the pod.
        key = key_of(pod)
        tracked = self._pods.get(key)
        if tracked is None or uid_of(tracked.pod) != uid_of(pod):
            raise NotFound(f"pod {key} is not known to the interLink plugin")
        ours: Pod = deep_copy(pod)
        ours["metadata"].setdefault("annotations", {})[JOB_ID_ANNOTATION] = tracked.jid
        tracked.pod = ours
        self.journal.put(ours, tracked.jid)

    async def delete_pod(self, pod: Pod) -> None:
        key = key_of(pod)
        tracked = self._pods.get(key)
        if tracked is None or uid_of(tracked.pod) != uid_of(pod):
            raise NotFound(f"pod {key} is not known to the interLink plugin")
        body: Pod = deep_copy(tracked.pod)
        body["metadata"].update(
            {k: v for k, v in pod["metadata"].items() if k.startswith("deletion")}
        )
        try:
            check(
                await self.transport.request("POST", "/delete", body=body),
                Redactor(env_values(body)),
            )
        except NotFound:
            self._forget(key, tracked)
            raise
        self._forget(key, tracked)

    async def get_pod(self, namespace: str, name: str) -> Pod | None:
        tracked = self._pods.get(f"{namespace}/{name}")
        return None if tracked is None else tracked.public()

    async def get_pod_status(self, namespace: str, name: str) -> PodStatus | None:
        tracked = self._pods.get(f"{namespace}/{name}")
        return None if tracked is None or tracked.status is None else deep_copy(tracked.status)

    async def list_pods(self) -> list[Pod]:
        return [t.public() for t in self._pods.values()]

    def notify_pods(self, callback: PodCallback) -> None:
        self._notify = callback

    # --- status: batched polls, pushed ----------------------------------------------------------

    async def _poll_forever(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.status_interval):
                    await self._poll_now.wait()
            self._poll_now.clear()
            try:
                await self.poll_statuses()
            except asyncio.CancelledError:
                raise
            except BackendError as exc:
                log.warning("interLink status poll failed: %s", exc)
            except Exception:
                log.exception("interLink status poll failed")

    async def poll_statuses(self) -> None:
        """Ask the plugin for every unfinished pod (in batches) and push what changed."""
        pending = [
            (key, t)
            for key, t in self._pods.items()
            if (t.status or {}).get("phase") not in _TERMINAL
        ]
        size = self.settings.status_batch_size
        for start in range(0, len(pending), size):
            batch = pending[start : start + size]
            answer = check(
                await self.transport.request(
                    "GET", "/status", body=[t.pod for _, t in batch], idempotent=True
                )
            ).json()
            reported = parse_statuses(answer)
            for key, tracked in batch:
                plugin_status = reported.get(uid_of(tracked.pod))
                if plugin_status is None or self._pods.get(key) is not tracked:
                    continue  # not known yet (or deleted meanwhile): keep the last status
                start_time = (tracked.status or {}).get("startTime") or rfc3339()
                status = pod_status(tracked.pod, plugin_status, start_time=start_time)
                if _changed(tracked.status, status):
                    _keep_transition_times(tracked.status, status)
                    tracked.status = status
                    self._push(tracked)

    def _push(self, tracked: _Tracked) -> None:
        if self._notify is not None and tracked.status is not None:
            self._notify(tracked.public())

    # --- logs -----------------------------------------------------------------------------------

    async def get_container_logs(
        self, namespace: str, pod: str, container: str, options: LogOptions
    ) -> AsyncIterator[bytes]:
        tracked = self._pods.get(f"{namespace}/{pod}")
        if tracked is None:
            raise NotFound(f"pod {namespace}/{pod} is not known to the interLink plugin")
        if options.tail_lines == 0:
            return  # `--tail=0`: nothing (Tail 0 would mean everything to the plugin)
        body = log_request(tracked.pod, container, options)
        async with self.transport.stream("GET", "/getLogs", body=body) as chunks:
            async for chunk in chunks:
                yield chunk

    # --- the node -------------------------------------------------------------------------------

    async def configure_node(self, node: Node) -> None:
        status = node.setdefault("status", {})
        capacity = dict(self.settings.capacity)
        status["capacity"] = dict(capacity)
        status["allocatable"] = dict(capacity)
        spec = node.setdefault("spec", {})
        configured = [t.as_taint() for t in self.settings.taints]
        spec["taints"] = _merge_taints(spec.get("taints") or [], configured)
        # The agent's and the configured taints stay; a ping's taints replace only their own.
        self._fixed_taints = {t["key"] for t in spec["taints"]}
        self._node.attach(node)
        try:
            async with asyncio.timeout(self.config.request_timeout):
                await self.ping()
        except Exception as exc:
            # Registered with the configured values; the next pings correct them.
            log.warning("the interLink plugin did not answer its ping at registration: %s", exc)

    def notify_node_status(self, callback: NodeCallback) -> None:
        self._node.set_callback(callback)
        self._node.publish()

    async def ping(self) -> None:
        """`GET /status` with `[]`: healthy on any 2xx. A `PingResponse` updates the node's
        capacity and allocatable, and its taints (applied when the node is registered)."""
        try:
            response = check(await self.transport.request("GET", "/status", body=[]))
        except BackendError as exc:
            self._node.failed(PING_SOURCE, str(exc))
            raise
        info = parse_ping(response.body)
        for problem in info.problems:
            log.warning("interLink ping answer: %s", problem)

        def apply(node: Node) -> None:
            if info.resources:
                status = node.setdefault("status", {})
                for field in ("capacity", "allocatable"):
                    status.setdefault(field, {}).update(info.resources)
            if info.taints is not None:
                spec = node.setdefault("spec", {})
                spec["taints"] = _merge_taints(
                    [t for t in spec.get("taints") or [] if t.get("key") in self._fixed_taints],
                    info.taints,
                )

        self._node.succeeded(PING_SOURCE, apply)
        self._node.publish()

    # --- helpers --------------------------------------------------------------------------------

    def _volume_files(self, pod: Pod) -> Callable[[str], dict[str, bytes] | None]:
        def read(volume: str) -> dict[str, bytes] | None:
            return _read_volume(self.context.volume_path(pod, volume))

        return read

    def _forget(self, key: str, tracked: _Tracked) -> None:
        if self._pods.get(key) is tracked:
            del self._pods[key]
            self.journal.delete(tracked.pod)


def _read_volume(root: Path) -> dict[str, bytes] | None:
    """The files of a materialised volume, by path relative to it (the atomic writer's hidden
    `..` entries skipped, its symlinks followed), or None if there is no such volume."""
    if not root.is_dir():
        return None
    files: dict[str, bytes] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith("..")]
        for name in filenames:
            if name.startswith(".."):
                continue
            path = Path(dirpath) / name
            with contextlib.suppress(OSError):
                files[str(path.relative_to(root))] = path.read_bytes()
    return files


def _merge_taints(base: list[dict[str, str]], extra: list[dict[str, str]]) -> list[dict[str, str]]:
    merged = list(base)
    seen = {(t.get("key"), t.get("effect")) for t in merged}
    for taint in extra:
        if (taint.get("key"), taint.get("effect")) not in seen:
            merged.append(dict(taint))
            seen.add((taint.get("key"), taint.get("effect")))
    return merged


def _changed(old: PodStatus | None, new: PodStatus) -> bool:
    """Whether `new` says something `old` did not (condition times aside)."""
    if old is None:
        return True

    def essence(status: PodStatus) -> object:
        conditions = sorted((c["type"], c["status"]) for c in status.get("conditions", []))
        rest = {k: v for k, v in status.items() if k != "conditions"}
        return (conditions, rest)

    return essence(old) != essence(new)


def _keep_transition_times(old: PodStatus | None, new: PodStatus) -> None:
    """A condition that did not change keeps the time it last changed."""
    before = {
        (c["type"], c["status"]): c.get("lastTransitionTime")
        for c in (old or {}).get("conditions", [])
    }
    for condition in new.get("conditions", []):
        kept = before.get((condition["type"], condition["status"]))
        if kept:
            condition["lastTransitionTime"] = kept
