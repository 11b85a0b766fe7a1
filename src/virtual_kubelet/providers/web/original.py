"""`mode: web`: the original virtual-kubelet web provider's protocol, compatible with the backends
written for it as they really are (docs/providers/web.md, "Compatibility").

| call       | request                                                             |
|------------|---------------------------------------------------------------------|
| create     | `POST /createPod`, body = the pod                                   |
| update     | `PUT /updatePod` (then `POST` on 404/405), body = the pod           |
| delete     | `DELETE /deletePod`, body = the pod                                 |
| get        | `GET /getPod?namespace=&name=` (else `/getPodStatus` + our record)  |
| status     | `GET /getPodStatus?namespace=&name=`                                |
| list       | `GET /getPods`                                                      |
| logs       | `GET /getContainerLogs?namespace=&podName=&containerName=&tail=N`   |
| node       | `GET /capacity`, `GET /nodeConditions`, `GET /nodeAddresses`        |

The backend does not push: the agent polls `/getPodStatus`. Exec, attach and port-forward are not
in this protocol, so those hooks are absent and the kubelet API answers 501.

Where the protocol is ambiguous, a 404 is resolved by asking `/getPodStatus` whether the backend
knows the pod: if it does, the route is missing (no `/getPod`, no `/updatePod`, no `/deletePod`),
otherwise the pod is gone. A backend that loses a running pod (restarted with its state in memory)
gets it again from the agent's record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from ...sdk import (
    InvalidInput,
    LogOptions,
    Node,
    NodeCallback,
    NotFound,
    Pod,
    PodStatus,
    Provider,
    ProviderContext,
    deep_copy,
    key_of,
)
from .backoff import Backoff
from .config import WebConfig
from .errors import BackendError, BadResponse, Redactor, env_values
from .node_status import NodeStatusKeeper, refresh_forever
from .original_node import (
    apply_addresses,
    apply_capacity,
    apply_conditions,
    parse_addresses,
    parse_capacity,
    parse_conditions,
)
from .token import TokenFile
from .transport import Transport, check

__all__ = ["WebProvider", "transport_for"]

log = logging.getLogger(__name__)

#: Statuses that say "this route does not exist" (404 is ambiguous: route or pod).
_NO_ROUTE = (404, 405)
_TERMINAL = ("Succeeded", "Failed")


def transport_for(config: WebConfig) -> Transport:
    """The transport every mode builds from its configuration."""
    return Transport(
        config.endpoint(),
        token=TokenFile(config.token_file) if config.token_file is not None else None,
        tls=config.tls,
        request_timeout=config.request_timeout,
        retry=Backoff(max_elapsed=config.retry_max_elapsed),
        max_json_bytes=config.max_json_bytes,
    )


class WebProvider(Provider):
    description = "Pods run by an HTTP backend speaking the original web provider's protocol."

    def __init__(self, context: ProviderContext, config: WebConfig) -> None:
        super().__init__(context)
        self.config = config
        self.transport = transport_for(config)
        #: namespace/name -> the pod as last given to the backend (or listed by it)
        self._pods: dict[str, Pod] = {}
        #: pods whose status the backend has reported since they were last (re)created
        self._seen: set[str] = set()
        #: namespace/name -> phase last reported (a finished pod is never created again)
        self._phases: dict[str, str] = {}
        #: learned from the backend: whether it has `/getPod` (None: not known yet)
        self._has_get_pod: bool | None = None
        #: learned from the backend: how it takes `/updatePod`; None once known to lack it
        self._update_method: str | None = "PUT"
        self._node = NodeStatusKeeper(config.node_failure_threshold)
        self._node_task: asyncio.Task[None] | None = None
        self._node_lock = asyncio.Lock()

    # --- life cycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        endpoint = self.transport.endpoint
        if endpoint.dropped_path:
            log.warning(
                "the path %r of the backend URL is dropped (the original web provider's paths are "
                "absolute): requests go to %s/createPod and so on",
                endpoint.dropped_path,
                endpoint.describe(),
            )
        await self.transport.start()
        log.info("web provider: backend at %s (original protocol)", endpoint.describe())

    async def stop(self) -> None:
        if self._node_task is not None:
            self._node_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._node_task
            self._node_task = None
        await self.transport.close()

    # --- pods -----------------------------------------------------------------------------------

    async def create_pod(self, pod: Pod) -> None:
        key = key_of(pod)
        # What was heard of an earlier run is forgotten before asking, not after the answer: a
        # backend that pushes (mode: extended) may report the new pod's first statuses on its
        # stream before it answers the create, and those must count (they make the pod one to
        # give back should the backend lose it).
        self._seen.discard(key)
        self._phases.pop(key, None)
        check(await self.transport.request("POST", "/createPod", body=pod), _redactor(pod))
        self._pods[key] = deep_copy(pod)

    async def update_pod(self, pod: Pod) -> None:
        key = key_of(pod)
        redact = _redactor(pod)
        if self._update_method is not None:
            methods = [self._update_method] + (["POST"] if self._update_method == "PUT" else [])
            for method in methods:
                response = await self.transport.request(method, "/updatePod", body=pod)
                if response.status not in _NO_ROUTE:
                    check(response, redact)
                    if method != self._update_method:
                        log.info("the backend takes /updatePod as %s; using that from now", method)
                        self._update_method = method
                    self._pods[key] = deep_copy(pod)
                    return
            # Neither method exists, or the backend does not know the pod: ask which.
            if await self._backend_status(pod) is None:
                raise NotFound(f"the backend does not know pod {key} (PUT/POST /updatePod: 404)")
            log.warning(
                "the backend has no /updatePod: changes to running pods are kept here only "
                "(labels, annotations and images are not sent to it)"
            )
            self._update_method = None
        elif await self._backend_status(pod) is None:
            raise NotFound(f"the backend does not know pod {key}")
        self._pods[key] = deep_copy(pod)

    async def delete_pod(self, pod: Pod) -> None:
        key = key_of(pod)
        response = await self.transport.request("DELETE", "/deletePod", body=pod)
        if response.status in _NO_ROUTE:
            known = response.status == 405 or await self._backend_status(pod) is not None
            self._forget(key)
            if not known:
                raise NotFound(f"the backend does not know pod {key} (DELETE /deletePod: 404)")
            raise InvalidInput(
                f"the backend could not be told to delete the pod: DELETE /deletePod answered "
                f"{response.status} {response.reason} (it has no such route) while it still "
                "reports the pod; it may still be running there"
            )
        check(response, _redactor(pod))
        self._forget(key)

    async def get_pod(self, namespace: str, name: str) -> Pod | None:
        key = f"{namespace}/{name}"
        if self._has_get_pod is not False:
            response = await self.transport.request(
                "GET", "/getPod", query={"namespace": namespace, "name": name}
            )
            if response.status not in _NO_ROUTE:
                pod = _pod_or_none(check(response).json(), response.request)
                self._has_get_pod = True
                if pod is not None:
                    self._note_phase(key, pod.get("status"))
                return pod
            if response.status == 405 or self._has_get_pod is None:
                status = await self.get_pod_status(namespace, name)
                if status is None:
                    return None  # the pod is unknown; whether the route exists stays open
                if self._has_get_pod is None:
                    log.info("the backend has no /getPod: using /getPodStatus and our own record")
                self._has_get_pod = False
                return await self._recorded_with(namespace, name, status)
            return None  # /getPod exists and says 404: the pod is gone
        status = await self.get_pod_status(namespace, name)
        return None if status is None else await self._recorded_with(namespace, name, status)

    async def get_pod_status(self, namespace: str, name: str) -> PodStatus | None:
        key = f"{namespace}/{name}"
        status = await self._fetch_status(namespace, name)
        if status is None and self._lost_by_backend(key):
            # It ran there and is not finished: the backend lost it (restarted with its state
            # in memory). Give it back rather than lose the pod.
            log.warning("the backend no longer knows running pod %s; creating it there again", key)
            await self.create_pod(self._pods[key])
            status = await self._fetch_status(namespace, name)
        if status is not None:
            self._seen.add(key)
            self._note_phase(key, status)
        return status

    async def list_pods(self) -> list[Pod]:
        answer = check(await self.transport.request("GET", "/getPods")).json()
        if answer is None:
            answer = []
        if not isinstance(answer, list):
            raise BadResponse("GET /getPods answered something other than a list of pods")
        pods = []
        for item in answer:
            pod = _pod_or_none(item, "GET /getPods", strict=False)
            if pod is None:
                log.warning("GET /getPods: skipped an item that is not a pod with a name")
                continue
            node = (pod.get("spec") or {}).get("nodeName")
            if node and node != self.context.node_name:
                continue  # a backend shared by several nodes: not ours to adopt or delete
            key = key_of(pod)
            self._pods.setdefault(key, deep_copy(pod))
            self._seen.add(key)
            self._note_phase(key, pod.get("status"))
            pods.append(pod)
        return pods

    # --- logs -----------------------------------------------------------------------------------

    async def get_container_logs(
        self, namespace: str, pod: str, container: str, options: LogOptions
    ) -> AsyncIterator[bytes]:
        if options.tail_lines == 0:
            return  # `--tail=0`: nothing (in this protocol, tail=0 would mean everything)
        query: dict[str, str | int] = {
            "namespace": namespace,
            "podName": pod,
            "containerName": container,
            # Always sent; 0 means all lines. follow, since and timestamps are not in the
            # protocol (backends ignore unknown parameters, but could not honour them).
            "tail": options.tail_lines or 0,
        }
        async with self.transport.stream("GET", "/getContainerLogs", query=query) as chunks:
            async for chunk in chunks:
                yield chunk

    # --- the node -------------------------------------------------------------------------------

    async def configure_node(self, node: Node) -> None:
        self._node.attach(node)
        try:
            async with asyncio.timeout(self.config.request_timeout):
                await self._refresh_node()
        except TimeoutError:
            self._node.failed("node endpoints", "no answer at registration")
            log.warning("the backend's node endpoints did not answer in time; registering anyway")
        if self._node_task is None:
            self._node_task = asyncio.create_task(
                refresh_forever(self._refresh_node, self._node, self.config.node_refresh_interval),
                name="web-node-status",
            )

    def notify_node_status(self, callback: NodeCallback) -> None:
        self._node.set_callback(callback)
        self._node.publish()

    async def _refresh_node(self) -> None:
        async with self._node_lock:
            await asyncio.gather(
                self._node_source("GET /capacity", "/capacity", self._apply_capacity),
                self._node_source("GET /nodeConditions", "/nodeConditions", self._apply_conditions),
                self._node_source("GET /nodeAddresses", "/nodeAddresses", self._apply_addresses),
            )

    async def _node_source(
        self, source: str, path: str, apply: Callable[[Any], Callable[[Node], None]]
    ) -> None:
        try:
            answer = check(await self.transport.request("GET", path)).json()
            change = apply(answer)
        except NotFound:
            # The backend does not offer this endpoint: the agent's defaults stand.
            self._node.succeeded(source, lambda node: None)
            return
        except BackendError as exc:
            self._node.failed(source, str(exc))
            return
        self._node.succeeded(source, change)

    def _apply_capacity(self, answer: Any) -> Callable[[Node], None]:
        capacity = parse_capacity(answer)
        return lambda node: apply_capacity(node, capacity)

    def _apply_conditions(self, answer: Any) -> Callable[[Node], None]:
        conditions = parse_conditions(answer)
        return lambda node: apply_conditions(node, conditions)

    def _apply_addresses(self, answer: Any) -> Callable[[Node], None]:
        addresses = parse_addresses(answer)
        return lambda node: apply_addresses(node, addresses, self.context.internal_ip)

    # --- helpers --------------------------------------------------------------------------------

    async def _fetch_status(self, namespace: str, name: str) -> PodStatus | None:
        response = await self.transport.request(
            "GET", "/getPodStatus", query={"namespace": namespace, "name": name}
        )
        try:
            answer = check(response).json()
        except NotFound:
            return None
        if answer is None:
            return None
        if not isinstance(answer, dict):
            raise BadResponse(f"{response.request} answered something other than a PodStatus")
        return answer

    async def _backend_status(self, pod: Pod) -> PodStatus | None:
        """Whether the backend knows `pod` (its status), to tell a missing route from a missing
        pod after a 404."""
        meta = pod["metadata"]
        return await self._fetch_status(meta["namespace"], meta["name"])

    async def _recorded_with(self, namespace: str, name: str, status: PodStatus) -> Pod:
        """Our record of the pod (or the backend's listing of it) with `status`."""
        key = f"{namespace}/{name}"
        recorded = self._pods.get(key)
        if recorded is None:
            await self.list_pods()  # after a restart the record is empty: the backend lists it
            recorded = self._pods.get(key)
        pod: Pod = (
            deep_copy(recorded)
            if recorded is not None
            else {"metadata": {"namespace": namespace, "name": name}}
        )
        pod["status"] = status
        return pod

    def _lost_by_backend(self, key: str) -> bool:
        pod = self._pods.get(key)
        return (
            pod is not None
            and key in self._seen
            and self._phases.get(key) not in _TERMINAL
            and not pod["metadata"].get("deletionTimestamp")
        )

    def _note_phase(self, key: str, status: Any) -> None:
        if isinstance(status, dict) and isinstance(status.get("phase"), str):
            self._phases[key] = status["phase"]

    def _forget(self, key: str) -> None:
        self._pods.pop(key, None)
        self._seen.discard(key)
        self._phases.pop(key, None)


def _redactor(pod: Pod) -> Redactor:
    return Redactor(env_values(pod))


def _pod_or_none(answer: Any, source: str, *, strict: bool = True) -> Pod | None:
    """A pod from the backend, or None for "no such pod" (`null`, or Go's empty pod)."""
    if answer is None:
        return None
    if not isinstance(answer, dict):
        if strict:
            raise BadResponse(f"{source} answered something other than a pod")
        return None
    meta = answer.get("metadata")
    if not isinstance(meta, dict) or not meta.get("name") or not meta.get("namespace"):
        return None
    return answer
