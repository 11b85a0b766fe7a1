"""The aws provider's stand-in for AWS: moto in server mode on loopback (ECS, CloudWatch Logs, EC2
for the VPC), a small "Fargate" that plays the containers moto never runs, and a loopback proxy in
front of moto that can answer ThrottlingException / 503 a given number of times.

moto gaps worked around here, in the test setup (never in the provider):
- moto 5.2 sums container `memory`/`memoryReservation` in RunTask and fails (HTTP 500) when a
  container has neither, which Fargate allows: its resource arithmetic is patched to count 0.
- RunTask with awsvpc needs the VPC's DNS hostnames enabled and securityGroups given (moto
  KeyError/AttributeError otherwise): the VPC is made that way and the config names a group.
- moto's task walks RUNNING -> STOPPED one step per DescribeTasks (its state manager): the
  transition is pinned to "manual" so that only StopTask or this module's Fargate stops a task.
- moto runs no container: a task has one container (the first definition's), PENDING with exit
  code 0, and no awslogs stream. `Fargate` below gives each task all its containers, "runs"
  `sh -c` scripts of `echo TEXT`, `exit N`, `sleep`/`exec sleep` (writing the echoed lines to the
  container's awslogs stream with PutLogEvents, as the awslogs driver would), sets exit codes and
  stops the task as ECS does when an essential container exits, and gives containers of a task
  stopped by StopTask exit code 143 (SIGTERM).
- moto answers authentication errors (its IAM checks, switched on by `set_iam_checks`) in the XML
  query format even for ECS, a JSON service, so botocore cannot read the error code: the proxy
  re-encodes them as the JSON errors AWS sends, keeping moto's code and message.
"""

from __future__ import annotations

import copy
import datetime
import http.client
import http.server
import json
import os
import re
import shlex
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

ACCOUNT = "123456789012"
REGION = "us-east-1"
CLUSTER = "vk-test"
LOG_GROUP = "/virtual-kubelet/test"
#: Keys the tests give the agent (moto accepts any key while its IAM checks are off). The secret
#: key is seeded so tests can check it never reaches a log or an Event.
ACCESS_KEY = "AKIAVKTESTKEY0000001"
SECRET_KEY = "vk-seeded-aws-secret-Zq81mXv0pLw3"


def ensure_moto() -> None:
    """moto with its server, installed into this venv when missing; a failure under CI=true."""
    try:
        import moto.server  # noqa: F401
    except ImportError:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "moto[server]>=5.0"],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            message = f"moto[server] cannot be installed: {result.stderr[-500:]}"
            if os.environ.get("CI") == "true":
                pytest.fail(message)
            pytest.skip(message)


def _patch_moto() -> None:
    from moto.ecs.models import EC2ContainerServiceBackend

    original = EC2ContainerServiceBackend._calculate_task_resource_requirements
    if getattr(original, "_vk_patched", False):
        return

    def counting_missing_memory_as_zero(task_definition: Any) -> Any:
        shown = copy.copy(task_definition)
        shown.container_definitions = [
            {**c, "memory": c.get("memory") or c.get("memoryReservation") or 0}
            for c in task_definition.container_definitions
        ]
        return original(shown)

    counting_missing_memory_as_zero._vk_patched = True  # type: ignore[attr-defined]
    EC2ContainerServiceBackend._calculate_task_resource_requirements = staticmethod(  # type: ignore[method-assign]
        counting_missing_memory_as_zero
    )


# --- the Fargate that moto lacks ---------------------------------------------------------------


@dataclass
class _Run:
    """What the stand-in does with one container: lines to log, then exit (None: run on)."""

    lines: list[str]
    exit_code: int | None


def _interpret(entry_point: list[str] | None, command: list[str] | None) -> _Run:
    argv = list(entry_point or []) + list(command or [])
    if len(argv) < 3 or argv[0] not in ("sh", "/bin/sh") or argv[1] != "-c":
        return _Run([], None)  # any other program runs until stopped
    lines: list[str] = []
    for statement in argv[2].replace("\n", ";").split(";"):
        words = shlex.split(statement.strip())
        if not words:
            continue
        if words[0] == "echo":
            lines.append(" ".join(words[1:]))
        elif words[0] == "exit":
            return _Run(lines, int(words[1]) if len(words) > 1 else 0)
        elif "sleep" in words:
            return _Run(lines, None)
    return _Run(lines, 0)


class Fargate:
    """Plays the containers of every task moto holds, from a thread, until `stop()`."""

    def __init__(self, logs_client: Any) -> None:
        from moto.backends import get_backend

        self.ecs = get_backend("ecs")[ACCOUNT][REGION]
        self.logs = logs_client
        self.seen: dict[str, str] = {}  # task id -> "running" | "done"
        #: Task ids the stand-in leaves alone (a test drives them itself).
        self.hands_off: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="fargate-stand-in", daemon=True)

    def start(self) -> Fargate:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def tasks(self) -> list[Any]:
        return [t for tasks in list(self.ecs.tasks.values()) for t in list(tasks.values())]

    def _loop(self) -> None:
        while not self._stop.wait(0.2):
            for task in self.tasks():
                try:
                    self._step(task)
                except Exception as exc:  # a broken task must not stop the others
                    print(f"fargate stand-in: task {task.id}: {exc!r}", file=sys.stderr)

    def _step(self, task: Any) -> None:
        state = self.seen.get(task.id)
        if task.id in self.hands_off or state == "done":
            return
        now = datetime.datetime.now(datetime.UTC)
        if task.last_status == "STOPPED":
            # StopTask: the containers got SIGTERM and ended.
            for container in task.containers:
                if container.last_status != "STOPPED":
                    container.last_status, container.exitCode = "STOPPED", 143
            task.stopped_at = now
            self.seen[task.id] = "done"
            return
        if state is None and task.last_status == "RUNNING":
            self._start(task, now)

    def _start(self, task: Any, now: datetime.datetime) -> None:
        definition = self.ecs.describe_task_definition(task.task_definition_arn)
        template = task.containers[0]
        containers, runs = [], []
        for spec in definition.container_definitions:
            container = copy.copy(template)
            container.name, container.image = spec["name"], spec.get("image")
            container.last_status, container.exitCode = "RUNNING", None
            container.runtime_id = f"{task.id}-{spec['name']}"
            containers.append(container)
            run = _interpret(spec.get("entryPoint"), spec.get("command"))
            runs.append((spec, container, run))
            options = (spec.get("logConfiguration") or {}).get("options") or {}
            if run.lines and options.get("awslogs-group"):
                stream = f"{options['awslogs-stream-prefix']}/{spec['name']}/{task.id}"
                self._log(options["awslogs-group"], stream, run.lines)
        task.containers = containers
        task.started_at = now
        self.seen[task.id] = "running"
        ended = [(spec, c, r) for spec, c, r in runs if r.exit_code is not None]
        for _, container, run in ended:
            container.last_status, container.exitCode = "STOPPED", run.exit_code
        if any(spec.get("essential", True) for spec, _, _ in ended):
            # As ECS: an essential container exited, so the task stops and the rest get SIGTERM.
            for container in containers:
                if container.last_status != "STOPPED":
                    container.last_status, container.exitCode = "STOPPED", 143
            task.last_status, task.desired_status = "STOPPED", "STOPPED"
            task.stop_code = "EssentialContainerExited"
            task.stopped_reason = "Essential container in task exited"
            task.stopped_at = now
            self.seen[task.id] = "done"

    def _log(self, group: str, stream: str, lines: list[str]) -> None:
        from botocore.exceptions import ClientError

        try:
            self.logs.create_log_stream(logGroupName=group, logStreamName=stream)
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ResourceAlreadyExistsException":
                raise
        stamp = int(time.time() * 1000)
        self.logs.put_log_events(
            logGroupName=group,
            logStreamName=stream,
            logEvents=[{"timestamp": stamp + i, "message": line} for i, line in enumerate(lines)],
        )


# --- a loopback proxy that can throttle ---------------------------------------------------------


@dataclass
class Faults:
    """Answers the proxy gives instead of forwarding: (action, status, code) per request."""

    queued: list[tuple[str, int, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    calls: Counter[str] = field(default_factory=Counter)
    faulted: Counter[str] = field(default_factory=Counter)

    def inject(
        self, action: str, times: int, status: int = 400, code: str = "ThrottlingException"
    ) -> None:
        with self.lock:
            self.queued.extend([(action, status, code)] * times)

    def take(self, action: str) -> tuple[int, str] | None:
        with self.lock:
            self.calls[action] += 1
            for i, (wanted, status, code) in enumerate(self.queued):
                if wanted == action:
                    del self.queued[i]
                    self.faulted[action] += 1
                    return status, code
        return None


class _Proxy(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream: tuple[str, int], faults: Faults) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.upstream = upstream
        self.faults = faults


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    server: _Proxy
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        action = (self.headers.get("X-Amz-Target") or "").rsplit(".", 1)[-1]
        fault = self.server.faults.take(action)
        if fault is not None:
            status, code = fault
            payload = json.dumps({"__type": code, "message": "Rate exceeded"}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/x-amz-json-1.1")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        connection = http.client.HTTPConnection(*self.server.upstream, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
        connection.request("POST", self.path, body=body, headers=headers)
        answer = connection.getresponse()
        data = answer.read()
        headers_out = answer.getheaders()
        if answer.status >= 400 and data.lstrip().startswith(b"<?xml"):
            # moto answers its auth errors in the XML (query) format even for JSON services;
            # AWS answers ECS in JSON. Re-encoded here, keeping moto's code and message.
            code = re.search(rb"<Code>([^<]*)</Code>", data)
            message = re.search(rb"<Message>([^<]*)</Message>", data)
            data = json.dumps(
                {
                    "__type": code.group(1).decode() if code else "UnknownError",
                    "message": message.group(1).decode() if message else "",
                }
            ).encode()
            headers_out = [(k, v) for k, v in headers_out if k.lower() != "content-type"]
            headers_out.append(("Content-Type", "application/x-amz-json-1.1"))
        self.send_response(answer.status)
        for key, value in headers_out:
            if key.lower() not in (
                "content-length",
                "transfer-encoding",
                "connection",
                "server",
                "date",
            ):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        connection.close()


# --- the whole stand-in -------------------------------------------------------------------------


@dataclass
class AwsStandIn:
    moto_url: str
    proxy_url: str
    subnet: str
    security_group: str
    fargate: Fargate
    faults: Faults
    ecs: Any  # boto3 clients straight to moto, for the tests' own checks
    logs: Any

    def config(self, **overrides: Any) -> dict[str, Any]:
        """A provider config pointing at the proxy (ECS) and moto (Logs)."""
        doc: dict[str, Any] = {
            "region": REGION,
            "cluster": CLUSTER,
            "subnets": [self.subnet],
            "security_groups": [self.security_group],
            "log_group": LOG_GROUP,
            "ecs_endpoint_url": self.proxy_url,
            "logs_endpoint_url": self.moto_url,
            "poll_seconds": 1,
            "log_poll_seconds": 0.5,
            "max_attempts": 3,
        }
        doc.update(overrides)
        return doc

    @staticmethod
    def env(access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": access_key,
            "AWS_SECRET_ACCESS_KEY": secret_key,
            "AWS_REGION": REGION,
            # Keep the agent off any real shared config or instance metadata.
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def tasks_of(self, namespace: str, name: str) -> list[dict[str, Any]]:
        """Every ECS task (any state) whose tags name the pod."""
        arns = [
            arn
            for status in ("RUNNING", "STOPPED")
            for arn in self.ecs.list_tasks(cluster=CLUSTER, desiredStatus=status)["taskArns"]
        ]
        if not arns:
            return []
        tasks = self.ecs.describe_tasks(cluster=CLUSTER, tasks=arns, include=["TAGS"])["tasks"]
        found = []
        for task in tasks:
            tags = {t["key"]: t["value"] for t in task.get("tags") or []}
            if (
                tags.get("virtual-kubelet.io/namespace") == namespace
                and tags.get("virtual-kubelet.io/pod") == name
            ):
                found.append(task)
        return found

    def set_iam_checks(self, on: bool) -> None:
        """moto's own credential checks (off by default): on, unknown access keys are refused
        with InvalidClientTokenId / UnrecognizedClientException as AWS refuses them."""
        from moto import settings

        settings.INITIAL_NO_AUTH_ACTION_COUNT = 0 if on else float("inf")


@pytest.fixture(scope="module")
def aws() -> Iterator[AwsStandIn]:
    ensure_moto()
    import boto3
    from moto.moto_api import state_manager
    from moto.server import ThreadedMotoServer

    _patch_moto()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    moto_url = f"http://{host}:{port}"
    state_manager.set_transition(
        model_name="ecs::task", transition={"progression": "manual", "times": 10**9}
    )
    faults = Faults()
    proxy = _Proxy((host, port), faults)
    threading.Thread(target=proxy.serve_forever, name="aws-proxy", daemon=True).start()
    keys = {
        "endpoint_url": moto_url,
        "region_name": REGION,
        "aws_access_key_id": ACCESS_KEY,
        "aws_secret_access_key": SECRET_KEY,
    }
    ec2, ecs, logs = (boto3.client(name, **keys) for name in ("ec2", "ecs", "logs"))
    vpc = ec2.create_vpc(CidrBlock="10.77.0.0/16")["Vpc"]["VpcId"]
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.77.1.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName="vk", Description="vk tasks", VpcId=vpc)["GroupId"]
    ecs.create_cluster(clusterName=CLUSTER)
    fargate = Fargate(logs).start()
    try:
        yield AwsStandIn(
            moto_url=moto_url,
            proxy_url=f"http://127.0.0.1:{proxy.server_address[1]}",
            subnet=subnet,
            security_group=group,
            fargate=fargate,
            faults=faults,
            ecs=ecs,
            logs=logs,
        )
    finally:
        fargate.stop()
        proxy.shutdown()
        proxy.server_close()
        server.stop()
        state_manager.unset_transition("ecs::task")
