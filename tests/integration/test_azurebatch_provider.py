"""The azurebatch provider end to end: the real control plane and kubectl on one side, and on the
other a loopback server speaking Batch's REST API (tests/integration/batch_server.py: SharedKey
checked, tasks run as local processes). No Azure account is reachable from CI; what this proves and
what it cannot is in docs/providers/azurebatch.md."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from virtual_kubelet.devcluster import DevCluster, kubectl_path, wait_until
from virtual_kubelet.devcluster.agent import AgentProcess

from .batch_server import BatchServer, batch_server
from .conftest import TOLERATION, AgentFactory, create, events_for, pod

__all__ = ["batch_server"]  # the fixture, imported for pytest

SEEDED = "sEEded-batch-secret-4f1c9a"  # a Secret's value: it must reach the task, never a log


def _agent(
    start_agent: AgentFactory,
    server: BatchServer,
    pool: str = "plain",
    ready: bool = True,
    key: str | None = None,
    name: str | None = None,
    **settings: Any,
) -> AgentProcess:
    config = {
        "account_url": server.url,
        "account_name": server.account,
        "pool_id": pool,
        "poll_seconds": 1,
        **settings,
    }
    agent = start_agent(
        provider="azurebatch",
        provider_config=config,
        env={"AZURE_BATCH_ACCOUNT_KEY": server.key if key is None else key},
        ready=ready,
        name=name,
    )
    if ready:
        agent.approve_serving_certificate()  # kubectl logs goes through the kubelet API
    return agent


def _pod(name: str, node: str, script: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeName": node,
            "tolerations": [TOLERATION],
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 5,
            "containers": [
                {
                    "name": "main",
                    "image": "docker.io/library/busybox:1.36",
                    "command": ["sh", "-c", script],
                }
            ],
            **spec,
        },
    }


def _status(cluster: DevCluster, namespace: str, name: str) -> dict[str, Any]:
    return dict((pod(cluster, namespace, name) or {}).get("status", {}))


def _phase(cluster: DevCluster, namespace: str, name: str, phase: str) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        status = _status(cluster, namespace, name)
        return status if status.get("phase") == phase else None

    return wait_until(reached, 60, f"pod {name} to be {phase}")


def _job_of(server: BatchServer, node: str) -> str:
    return f"vk-{node}"


def _no_secrets(agent: AgentProcess, cluster: DevCluster, namespace: str, *secrets: str) -> None:
    shown = agent.log_path.read_text(errors="replace")
    events = json.dumps(cluster.get_json("events", "-n", namespace))
    for secret in secrets:
        assert secret not in shown, "a secret reached the agent's log"
        assert secret not in events, "a secret reached an Event"


def test_a_deployment_runs_on_container_tasks_with_env_logs_and_deletion(
    devcluster: DevCluster,
    kube_namespace: str,
    start_agent: AgentFactory,
    batch_server: BatchServer,
) -> None:
    agent = _agent(start_agent, batch_server, pool="containers")
    job = _job_of(batch_server, agent.node_name)
    devcluster.kubectl(
        "create",
        "secret",
        "generic",
        "creds",
        "-n",
        kube_namespace,
        f"--from-literal=token={SEEDED}",
    )
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "nodeSelector": {"kubernetes.io/hostname": agent.node_name},
                    "tolerations": [TOLERATION],
                    "terminationGracePeriodSeconds": 5,
                    "containers": [
                        {
                            "name": "main",
                            "image": "docker.io/library/nginx:1.27",
                            "command": ["sh", "-c", 'echo "serving as $GREETING"; exec sleep 600'],
                            "env": [
                                {"name": "GREETING", "value": "hello-batch"},
                                {
                                    "name": "TOKEN",
                                    "valueFrom": {
                                        "secretKeyRef": {"name": "creds", "key": "token"}
                                    },
                                },
                            ],
                        }
                    ],
                },
            },
        },
    }
    create(devcluster, kube_namespace, deployment)

    def running() -> list[dict[str, Any]] | None:
        items = devcluster.get_json("pods", "-n", kube_namespace, "-l", "app=web")["items"]
        ok = [p for p in items if p.get("status", {}).get("phase") == "Running"]
        return items if len(ok) == 2 and len(items) == 2 else None

    pods = wait_until(running, 90, "both replicas Running")
    tasks = batch_server.tasks_of(job)
    assert len(tasks) == 2
    for p in pods:
        uid = p["metadata"]["uid"]
        task = tasks[f"pod-{uid}-0"]
        assert task.state == "running"  # the status the pod shows came from the service
        container = p["status"]["containerStatuses"][0]
        assert container["ready"] is True
        assert container["state"]["running"]["startedAt"]
        assert task.body["containerSettings"]["imageName"] == "docker.io/library/nginx:1.27"
        env = {e["name"]: e["value"] for e in task.body["environmentSettings"]}
        assert env["GREETING"] == "hello-batch"
        assert env["TOKEN"] == SEEDED  # delivered to the task
        assert env["KUBERNETES_SERVICE_HOST"]  # the service env the core adds, as a kubelet
    name = pods[0]["metadata"]["name"]
    logs = wait_until(
        lambda: devcluster.kubectl("logs", "-n", kube_namespace, name).stdout or None,
        30,
        "kubectl logs to show stdout.txt",
    )
    assert logs == "serving as hello-batch\n"
    devcluster.kubectl("delete", "deployment", "web", "-n", kube_namespace, "--wait=false")
    wait_until(lambda: not batch_server.tasks_of(job), 60, "both tasks deleted from Batch")
    for p in pods:
        task_path = f"/jobs/{job}/tasks/pod-{p['metadata']['uid']}-0"
        assert batch_server.count("POST", f"^{task_path}/terminate$", 204) == 1
        assert batch_server.count("DELETE", f"^{task_path}$", 200) == 1
    # one list call per poll for the whole job, never one call per pod
    assert batch_server.count("GET", f"^/jobs/{job}/tasks/pod-[^/]*$") == 0
    _no_secrets(agent, devcluster, kube_namespace, SEEDED, batch_server.key)


def test_a_job_succeeds_and_a_failing_command_fails_with_its_exit_code(
    devcluster: DevCluster,
    kube_namespace: str,
    start_agent: AgentFactory,
    batch_server: BatchServer,
) -> None:
    agent = _agent(start_agent, batch_server)
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "count"},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "nodeSelector": {"kubernetes.io/hostname": agent.node_name},
                    "tolerations": [TOLERATION],
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "main",
                            "image": "busybox",
                            "command": ["sh", "-c", "for i in 1 2 3; do echo line $i; done"],
                        }
                    ],
                }
            },
        },
    }
    create(devcluster, kube_namespace, job)
    create(devcluster, kube_namespace, _pod("broken", agent.node_name, "echo oops >&2; exit 3"))

    def complete() -> bool:
        shown = devcluster.get_json("job", "count", "-n", kube_namespace)
        return any(
            c["type"] == "Complete" and c["status"] == "True"
            for c in shown.get("status", {}).get("conditions") or []
        )

    wait_until(complete, 90, "the Job to complete")
    failed = _phase(devcluster, kube_namespace, "broken", "Failed")
    terminated = failed["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 3
    assert terminated["reason"] == "FailureExitCode"
    assert "exit code representing a failure" in terminated["message"]
    job_pod = devcluster.get_json("pods", "-n", kube_namespace, "-l", "job-name=count")["items"][0]
    assert job_pod["status"]["phase"] == "Succeeded"
    assert job_pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    shown = devcluster.kubectl("logs", "-n", kube_namespace, job_pod["metadata"]["name"]).stdout
    assert shown == "line 1\nline 2\nline 3\n"
    assert devcluster.kubectl("logs", "-n", kube_namespace, "broken").stdout == "oops\n"
    tail = devcluster.kubectl("logs", "--tail=1", "-n", kube_namespace, job_pod["metadata"]["name"])
    assert tail.stdout == "line 3\n"


def test_logs_follow_by_polling_until_the_task_completes(
    devcluster: DevCluster,
    kube_namespace: str,
    start_agent: AgentFactory,
    batch_server: BatchServer,
) -> None:
    agent = _agent(start_agent, batch_server)
    create(
        devcluster,
        kube_namespace,
        _pod("ticker", agent.node_name, "for i in 1 2 3 4; do echo tick $i; sleep 1; done"),
    )
    _phase(devcluster, kube_namespace, "ticker", "Running")
    followed = subprocess.run(
        [
            kubectl_path(),
            "--kubeconfig",
            str(devcluster.kubeconfig),
            "logs",
            "-f",
            "-n",
            kube_namespace,
            "ticker",
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )
    # every line, once, and the stream ended by itself when the task completed
    assert followed.stdout == "tick 1\ntick 2\ntick 3\ntick 4\n", followed.stderr
    assert batch_server.count("HEAD", r"/files/stdout\.txt$") >= 1  # ranges follow the size


def test_a_restarted_agent_adopts_its_tasks_without_adding_them_twice(
    devcluster: DevCluster,
    kube_namespace: str,
    start_agent: AgentFactory,
    batch_server: BatchServer,
) -> None:
    agent = _agent(start_agent, batch_server)
    job = _job_of(batch_server, agent.node_name)
    create(devcluster, kube_namespace, _pod("steady", agent.node_name, "echo up; exec sleep 600"))
    first = _phase(devcluster, kube_namespace, "steady", "Running")
    agent.kill()
    _agent(start_agent, batch_server, name=agent.node_name)
    uid = (pod(devcluster, kube_namespace, "steady") or {})["metadata"]["uid"]
    again = _phase(devcluster, kube_namespace, "steady", "Running")
    assert again["containerStatuses"][0]["state"] == first["containerStatuses"][0]["state"]
    # the new agent serves the pod's logs: it has adopted the pod by now
    assert devcluster.kubectl("logs", "-n", kube_namespace, "steady").stdout == "up\n"
    assert list(batch_server.tasks_of(job)) == [f"pod-{uid}-0"]
    assert batch_server.count("POST", f"^/jobs/{job}/tasks$", 201) == 1
    assert batch_server.count("POST", f"^/jobs/{job}/tasks$", 409) == 0


def test_a_job_deleted_outside_fails_its_pods_and_is_added_again_for_new_ones(
    devcluster: DevCluster,
    kube_namespace: str,
    start_agent: AgentFactory,
    batch_server: BatchServer,
) -> None:
    agent = _agent(start_agent, batch_server)
    job = _job_of(batch_server, agent.node_name)
    create(devcluster, kube_namespace, _pod("orphan", agent.node_name, "exec sleep 600"))
    _phase(devcluster, kube_namespace, "orphan", "Running")
    batch_server.delete_job(job)
    failed = _phase(devcluster, kube_namespace, "orphan", "Failed")
    terminated = failed["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (137, "TaskLost")
    create(devcluster, kube_namespace, _pod("next", agent.node_name, "exec sleep 600"))
    _phase(devcluster, kube_namespace, "next", "Running")  # the job was added again
    assert list(batch_server.tasks_of(job)) == [
        f"pod-{(pod(devcluster, kube_namespace, 'next') or {})['metadata']['uid']}-0"
    ]


def test_throttling_and_503_are_retried_with_back_off_and_shown_as_events(
    devcluster: DevCluster,
    kube_namespace: str,
    start_agent: AgentFactory,
    batch_server: BatchServer,
) -> None:
    agent = _agent(start_agent, batch_server, retry_attempts=1)
    job = _job_of(batch_server, agent.node_name)
    adds = f"^/jobs/{job}/tasks$"
    # Each create_pod call tries twice (retry_attempts: 1): 429, 429 fails the first call; 429,
    # 503 the second; the third adds the task.
    batch_server.inject("POST", adds, 429, 3, retry_after="1")
    batch_server.inject("POST", adds, 503, 1)
    create(devcluster, kube_namespace, _pod("patient", agent.node_name, "exec sleep 600"))
    _phase(devcluster, kube_namespace, "patient", "Running")
    assert batch_server.count("POST", adds, 429) == 3
    assert batch_server.count("POST", adds, 503) == 1
    assert batch_server.count("POST", adds, 201) == 1
    messages = [
        e["message"]
        for e in events_for(devcluster, kube_namespace, "patient")
        if e["reason"] == "ProviderCreateFailed"
    ]
    assert any(
        "throttling" in m and "429 TooManyRequests: injected by the test" in m for m in messages
    ), messages
    assert any("503 ServerBusy: injected by the test" in m for m in messages), messages


def test_a_bad_account_key_makes_the_node_not_ready_with_the_reason(
    devcluster: DevCluster, start_agent: AgentFactory, batch_server: BatchServer, tmp_path: Path
) -> None:
    wrong = batch_server.key[:-8] + "AAAAAAA="
    key_file = tmp_path / "account-key"
    key_file.write_text(wrong)
    agent = _agent(start_agent, batch_server, ready=False, key="", account_key_file=str(key_file))

    def not_ready() -> dict[str, Any] | None:
        result = devcluster.kubectl("get", "node", agent.node_name, "-o", "json", check=False)
        if result.returncode != 0:
            return None
        conditions = json.loads(result.stdout)["status"].get("conditions") or []
        ready = next((c for c in conditions if c["type"] == "Ready"), None)
        return ready if ready and ready["status"] != "True" else None

    ready = wait_until(not_ready, 60, "the node to be NotReady")
    assert "refused the credentials" in ready["message"], ready
    assert "403 AuthenticationFailed" in ready["message"], ready
    # the right key in the same file: the next poll reads it again and the node recovers
    key_file.write_text(batch_server.key)
    agent.wait_ready(60)
    log = agent.log_path.read_text(errors="replace")
    assert wrong not in log
    assert batch_server.key not in log


def test_a_missing_key_is_a_clear_start_up_error(
    devcluster: DevCluster, batch_server: BatchServer, tmp_path: Path
) -> None:
    config = tmp_path / "batch.json"
    config.write_text(
        json.dumps({"account_url": batch_server.url, "account_name": "acct", "pool_id": "plain"})
    )
    result = subprocess.run(
        [
            *(sys.executable, "-m", "virtual_kubelet", "--kubeconfig", str(devcluster.kubeconfig)),
            *("--provider", "azurebatch", "--provider-config", str(config)),
            *("--nodename", "vk-nokey", "--metrics-addr", "", "--state-dir", str(tmp_path / "s")),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 1
    assert "no account key" in result.stderr
    assert "AZURE_BATCH_ACCOUNT_KEY" in result.stderr
