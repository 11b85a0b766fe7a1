"""The process provider end to end: real processes on this machine behind a real API server."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import ipaddress
import itertools
import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import pytest

from virtual_kubelet.devcluster import DevCluster, kubectl_path, wait_until
from virtual_kubelet.devcluster.agent import AgentProcess, kill_shims_under
from virtual_kubelet.providers.process.launch import volume_env_name
from virtual_kubelet.providers.process.network import (
    NETNS_DIR,
    SYS_NET,
    ip_tool,
    missing_capabilities,
    names_for,
    remove_pod_network,
)

from .conftest import TOLERATION, AgentFactory, condition, create, pod

CONFIG = {"restart_backoff_seconds": 1, "max_restart_backoff_seconds": 8}


def _agent(start_agent: AgentFactory, **kwargs: Any) -> AgentProcess:
    agent = start_agent(provider="process", provider_config=kwargs.pop("config", CONFIG), **kwargs)
    agent.approve_serving_certificate()
    return agent


def _pod(name: str, node: str, containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"nodeName": node, "tolerations": [TOLERATION], "containers": containers, **spec},
    }


def _status(cluster: DevCluster, namespace: str, name: str) -> dict[str, Any]:
    return (pod(cluster, namespace, name) or {}).get("status", {})


def _container(cluster: DevCluster, namespace: str, name: str) -> dict[str, Any]:
    statuses = _status(cluster, namespace, name).get("containerStatuses") or [{}]
    return statuses[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_web_server_deployment_ready_port_forward_logs_exec_and_metrics(
    devcluster: DevCluster, kube_namespace: str, start_agent: AgentFactory, tmp_path: Path
) -> None:
    agent = _agent(start_agent)
    port = _free_port()
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web", "tier": "front"}},
                "spec": {
                    "nodeSelector": {"kubernetes.io/hostname": agent.node_name},
                    "tolerations": [TOLERATION],
                    "containers": [
                        {
                            "name": "http",
                            "image": "python:3",
                            "command": [
                                "python3",
                                "-u",
                                "-m",
                                "http.server",
                                str(port),
                                "--bind",
                                "$(POD_IP)",  # the pod IP only: port-forward must find it there
                            ],
                            "workingDir": str(tmp_path),
                            "ports": [{"name": "http", "containerPort": port}],
                            "readinessProbe": {
                                "httpGet": {"path": "/", "port": "http"},
                                "periodSeconds": 1,
                            },
                            "env": [
                                {
                                    "name": "POD_NAME",
                                    "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                                },
                                {
                                    "name": "POD_IP",
                                    "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}},
                                },
                                {
                                    "name": "TIER",
                                    "valueFrom": {
                                        "fieldRef": {"fieldPath": "metadata.labels['tier']"}
                                    },
                                },
                            ],
                        }
                    ],
                },
            },
        },
    }
    (tmp_path / "index.html").write_text("hello from a real process\n")
    create(devcluster, kube_namespace, deployment)
    devcluster.kubectl(
        "rollout", "status", "deployment/web", "-n", kube_namespace, "--timeout=90s", timeout=120
    )
    (web,) = devcluster.get_json("pods", "-n", kube_namespace, "-l", "app=web")["items"]
    name = web["metadata"]["name"]
    assert (condition(web, "Ready") or {}).get("status") == "True"

    local = _free_port()
    env = dict(os.environ, KUBECONFIG=str(devcluster.kubeconfig))
    forwarder = subprocess.Popen(
        [kubectl_path(), "port-forward", "-n", kube_namespace, f"pod/{name}", f"{local}:{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        assert forwarder.stdout is not None
        assert b"Forwarding from" in forwarder.stdout.readline()
        page = urllib.request.urlopen(f"http://127.0.0.1:{local}/index.html", timeout=10).read()
        assert page == b"hello from a real process\n"
    finally:
        forwarder.kill()
        forwarder.wait(10)
    wait_until(
        lambda: "GET /index.html" in devcluster.kubectl("logs", name, "-n", kube_namespace).stdout,
        30,
        "the access log line",
    )
    values = dict(
        line.split("=", 1)
        for line in devcluster.kubectl(
            "exec", name, "-n", kube_namespace, "--", "env"
        ).stdout.splitlines()
        if "=" in line
    )
    assert values["POD_NAME"] == name
    assert values["POD_IP"] == web["status"]["podIP"]
    assert values["TIER"] == "front"
    metrics = devcluster.kubectl(
        "get", "--raw", f"/api/v1/nodes/{agent.node_name}/proxy/metrics/resource"
    ).stdout
    cpu = re.search(
        rf'^container_cpu_usage_seconds_total\{{container="http",namespace="{kube_namespace}",pod="{name}"\}} (\S+)',
        metrics,
        re.M,
    )
    memory = re.search(
        rf'^container_memory_working_set_bytes\{{container="http",namespace="{kube_namespace}",pod="{name}"\}} (\S+)',
        metrics,
        re.M,
    )
    assert cpu
    assert float(cpu.group(1)) > 0
    assert memory
    assert float(memory.group(1)) > 1_000_000


def test_crash_loop_backs_off_and_jobs_report_exit_codes(
    devcluster: DevCluster, kube_namespace: str, start_agent: AgentFactory
) -> None:
    agent = _agent(start_agent)
    node = agent.node_name
    create(
        devcluster,
        kube_namespace,
        _pod(
            "crasher",
            node,
            [{"name": "c", "image": "busybox", "command": ["sh", "-c", "echo crashing; exit 1"]}],
        ),
    )
    for job, script, policy in (
        ("done", "echo finished", "File"),
        ("broken", "echo disk full >&2; exit 3", "FallbackToLogsOnError"),
    ):
        template = _pod(
            job,
            node,
            [
                {
                    "name": "c",
                    "image": "busybox",
                    "command": ["sh", "-c", script],
                    "terminationMessagePolicy": policy,
                }
            ],
            restartPolicy="Never",
        )
        create(
            devcluster,
            kube_namespace,
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": {"name": job},
                "spec": {"backoffLimit": 0, "template": {"spec": template["spec"]}},
            },
        )

    observed: list[tuple[float, int]] = []

    def crash_looping() -> bool:
        status = _container(devcluster, kube_namespace, "crasher")
        count = status.get("restartCount", 0)
        if not observed or observed[-1][1] != count:
            observed.append((time.monotonic(), count))
        waiting = status.get("state", {}).get("waiting", {})
        return count >= 3 and waiting.get("reason") == "CrashLoopBackOff"

    wait_until(crash_looping, 90, "CrashLoopBackOff after 3 restarts")
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(observed)]
    assert gaps[-1] > gaps[0], f"back-off did not grow: {gaps}"
    assert (
        _container(devcluster, kube_namespace, "crasher")["lastState"]["terminated"]["exitCode"]
        == 1
    )

    def job_status(name: str) -> dict[str, Any]:
        return dict(devcluster.get_json("job", name, "-n", kube_namespace).get("status", {}))

    wait_until(lambda: job_status("done").get("succeeded") == 1, 60, "the exit-0 Job to succeed")
    wait_until(lambda: job_status("broken").get("failed") == 1, 60, "the exit-3 Job to fail")
    (failed,) = devcluster.get_json("pods", "-n", kube_namespace, "-l", "job-name=broken")["items"]
    assert failed["status"]["phase"] == "Failed"
    terminated = failed["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 3
    assert "disk full" in terminated["message"]


def test_liveness_failure_restarts_the_container(
    devcluster: DevCluster, kube_namespace: str, start_agent: AgentFactory, tmp_path: Path
) -> None:
    agent = _agent(start_agent)
    flag = tmp_path / "healthy"
    flag.touch()
    create(
        devcluster,
        kube_namespace,
        _pod(
            "sick",
            agent.node_name,
            [
                {
                    "name": "c",
                    "image": "busybox",
                    "command": ["sh", "-c", "while true; do sleep 0.2; done"],
                    "livenessProbe": {
                        "exec": {"command": ["test", "-e", str(flag)]},
                        "periodSeconds": 1,
                        "failureThreshold": 2,
                    },
                }
            ],
        ),
    )
    wait_until(
        lambda: _status(devcluster, kube_namespace, "sick").get("phase") == "Running",
        60,
        "sick Running",
    )
    assert _container(devcluster, kube_namespace, "sick").get("restartCount", 0) == 0
    flag.unlink()
    wait_until(
        lambda: _container(devcluster, kube_namespace, "sick").get("restartCount", 0) >= 1,
        60,
        "a restart",
    )
    flag.touch()
    last = _container(devcluster, kube_namespace, "sick")["lastState"]["terminated"]
    assert "liveness" in last.get("message", "").lower()


def test_delete_runs_prestop_then_sigterm_and_honours_the_grace_period(
    devcluster: DevCluster, kube_namespace: str, start_agent: AgentFactory, tmp_path: Path
) -> None:
    agent = _agent(start_agent)
    out = tmp_path / "events"
    out.touch()
    shared = {"name": "shared", "hostPath": {"path": str(tmp_path)}}
    polite = f"trap 'echo got-TERM >> {out}; exit 0' TERM; while true; do sleep 0.1; done"
    create(
        devcluster,
        kube_namespace,
        _pod(
            "polite",
            agent.node_name,
            [
                {
                    "name": "c",
                    "image": "busybox",
                    "command": ["sh", "-c", polite],
                    "lifecycle": {
                        "preStop": {"exec": {"command": ["sh", "-c", f"echo prestop >> {out}"]}}
                    },
                    "volumeMounts": [{"name": "shared", "mountPath": str(tmp_path)}],
                }
            ],
            volumes=[shared],
            terminationGracePeriodSeconds=30,
        ),
    )
    create(
        devcluster,
        kube_namespace,
        _pod(
            "stubborn",
            agent.node_name,
            [
                {
                    "name": "c",
                    "image": "busybox",
                    "command": ["sh", "-c", "trap '' TERM; while true; do sleep 0.1; done"],
                }
            ],
            terminationGracePeriodSeconds=3,
        ),
    )
    for name in ("polite", "stubborn"):
        wait_until(
            lambda n=name: _status(devcluster, kube_namespace, n).get("phase") == "Running",
            60,
            f"{name} Running",
        )
    devcluster.kubectl("delete", "pod", "polite", "-n", kube_namespace, "--wait=false")
    wait_until(lambda: pod(devcluster, kube_namespace, "polite") is None, 30, "polite gone")
    assert out.read_text().split() == ["prestop", "got-TERM"]
    started = time.monotonic()
    devcluster.kubectl("delete", "pod", "stubborn", "-n", kube_namespace, "--wait=false")
    wait_until(lambda: pod(devcluster, kube_namespace, "stubborn") is None, 30, "stubborn gone")
    assert 2.5 < time.monotonic() - started < 20  # SIGKILL came after the 3 s grace period


def test_post_start_hook_runs_in_the_container_before_readiness(
    devcluster: DevCluster, kube_namespace: str, start_agent: AgentFactory
) -> None:
    agent = _agent(start_agent)
    # The hook writes into the container's working directory, with the container's env; the
    # readiness probe (same directory) succeeds once the file is there. `sleep 1` first: the
    # probe, every second, would see nothing if it ran before the hook finished.
    hook = 'sleep 1; echo "$HOSTNAME $GREETING" > hook-out'
    create(
        devcluster,
        kube_namespace,
        _pod(
            "hooked",
            agent.node_name,
            [
                {
                    "name": "c",
                    "image": "busybox",
                    "command": ["sh", "-c", "exec sleep 3600"],
                    "env": [{"name": "GREETING", "value": "hello-from-env"}],
                    "lifecycle": {"postStart": {"exec": {"command": ["sh", "-c", hook]}}},
                    "readinessProbe": {
                        "exec": {"command": ["cat", "hook-out"]},
                        "periodSeconds": 1,
                    },
                }
            ],
        ),
    )
    wait_until(
        lambda: (
            (condition(pod(devcluster, kube_namespace, "hooked"), "Ready") or {}).get("status")
            == "True"
        ),
        60,
        "hooked Ready",
    )
    assert _container(devcluster, kube_namespace, "hooked").get("restartCount") == 0
    out = devcluster.kubectl("exec", "hooked", "-n", kube_namespace, "--", "cat", "hook-out")
    assert out.stdout == "hooked hello-from-env\n"


def test_failed_post_start_hook_kills_and_restarts_the_container(
    devcluster: DevCluster, kube_namespace: str, start_agent: AgentFactory
) -> None:
    agent = _agent(start_agent)
    failing = {"exec": {"command": ["sh", "-c", "echo no config >&2; exit 1"]}}
    for name, policy in (("hookfail", "Always"), ("hookonce", "Never")):
        create(
            devcluster,
            kube_namespace,
            _pod(
                name,
                agent.node_name,
                [
                    {
                        "name": "c",
                        "image": "busybox",
                        "command": ["sh", "-c", "exec sleep 3600"],
                        "lifecycle": {"postStart": failing},
                    }
                ],
                restartPolicy=policy,
                terminationGracePeriodSeconds=5,
            ),
        )
    restarted = wait_until(
        lambda: (
            (s := _container(devcluster, kube_namespace, "hookfail")).get("restartCount", 0) >= 2
            and s
        ),
        60,
        "two restarts after failed postStart hooks",
    )
    assert restarted["ready"] is False
    last = restarted["lastState"]["terminated"]
    assert last["exitCode"] == 143  # killed with SIGTERM
    assert last["message"].startswith("PostStartHookError: Exec lifecycle hook ([sh -c echo no")
    assert "exited with 1" in last["message"]
    assert "no config" in last["message"]
    described = devcluster.kubectl("describe", "pod", "hookfail", "-n", kube_namespace).stdout
    assert "PostStartHookError: Exec lifecycle hook" in described
    # restartPolicy Never: the container ends terminated, the pod Failed.
    wait_until(
        lambda: _status(devcluster, kube_namespace, "hookonce").get("phase") == "Failed",
        60,
        "hookonce Failed",
    )
    once = _container(devcluster, kube_namespace, "hookonce")
    assert once.get("restartCount", 0) == 0
    assert once["state"]["terminated"]["message"].startswith("PostStartHookError: ")


def test_configmap_volume_is_readable_and_follows_updates(
    devcluster: DevCluster, kube_namespace: str, start_agent: AgentFactory
) -> None:
    agent = _agent(start_agent)
    create(
        devcluster,
        kube_namespace,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "settings"},
            "data": {"mode": "fast"},
        },
    )
    create(
        devcluster,
        kube_namespace,
        _pod(
            "reader",
            agent.node_name,
            [
                {
                    "name": "c",
                    "image": "busybox",
                    "command": ["sh", "-c", "while true; do sleep 1; done"],
                    "volumeMounts": [{"name": "config", "mountPath": "/etc/vk-test-config"}],
                }
            ],
            volumes=[{"name": "config", "configMap": {"name": "settings"}}],
        ),
    )
    wait_until(
        lambda: _status(devcluster, kube_namespace, "reader").get("phase") == "Running",
        60,
        "reader Running",
    )

    def read():
        return devcluster.kubectl(
            "exec", "reader", "-n", kube_namespace, "--", "cat", "/etc/vk-test-config/mode"
        ).stdout

    assert read() == "fast"
    devcluster.kubectl(
        "patch",
        "configmap",
        "settings",
        "-n",
        kube_namespace,
        "--type=merge",
        "-p",
        json.dumps({"data": {"mode": "slow"}}),
    )
    wait_until(lambda: read() == "slow", 60, "the process to see the update")


def test_kill_9_keeps_processes_and_restart_adopts_them(
    devcluster: DevCluster, kube_namespace: str, start_agent: AgentFactory, tmp_path: Path
) -> None:
    agent = _agent(start_agent)
    marker = f"vk-adopt-{secrets.token_hex(4)}"
    pid_file = tmp_path / "pid"
    # "$$$$" is "$$" after Kubernetes $(VAR) expansion, which turns "$$" into "$".
    script = f"echo $$$$ > {pid_file}; exec python3 -c 'import time; time.sleep(3600)' {marker}"
    create(
        devcluster,
        kube_namespace,
        _pod(
            "longlived",
            agent.node_name,
            [{"name": "c", "image": "python", "command": ["sh", "-c", script]}],
        ),
    )
    wait_until(
        lambda: _status(devcluster, kube_namespace, "longlived").get("phase") == "Running",
        60,
        "Running",
    )
    wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), 30, "the pid file")
    pid = int(pid_file.read_text())
    agent.kill()
    assert psutil.pid_exists(pid), "the process died with the agent"
    restarted = start_agent(name=agent.node_name, provider="process", provider_config=CONFIG)
    restarted.approve_serving_certificate()
    wait_until(
        lambda: _status(devcluster, kube_namespace, "longlived").get("phase") == "Running",
        60,
        "still Running",
    )
    processes = [
        p for p in psutil.process_iter(["cmdline"]) if marker in " ".join(p.info["cmdline"] or [])
    ]
    assert [p.pid for p in processes] == [pid], "adopted, not started again"
    assert _container(devcluster, kube_namespace, "longlived").get("restartCount", 0) == 0
    devcluster.kubectl("delete", "pod", "longlived", "-n", kube_namespace, "--wait=false")
    wait_until(
        lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE,
        60,
        "the process to stop",
    )


def _places_holding(root: Path, needles: list[bytes]) -> list[str]:
    """Every file (binary-safe) or path name under `root` that contains one of `needles`."""
    found = []
    for directory, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            path = Path(directory) / name
            if any(n in os.fsencode(path) for n in needles):
                found.append(f"{path} (its name)")
            if name in files and path.is_file() and not path.is_symlink():
                with contextlib.suppress(OSError):
                    data = path.read_bytes()
                    if any(n in data for n in needles):
                        found.append(str(path))
    return found


def test_secret_values_stay_off_the_state_directory_logs_and_events_across_adoption(
    devcluster: DevCluster, kube_namespace: str, start_agent: AgentFactory, tmp_path: Path
) -> None:
    """Secret values reach the container (env, envFrom, volume) but never the agent's state
    directory, its log or Events, and a container restarted after an agent crash, or after a
    "reboot" that emptied the memory-backed storage, gets them again."""
    agent = _agent(start_agent)
    if agent.volumes_dir.is_relative_to(agent.state_dir):
        pytest.skip("no memory-backed directory here: the agent keeps volumes and env on disk")
    value = f"vk-seed-{secrets.token_hex(16)}"
    needles = [value.encode(), base64.b64encode(value.encode())]
    digest = hashlib.sha256(value.encode()).hexdigest()
    create(
        devcluster,
        kube_namespace,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "creds"},
            "stringData": {"token": value},
        },
    )
    pid_file = tmp_path / "pid"
    mount = str(tmp_path / "creds")
    # The container proves it sees the value three ways (env, envFrom, the secret volume) and
    # logs its digest only: its own log is its business, not the provider's. "$$" is "$" after
    # Kubernetes' $(VAR) expansion.
    from_volume = f'$$(cat "${volume_env_name(mount)}/token")'
    script = (
        f"echo $$$$ > {pid_file}; "
        f'if [ "$TOKEN" = "$FROM_token" ] && [ "$TOKEN" = "{from_volume}" ]; '
        "then echo token $$(printf %s \"$TOKEN\" | sha256sum | cut -d' ' -f1); "
        "else echo token mismatch; fi; exec sleep 3600"
    )
    create(
        devcluster,
        kube_namespace,
        _pod(
            "secretive",
            agent.node_name,
            [
                {
                    "name": "c",
                    "image": "busybox",
                    "command": ["sh", "-c", script],
                    "env": [
                        {
                            "name": "TOKEN",
                            "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}},
                        }
                    ],
                    "envFrom": [{"prefix": "FROM_", "secretRef": {"name": "creds"}}],
                    "volumeMounts": [{"name": "creds", "mountPath": mount, "readOnly": True}],
                }
            ],
            volumes=[{"name": "creds", "secret": {"secretName": "creds"}}],
            terminationGracePeriodSeconds=1,
        ),
    )

    def logged_runs() -> int:
        lines = devcluster.kubectl("logs", "secretive", "-n", kube_namespace, check=False).stdout
        assert "token mismatch" not in lines
        return lines.splitlines().count(f"token {digest}")

    def sees_value() -> None:
        out = devcluster.kubectl("exec", "secretive", "-n", kube_namespace, "--", "env").stdout
        values = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        assert (values["TOKEN"], values["FROM_token"]) == (value, value)

    def stored_nowhere() -> None:
        assert _places_holding(agent.state_dir, needles) == []
        assert value not in agent.log_path.read_text(errors="replace")
        events = devcluster.kubectl("get", "events", "-n", kube_namespace, "-o", "json").stdout
        assert value not in events
        assert needles[1].decode() not in events

    wait_until(lambda: logged_runs() == 1, 60, "the container's digest of the value")
    sees_value()
    # Sanity: the search finds what is there (the secret volume in memory-backed storage).
    assert _places_holding(agent.volumes_dir, needles)
    stored_nowhere()

    # A crash: the pod keeps running, the restarted agent adopts it, and the container restarted
    # after that still gets the value.
    pid = int(wait_until(lambda: pid_file.read_text().strip(), 30, "the pid file"))
    agent.kill()
    restarted = _agent(start_agent, name=agent.node_name)
    wait_until(
        lambda: _status(devcluster, kube_namespace, "secretive").get("phase") == "Running",
        60,
        "secretive still Running",
    )
    assert _container(devcluster, kube_namespace, "secretive").get("restartCount", 0) == 0
    os.kill(pid, signal.SIGKILL)
    wait_until(
        lambda: (
            (c := _container(devcluster, kube_namespace, "secretive")).get("restartCount") == 1
            and "running" in c.get("state", {})
        ),
        60,
        "the container restarted by the new agent",
    )
    wait_until(
        lambda: logged_runs() == 1 and pid_file.read_text().strip() not in ("", str(pid)),
        30,
        "the second run's log",
    )
    sees_value()
    assert restarted.log_path == agent.log_path  # one log file holds both agents' runs
    stored_nowhere()

    # As after a reboot: no shims, no memory-backed storage. The next agent has no env values
    # to restart the container with; the core resolves them again.
    restarted.kill()
    assert kill_shims_under(agent.state_dir) == 1
    shutil.rmtree(agent.volumes_dir)
    _agent(start_agent, name=agent.node_name)
    wait_until(
        lambda: (
            (c := _container(devcluster, kube_namespace, "secretive")).get("restartCount") == 2
            and "running" in c.get("state", {})
        ),
        60,
        "the container restarted after the 'reboot'",
    )
    wait_until(lambda: logged_runs() == 1, 30, "the third run's log")
    sees_value()
    stored_nowhere()


def test_missing_command_is_a_clear_waiting_reason(
    devcluster: DevCluster, kube_namespace: str, start_agent: AgentFactory
) -> None:
    agent = _agent(start_agent)
    create(
        devcluster,
        kube_namespace,
        _pod(
            "typo",
            agent.node_name,
            [{"name": "c", "image": "busybox", "command": ["no-such-program-here"]}],
        ),
    )

    def waiting() -> dict[str, Any] | None:
        state = _container(devcluster, kube_namespace, "typo").get("state", {})
        return (
            state.get("waiting")
            if state.get("waiting", {}).get("reason") == "RunContainerError"
            else None
        )

    reason = wait_until(waiting, 60, "RunContainerError")
    assert "no-such-program-here" in reason["message"]
    assert agent.process is not None
    assert agent.process.poll() is None


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs a root agent")
def test_run_as_user_applies_to_the_container_and_kubectl_exec(
    devcluster: DevCluster, kube_namespace: str, start_agent: AgentFactory
) -> None:
    agent = _agent(start_agent)
    script = "id -u; id -g; id -G; exec sleep 300"
    create(
        devcluster,
        kube_namespace,
        _pod(
            "nobody",
            agent.node_name,
            [{"name": "c", "image": "busybox", "command": ["sh", "-c", script]}],
            securityContext={"runAsUser": 65534, "supplementalGroups": [1234]},
            terminationGracePeriodSeconds=0,
        ),
    )

    def logged() -> list[str] | None:
        lines = devcluster.kubectl("logs", "nobody", "-n", kube_namespace, check=False).stdout
        return lines.splitlines() if len(lines.splitlines()) >= 3 else None

    # No runAsGroup: the primary group of uid 65534 in the host's /etc/passwd (nogroup).
    assert wait_until(logged, 60, "the id output") == ["65534", "65534", "65534 1234"]
    out = devcluster.kubectl("exec", "nobody", "-n", kube_namespace, "--", "id", "-u").stdout
    assert out == "65534\n"


def _port_forward_get(
    cluster: DevCluster, namespace: str, name: str, port: int, path: str
) -> bytes:
    local = _free_port()
    env = dict(os.environ, KUBECONFIG=str(cluster.kubeconfig))
    forwarder = subprocess.Popen(
        [kubectl_path(), "port-forward", "-n", namespace, f"pod/{name}", f"{local}:{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        assert forwarder.stdout is not None
        assert b"Forwarding from" in forwarder.stdout.readline()
        return bytes(urllib.request.urlopen(f"http://127.0.0.1:{local}{path}", timeout=10).read())
    finally:
        forwarder.kill()
        forwarder.wait(10)


def _remove_leftovers(uids: set[str], bridge: str) -> None:
    """After a failed run: the pods' processes, namespaces and veths, and the bridge."""
    tool = ip_tool() or "ip"
    for uid in uids:
        netns, veth = names_for(uid)
        pids = subprocess.run([tool, "netns", "pids", netns], capture_output=True, text=True)
        for pid in pids.stdout.split():
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(pid), 9)
        remove_pod_network(netns, veth)
    subprocess.run([tool, "link", "del", bridge], capture_output=True, check=False)


def test_pod_network_namespaces_same_port_own_ips_and_adoption(
    devcluster: DevCluster, kube_namespace: str, start_agent: AgentFactory
) -> None:
    if os.geteuid() != 0 or missing_capabilities() or ip_tool() is None:
        pytest.skip("network: pod needs root and iproute2")
    bridge = f"vkit{secrets.token_hex(3)}"
    cidr = ipaddress.IPv4Network(f"198.19.{random.randint(1, 99)}.0/24")
    config = {**CONFIG, "network": "pod", "bridge": bridge, "pod_cidr": str(cidr)}
    agent = _agent(start_agent, config=config)
    agents = [agent]
    # Both replicas listen on the same port: each in a network namespace of its own.
    server = "echo I am $(POD_NAME) > index.html; exec python3 -m http.server 8080"
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "twins"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "twins"}},
            "template": {
                "metadata": {"labels": {"app": "twins"}},
                "spec": {
                    "nodeSelector": {"kubernetes.io/hostname": agent.node_name},
                    "tolerations": [TOLERATION],
                    "containers": [
                        {
                            "name": "http",
                            "image": "python:3",
                            "command": ["sh", "-c", server],
                            "ports": [{"name": "http", "containerPort": 8080}],
                            "readinessProbe": {
                                "httpGet": {"path": "/", "port": "http"},
                                "periodSeconds": 1,
                            },
                            "env": [
                                {
                                    "name": "POD_NAME",
                                    "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                                },
                                {
                                    "name": "POD_IP",
                                    "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}},
                                },
                            ],
                        }
                    ],
                },
            },
        },
    }
    uids: set[str] = set()

    def pods() -> list[dict[str, Any]]:
        items = devcluster.get_json("pods", "-n", kube_namespace, "-l", "app=twins")["items"]
        uids.update(p["metadata"]["uid"] for p in items)
        return list(items)

    def ready_pair() -> list[dict[str, Any]] | None:
        found = pods()
        ready = [p for p in found if (condition(p, "Ready") or {}).get("status") == "True"]
        return ready if len(found) == len(ready) == 2 else None

    try:
        create(devcluster, kube_namespace, deployment)
        twins = wait_until(ready_pair, 90, "both replicas Ready")
        ips = {p["metadata"]["name"]: p["status"]["podIP"] for p in twins}
        assert len(set(ips.values())) == 2, ips
        assert all(ipaddress.IPv4Address(ip) in cidr for ip in ips.values()), ips
        assert str(cidr.network_address + 1) not in ips.values()  # the bridge's (gateway)
        for twin in twins:
            name, uid = twin["metadata"]["name"], twin["metadata"]["uid"]
            assert twin["status"]["hostIP"] == devcluster.node_ip
            assert [i["ip"] for i in twin["status"]["podIPs"]] == [ips[name]]
            netns, veth = names_for(uid)
            assert (NETNS_DIR / netns).exists()
            assert (SYS_NET / veth / "master").resolve().name == bridge
            values = dict(
                line.split("=", 1)
                for line in devcluster.kubectl(
                    "exec", name, "-n", kube_namespace, "--", "env"
                ).stdout.splitlines()
                if "=" in line
            )
            assert values["POD_IP"] == ips[name]  # downward API status.podIP: its own address
            inside = devcluster.kubectl(
                "exec", name, "-n", kube_namespace, "--", "ip", "-o", "-4", "addr", "show", "eth0"
            ).stdout
            assert f"inet {ips[name]}/{cidr.prefixlen}" in inside
            page = _port_forward_get(devcluster, kube_namespace, name, 8080, "/index.html")
            assert page == f"I am {name}\n".encode()

        # A restarted agent (after kill -9) adopts the pods with the same addresses.
        agent.kill()
        restarted = start_agent(name=agent.node_name, provider="process", provider_config=config)
        agents.append(restarted)
        restarted.approve_serving_certificate()
        wait_until(ready_pair, 60, "both replicas still Ready after the restart")
        for name, ip in ips.items():
            inside = devcluster.kubectl(
                "exec", name, "-n", kube_namespace, "--", "ip", "-o", "-4", "addr", "show", "eth0"
            ).stdout
            assert f"inet {ip}/" in inside
            page = _port_forward_get(devcluster, kube_namespace, name, 8080, "/index.html")
            assert page == f"I am {name}\n".encode()
        assert {p["metadata"]["name"]: p["status"]["podIP"] for p in pods()} == ips
        assert "adopted 2 pods" in restarted.log()

        # Deleting the pods removes their namespaces and host veths.
        devcluster.kubectl("delete", "deployment", "twins", "-n", kube_namespace, "--wait=false")

        def cleaned_up() -> bool:
            if pods():
                return False
            return not any(
                (NETNS_DIR / names_for(uid)[0]).exists() or (SYS_NET / names_for(uid)[1]).exists()
                for uid in uids
            )

        wait_until(cleaned_up, 60, "the pods, their network namespaces and veths to be gone")
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert not any(names_for(uid)[0] in listed for uid in uids)
        restarted.stop()
        assert not (SYS_NET / bridge).exists(), "the bridge outlived the agent's last pod"
    finally:
        for started in agents:
            started.kill()
        _remove_leftovers(uids, bridge)
