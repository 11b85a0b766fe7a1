"""The kubelet API routes, each backed by the provider (or the pod cache for `/pods`).

A route whose hook the provider does not have (its `Capabilities`, read once) answers 501 before
anything else happens; what a provider raises is turned into a status by the dispatcher
(`provider_errors`). The streaming routes (exec, attach, port-forward) hand the upgraded
connection to `streaming/`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

from ..errors import NotFound
from ..metrics import provider_call
from ..sdk import Capabilities, ContainerIO, DuplexStream, Provider
from . import stats
from .http import HttpError, Request, Responder, Router
from .logs import InvalidLogOptions, limit, parse_log_options
from .provider_errors import MissingHook
from .streaming.exec_attach import serve_remote_command
from .streaming.portforward import serve_port_forward

log = logging.getLogger(__name__)

JSON = "application/json"


class KubeletApi:
    def __init__(
        self,
        provider: Provider,
        node_name: str,
        api_pods: Callable[[], list[dict[str, Any]]],
        *,
        stream_creation_timeout: float = 30.0,
        stream_idle_timeout: float = 4 * 3600.0,
    ) -> None:
        self.provider = provider
        self.capabilities = Capabilities.of(provider)
        self.node_name = node_name
        self.api_pods = api_pods
        self.stream_creation_timeout = stream_creation_timeout
        self.stream_idle_timeout = stream_idle_timeout
        self.router = Router()
        r = self.router
        r.add("/healthz", ("GET",), self.healthz)
        r.add("/pods", ("GET",), self.pods)
        r.add("/runningpods", ("GET",), self.running_pods)
        r.add("/containerLogs/{namespace}/{pod}/{container}", ("GET",), self.container_logs)
        for verb in ("exec", "attach"):
            handler = self.exec if verb == "exec" else self.attach
            r.add(f"/{verb}/{{namespace}}/{{pod}}/{{container}}", ("GET", "POST"), handler)
            r.add(f"/{verb}/{{namespace}}/{{pod}}/{{uid}}/{{container}}", ("GET", "POST"), handler)
        r.add("/portForward/{namespace}/{pod}", ("GET", "POST"), self.port_forward)
        r.add("/portForward/{namespace}/{pod}/{uid}", ("GET", "POST"), self.port_forward)
        r.add("/stats/summary", ("GET", "POST"), self.stats_summary)
        r.add("/metrics/resource", ("GET",), self.metrics_resource)

    def _require(self, hook: str) -> None:
        if hook not in self.capabilities:
            raise MissingHook(hook, self.provider)

    async def healthz(self, request: Request, responder: Responder) -> None:
        await responder.respond(200, "ok")

    async def pods(self, request: Request, responder: Responder) -> None:
        body = {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": self.api_pods()}
        await responder.respond(200, orjson.dumps(body), JSON)

    async def running_pods(self, request: Request, responder: Responder) -> None:
        items = [_running_pod(pod) for pod in await self.provider.list_pods()]
        body = {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items}
        await responder.respond(200, orjson.dumps(body), JSON)

    async def container_logs(self, request: Request, responder: Responder) -> None:
        p = request.params
        try:
            options = parse_log_options(request.query)
        except InvalidLogOptions as exc:
            raise HttpError(400, str(exc)) from None
        self._require("get_container_logs")
        chunks = self.provider.get_container_logs(p["namespace"], p["pod"], p["container"], options)
        iterator = aiter(chunks)
        # Pull the first chunk before answering, so that NotFound and friends still become a
        # status (once the 200 is sent, an error can only end the stream).
        try:
            first = await anext(iterator)
        except StopAsyncIteration:
            first = b""

        async def all_chunks() -> AsyncIterator[bytes]:
            yield first
            async for chunk in iterator:
                yield chunk

        try:
            await responder.stream(200, limit(all_chunks(), options))
        finally:
            # A client that stops following must stop the provider's generator too.
            closer = getattr(iterator, "aclose", None)
            if closer is not None:
                with contextlib.suppress(Exception):
                    await closer()

    async def stats_summary(self, request: Request, responder: Responder) -> None:
        self._require("get_stats_summary")
        with provider_call("get_stats_summary"):
            summary = await self.provider.get_stats_summary()
        if request.flag("only_cpu_and_memory"):
            summary = _only_cpu_and_memory(summary)
        await responder.respond(200, orjson.dumps(summary), JSON)

    async def metrics_resource(self, request: Request, responder: Responder) -> None:
        self._require("get_stats_summary")
        try:
            with provider_call("get_stats_summary"):
                summary = await self.provider.get_stats_summary()
        except NotImplementedError:
            raise  # a provider refusing at run time: 501 like a missing hook
        except Exception:
            # Prometheus scrapes this: an error sample keeps the scrape working.
            log.exception("provider stats failed")
            await responder.respond(200, stats.error_metrics(), stats.CONTENT_TYPE)
            return
        await responder.respond(200, stats.resource_metrics(summary), stats.CONTENT_TYPE)

    async def _check_pod(self, namespace: str, pod: str) -> None:
        try:
            found = await self.provider.get_pod(namespace, pod)
        except NotFound:
            found = None
        if found is None:
            raise HttpError(404, f"pod {namespace}/{pod} not found")

    async def exec(self, request: Request, responder: Responder) -> None:
        p = request.params
        command = request.query.get("command") or []
        if not command:
            raise HttpError(400, "missing command")
        self._require("run_in_container")
        await self._check_pod(p["namespace"], p["pod"])

        async def run(io: ContainerIO) -> int | None:
            return await self.provider.run_in_container(
                p["namespace"], p["pod"], p["container"], command, io
            )

        await serve_remote_command(
            request, responder, run, self.stream_creation_timeout, self.stream_idle_timeout
        )

    async def attach(self, request: Request, responder: Responder) -> None:
        p = request.params
        self._require("attach_to_container")
        await self._check_pod(p["namespace"], p["pod"])

        async def run(io: ContainerIO) -> int | None:
            return await self.provider.attach_to_container(
                p["namespace"], p["pod"], p["container"], io
            )

        await serve_remote_command(
            request, responder, run, self.stream_creation_timeout, self.stream_idle_timeout
        )

    async def port_forward(self, request: Request, responder: Responder) -> None:
        p = request.params
        self._require("port_forward")
        await self._check_pod(p["namespace"], p["pod"])

        async def forward(port: int, stream: DuplexStream) -> None:
            await self.provider.port_forward(p["namespace"], p["pod"], port, stream)

        await serve_port_forward(
            request, responder, forward, self.stream_creation_timeout, self.stream_idle_timeout
        )


def _only_cpu_and_memory(summary: dict[str, Any]) -> dict[str, Any]:
    keep = ("nodeName", "startTime", "cpu", "memory")
    node = {k: v for k, v in summary.get("node", {}).items() if k in keep}
    pods = []
    for pod in summary.get("pods", []):
        containers = [
            {k: v for k, v in c.items() if k in ("name", "startTime", "cpu", "memory")}
            for c in pod.get("containers", [])
        ]
        pods.append(
            {
                "podRef": pod.get("podRef"),
                "startTime": pod.get("startTime"),
                "cpu": pod.get("cpu"),
                "memory": pod.get("memory"),
                "containers": containers,
            }
        )
    return {"node": node, "pods": pods}


def _running_pod(pod: dict[str, Any]) -> dict[str, Any]:
    """What the kubelet's `/runningpods` tells about a pod: its identity and its containers'
    names and images. Never the provider's whole pod: that holds resolved env values, Secrets
    among them, and `nodes/proxy` is granted more widely than Secret reads."""
    meta = pod.get("metadata") or {}
    containers = [
        {"name": c.get("name", ""), "image": c.get("image", "")}
        for c in (pod.get("spec") or {}).get("containers") or []
    ]
    return {
        "metadata": {k: meta[k] for k in ("name", "namespace", "uid") if k in meta},
        "spec": {"containers": containers},
        "status": {},
    }
