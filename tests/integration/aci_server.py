"""A loopback stand-in for Azure Container Instances behind Azure Resource Manager, written from the
public REST reference (api-version 2023-05-01) and the ARM async-operation rules, for the azure
provider's tests. No Azure is reachable from the machines that test this project.

It serves, over TLS (azure-identity and azure-core send bearer tokens only over https):
- a Microsoft Entra ID token endpoint, `POST /{tenant}/oauth2/v2.0/token` (client credentials);
  only the configured client id and secret get a token;
- ARM, every call checked for a token it issued and for `api-version=2023-05-01`:
  `PUT/GET/DELETE .../containerGroups/{name}`, the resource group's list (paged with nextLink),
  `GET .../containers/{c}/logs?tail=&timestamps=`, `POST .../containers/{c}/exec` (a WebSocket
  URL and password; the socket takes the password first, then input, and closes when the command
  ends), and the operations of `Azure-AsyncOperation` / `Location` with `Retry-After`;
- injected faults: the next N matching calls answer 429 (with Retry-After) or 5xx;
- refusals: an image under `registry.invalid/` is refused at once (400 InaccessibleImage); a
  container asking for more than 4 cores is accepted, then its operation fails (ServiceUnavailable),
  as a region without the capacity does.

Containers are simulated by running each container's command line as a local process (the image
is recorded, never pulled): Waiting until the group is provisioned, Running while the process
runs, Terminated with its exit code, restarted per the group's restart policy (restartCount and
previousState kept). A container without a command prints a line and sleeps. Its output, with
timestamps, is what listLogs returns. Volumes are directories (secret volumes' files decoded), found
by a container through `mount_variable(mountPath)` in its environment.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import os
import re
import secrets
import signal
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from virtual_kubelet.devcluster.pki import CertificateAuthority

API_VERSION = "2023-05-01"
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_PROVIDER = "providers/Microsoft.ContainerInstance"


#: The loopback region's largest container (cores): a bigger one fails asynchronously.
_REGION_CPU = 4.0
_NO_CAPACITY = (
    "The requested resource is not available in the location 'westeurope' at this moment. "
    "Please retry with a different resource request or in another location."
)


def _cpu(spec: dict[str, Any]) -> float:
    requests = ((spec.get("properties") or {}).get("resources") or {}).get("requests") or {}
    return float(requests.get("cpu") or 0)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _iso(moment: datetime.datetime | None) -> str | None:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if moment else None


def _error(status: int, code: str, message: str, **headers: str) -> web.Response:
    return web.json_response(
        {"error": {"code": code, "message": message}}, status=status, headers=headers
    )


@dataclass
class Fault:
    method: str
    path_part: str
    status: int
    count: int
    retry_after: int | None = None
    #: Carry the call out, then answer with the fault (ARM's 503 after the work was done).
    after_applying: bool = False


@dataclass
class Container:
    name: str
    spec: dict[str, Any]
    state: str = "Waiting"
    detail: str = "Pending"
    exit_code: int | None = None
    started: datetime.datetime | None = None
    finished: datetime.datetime | None = None
    previous: dict[str, Any] | None = None
    restarts: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    process: asyncio.subprocess.Process | None = None
    volume_dirs: dict[str, Path] = field(default_factory=dict)

    def event(self, name: str, message: str) -> None:
        now = _iso(_now())
        self.events.append(
            {
                "count": 1,
                "firstTimestamp": now,
                "lastTimestamp": now,
                "name": name,
                "message": message,
                "type": "Normal",
            }
        )

    def view(self) -> dict[str, Any]:
        current: dict[str, Any] = {"state": self.state, "detailStatus": self.detail}
        if self.started:
            current["startTime"] = _iso(self.started)
        if self.state == "Terminated":
            current["exitCode"] = self.exit_code
            current["finishTime"] = _iso(self.finished)
        view: dict[str, Any] = {
            "restartCount": self.restarts,
            "currentState": current,
            "events": list(self.events),
        }
        if self.previous:
            view["previousState"] = self.previous
        return view


@dataclass
class Group:
    name: str
    body: dict[str, Any]
    containers: dict[str, Container]
    provisioning: str = "Pending"
    deleting: bool = False
    runner: asyncio.Task[None] | None = None

    def document(self, sub: str, rg: str, with_view: bool) -> dict[str, Any]:
        props = dict(self.body.get("properties") or {})
        props["provisioningState"] = self.provisioning
        containers = []
        for spec in props.get("containers") or []:
            c = dict(spec)
            c["properties"] = dict(spec.get("properties") or {})
            # ACI never shows secure values back.
            c["properties"]["environmentVariables"] = [
                {k: v for k, v in e.items() if k != "secureValue"}
                for e in c["properties"].get("environmentVariables") or []
            ]
            if with_view:
                c["properties"]["instanceView"] = self.containers[c["name"]].view()
            containers.append(c)
        props["containers"] = containers
        props.pop("imageRegistryCredentials", None)
        if props.get("volumes"):
            props["volumes"] = [
                {k: v for k, v in vol.items() if k != "secret"} for vol in props["volumes"]
            ]
        if props.get("ipAddress") is not None:
            props["ipAddress"] = dict(props["ipAddress"], ip="127.0.0.1")
        if with_view:
            states = {c.state for c in self.containers.values()}
            props["instanceView"] = {
                "state": "Running" if "Running" in states else self.provisioning,
                "events": [],
            }
        return {
            "id": f"/subscriptions/{sub}/resourceGroups/{rg}/{_PROVIDER}/containerGroups/{self.name}",
            "name": self.name,
            "type": "Microsoft.ContainerInstance/containerGroups",
            "location": self.body.get("location"),
            "tags": self.body.get("tags") or {},
            "properties": props,
        }


class AciServer:
    """Start with `start()` (a thread with its own event loop), stop with `stop()`."""

    def __init__(
        self,
        workdir: Path,
        *,
        tenant: str = "72f988bf-0000-0000-0000-00000000tenant",
        client_id: str = "11111111-2222-3333-4444-555555555555",
        client_secret: str = "",
        subscription: str = "00000000-0000-0000-0000-000000000000",
        page_size: int = 2,
        provisioning_seconds: float = 1.0,
    ) -> None:
        self.workdir = workdir
        self.tenant, self.client_id = tenant, client_id
        self.client_secret = client_secret or f"s3cr3t-{secrets.token_hex(8)}"
        self.subscription = subscription
        self.page_size = page_size
        self.provisioning_seconds = provisioning_seconds
        self.tokens: set[str] = set()
        self.groups: dict[tuple[str, str], Group] = {}
        self.operations: dict[str, str] = {}  # id -> InProgress / Succeeded / Failed
        self.execs: dict[str, tuple[str, Container, list[str]]] = {}
        self.faults: list[Fault] = []
        #: (method, path, status) of every ARM call, in order.
        self.calls: list[tuple[str, str, int]] = []
        #: Each PUT's body as received (secure values and registry passwords included).
        self.received: list[dict[str, Any]] = []
        #: Each executeCommand body (command line and terminal size).
        self.exec_requests: list[dict[str, Any]] = []
        self.token_requests = 0
        self.port = 0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        pki = workdir / "pki"
        pki.mkdir(parents=True, exist_ok=True)
        self.ca = CertificateAuthority.create(pki, "aci-loopback-ca")
        self.serving = self.ca.issue(
            pki, "server", common_name="127.0.0.1", server_names=["127.0.0.1", "localhost"]
        )

    # --- lifecycle ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_file(self) -> Path:
        return self.ca.files.cert

    def start(self) -> AciServer:
        started = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            loop.run_until_complete(self._serve())
            started.set()
            loop.run_forever()
            loop.run_until_complete(self._shutdown())
            loop.close()

        self._thread = threading.Thread(target=run, name="aci-server", daemon=True)
        self._thread.start()
        if not started.wait(30):
            raise RuntimeError("the ACI loopback server did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)

    async def _serve(self) -> None:
        import ssl

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.serving.cert, self.serving.key)
        app = web.Application(middlewares=[self._middleware])
        app.router.add_post("/{tenant}/oauth2/v2.0/token", self._token)
        base = "/subscriptions/{sub}/resourceGroups/{rg}/" + _PROVIDER + "/containerGroups"
        app.router.add_get(base, self._list)
        app.router.add_put(base + "/{name}", self._put)
        app.router.add_get(base + "/{name}", self._get)
        app.router.add_delete(base + "/{name}", self._delete)
        app.router.add_get(base + "/{name}/containers/{container}/logs", self._logs)
        app.router.add_post(base + "/{name}/containers/{container}/exec", self._exec)
        app.router.add_get(
            "/subscriptions/{sub}/" + _PROVIDER + "/locations/{loc}/operations/{op}",
            self._operation,
        )
        app.router.add_get("/exec/{id}", self._exec_socket)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _shutdown(self) -> None:
        for group in list(self.groups.values()):
            await self._stop_group(group)
        if self._runner is not None:
            await self._runner.cleanup()

    # --- test controls (any thread) --------------------------------------------------------

    def inject(
        self,
        method: str,
        path_part: str,
        status: int,
        count: int = 1,
        retry_after: int | None = None,
        after_applying: bool = False,
    ) -> None:
        """The next `count` calls of `method` whose path contains `path_part` answer `status`."""
        with self._lock:
            self.faults.append(Fault(method, path_part, status, count, retry_after, after_applying))

    def group_names(self) -> list[str]:
        with self._lock:
            return sorted(name for _rg, name in self.groups)

    def group(self, name: str) -> Group | None:
        with self._lock:
            return next((g for (_rg, n), g in self.groups.items() if n == name), None)

    def count(self, method: str, path_part: str = "", status: int | None = None) -> int:
        with self._lock:
            return sum(
                1
                for m, p, s in self.calls
                if m == method and path_part in p and (status is None or s == status)
            )

    # --- plumbing ---------------------------------------------------------------------------

    def _fault_for(self, request: web.Request) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if (
                    fault.count > 0
                    and fault.method == request.method
                    and fault.path_part in request.path
                ):
                    fault.count -= 1
                    return fault
        return None

    @staticmethod
    def _fault_response(fault: Fault) -> web.Response:
        headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
        if fault.status == 429:
            return _error(429, "TooManyRequests", "The request was throttled.", **headers)
        return _error(fault.status, "ServerTimeout", "The operation timed out.", **headers)

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if "/oauth2/" in request.path or request.path.startswith("/exec/"):
            return await handler(request)
        response = await self._arm(request, handler)
        with self._lock:
            self.calls.append((request.method, request.path, response.status))
        return response

    async def _arm(self, request: web.Request, handler: Any) -> web.StreamResponse:
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or auth.removeprefix("Bearer ") not in self.tokens:
            return _error(
                401,
                "InvalidAuthenticationToken",
                "The access token is invalid.",
                **{"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        if request.query.get("api-version") != API_VERSION:
            return _error(
                400,
                "InvalidApiVersionParameter",
                f"The api-version '{request.query.get('api-version')}' is invalid.",
            )
        if request.match_info.get("sub", self.subscription) != self.subscription:
            return _error(404, "SubscriptionNotFound", "The subscription could not be found.")
        fault = self._fault_for(request)
        if fault is not None and not fault.after_applying:
            return self._fault_response(fault)
        response: web.StreamResponse = await handler(request)
        return self._fault_response(fault) if fault is not None else response

    def _operation_headers(
        self, request: web.Request, op: str, location: bool = False
    ) -> dict[str, str]:
        region = "westeurope"
        url = (
            f"{self.url}/subscriptions/{self.subscription}/{_PROVIDER}/locations/{region}"
            f"/operations/{op}?api-version={API_VERSION}"
        )
        headers = {"Azure-AsyncOperation": url, "Retry-After": "1"}
        if location:
            headers["Location"] = url
        return headers

    # --- Entra ID ---------------------------------------------------------------------------

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        self.token_requests += 1
        if request.match_info["tenant"] != self.tenant:
            return web.json_response(
                {"error": "invalid_request", "error_description": "AADSTS90002: Tenant not found."},
                status=400,
            )
        if (
            form.get("client_id") != self.client_id
            or form.get("client_secret") != self.client_secret
        ):
            return web.json_response(
                {
                    "error": "invalid_client",
                    "error_description": "AADSTS7000215: Invalid client secret provided.",
                },
                status=401,
            )
        token = secrets.token_urlsafe(24)
        self.tokens.add(token)
        return web.json_response(
            {
                "token_type": "Bearer",
                "expires_in": 3600,
                "ext_expires_in": 3600,
                "access_token": token,
            }
        )

    # --- container groups -------------------------------------------------------------------

    async def _put(self, request: web.Request) -> web.Response:
        rg, name = request.match_info["rg"], request.match_info["name"]
        if not _NAME.match(name) or "--" in name:
            return _error(
                400, "InvalidContainerGroupName", f"The container group name '{name}' is invalid."
            )
        body = await request.json()
        self.received.append(body)
        props = body.get("properties") or {}
        if not props.get("containers"):
            return _error(400, "MissingContainers", "The container group must have containers.")
        if props.get("osType") not in ("Linux", "Windows"):
            return _error(400, "InvalidOsType", "The osType is invalid.")
        for spec in props["containers"]:
            image = str((spec.get("properties") or {}).get("image", ""))
            if image.startswith("registry.invalid/"):
                return _error(
                    400,
                    "InaccessibleImage",
                    f"The image '{image}' in container group '{name}' is not accessible. "
                    "Please check the image and registry credential.",
                )
            cpu = (
                ((spec.get("properties") or {}).get("resources") or {})
                .get("requests", {})
                .get("cpu")
            )
            if not _NAME.match(spec.get("name", "")) or cpu is None:
                return _error(400, "InvalidContainerProperties", "A container is invalid.")
        existing = self.groups.get((rg, name))
        if existing is not None:
            # Same definition: nothing to do (ARM PUT is idempotent).
            existing.body = body
            return web.json_response(existing.document(self.subscription, rg, False), status=200)
        group = Group(
            name=name,
            body=body,
            containers={c["name"]: Container(c["name"], c) for c in props["containers"]},
        )
        with self._lock:
            self.groups[(rg, name)] = group
        op = str(uuid.uuid4())
        self.operations[op] = "InProgress"
        group.runner = asyncio.create_task(self._run_group(rg, group, op))
        return web.json_response(
            group.document(self.subscription, rg, False),
            status=201,
            headers=self._operation_headers(request, op),
        )

    async def _get(self, request: web.Request) -> web.Response:
        group = self.groups.get((request.match_info["rg"], request.match_info["name"]))
        if group is None:
            return _error(404, "ResourceNotFound", "The Resource was not found.")
        return web.json_response(group.document(self.subscription, request.match_info["rg"], True))

    async def _list(self, request: web.Request) -> web.Response:
        rg = request.match_info["rg"]
        names = sorted(n for r, n in self.groups if r == rg)
        start = int(request.query.get("$skiptoken", "0"))
        page = names[start : start + self.page_size]
        doc: dict[str, Any] = {
            "value": [self.groups[(rg, n)].document(self.subscription, rg, False) for n in page]
        }
        if start + self.page_size < len(names):
            doc["nextLink"] = (
                f"{self.url}{request.path}?api-version={API_VERSION}"
                f"&$skiptoken={start + self.page_size}"
            )
        return web.json_response(doc)

    async def _delete(self, request: web.Request) -> web.Response:
        rg, name = request.match_info["rg"], request.match_info["name"]
        group = self.groups.get((rg, name))
        if group is None:
            return web.Response(status=204)
        op = str(uuid.uuid4())
        self.operations[op] = "InProgress"
        group.deleting = True

        async def remove() -> None:
            await self._stop_group(group)
            with self._lock:
                self.groups.pop((rg, name), None)
            self.operations[op] = "Succeeded"

        asyncio.get_running_loop().create_task(remove())
        return web.Response(status=202, headers=self._operation_headers(request, op, location=True))

    async def _operation(self, request: web.Request) -> web.Response:
        status = self.operations.get(request.match_info["op"])
        if status is None:
            return _error(404, "OperationNotFound", "The operation was not found.")
        headers = {"Retry-After": "1"} if status == "InProgress" else {}
        doc: dict[str, Any] = {"status": status}
        if status == "Failed":
            doc["error"] = {"code": "ServiceUnavailable", "message": _NO_CAPACITY}
        return web.json_response(doc, headers=headers)

    # --- simulated containers ---------------------------------------------------------------

    async def _run_group(self, rg: str, group: Group, op: str) -> None:
        group.provisioning = "Creating"
        for container in group.containers.values():
            image = container.spec["properties"]["image"]
            container.event("Pulling", f'pulling image "{image}"')
        await asyncio.sleep(self.provisioning_seconds)
        if any(_cpu(c.spec) > _REGION_CPU for c in group.containers.values()):
            # What a region without the capacity answers: accepted, then failed.
            group.provisioning = "Failed"
            self.operations[op] = "Failed"
            return
        for container in group.containers.values():
            image = container.spec["properties"]["image"]
            container.event("Pulled", f'Successfully pulled image "{image}"')
        self._write_volumes(group)
        group.provisioning = "Succeeded"
        self.operations[op] = "Succeeded"
        policy = (group.body.get("properties") or {}).get("restartPolicy", "Always")
        await asyncio.gather(
            *(self._run_container(group, c, policy) for c in group.containers.values())
        )

    def _environment(self, container: Container) -> dict[str, str]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.workdir)}
        for entry in container.spec["properties"].get("environmentVariables") or []:
            env[entry["name"]] = str(entry.get("value") or entry.get("secureValue") or "")
        for mount in container.spec["properties"].get("volumeMounts") or []:
            env[mount_variable(mount["mountPath"])] = str(container.volume_dirs[mount["name"]])
        return env

    def _write_volumes(self, group: Group) -> None:
        """Secret volumes as files and emptyDirs as directories, one directory per volume: a local
        process cannot have them at their mount paths, so it finds them through
        `mount_variable(mountPath)` in its environment."""
        root = self.workdir / "volumes" / group.name
        dirs: dict[str, Path] = {}
        for volume in (group.body.get("properties") or {}).get("volumes") or []:
            path = root / volume["name"]
            path.mkdir(parents=True, exist_ok=True)
            for file_name, content in (volume.get("secret") or {}).items():
                (path / file_name).write_bytes(base64.b64decode(content))
            dirs[volume["name"]] = path
        for container in group.containers.values():
            container.volume_dirs = dirs

    def _argv(self, container: Container) -> list[str]:
        command = container.spec["properties"].get("command") or []
        if command:
            return list(command)
        image = container.spec["properties"]["image"]
        return ["sh", "-c", f"echo 'listening on port 80 ({image})'; exec sleep 3600"]

    async def _run_container(self, group: Group, container: Container, policy: str) -> None:
        while not group.deleting:
            container.state, container.detail = "Waiting", "Starting"
            try:
                process = await asyncio.create_subprocess_exec(
                    *self._argv(container),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.STDOUT,
                    env=self._environment(container),
                    cwd=self.workdir,
                    start_new_session=True,
                )
            except OSError as exc:
                container.state, container.detail = "Waiting", "CrashLoopBackOff"
                container.event("Failed", f"starting the container failed: {exc.strerror}")
                return
            container.process = process
            container.state, container.detail = "Running", ""
            container.started, container.finished, container.exit_code = _now(), None, None
            container.event("Started", "Started container")
            assert process.stdout is not None
            while line := await process.stdout.readline():
                stamp = _now().strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"
                container.log.append(f"{stamp} {line.decode(errors='replace')}")
            code = await process.wait()
            container.process = None
            container.exit_code = code if code >= 0 else 128 - code
            container.finished = _now()
            container.state, container.detail = "Terminated", "Completed" if code == 0 else "Error"
            if group.deleting or policy == "Never" or (policy == "OnFailure" and code == 0):
                return
            await asyncio.sleep(1)
            container.previous = {
                "state": "Terminated",
                "exitCode": container.exit_code,
                "startTime": _iso(container.started),
                "finishTime": _iso(container.finished),
                "detailStatus": container.detail,
            }
            container.restarts += 1
            container.log = []

    async def _stop_group(self, group: Group) -> None:
        group.deleting = True
        for container in group.containers.values():
            if container.process is not None and container.process.returncode is None:
                container.event("Killing", "Killing container")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(container.process.pid, signal.SIGKILL)
        if group.runner is not None:
            group.runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await group.runner
        for container in group.containers.values():
            if container.process is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(container.process.pid, signal.SIGKILL)
                with contextlib.suppress(Exception):
                    await container.process.wait()

    # --- logs and exec ----------------------------------------------------------------------

    def _container(self, request: web.Request) -> Container | None:
        group = self.groups.get((request.match_info["rg"], request.match_info["name"]))
        if group is None:
            return None
        return group.containers.get(request.match_info["container"])

    async def _logs(self, request: web.Request) -> web.Response:
        container = self._container(request)
        if container is None:
            return _error(404, "ResourceNotFound", "The Resource was not found.")
        lines = list(container.log)
        if "tail" in request.query:
            tail = int(request.query["tail"])
            lines = lines[-tail:] if tail else []
        if request.query.get("timestamps", "false").lower() != "true":
            lines = [line.partition(" ")[2] for line in lines]
        return web.json_response({"content": "".join(lines)})

    async def _exec(self, request: web.Request) -> web.Response:
        container = self._container(request)
        if container is None:
            return _error(404, "ResourceNotFound", "The Resource was not found.")
        if container.state != "Running":
            return _error(409, "ContainerGroupTransitioning", "The container is not running.")
        body = await request.json()
        self.exec_requests.append(body)
        command = str(body.get("command") or "").split()
        if not command:
            return _error(400, "InvalidCommand", "The command is empty.")
        exec_id, password = secrets.token_hex(8), secrets.token_urlsafe(16)
        self.execs[exec_id] = (password, container, command)
        return web.json_response(
            {"webSocketUri": f"wss://127.0.0.1:{self.port}/exec/{exec_id}", "password": password}
        )

    async def _exec_socket(self, request: web.Request) -> web.StreamResponse:
        found = self.execs.pop(request.match_info["id"], None)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        first = await ws.receive()
        if found is None or first.type != WSMsgType.TEXT or first.data != found[0]:
            await ws.close(code=4001, message=b"unauthorized")
            return ws
        _password, container, command = found
        try:
            process = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=self._environment(container),
                cwd=self.workdir,
                start_new_session=True,
            )
        except OSError as exc:
            await ws.send_str(f"exec failed: {exc.strerror}\r\n")
            await ws.close()
            return ws
        assert process.stdin is not None
        assert process.stdout is not None

        async def pump_in() -> None:
            assert process.stdin is not None
            async for message in ws:
                data = message.data.encode() if message.type == WSMsgType.TEXT else message.data
                if isinstance(data, bytes):
                    with contextlib.suppress(ConnectionError):
                        process.stdin.write(data)
                        await process.stdin.drain()

        feeder = asyncio.create_task(pump_in())
        while chunk := await process.stdout.read(65536):
            await ws.send_str(chunk.decode(errors="replace"))
        await process.wait()
        feeder.cancel()
        await ws.close()
        return ws


def mount_variable(mount_path: str) -> str:
    """The environment variable naming where a simulated container finds `mount_path`."""
    return "ACI_LOOPBACK_MOUNT" + re.sub(r"[^A-Za-z0-9]", "_", mount_path.rstrip("/")).upper()


@contextlib.contextmanager
def running(workdir: Path, **kwargs: Any) -> Iterator[AciServer]:
    server = AciServer(workdir, **kwargs).start()
    try:
        yield server
    finally:
        server.stop()


def secret_volume_files(body: dict[str, Any], volume: str) -> dict[str, bytes]:
    """The files of a secret volume of a received PUT body, decoded."""
    for vol in (body.get("properties") or {}).get("volumes") or []:
        if vol.get("name") == volume:
            return {k: base64.b64decode(v) for k, v in (vol.get("secret") or {}).items()}
    return {}
