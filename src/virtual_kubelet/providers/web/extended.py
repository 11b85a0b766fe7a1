"""`mode: extended`: the original protocol's calls plus what the backend advertises at
`GET /capabilities` (docs/providers/web-extended.openapi.yaml): pod status and node updates pushed
on `GET /watch` instead of polled, logs with every option, exec and attach and port-forward over
WebSocket, and the stats summary.

Pod calls, the node endpoints and their safeguards are the original mode's (`WebProvider`); this
class adds the extensions and switches each kubelet API hook on only if the backend offers it. A
backend without `/capabilities` (404) is served as in `mode: web`. Wrong credentials stop the
agent at start-up with a message that names the token file, never the token.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ...sdk import (
    Capabilities,
    ContainerIO,
    DuplexStream,
    LogOptions,
    Node,
    Pod,
    PodCallback,
    ProviderConfigError,
    ProviderContext,
    key_of,
    validate,
)
from .backoff import Backoff
from .config import WebConfig
from .errors import BackendError, BackendHTTPError, BadResponse
from .extended_channels import forward_port, run_attach, run_exec
from .extended_transport import ExtendedTransport, auth_hint
from .extended_watch import StatusStream
from .extended_wire import BackendCapabilities, Feature, WireError, log_query
from .original import WebProvider
from .original_node import (
    apply_addresses,
    apply_capacity,
    apply_conditions,
    parse_addresses,
    parse_capacity,
    parse_conditions,
)
from .transport import check

__all__ = ["ExtendedConfig", "ExtendedWebProvider"]

log = logging.getLogger(__name__)


class ExtendedConfig(BaseModel):
    """The `extended:` mapping of `--provider-config` (every key optional)."""

    model_config = ConfigDict(extra="forbid")

    #: Use `GET /watch` when the backend offers it (false: poll `/getPodStatus` as in web mode).
    watch: bool = True
    #: Features the agent must not run without: start-up fails if the backend lacks one.
    require: list[Feature] = Field(default_factory=list)
    #: Seconds start-up waits for `GET /capabilities` to answer (the backend may start later).
    capabilities_timeout: float = Field(120.0, gt=0)
    #: Seconds the status stream may stay down before the node's Ready turns False (its pods'
    #: statuses are stale meanwhile).
    unhealthy_after: float = Field(60.0, gt=0)
    #: Longest wait between two attempts to reopen the status stream.
    reconnect_max_interval: float = Field(30.0, gt=0)
    #: Largest server-sent event accepted (one pod's status).
    max_event_bytes: int = Field(16 * 1024 * 1024, ge=1024)


class _Settings(BaseModel):
    """Validates `extended:` under its own name, so a mistake reads `extended.watch: ...`."""

    model_config = ConfigDict(extra="forbid")
    extended: ExtendedConfig


class ExtendedWebProvider(WebProvider):
    description = "Pods run by an HTTP backend speaking the extended web-bridge protocol."

    def __init__(self, context: ProviderContext, config: WebConfig) -> None:
        super().__init__(context, config)
        where = context.config_path or Path("(no --provider-config)")
        self.extended = validate(_Settings, {"extended": config.extended}, where).extended
        self.transport: ExtendedTransport = ExtendedTransport.like(self.transport)
        self.backend = BackendCapabilities.none()
        self._notify: PodCallback | None = None
        #: The latest pushed pod of each key, replayed to a callback registered late.
        self._latest: dict[str, Pod] = {}
        self._stream: StatusStream | None = None
        self._stream_task: asyncio.Task[None] | None = None
        #: Pods being given back to a backend that lost them.
        self._recreating: dict[str, asyncio.Task[None]] = {}

    # --- life cycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        await self.transport.start()
        self.backend = await self._read_capabilities()
        missing = [f.value for f in self.extended.require if f not in self.backend]
        if missing:
            raise ProviderConfigError(
                f"the backend at {self.transport.endpoint.describe()} does not offer "
                f"{', '.join(missing)} (required by extended.require in --provider-config)"
            )
        offered = ", ".join(sorted(f.value for f in self.backend.features)) or "none"
        log.info(
            "web provider: backend at %s (extended protocol v%d; features: %s%s)",
            self.transport.endpoint.describe(),
            self.backend.version,
            offered,
            f"; unknown, ignored: {', '.join(self.backend.unknown)}"
            if self.backend.unknown
            else "",
        )
        if self._watching:
            self._stream = StatusStream(
                lambda: self.transport.stream("GET", "/watch"),
                on_pod=self._pushed,
                on_node=self._node_pushed,
                heartbeat_seconds=self.backend.heartbeat_seconds,
                backoff=Backoff(max_interval=self.extended.reconnect_max_interval),
                max_event_bytes=self.extended.max_event_bytes,
            )
            self._stream_task = asyncio.create_task(self._stream.run(), name="web-status-stream")

    async def stop(self) -> None:
        if self._stream_task is not None:
            self._stream_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._stream_task
            self._stream_task = None
        for task in self._recreating.values():
            task.cancel()
        await asyncio.gather(*self._recreating.values(), return_exceptions=True)
        await super().stop()

    async def _read_capabilities(self) -> BackendCapabilities:
        """`GET /capabilities`, waiting (with back-off) for a backend that is not up yet."""
        where = self.transport.endpoint.describe()
        deadline = time.monotonic() + self.extended.capabilities_timeout
        delays = Backoff(max_interval=10.0).delays()
        while True:
            try:
                response = await self.transport.request("GET", "/capabilities")
                break
            except BackendError as exc:
                delay = next(delays)
                if time.monotonic() + delay > deadline:
                    raise ProviderConfigError(
                        f"the web backend at {where} did not answer GET /capabilities within "
                        f"{self.extended.capabilities_timeout:g} s: {exc}"
                    ) from None
                log.warning("GET /capabilities: %s; trying again in %.1f s", exc, delay)
                await asyncio.sleep(delay)
        if response.status in (401, 403):
            raise ProviderConfigError(
                f"the web backend at {where} refused the agent's credentials: GET /capabilities "
                f"answered {response.status} {response.reason}; {auth_hint(self.transport)}"
            )
        if response.status in (404, 405):
            log.warning(
                "the backend at %s has no GET /capabilities: it speaks the original protocol "
                "only (pods are polled; no exec, attach, port-forward or stats)",
                where,
            )
            return BackendCapabilities.none()
        try:
            return BackendCapabilities.parse(check(response).body)
        except (WireError, BackendHTTPError) as exc:
            raise ProviderConfigError(
                f"the web backend at {where}: GET /capabilities: {exc}"
            ) from None

    @property
    def _watching(self) -> bool:
        return self.extended.watch and Feature.WATCH in self.backend

    def capabilities(self) -> Capabilities:
        offered = self.backend
        return dataclasses.replace(
            super().capabilities(),
            notify_pods=self._watching,
            run_in_container=Feature.EXEC in offered,
            attach_to_container=Feature.ATTACH in offered,
            port_forward=Feature.PORT_FORWARD in offered,
            get_stats_summary=Feature.STATS in offered,
        )

    async def ping(self) -> None:
        await super().ping()
        stream = self._stream
        if stream is None or stream.down_since is None:
            return
        down = time.monotonic() - stream.down_since
        if down > self.extended.unhealthy_after:
            raise BackendError(
                f"the backend's status stream (GET /watch) has been down for {down:.0f} s: "
                f"{stream.last_error}"
            )

    # --- pushed status --------------------------------------------------------------------------

    def notify_pods(self, callback: PodCallback) -> None:
        if not self._watching:
            raise NotImplementedError("the backend does not offer watch: the agent polls")
        self._notify = callback
        for pod in list(self._latest.values()):
            callback(pod)

    def _pushed(self, pod: Pod) -> None:
        key = key_of(pod)
        if "status" in pod:
            self._latest[key] = pod
            self._seen.add(key)
            self._note_phase(key, pod["status"])
        else:
            self._latest.pop(key, None)
            if self._lost_by_backend(key) and key not in self._recreating:
                # As when polled (WebProvider.get_pod_status): the backend lost a pod that ran
                # there and is not finished (it restarted with its state in memory). Give it
                # back rather than lose it.
                self._recreating[key] = asyncio.create_task(self._recreate(key))
                return
        if self._notify is not None:
            self._notify(pod)

    async def _recreate(self, key: str) -> None:
        log.warning("the backend no longer has running pod %s; creating it there again", key)
        try:
            await self.create_pod(self._pods[key])
        except Exception as exc:  # reported like a polled pod that is gone: the core looks again
            log.warning("giving pod %s back to the backend failed: %s", key, exc)
            namespace, _, name = key.partition("/")
            if self._notify is not None:
                self._notify({"metadata": {"namespace": namespace, "name": name}})
        finally:
            self._recreating.pop(key, None)

    def _node_pushed(self, doc: Mapping[str, Any]) -> None:
        """A `node` event: parsed as the node endpoints' answers are, applied, published."""
        try:
            changes: list[Callable[[Node], None]] = []
            if "capacity" in doc:
                capacity = parse_capacity(doc["capacity"], "the node event's capacity")
                changes.append(lambda node: apply_capacity(node, capacity))
            if "allocatable" in doc:
                allocatable = parse_capacity(doc["allocatable"], "the node event's allocatable")
                changes.append(
                    lambda node: node.setdefault("status", {}).update(allocatable=allocatable)
                )
            if "conditions" in doc:
                conditions = parse_conditions(doc["conditions"], "the node event's conditions")
                changes.append(lambda node: apply_conditions(node, conditions))
            if "addresses" in doc:
                addresses = parse_addresses(doc["addresses"], "the node event's addresses")
                ip = self.context.internal_ip
                changes.append(lambda node: apply_addresses(node, addresses, ip))
        except BadResponse as exc:
            log.warning("status stream: %s; the node keeps its values", exc)
            return

        def apply(node: Node) -> None:
            for change in changes:
                change(node)

        self._node.succeeded("status stream node event", apply)
        self._node.publish()

    # --- the kubelet API ------------------------------------------------------------------------

    async def get_container_logs(
        self, namespace: str, pod: str, container: str, options: LogOptions
    ) -> AsyncIterator[bytes]:
        if Feature.LOGS not in self.backend:
            async for chunk in super().get_container_logs(namespace, pod, container, options):
                yield chunk
            return
        query = log_query(namespace, pod, container, options, extended=True)
        async with self.transport.stream("GET", "/getContainerLogs", query=query) as chunks:
            async for chunk in chunks:
                yield chunk

    async def run_in_container(
        self, namespace: str, pod: str, container: str, command: list[str], io: ContainerIO
    ) -> int:
        query = _stream_query(namespace, pod, container, io)
        query += [("command", part) for part in command]
        ws = await self.transport.websocket("/exec", query)
        try:
            return await run_exec(ws, io, f"exec in {namespace}/{pod}/{container}")
        finally:
            await ws.close()  # also when cancelled (the client left): the backend ends it

    async def attach_to_container(
        self, namespace: str, pod: str, container: str, io: ContainerIO
    ) -> int | None:
        ws = await self.transport.websocket("/attach", _stream_query(namespace, pod, container, io))
        try:
            return await run_attach(ws, io, f"attach to {namespace}/{pod}/{container}")
        finally:
            await ws.close()

    async def port_forward(self, namespace: str, pod: str, port: int, stream: DuplexStream) -> None:
        query = [("namespace", namespace), ("podName", pod), ("port", str(port))]
        ws = await self.transport.websocket("/portForward", query)
        await forward_port(ws, stream, f"port-forward to {namespace}/{pod}:{port}")

    async def get_stats_summary(self) -> dict[str, Any]:
        summary = await self.transport.get_json("/stats/summary")
        if (
            not isinstance(summary, dict)
            or not isinstance(summary.get("node"), dict)
            or not isinstance(summary.get("pods", []), list)
        ):
            raise BadResponse("GET /stats/summary answered something other than a Summary")
        summary = dict(summary)
        summary["node"] = {**summary["node"]}
        summary["node"]["nodeName"] = self.context.node_name  # the backend may not know it
        summary.setdefault("pods", [])
        return summary


def _stream_query(
    namespace: str, pod: str, container: str, io: ContainerIO
) -> list[tuple[str, str]]:
    def flag(on: bool) -> str:
        return "true" if on else "false"

    return [
        ("namespace", namespace),
        ("podName", pod),
        ("containerName", container),
        ("stdin", flag(io.stdin is not None)),
        ("stdout", flag(io.stdout is not None)),
        ("stderr", flag(io.stderr is not None)),
        ("tty", flag(io.tty)),
    ]
