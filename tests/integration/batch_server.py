"""A loopback server that speaks the Azure Batch data-plane REST API (api-version 2025-06-01, the
one azure-batch 15 sends) for the azurebatch provider's tests: pools (read), jobs (add, get), tasks
(add, list, get, terminate, delete) and task files (get with ocp-range).

Every request must carry a valid SharedKey signature, checked the way Batch documents it (the verb,
eleven standard headers, the ocp- headers sorted, `/account/path` and the sorted query parameters,
HMAC-SHA256 with the base64 account key); a bad one gets Batch's 403 AuthenticationFailed.

Tasks really run: the task's command line is split like a Linux Batch node does (no shell) and run
as a local subprocess with the task's environment settings, its stdout and stderr going to the
task directory's stdout.txt and stderr.txt. A container task runs its command line the same way on
this machine: the image is recorded, not pulled (there is no container engine to use here). A task
goes active -> preparing -> running at once when its process starts, and completed with the
process's exit code (failureInfo FailureExitCode for non-zero codes, TaskEnded when terminated).

Faults are injected per request (`inject`): throttling (429 with Retry-After) and 503s; every
request is recorded (`requests`) so tests can count what the provider asked for.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import email.utils
import hashlib
import hmac
import os
import re
import secrets
import shlex
import signal
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

API_VERSION = "2025-06-01"
_SIGNED_HEADERS = (
    "content-encoding",
    "content-language",
    "content-length",
    "content-md5",
    "content-type",
    "date",
    "if-modified-since",
    "if-match",
    "if-none-match",
    "if-unmodified-since",
    "range",
)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _http_date(when: float) -> str:
    return email.utils.formatdate(when, usegmt=True)


def _error(status: int, code: str, message: str, **headers: str) -> web.Response:
    body = {
        "odata.metadata": "https://batch/$metadata#Microsoft.Azure.Batch.Protocol.Entities.Container.errors/@Element",
        "code": code,
        "message": {"lang": "en-US", "value": message},
    }
    return web.json_response(body, status=status, headers=headers)


@dataclass
class Fault:
    method: str
    path: re.Pattern[str]
    status: int
    remaining: int
    retry_after: str | None = None


@dataclass
class Task:
    job_id: str
    body: dict[str, Any]
    directory: Path
    state: str = "active"
    created: str = field(default_factory=_now)
    transition: str = field(default_factory=_now)
    previous: str | None = None
    start: str | None = None
    end: str | None = None
    exit_code: int | None = None
    failure: dict[str, Any] | None = None
    process: asyncio.subprocess.Process | None = None
    terminated: bool = False

    def move(self, state: str) -> None:
        self.previous, self.state, self.transition = self.state, state, _now()

    def json(self, base: str) -> dict[str, Any]:
        task_id = self.body["id"]
        shown: dict[str, Any] = {
            **self.body,
            "url": f"{base}/jobs/{self.job_id}/tasks/{task_id}",
            "eTag": f"0x{abs(hash((task_id, self.transition))):X}",
            "creationTime": self.created,
            "lastModified": self.transition,
            "state": self.state,
            "stateTransitionTime": self.transition,
        }
        if self.previous:
            shown["previousState"] = self.previous
        if self.start:
            info: dict[str, Any] = {"startTime": self.start, "retryCount": 0, "requeueCount": 0}
            if self.state == "completed":
                info["endTime"] = self.end
                if self.exit_code is not None:
                    info["exitCode"] = self.exit_code
                info["result"] = "success" if self.failure is None else "failure"
                if self.failure is not None:
                    info["failureInfo"] = self.failure
            shown["executionInfo"] = info
            shown["nodeInfo"] = {"poolId": "", "nodeId": "tvm-local", "affinityId": "local"}
        return shown


class BatchServer:
    """One Batch account with pools, served on 127.0.0.1 from a thread of its own."""

    def __init__(self, root: Path, account: str = "vktestaccount") -> None:
        self.root = root
        self.account = account
        self.key = base64.b64encode(secrets.token_bytes(64)).decode()
        self.pools: dict[str, dict[str, Any]] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self.tasks: dict[tuple[str, str], Task] = {}
        self.faults: list[Fault] = []
        #: (method, path, status) of every request, in order
        self.requests: list[tuple[str, str, int]] = []
        self.lock = threading.Lock()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None
        self.port = 0
        self._stop: asyncio.Event | None = None

    # --- what tests use -------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add_pool(self, pool_id: str, containers: bool) -> None:
        vm: dict[str, Any] = {
            "imageReference": {
                "publisher": "microsoft-dsvm",
                "offer": "ubuntu-hpc",
                "sku": "2204",
                "version": "latest",
            },
            "nodeAgentSKUId": "batch.node.ubuntu 22.04",
        }
        if containers:
            vm["containerConfiguration"] = {"type": "dockerCompatible"}
        self.pools[pool_id] = {
            "id": pool_id,
            "url": f"{self.url}/pools/{pool_id}",
            "eTag": "0x1",
            "lastModified": _now(),
            "creationTime": _now(),
            "state": "active",
            "stateTransitionTime": _now(),
            "allocationState": "steady",
            "vmSize": "standard_d2s_v3",
            "virtualMachineConfiguration": vm,
            "currentDedicatedNodes": 1,
            "currentLowPriorityNodes": 0,
            "taskSlotsPerNode": 8,
        }

    def inject(
        self, method: str, path: str, status: int, count: int, retry_after: str | None = None
    ) -> None:
        """The next `count` requests `method` whose path matches regex `path` get `status`."""
        with self.lock:
            self.faults.append(Fault(method, re.compile(path), status, count, retry_after))

    def count(self, method: str, path: str, status: int | None = None) -> int:
        pattern = re.compile(path)
        with self.lock:
            return sum(
                1
                for m, p, s in self.requests
                if m == method and pattern.search(p) and (status is None or s == status)
            )

    def delete_job(self, job_id: str) -> None:
        """Delete a job and its tasks, as someone in the Azure portal would."""
        assert self.loop is not None
        asyncio.run_coroutine_threadsafe(self._delete_job(job_id), self.loop).result(30)

    async def _delete_job(self, job_id: str) -> None:
        for task in list(self.tasks_of(job_id).values()):
            await self._kill(task)
        with self.lock:
            self.jobs.pop(job_id, None)
            for key in [k for k in self.tasks if k[0] == job_id]:
                del self.tasks[key]

    def tasks_of(self, job_id: str) -> dict[str, Task]:
        with self.lock:
            return {t: task for (j, t), task in self.tasks.items() if j == job_id}

    # --- thread ---------------------------------------------------------------------------

    def start(self) -> BatchServer:
        ready = threading.Event()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]

        def run() -> None:
            self.loop = asyncio.new_event_loop()
            self.loop.run_until_complete(self._serve(ready))

        self.thread = threading.Thread(target=run, name="batch-server", daemon=True)
        self.thread.start()
        if not ready.wait(30):
            raise RuntimeError("the Batch server did not start")
        return self

    def stop(self) -> None:
        if self.loop is not None and self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        if self.thread is not None:
            self.thread.join(30)

    async def _serve(self, ready: threading.Event) -> None:
        self._stop = asyncio.Event()
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get("/pools/{pool}", self._get_pool)
        app.router.add_post("/jobs", self._add_job)
        app.router.add_get("/jobs/{job}", self._get_job)
        app.router.add_post("/jobs/{job}/tasks", self._add_task)
        app.router.add_get("/jobs/{job}/tasks", self._list_tasks)
        app.router.add_get("/jobs/{job}/tasks/{task}", self._get_task)
        app.router.add_delete("/jobs/{job}/tasks/{task}", self._delete_task)
        app.router.add_post("/jobs/{job}/tasks/{task}/terminate", self._terminate_task)
        app.router.add_get("/jobs/{job}/tasks/{task}/files/{path:.+}", self._get_file)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        ready.set()
        await self._stop.wait()
        for task in list(self.tasks.values()):
            await self._kill(task)
        await runner.cleanup()

    # --- auth and faults ------------------------------------------------------------------

    def _string_to_sign(self, request: web.Request) -> str:
        headers = {k.lower(): v for k, v in request.headers.items() if v}
        if request.method not in ("GET", "HEAD"):
            headers.setdefault("content-length", "0")
        text = request.method + "\n"
        text += "\n".join(headers.get(name, "") for name in _SIGNED_HEADERS) + "\n"
        for name in sorted(k for k in headers if k.startswith("ocp-")):
            text += f"{name}:{headers[name]}\n"
        text += f"/{self.account}{request.rel_url.raw_path}"
        for name in sorted(request.query):
            value = request.query.getone(name)
            if value:
                text += f"\n{name}:{value}"
        return text

    def _authenticated(self, request: web.Request) -> bool:
        given = request.headers.get("Authorization", "")
        scheme, _, credential = given.partition(" ")
        account, _, signature = credential.partition(":")
        if scheme != "SharedKey" or account != self.account:
            return False
        digest = hmac.new(
            base64.b64decode(self.key), self._string_to_sign(request).encode(), hashlib.sha256
        ).digest()
        return hmac.compare_digest(base64.b64encode(digest).decode(), signature)

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await self._answer(request, handler)
        with self.lock:
            self.requests.append((request.method, request.path, response.status))
        return response

    async def _answer(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.query.get("api-version") != API_VERSION:
            return _error(400, "MissingRequiredQueryParameter", "api-version is missing or wrong")
        if not self._authenticated(request):
            return _error(
                403,
                "AuthenticationFailed",
                "Server failed to authenticate the request. Make sure the value of "
                "Authorization header is formed correctly including the signature.",
            )
        with self.lock:
            for fault in self.faults:
                if (
                    fault.remaining
                    and fault.method == request.method
                    and fault.path.search(request.path)
                ):
                    fault.remaining -= 1
                    extra = {"Retry-After": fault.retry_after} if fault.retry_after else {}
                    code = "TooManyRequests" if fault.status == 429 else "ServerBusy"
                    return _error(fault.status, code, "injected by the test", **extra)
        return await handler(request)

    # --- pools and jobs -------------------------------------------------------------------

    async def _get_pool(self, request: web.Request) -> web.StreamResponse:
        pool = self.pools.get(request.match_info["pool"])
        if pool is None:
            return _error(404, "PoolNotFound", "The specified pool does not exist.")
        return web.json_response(pool)

    async def _add_job(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        job_id = body["id"]
        pool_id = (body.get("poolInfo") or {}).get("poolId")
        if pool_id not in self.pools:
            return _error(400, "InvalidPropertyValue", f"poolInfo.poolId {pool_id!r}")
        if job_id in self.jobs:
            return _error(409, "JobExists", "The specified job already exists.")
        self.jobs[job_id] = {
            **body,
            "url": f"{self.url}/jobs/{job_id}",
            "eTag": "0x1",
            "lastModified": _now(),
            "creationTime": _now(),
            "state": "active",
            "stateTransitionTime": _now(),
        }
        return web.Response(status=201, headers={"DataServiceId": f"{self.url}/jobs/{job_id}"})

    async def _get_job(self, request: web.Request) -> web.StreamResponse:
        job = self.jobs.get(request.match_info["job"])
        if job is None:
            return _error(404, "JobNotFound", "The specified job does not exist.")
        return web.json_response(job)

    # --- tasks ----------------------------------------------------------------------------

    async def _add_task(self, request: web.Request) -> web.StreamResponse:
        job_id = request.match_info["job"]
        job = self.jobs.get(job_id)
        if job is None:
            return _error(404, "JobNotFound", "The specified job does not exist.")
        body = await request.json()
        task_id = body.get("id", "")
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", task_id):
            return _error(400, "InvalidPropertyValue", f"task id {task_id!r}")
        pool = self.pools[job["poolInfo"]["poolId"]]
        if body.get("containerSettings") and not pool["virtualMachineConfiguration"].get(
            "containerConfiguration"
        ):
            return _error(
                400,
                "InvalidPropertyValue",
                "containerSettings is not allowed on a pool without a container configuration",
            )
        if "commandLine" not in body:
            return _error(400, "MissingRequiredProperty", "commandLine")
        with self.lock:
            if (job_id, task_id) in self.tasks:
                return _error(409, "TaskExists", "The specified task already exists.")
            directory = self.root / job_id / task_id
            (directory / "wd").mkdir(parents=True)
            task = Task(job_id=job_id, body=body, directory=directory)
            self.tasks[(job_id, task_id)] = task
        asyncio.get_running_loop().create_task(self._run(task))
        return web.Response(status=201)

    async def _run(self, task: Task) -> None:
        words = shlex.split(task.body["commandLine"]) or ["sleep", "3600"]  # an image entrypoint
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(task.directory)}
        env.update(
            {e["name"]: e.get("value", "") for e in task.body.get("environmentSettings") or []}
        )
        env.update(AZ_BATCH_JOB_ID=task.job_id, AZ_BATCH_TASK_ID=task.body["id"])
        task.move("preparing")
        with (
            (task.directory / "stdout.txt").open("wb") as out,
            (task.directory / "stderr.txt").open("wb") as err,
        ):
            try:
                task.process = await asyncio.create_subprocess_exec(
                    *words,
                    cwd=task.directory / "wd",
                    env=env,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,
                )
            except OSError as exc:
                task.start = task.end = _now()
                task.failure = {
                    "category": "usererror",
                    "code": "CommandProgramNotFound",
                    "message": f"The specified command program is not found: {exc.strerror}",
                }
                task.move("completed")
                return
        task.start = _now()
        if not task.terminated:
            task.move("running")
        code = await task.process.wait()
        task.end = _now()
        if task.terminated:
            task.failure = {
                "category": "usererror",
                "code": "TaskEnded",
                "message": "Task Was Ended by User Request",
            }
        else:
            task.exit_code = code
            if code != 0:
                task.failure = {
                    "category": "usererror",
                    "code": "FailureExitCode",
                    "message": "The task exited with an exit code representing a failure",
                }
        task.move("completed")

    async def _kill(self, task: Task) -> None:
        task.terminated = True
        process = task.process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()

    def _task(self, request: web.Request) -> Task | web.Response:
        job_id, task_id = request.match_info["job"], request.match_info["task"]
        if job_id not in self.jobs:
            return _error(404, "JobNotFound", "The specified job does not exist.")
        task = self.tasks.get((job_id, task_id))
        if task is None:
            return _error(404, "TaskNotFound", "The specified task does not exist.")
        return task

    async def _list_tasks(self, request: web.Request) -> web.StreamResponse:
        job_id = request.match_info["job"]
        if job_id not in self.jobs:
            return _error(404, "JobNotFound", "The specified job does not exist.")
        with self.lock:
            shown = [t.json(self.url) for (j, _), t in self.tasks.items() if j == job_id]
        return web.json_response({"value": shown})

    async def _get_task(self, request: web.Request) -> web.StreamResponse:
        task = self._task(request)
        if isinstance(task, web.Response):
            return task
        return web.json_response(task.json(self.url))

    async def _terminate_task(self, request: web.Request) -> web.StreamResponse:
        task = self._task(request)
        if isinstance(task, web.Response):
            return task
        if task.state != "completed":
            await self._kill(task)
            if task.state != "completed":  # never started
                task.start = task.start or _now()
                task.end = _now()
                task.failure = {
                    "category": "usererror",
                    "code": "TaskEnded",
                    "message": "Task Was Ended by User Request",
                }
                task.move("completed")
        return web.Response(status=204)

    async def _delete_task(self, request: web.Request) -> web.StreamResponse:
        task = self._task(request)
        if isinstance(task, web.Response):
            return task
        await self._kill(task)
        with self.lock:
            self.tasks.pop((task.job_id, task.body["id"]), None)
        return web.Response(status=200)

    async def _get_file(self, request: web.Request) -> web.StreamResponse:
        task = self._task(request)
        if isinstance(task, web.Response):
            return task
        path = (task.directory / request.match_info["path"]).resolve()
        if task.directory.resolve() not in path.parents or not path.is_file():
            return _error(404, "FileNotFound", "The specified file does not exist.")
        data = path.read_bytes()
        wanted = request.headers.get("ocp-range")
        if wanted:
            match = re.fullmatch(r"bytes=(\d+)-(\d*)", wanted)
            if match is None:
                return _error(400, "InvalidHeaderValue", f"ocp-range {wanted!r}")
            first = int(match.group(1))
            last = int(match.group(2)) if match.group(2) else len(data) - 1
            if first >= len(data):
                return _error(416, "InvalidRange", "The range specified is invalid.")
            data = data[first : last + 1]
        return web.Response(
            body=data,
            content_type="application/octet-stream",
            headers={
                "ocp-batch-file-isdirectory": "False",
                "ocp-batch-file-url": str(request.url.with_query(None)),
                "ocp-batch-file-mode": "0100644",
                "ocp-creation-time": _http_date(path.stat().st_ctime),
                "Last-Modified": _http_date(path.stat().st_mtime),
            },
        )


@pytest.fixture(scope="module")
def batch_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BatchServer]:
    """A Batch account on loopback with pool `containers` (container tasks) and pool `plain`."""
    server = BatchServer(tmp_path_factory.mktemp("batch")).start()
    server.add_pool("containers", containers=True)
    server.add_pool("plain", containers=False)
    yield server
    server.stop()
