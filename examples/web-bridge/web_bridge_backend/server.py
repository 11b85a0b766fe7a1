"""The HTTP routes: the original web-bridge calls and the extended ones, over one `Runtime`.

Errors are plain text with a status: 404 for an unknown pod or container, 400 for a request that
can never succeed, 401 without the right token (auth.py).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from . import PROTOCOL, PROTOCOL_VERSION, auth, channels
from .events import Hub
from .logs import LogQuery, stream_logs
from .node import NodeInfo, Stats
from .runtime import BadRequest, NotFoundError, PodRecord, Runtime

log = logging.getLogger(__name__)

FEATURES = ["watch", "logs", "exec", "attach", "portForward", "stats"]
#: Largest request body (a pod) accepted.
MAX_BODY = 8 * 1024 * 1024


class Backend:
    def __init__(
        self,
        workdir: Path,
        *,
        node_file: Path | None = None,
        pod_ip: str | None = None,
        forward_host: str = "127.0.0.1",
        heartbeat_s: float = 15.0,
        node_name: str = "web-bridge",
    ) -> None:
        self.hub = Hub(heartbeat_s)
        self.runtime = Runtime(workdir, self._pod_changed, pod_ip)
        self.runtime.on_removed = self._pod_removed
        self.node = NodeInfo(node_file)
        self.stats = Stats()
        self.forward_host = forward_host
        self.node_name = node_name
        #: How many times each path was called (the tests read it from `/debug/requests`).
        self.requests: dict[str, int] = {}

    def _pod_changed(self, record: PodRecord) -> None:
        self.hub.publish("pod", record.identity_and_status())

    def _pod_removed(self, record: PodRecord) -> None:
        meta = record.pod["metadata"]
        self.hub.publish(
            "podDeleted",
            {"metadata": {k: meta.get(k) for k in ("namespace", "name", "uid")}},
        )

    def app(self, tokens: auth.TokenFile | None) -> web.Application:
        app = web.Application(
            middlewares=[self._count, auth.middleware(tokens), _errors], client_max_size=MAX_BODY
        )
        r = app.router
        # the original protocol
        r.add_post("/createPod", self.create_pod)
        r.add_put("/updatePod", self.update_pod)
        r.add_post("/updatePod", self.update_pod)  # some agents sent POST
        r.add_delete("/deletePod", self.delete_pod)
        r.add_get("/getPod", self.get_pod)
        r.add_get("/getPodStatus", self.get_pod_status)
        r.add_get("/getPods", self.get_pods)
        r.add_get("/getContainerLogs", self.logs)
        r.add_get("/capacity", lambda _: web.json_response(self.node.doc["capacity"]))
        r.add_get("/nodeConditions", lambda _: web.json_response(self.node.doc["conditions"]))
        r.add_get("/nodeAddresses", lambda _: web.json_response(self.node.doc["addresses"]))
        # the extensions
        r.add_get("/capabilities", self.capabilities)
        r.add_get("/watch", self.watch)
        r.add_get("/exec", self.exec)
        r.add_get("/attach", self.attach)
        r.add_get("/portForward", self.port_forward)
        r.add_get("/stats/summary", self.stats_summary)
        r.add_get("/debug/requests", lambda _: web.json_response(self.requests))
        app.on_startup.append(self._start)
        app.on_shutdown.append(self._shutdown)
        return app

    async def _start(self, app: web.Application) -> None:
        import asyncio

        app["node-watch"] = asyncio.create_task(
            self.node.watch(lambda doc: self.hub.publish("node", doc))
        )

    async def _shutdown(self, app: web.Application) -> None:
        app["node-watch"].cancel()
        self.hub.close_all()
        await self.runtime.shutdown()

    @web.middleware
    async def _count(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        self.requests[request.path] = self.requests.get(request.path, 0) + 1
        return await handler(request)

    # --- pods -----------------------------------------------------------------------------------

    async def create_pod(self, request: web.Request) -> web.Response:
        self.runtime.create(await _pod_body(request))
        return web.Response(status=201)

    async def update_pod(self, request: web.Request) -> web.Response:
        self.runtime.update(await _pod_body(request))
        return web.Response()

    async def delete_pod(self, request: web.Request) -> web.Response:
        await self.runtime.delete(await _pod_body(request))
        return web.Response()

    async def get_pod(self, request: web.Request) -> web.Response:
        record = self.runtime.get(request.query["namespace"], request.query["name"])
        return web.json_response(record.with_status())

    async def get_pod_status(self, request: web.Request) -> web.Response:
        record = self.runtime.get(request.query["namespace"], request.query["name"])
        return web.json_response(record.status())

    async def get_pods(self, request: web.Request) -> web.Response:
        return web.json_response([r.with_status() for r in self.runtime.pods.values()])

    # --- extensions -----------------------------------------------------------------------------

    async def capabilities(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "protocol": PROTOCOL,
                "version": PROTOCOL_VERSION,
                "features": FEATURES,
                "heartbeatSeconds": self.hub.heartbeat_s,
            }
        )

    async def watch(self, request: web.Request) -> web.StreamResponse:
        snapshot: list[tuple[str, Any]] = [
            ("pod", r.identity_and_status()) for r in self.runtime.pods.values()
        ]
        snapshot.append(("node", self.node.doc))
        return await self.hub.serve(request, snapshot)

    def _container(self, request: web.Request) -> tuple[PodRecord, Any]:
        q = request.query
        record = self.runtime.get(q.get("namespace", ""), q.get("podName", ""))
        return record, record.container(q.get("containerName", ""))

    async def logs(self, request: web.Request) -> web.StreamResponse:
        _, container = self._container(request)
        return await stream_logs(request, container, LogQuery.parse(request.query))

    async def exec(self, request: web.Request) -> web.StreamResponse:
        record, container = self._container(request)
        run = container.current
        if run is None or run.finished is not None:
            raise BadRequest(f"container {container.name!r} is not running")
        return await channels.exec_in(request, record, container)

    async def attach(self, request: web.Request) -> web.StreamResponse:
        record, container = self._container(request)
        return await channels.attach_to(request, record, container)

    async def port_forward(self, request: web.Request) -> web.StreamResponse:
        self.runtime.get(request.query.get("namespace", ""), request.query.get("podName", ""))
        try:
            port = int(request.query.get("port", ""))
        except ValueError:
            raise BadRequest("port= must be a number") from None
        if not 0 < port < 65536:
            raise BadRequest(f"port {port} is out of range")
        return await channels.forward_port(request, self.forward_host, port)

    async def stats_summary(self, request: web.Request) -> web.Response:
        summary = self.stats.summary(self.node_name, list(self.runtime.pods.values()))
        return web.json_response(summary)


async def _pod_body(request: web.Request) -> dict[str, Any]:
    try:
        pod = json.loads(await request.read())
    except ValueError as exc:
        raise BadRequest(f"the body is not JSON: {exc}") from None
    if not isinstance(pod, dict) or not isinstance(pod.get("metadata"), dict):
        raise BadRequest("the body is not a pod")
    return pod


@web.middleware
async def _errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except NotFoundError as exc:
        return web.Response(status=404, text=f"{exc}\n")
    except (BadRequest, KeyError) as exc:
        message = f"missing parameter {exc}" if isinstance(exc, KeyError) else str(exc)
        return web.Response(status=400, text=f"{message}\n")
