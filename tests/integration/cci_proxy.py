"""A stand-in for Huawei CCI in front of a dev cluster (tests only): IAM's `POST /v3/auth/tokens`
(password method, project scope; the token in `X-Subject-Token`, `expires_at` in the body), and
a Kubernetes-style API that checks `X-Auth-Token` the way IAM-backed services do (unknown or
expired: 401), requires the namespace flavor annotation, keeps `networking.cci.io` Network
objects itself, refuses pods whose containers' requests differ from their limits or whose CPU is
not in quarter cores, and forwards everything else to the dev cluster as its admin. Runs its own
event loop in a thread."""

from __future__ import annotations

import asyncio
import datetime
import json
import secrets
import ssl
import threading
from decimal import Decimal
from typing import Any

from aiohttp import ClientSession, ClientTimeout, TCPConnector, web

from virtual_kubelet.devcluster import DevCluster
from virtual_kubelet.sdk import parse_quantity

FLAVOR = "namespace.kubernetes.io/flavor"
_HOP = {"transfer-encoding", "content-length", "connection", "content-encoding", "host"}


def _status(code: int, reason: str, message: str) -> web.Response:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "reason": reason,
        "message": message,
        "code": code,
    }
    return web.json_response(body, status=code)


class CciProxy:
    def __init__(self, cluster: DevCluster, credentials: dict[str, str], project: str) -> None:
        self.cluster = cluster
        self.credentials = credentials
        self.project = project
        self.token_lifetime = datetime.timedelta(hours=24)
        #: token -> expiry.
        self.tokens: dict[str, datetime.datetime] = {}
        self.issued = 0
        self.refused: list[str] = []
        self.networks: dict[tuple[str, str], dict[str, Any]] = {}
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> CciProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(30)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def expire_all(self) -> None:
        """Every token issued so far expires now (as after 24 h)."""
        past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=1)
        self.tokens = {token: past for token in self.tokens}

    async def _start(self) -> None:
        context = ssl.create_default_context(cafile=str(self.cluster.ca.cert))
        context.load_cert_chain(str(self.cluster.admin.cert), str(self.cluster.admin.key))
        self._session = ClientSession(
            base_url=self.cluster.server,
            connector=TCPConnector(ssl=context),
            timeout=ClientTimeout(total=None),
            auto_decompress=False,
        )
        app = web.Application()
        app.router.add_post("/v3/auth/tokens", self._iam)
        app.router.add_route("*", "/{tail:.*}", self._api)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _iam(self, request: web.Request) -> web.Response:
        body = await request.json()
        try:
            auth = body["auth"]
            user = auth["identity"]["password"]["user"]
            given = (user["domain"]["name"], user["name"], user["password"])
            project = auth["scope"]["project"]["name"]
        except (KeyError, TypeError):
            return web.json_response({"error": {"code": 400, "message": "bad request"}}, status=400)
        expected = (
            self.credentials["domain"],
            self.credentials["user"],
            self.credentials["password"],
        )
        if given != expected or project != self.project:
            return web.json_response(
                {"error": {"code": 401, "message": "The username or password is wrong."}},
                status=401,
            )
        token = "MII" + secrets.token_urlsafe(48)
        expires = datetime.datetime.now(datetime.UTC) + self.token_lifetime
        self.tokens[token] = expires
        self.issued += 1
        answer = {
            "token": {
                "expires_at": expires.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "project": {"name": project},
            }
        }
        return web.json_response(answer, status=201, headers={"X-Subject-Token": token})

    def _valid(self, token: str | None) -> str | None:
        if not token or token not in self.tokens:
            return "the token is missing or invalid"
        if self.tokens[token] <= datetime.datetime.now(datetime.UTC):
            return "the token has expired"
        return None

    async def _api(self, request: web.Request) -> web.StreamResponse:
        problem = self._valid(request.headers.get("X-Auth-Token"))
        if problem is not None:
            self.refused.append(problem)
            return _status(401, "Unauthorized", problem)
        body = await request.read()
        parts = request.path.strip("/").split("/")
        if request.path.startswith("/apis/networking.cci.io/"):
            return self._network(request, parts, body)
        if request.method == "POST" and request.path == "/api/v1/namespaces":
            annotations = json.loads(body).get("metadata", {}).get("annotations") or {}
            if not annotations.get(FLAVOR):
                return _status(400, "BadRequest", f"namespace needs the {FLAVOR} annotation")
        if request.method == "POST" and len(parts) == 5 and parts[4] == "pods":
            problem = _shape_problem(json.loads(body))
            if problem:
                return _status(422, "Invalid", problem)
        return await self._forward(request, body)

    def _network(self, request: web.Request, parts: list[str], body: bytes) -> web.Response:
        namespace = parts[4]
        if request.method == "POST":
            obj = json.loads(body)
            key = (namespace, obj["metadata"]["name"])
            if key in self.networks:
                return _status(409, "AlreadyExists", "network exists")
            self.networks[key] = obj
            return web.json_response(obj, status=201)
        if len(parts) == 7 and (namespace, parts[6]) in self.networks:
            return web.json_response(self.networks[(namespace, parts[6])])
        return _status(404, "NotFound", "no such network")

    async def _forward(self, request: web.Request, body: bytes) -> web.StreamResponse:
        assert self._session is not None
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() not in _HOP and k.lower() != "x-auth-token"
        }
        async with self._session.request(
            request.method, request.path_qs, data=body or None, headers=headers
        ) as upstream:
            response = web.StreamResponse(status=upstream.status)
            for key, value in upstream.headers.items():
                if key.lower() not in _HOP:
                    response.headers[key] = value
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response


def _shape_problem(pod: dict[str, Any]) -> str | None:
    for container in pod["spec"].get("containers") or []:
        resources = container.get("resources") or {}
        requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
        for name in ("cpu", "memory"):
            if name not in requests or name not in limits:
                return f"container {container['name']}: {name} requests and limits are required"
            if parse_quantity(requests[name]) != parse_quantity(limits[name]):
                return f"container {container['name']}: {name} requests must equal limits"
        if (parse_quantity(requests["cpu"]) / Decimal("0.25")) % 1:
            return f"container {container['name']}: cpu must be a multiple of 0.25 cores"
    return None
