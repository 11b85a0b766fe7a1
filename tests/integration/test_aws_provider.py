"""The aws provider against moto in server mode on loopback (ECS, CloudWatch Logs), with the test
setup playing the containers moto never runs (see aws_backend.py for each moto gap worked around
there). First the provider on its own (what it sends to ECS, what it reads back), then end to end:
an agent on the real dev control plane, driven through kubectl as a user would."""

from __future__ import annotations

import asyncio
import datetime
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from virtual_kubelet.devcluster import DevCluster, wait_until
from virtual_kubelet.devcluster.agent import AgentProcess
from virtual_kubelet.providers.aws import AwsProvider
from virtual_kubelet.sdk import InvalidInput, LogOptions, Pod, ProviderContext

from .aws_backend import CLUSTER, LOG_GROUP, SECRET_KEY, AwsStandIn, aws
from .conftest import TOLERATION, AgentFactory, create, events_for, pod

__all__ = ["aws"]  # the fixture, imported for pytest

SECRET_ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-password-AbCdEf"
SECRET_VALUE = "vk-seeded-env-secret-9f3b2c"


def _pod(name: str, script: str | None = None, **extra: Any) -> Pod:
    container: dict[str, Any] = {
        "name": "main",
        "image": "public.ecr.aws/docker/library/busybox:1.36",
        "env": [{"name": "GREETING", "value": "hello"}],
    }
    if script is not None:
        container["command"] = ["sh", "-c", script]
    container.update(extra.pop("container", {}))
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "namespace": "default",
            "name": name,
            "uid": str(uuid.uuid4()),
            "annotations": extra.pop("annotations", {}),
        },
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 15,
            "containers": [container],
            **extra,
        },
    }


class Harness:
    """One provider instance with the pushes it made."""

    def __init__(self, provider: AwsProvider) -> None:
        self.provider = provider
        self.pushed: dict[str, Pod] = {}
        provider.notify_pods(self._push)

    async def quiet(self) -> None:
        """End the provider's own poll loop: only the test's `poll()` calls count from here."""
        poller = self.provider.poller
        assert poller is not None
        poller.cancel()
        await asyncio.gather(poller, return_exceptions=True)

    def _push(self, pod: Pod) -> None:
        meta = pod["metadata"]
        self.pushed[f"{meta['namespace']}/{meta['name']}"] = pod

    async def wait_phase(self, name: str, phase: str, timeout: float = 30.0) -> Pod:
        """The pod once pushed in `phase` (Running: with every container running, too)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            found = self.pushed.get(f"default/{name}")
            status = (found or {}).get("status", {})
            if (
                found is not None
                and status.get("phase") == phase
                and (
                    phase != "Running"
                    or all("running" in c["state"] for c in status.get("containerStatuses", []))
                )
            ):
                return found
            self.provider.poll_now.set()
            await asyncio.sleep(0.2)  # polling a condition, with the deadline above
        raise AssertionError(f"{name} never {phase}: {self.pushed.get(f'default/{name}')}")


@pytest.fixture
def node_name() -> str:
    return f"vk-aws-{uuid.uuid4().hex[:6]}"


def _provider(aws: AwsStandIn, tmp_path: Path, node: str, **config: Any) -> AwsProvider:
    path = tmp_path / f"aws-{uuid.uuid4().hex[:4]}.json"
    path.write_text(json.dumps(aws.config(**config)))
    context = ProviderContext(
        node_name=node,
        operating_system="linux",
        internal_ip="10.0.0.1",
        daemon_port=10250,
        config_path=path,
        state_dir=tmp_path,
    )
    return AwsProvider(context)


@pytest.fixture
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in AwsStandIn.env().items():
        monkeypatch.setenv(key, value)


async def _started(aws: AwsStandIn, tmp_path: Path, node: str, **config: Any) -> Harness:
    provider = _provider(aws, tmp_path, node, **config)
    await provider.start()
    return Harness(provider)


# --- the provider on its own --------------------------------------------------------------------


@pytest.mark.usefixtures("credentials")
def test_a_pod_becomes_a_fargate_task_and_reports_ecs_container_states(
    aws: AwsStandIn, tmp_path: Path, node_name: str
) -> None:
    async def scenario() -> None:
        harness = await _started(aws, tmp_path, node_name)
        try:
            spec = _pod(
                "web",
                "echo up; exec sleep 3600",
                annotations={
                    "aws.virtual-kubelet.io/secrets": json.dumps({"DB_PASSWORD": SECRET_ARN})
                },
                container={
                    "env": [
                        {"name": "GREETING", "value": "hello"},
                        {"name": "DB_PASSWORD", "value": SECRET_VALUE},
                    ],
                    "resources": {"requests": {"cpu": "300m", "memory": "600Mi"}},
                    "ports": [{"containerPort": 8080}],
                },
            )
            await harness.provider.create_pod(spec)
            running = await harness.wait_phase("web", "Running")
            (task,) = aws.tasks_of("default", "web")
            definition = aws.ecs.describe_task_definition(taskDefinition=task["taskDefinitionArn"])[
                "taskDefinition"
            ]
            assert definition["family"] == f"vk_{CLUSTER}_default_web"
            # 0.3 vCPU / 600 MiB rounded up to the smallest valid Fargate size.
            assert (definition["cpu"], definition["memory"]) == ("512", "1024")
            (container,) = definition["containerDefinitions"]
            assert container["entryPoint"] == ["sh", "-c", "echo up; exec sleep 3600"]
            assert container["environment"] == [{"name": "GREETING", "value": "hello"}]
            assert container["secrets"] == [{"name": "DB_PASSWORD", "valueFrom": SECRET_ARN}]
            assert SECRET_VALUE not in json.dumps(definition)
            log_options = container["logConfiguration"]["options"]
            assert container["logConfiguration"]["logDriver"] == "awslogs"
            assert log_options["awslogs-group"] == LOG_GROUP
            assert container["stopTimeout"] == 15
            tags = {t["key"]: t["value"] for t in task["tags"]}
            assert tags["virtual-kubelet.io/node"] == node_name
            assert tags["virtual-kubelet.io/uid"] == spec["metadata"]["uid"]
            assert task["launchType"] == "FARGATE"
            assert task["startedBy"] == f"vk-{node_name}"
            status = running["status"]
            (main,) = status["containerStatuses"]
            assert main["state"]["running"]["startedAt"]
            assert main["ready"] is True
            assert status["podIP"]
        finally:
            await harness.provider.stop()

    asyncio.run(scenario())


@pytest.mark.usefixtures("credentials")
def test_a_stopped_task_reports_the_real_exit_code_and_stop_reason(
    aws: AwsStandIn, tmp_path: Path, node_name: str
) -> None:
    async def scenario() -> None:
        harness = await _started(aws, tmp_path, node_name)
        try:
            await harness.provider.create_pod(_pod("fails", "echo bad; exit 3"))
            await harness.provider.create_pod(_pod("works", "echo fine; exit 0"))
            failed = await harness.wait_phase("fails", "Failed")
            succeeded = await harness.wait_phase("works", "Succeeded")
            terminated = failed["status"]["containerStatuses"][0]["state"]["terminated"]
            assert terminated["exitCode"] == 3
            assert terminated["reason"] == "Error"
            assert failed["status"]["reason"] == "EssentialContainerExited"
            assert "Essential container in task exited" in failed["status"]["message"]
            assert "main=3" in failed["status"]["message"]
            done = succeeded["status"]["containerStatuses"][0]["state"]["terminated"]
            assert done["exitCode"] == 0
        finally:
            await harness.provider.stop()

    asyncio.run(scenario())


@pytest.mark.usefixtures("credentials")
def test_status_of_many_pods_takes_one_describe_call_per_hundred_tasks(
    aws: AwsStandIn, tmp_path: Path, node_name: str
) -> None:
    # 101 tasks of this node, run straight in moto as an earlier agent would have (cheaper on a
    # loaded machine than 101 create_pod calls): the provider adopts them all at start.
    definition = aws.ecs.register_task_definition(
        family="vk-many",
        networkMode="awsvpc",
        requiresCompatibilities=["FARGATE"],
        cpu="256",
        memory="512",
        containerDefinitions=[{"name": "main", "image": "busybox", "entryPoint": ["sleep", "1d"]}],
    )["taskDefinition"]["taskDefinitionArn"]
    for i in range(101):
        tags = {
            "virtual-kubelet.io/node": node_name,
            "virtual-kubelet.io/namespace": "default",
            "virtual-kubelet.io/pod": f"many-{i}",
            "virtual-kubelet.io/uid": str(uuid.uuid4()),
        }
        aws.ecs.run_task(
            cluster=CLUSTER,
            taskDefinition=definition,
            launchType="FARGATE",
            startedBy=f"vk-{node_name}",
            networkConfiguration={
                "awsvpcConfiguration": {
                    "subnets": [aws.subnet],
                    "securityGroups": [aws.security_group],
                }
            },
            tags=[{"key": k, "value": v} for k, v in tags.items()],
        )

    async def scenario() -> None:
        before = aws.faults.calls["DescribeTasks"]
        harness = await _started(aws, tmp_path, node_name, poll_seconds=3600)
        try:
            await harness.quiet()
            assert aws.faults.calls["DescribeTasks"] - before == 2  # adoption: 100 + 1
            assert len(await harness.provider.list_pods()) == 101
            before = aws.faults.calls["DescribeTasks"]
            await harness.provider.poll()
            assert aws.faults.calls["DescribeTasks"] - before == 2
            running = [p for p in harness.pushed.values() if p["status"]["phase"] == "Running"]
            assert len(running) == 101
        finally:
            await harness.provider.stop()

    asyncio.run(scenario())


@pytest.mark.usefixtures("credentials")
def test_a_restarted_provider_adopts_its_tasks_without_running_them_again(
    aws: AwsStandIn, tmp_path: Path, node_name: str
) -> None:
    async def scenario() -> None:
        first = await _started(aws, tmp_path, node_name)
        init = {"name": "init", "image": "busybox", "command": ["sh", "-c", "exit 0"]}
        spec = _pod("kept", "exec sleep 3600", initContainers=[init])
        await first.provider.create_pod(spec)
        await first.wait_phase("kept", "Running")
        await first.provider.stop()
        runs = aws.faults.calls["RunTask"]
        second = await _started(aws, tmp_path, node_name)
        try:
            (adopted,) = await second.provider.list_pods()
            assert adopted["metadata"]["uid"] == spec["metadata"]["uid"]
            assert adopted["status"]["phase"] == "Running"
            # Told apart by a tag: DescribeTasks does not say which containers are init ones.
            assert [c["name"] for c in adopted["spec"]["initContainers"]] == ["init"]
            (done,) = adopted["status"]["initContainerStatuses"]
            assert done["state"]["terminated"]["exitCode"] == 0
            assert [c["name"] for c in adopted["status"]["containerStatuses"]] == ["main"]
            await second.provider.create_pod(spec)  # the agent re-applies it: nothing new runs
            assert aws.faults.calls["RunTask"] == runs
            assert len(aws.tasks_of("default", "kept")) == 1
            await second.provider.delete_pod(spec)
            (task,) = aws.tasks_of("default", "kept")
            assert task["lastStatus"] == "STOPPED"
            assert "deleted" in task["stoppedReason"]
        finally:
            await second.provider.stop()

    asyncio.run(scenario())


async def _collect(stream: AsyncIterator[bytes], until: bytes | None = None) -> bytes:
    out = b""
    async for chunk in stream:
        out += chunk
        if until is not None and until in out:
            break
    return out


@pytest.mark.usefixtures("credentials")
def test_logs_come_from_cloudwatch_with_tail_timestamps_and_follow(
    aws: AwsStandIn, tmp_path: Path, node_name: str
) -> None:
    async def scenario() -> None:
        harness = await _started(aws, tmp_path, node_name)
        try:
            await harness.provider.create_pod(
                _pod("talks", "echo one; echo two; echo three; exec sleep 3600")
            )
            await harness.wait_phase("talks", "Running")
            logs = harness.provider.get_container_logs

            def read(options: LogOptions) -> Any:
                return _collect(logs("default", "talks", "main", options))

            assert await read(LogOptions()) == b"one\ntwo\nthree\n"
            assert await read(LogOptions(tail_lines=2)) == b"two\nthree\n"
            stamped = (await read(LogOptions(timestamps=True, tail_lines=1))).decode()
            stamp, _, text = stamped.partition(" ")
            assert text == "three\n"
            assert datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).year >= 2024
            future = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
            assert await read(LogOptions(since_time=future)) == b""
            # Follow: a line written later (as the awslogs driver would) arrives.
            task_id = aws.tasks_of("default", "talks")[0]["taskArn"].rsplit("/", 1)[-1]
            seen = bytearray()

            async def follow() -> None:
                async for chunk in logs("default", "talks", "main", LogOptions(follow=True)):
                    seen.extend(chunk)
                    if b"four" in seen:
                        return

            follower = asyncio.create_task(follow())
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            # The follower has read what exists (so "four" can only come from a later poll).
            while b"three\n" not in seen:
                assert loop.time() < deadline, "the follower never read the existing lines"
                await asyncio.sleep(0.05)
            aws.logs.put_log_events(
                logGroupName=LOG_GROUP,
                logStreamName=f"vk/main/{task_id}",
                logEvents=[
                    {
                        "timestamp": int(datetime.datetime.now().timestamp() * 1000),
                        "message": "four",
                    }
                ],
            )
            await asyncio.wait_for(follower, 30)
            assert bytes(seen) == b"one\ntwo\nthree\nfour\n"
        finally:
            await harness.provider.stop()

    asyncio.run(scenario())


@pytest.mark.usefixtures("credentials")
def test_throttling_is_retried_by_botocore_and_reported_when_it_outlasts_the_retries(
    aws: AwsStandIn, tmp_path: Path, node_name: str
) -> None:
    async def scenario() -> None:
        harness = await _started(aws, tmp_path, node_name, max_attempts=3)
        try:
            aws.faults.inject("RunTask", 2)
            before = aws.faults.faulted["RunTask"]
            await harness.provider.create_pod(_pod("patient", "exec sleep 3600"))
            assert aws.faults.faulted["RunTask"] - before == 2  # retried, then accepted
            aws.faults.inject("RunTask", 3)
            with pytest.raises(Exception, match="ThrottlingException") as failure:
                await harness.provider.create_pod(_pod("unlucky", "exec sleep 3600"))
            assert "after 3 attempts" in str(failure.value)
            await harness.quiet()
            aws.faults.inject("DescribeTasks", 3, status=503, code="ServiceUnavailableException")
            await harness.provider.poll()
            with pytest.raises(RuntimeError, match="ServiceUnavailable"):
                await harness.provider.ping()
            await harness.provider.poll()
            await harness.provider.ping()  # healthy again
        finally:
            await harness.provider.stop()

    asyncio.run(scenario())


def test_refused_credentials_make_ping_fail_with_the_reason_and_no_secret(
    aws: AwsStandIn, tmp_path: Path, node_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in AwsStandIn.env(access_key="AKIAVKNOSUCHKEY00000").items():
        monkeypatch.setenv(key, value)

    async def scenario() -> None:
        provider = _provider(aws, tmp_path, node_name)
        aws.set_iam_checks(True)
        try:
            await provider.start()
            with pytest.raises(RuntimeError) as failure:
                await provider.ping()
        finally:
            aws.set_iam_checks(False)
            await provider.stop()
        message = str(failure.value)
        assert message.startswith("AWS refused the credentials: ECS ListTasks: ")
        assert "InvalidClientTokenId" in message or "UnrecognizedClient" in message
        assert "<" not in message  # AWS's code and message, not a raw error document
        assert SECRET_KEY not in message

    asyncio.run(scenario())


def test_unsupported_or_oversized_pods_are_refused_with_a_clear_reason(
    aws: AwsStandIn, tmp_path: Path, node_name: str, credentials: None
) -> None:
    async def scenario() -> None:
        harness = await _started(aws, tmp_path, node_name)
        try:
            huge = _pod("huge", container={"resources": {"requests": {"cpu": "32"}}})
            with pytest.raises(InvalidInput, match="16 vCPU"):
                await harness.provider.create_pod(huge)
            hostpath = _pod("hostpath", volumes=[{"name": "h", "hostPath": {"path": "/"}}])
            with pytest.raises(InvalidInput, match="only emptyDir"):
                await harness.provider.create_pod(hostpath)
            bad = _pod("bad", annotations={"aws.virtual-kubelet.io/secrets": '{"X": "nope"}'})
            with pytest.raises(InvalidInput, match="not a Secrets Manager or SSM"):
                await harness.provider.create_pod(bad)
        finally:
            await harness.provider.stop()

    asyncio.run(scenario())


# --- end to end: an agent on the dev control plane ----------------------------------------------


def _agent(
    start_agent: AgentFactory,
    aws: AwsStandIn,
    ready: bool = True,
    env: dict[str, str] | None = None,
    **config: Any,
) -> AgentProcess:
    agent = start_agent(
        provider="aws",
        provider_config=aws.config(**config),
        env=env or AwsStandIn.env(),
        ready=ready,
    )
    if ready:
        agent.approve_serving_certificate()  # kubectl logs goes through the kubelet API
    return agent


def _deployment(node: str, name: str, script: str, **spec: Any) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "app",
        "image": "public.ecr.aws/docker/library/busybox:1.36",
        "command": ["sh", "-c", script],
        "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}},
    }
    container.update(spec.pop("container", {}))
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": spec.pop("annotations", {})},
                "spec": {
                    "containers": [container],
                    "nodeSelector": {"kubernetes.io/hostname": node},
                    "tolerations": [TOLERATION],
                    "terminationGracePeriodSeconds": 5,
                    **spec,
                },
            },
        },
    }


def _only_pod(cluster: DevCluster, namespace: str, app: str) -> dict[str, Any]:
    items = cluster.get_json("pods", "-n", namespace, "-l", f"app={app}")["items"]
    assert len(items) == 1, [i["metadata"]["name"] for i in items]
    return dict(items[0])


def test_a_deployment_runs_on_fargate_logs_from_cloudwatch_survives_a_restart_and_is_stopped(
    devcluster: DevCluster, kube_namespace: str, start_agent: AgentFactory, aws: AwsStandIn
) -> None:
    create(
        devcluster,
        kube_namespace,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "db"},
            "stringData": {"password": SECRET_VALUE},
        },
    )
    agent = _agent(start_agent, aws)
    node = devcluster.get_json("node", agent.node_name)
    assert node["status"]["capacity"]["pods"] == "20"
    assert node["spec"]["providerID"].startswith("aws:///us-east-1/")
    deployment = _deployment(
        agent.node_name,
        "hello",
        "echo hello-from-fargate; exec sleep 3600",
        annotations={"aws.virtual-kubelet.io/secrets": json.dumps({"DB_PASSWORD": SECRET_ARN})},
        container={
            "env": [
                {
                    "name": "DB_PASSWORD",
                    "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}},
                }
            ]
        },
    )
    create(devcluster, kube_namespace, deployment)
    devcluster.kubectl(
        "rollout", "status", "-n", kube_namespace, "deployment/hello", "--timeout=120s", timeout=150
    )
    item = _only_pod(devcluster, kube_namespace, "hello")
    name = item["metadata"]["name"]
    status = item["status"]
    assert status["phase"] == "Running"
    (task,) = aws.tasks_of(kube_namespace, name)
    (container,) = status["containerStatuses"]
    assert container["ready"] is True
    assert container["containerID"] == f"ecs://{task['taskArn'].rsplit('/', 1)[-1]}-app"
    assert "startedAt" in container["state"]["running"]
    assert status["podIP"] == next(
        d["value"] for d in task["attachments"][0]["details"] if d["name"] == "privateIPv4Address"
    )
    definition = aws.ecs.describe_task_definition(taskDefinition=task["taskDefinitionArn"])[
        "taskDefinition"
    ]
    assert definition["containerDefinitions"][0]["secrets"] == [
        {"name": "DB_PASSWORD", "valueFrom": SECRET_ARN}
    ]

    logs = devcluster.kubectl("logs", "-n", kube_namespace, name)
    assert logs.stdout == "hello-from-fargate\n"

    # A restarted agent adopts the task: no second RunTask, the pod stays Running.
    runs = aws.faults.calls["RunTask"]
    agent.stop()
    agent.start()
    agent.wait_ready()
    devcluster.kubectl("annotate", "-n", kube_namespace, "pod", name, "touched=yes")
    wait_until(
        lambda: "adopted" in agent.log() or "found 1 ECS tasks" in agent.log(),
        60,
        "the restarted agent to find its task",
    )
    assert aws.faults.calls["RunTask"] == runs
    assert len(aws.tasks_of(kube_namespace, name)) == 1
    assert (pod(devcluster, kube_namespace, name) or {})["status"]["phase"] == "Running"

    # The same Secret without an ARN: refused by name, never sent as plain env to ECS.
    registered = aws.faults.calls["RegisterTaskDefinition"]
    create(
        devcluster,
        kube_namespace,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "unmapped"},
            "spec": {
                "nodeName": agent.node_name,
                "tolerations": [TOLERATION],
                "containers": [
                    {
                        "name": "app",
                        "image": "busybox",
                        "envFrom": [{"secretRef": {"name": "db"}, "prefix": "DB_"}],
                    }
                ],
            },
        },
    )

    def refused() -> dict[str, Any] | None:
        found = pod(devcluster, kube_namespace, "unmapped") or {}
        return found if found.get("status", {}).get("phase") == "Failed" else None

    message = wait_until(refused, 60, "the unmapped pod to be refused")["status"]["message"]
    assert 'container "app": env DB_password take their values from Kubernetes Secrets' in message
    assert "secret_env_mode: plain" in message
    assert aws.faults.calls["RegisterTaskDefinition"] == registered

    devcluster.kubectl("delete", "-n", kube_namespace, "deployment/hello", "--wait=false")
    wait_until(
        lambda: aws.tasks_of(kube_namespace, name)[0]["lastStatus"] == "STOPPED",
        60,
        "the task to be stopped",
    )
    stopped = aws.tasks_of(kube_namespace, name)[0]
    assert "deleted" in stopped["stoppedReason"]
    wait_until(
        lambda: pod(devcluster, kube_namespace, name) is None, 60, "the pod to leave the API"
    )
    shown = agent.log() + json.dumps(events_for(devcluster, kube_namespace, name))
    assert SECRET_VALUE not in shown
    assert SECRET_KEY not in shown


def test_exit_code_and_stop_reason_reach_the_pod(
    devcluster: DevCluster, kube_namespace: str, start_agent: AgentFactory, aws: AwsStandIn
) -> None:
    agent = _agent(start_agent, aws)
    manifest = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "fails"},
        "spec": {
            "nodeName": agent.node_name,
            "tolerations": [TOLERATION],
            "restartPolicy": "Never",
            "containers": [
                {"name": "app", "image": "busybox", "command": ["sh", "-c", "echo oops; exit 7"]}
            ],
        },
    }
    create(devcluster, kube_namespace, manifest)

    def failed() -> dict[str, Any] | None:
        found = pod(devcluster, kube_namespace, "fails") or {}
        return found if found.get("status", {}).get("phase") == "Failed" else None

    status = wait_until(failed, 60, "the pod to fail")["status"]
    terminated = status["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 7
    assert status["reason"] == "EssentialContainerExited"
    assert "Essential container in task exited" in status["message"]
    assert devcluster.kubectl("logs", "-n", kube_namespace, "fails").stdout == "oops\n"


def test_throttling_is_retried_and_shown_as_an_event(
    devcluster: DevCluster, kube_namespace: str, start_agent: AgentFactory, aws: AwsStandIn
) -> None:
    agent = _agent(start_agent, aws, max_attempts=2)
    before = aws.faults.faulted["RunTask"]
    aws.faults.inject("RunTask", 2)  # both attempts of the first try are throttled
    create(
        devcluster,
        kube_namespace,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "throttled"},
            "spec": {
                "nodeName": agent.node_name,
                "tolerations": [TOLERATION],
                "containers": [{"name": "app", "image": "busybox", "command": ["sleep", "3600"]}],
            },
        },
    )

    def running() -> bool:
        found = pod(devcluster, kube_namespace, "throttled") or {}
        return found.get("status", {}).get("phase") == "Running"

    wait_until(running, 120, "the throttled pod to run after the agent retried")
    assert aws.faults.faulted["RunTask"] - before == 2  # botocore retried once, then gave up
    messages = [
        e["message"]
        for e in events_for(devcluster, kube_namespace, "throttled")
        if e["reason"] == "ProviderCreateFailed"
    ]
    assert any("ThrottlingException" in m and "RunTask" in m for m in messages), messages
    assert len(aws.tasks_of(kube_namespace, "throttled")) == 1


def test_refused_credentials_make_the_node_not_ready_with_the_reason(
    devcluster: DevCluster, start_agent: AgentFactory, aws: AwsStandIn
) -> None:
    aws.set_iam_checks(True)  # moto now refuses keys its IAM does not know, as AWS does
    try:
        agent = _agent(
            start_agent,
            aws,
            ready=False,
            env=AwsStandIn.env(access_key="AKIAVKNOSUCHKEY00000"),
        )

        def not_ready() -> dict[str, Any] | None:
            found = devcluster.kubectl("get", "node", agent.node_name, "-o", "json", check=False)
            if found.returncode != 0:
                return None
            for condition in json.loads(found.stdout)["status"].get("conditions", []):
                if condition["type"] == "Ready" and condition["status"] == "False":
                    return dict(condition)
            return None

        condition = wait_until(not_ready, 90, "the node to be NotReady")
    finally:
        aws.set_iam_checks(False)
    message = condition.get("message", "")
    assert "AWS refused the credentials" in message, condition
    assert "InvalidClientTokenId" in message or "UnrecognizedClient" in message, condition
    assert SECRET_KEY not in agent.log()
    assert SECRET_KEY not in json.dumps(condition)
