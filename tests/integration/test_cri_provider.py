"""The cri provider end to end: a real containerd (private, started by the fixture) behind a real
API server, driven through kubectl as a user would."""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import os
import secrets
import subprocess
import time
import urllib.request
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from cri_api.v1 import api_pb2 as cri_api

from virtual_kubelet.devcluster import DevCluster, kubectl_path, wait_until
from virtual_kubelet.devcluster.agent import AgentProcess
from virtual_kubelet.devcluster.containerd import DEFAULT_SUBNET, BackendUnavailable, Containerd
from virtual_kubelet.devcluster.oci_images import BUSYBOX
from virtual_kubelet.devcluster.registry import LocalRegistry

from .conftest import TOLERATION, AgentFactory, condition, create, pod
from .cri_backend import containerd, containers, sandboxes
from .terminal import terminal

__all__ = ["containerd"]  # the fixture, imported for pytest


def _agent(
    start_agent: AgentFactory, backend: Containerd, kubeconfig: str | None = None, **kwargs: Any
) -> AgentProcess:
    settings: dict[str, Any] = {
        "runtime_endpoint": backend.endpoint,
        "restart_backoff_seconds": 1,
        "restart_backoff_max_seconds": 4,
    }
    if kubeconfig is not None:
        settings["kubeconfig"] = kubeconfig
    agent = start_agent(provider="cri", provider_config=settings, **kwargs)
    agent.approve_serving_certificate()
    return agent


def _container(name: str, *script: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "image": BUSYBOX,
        "imagePullPolicy": "IfNotPresent",
        "command": ["sh", "-c", *script],
        **extra,
    }


def _pod(name: str, node: str, containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeName": node,
            "tolerations": [TOLERATION],
            "containers": containers,
            "terminationGracePeriodSeconds": 5,
            **spec,
        },
    }


def _status(cluster: DevCluster, namespace: str, name: str) -> dict[str, Any]:
    return (pod(cluster, namespace, name) or {}).get("status", {})


def _state(cluster: DevCluster, namespace: str, name: str, container: str = "main") -> Any:
    for status in _status(cluster, namespace, name).get("containerStatuses") or []:
        if status["name"] == container:
            return status
    return None


def test_httpd_runs_ready_with_a_cni_address_logs_exec_stats_and_delete(
    devcluster: DevCluster,
    kube_namespace: str,
    start_agent: AgentFactory,
    containerd: Containerd,
    tmp_path: Path,
) -> None:
    agent = _agent(start_agent, containerd)
    node = agent.wait_ready()
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")
    web = _container(
        "main",
        "echo serving; mkdir -p /www && echo hello-cri > /www/index.html && exec httpd -f -p 8080 -h /www",
        resources={"limits": {"memory": "64Mi", "cpu": "500m"}},
    )
    template = _pod("web", agent.node_name, [web])
    template["metadata"] = {"labels": {"app": "web"}}
    del template["apiVersion"], template["kind"]
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}}, "template": template},
    }
    create(devcluster, kube_namespace, deployment)
    devcluster.kubectl(
        "rollout", "status", "deployment/web", "-n", kube_namespace, "--timeout=90s", timeout=120
    )
    (ready,) = devcluster.get_json("pods", "-n", kube_namespace, "-l", "app=web")["items"]
    name = ready["metadata"]["name"]
    assert (condition(ready, "Ready") or {}).get("status") == "True"
    ip = ready["status"]["podIP"]
    assert ipaddress.ip_address(ip) in ipaddress.ip_network(DEFAULT_SUBNET)
    with urllib.request.urlopen(f"http://{ip}:8080/index.html", timeout=10) as answer:
        assert answer.read() == b"hello-cri\n"

    forwarder = subprocess.Popen(
        [kubectl_path(), "port-forward", "-n", kube_namespace, f"pod/{name}", ":8080"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(os.environ, KUBECONFIG=str(devcluster.kubeconfig)),
    )
    try:
        assert forwarder.stdout is not None
        line = forwarder.stdout.readline().decode()
        local = int(line.split("127.0.0.1:", 1)[1].split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{local}/index.html", timeout=10) as page:
            assert page.read() == b"hello-cri\n"
    finally:
        forwarder.kill()
        forwarder.wait(10)

    answered = devcluster.kubectl(
        "exec",
        "-i",
        "-n",
        kube_namespace,
        name,
        "--",
        "sh",
        "-c",
        "read x; echo got:$x; exit 4",
        input="line\n",
        check=False,
    )
    assert (answered.returncode, answered.stdout) == (4, "got:line\n")
    copied = tmp_path / "copied.html"
    devcluster.kubectl("cp", f"{kube_namespace}/{name}:/www/index.html", str(copied))
    assert copied.read_text() == "hello-cri\n"

    logs = devcluster.kubectl("logs", "-n", kube_namespace, name)
    assert logs.stdout == "serving\n"
    done = devcluster.kubectl(
        "exec", "-n", kube_namespace, name, "--", "sh", "-c", "echo from-exec; exit 3", check=False
    )
    assert (done.returncode, done.stdout) == (3, "from-exec\n")

    def stats() -> dict[str, Any] | None:
        raw = devcluster.kubectl(
            "get", "--raw", f"/api/v1/nodes/{agent.node_name}/proxy/stats/summary"
        )
        for entry in json.loads(raw.stdout)["pods"]:
            if entry["podRef"]["name"] == name and entry["memory"]["workingSetBytes"] > 0:
                return entry
        return None

    summary = wait_until(stats, 30, "stats for pod web")
    assert summary["cpu"]["usageCoreNanoSeconds"] > 0

    uid = ready["metadata"]["uid"]
    assert len(sandboxes(containerd, uid)) == 1
    devcluster.kubectl("delete", "deployment", "-n", kube_namespace, "web")
    wait_until(lambda: pod(devcluster, kube_namespace, name) is None, 30, "the pod to be gone")
    assert sandboxes(containerd, uid) == []
    assert containers(containerd, uid) == []


def test_waiting_reasons_exit_codes_and_restarts(
    devcluster: DevCluster, kube_namespace: str, start_agent: AgentFactory, containerd: Containerd
) -> None:
    agent = _agent(start_agent, containerd)
    node = agent.node_name
    missing = {
        "name": "main",
        "image": "127.0.0.1:1/nothing/here:1",
        "imagePullPolicy": "IfNotPresent",
    }
    bad_command = {**_container("main"), "command": ["/no/such/program"]}
    job = _container("main", "echo working; exit 3")
    oom = _container(
        "main",
        "echo eating; head -c 200000000 /dev/zero | tail > /dev/null",
        resources={"limits": {"memory": "16Mi"}},
    )
    init = _container("setup", "echo prepared > /work/ready")
    uses_init = _container("main", "cat /work/ready; exec sleep 3600")
    for name, containers_, spec in (
        ("missing", [missing], {}),
        ("bad-command", [bad_command], {}),
        ("job", [job], {"restartPolicy": "Never"}),
        ("oom", [oom], {}),
    ):
        create(devcluster, kube_namespace, _pod(name, node, containers_, **spec))
    volume = {"name": "work", "emptyDir": {}}
    mount = [{"name": "work", "mountPath": "/work"}]
    create(
        devcluster,
        kube_namespace,
        _pod(
            "with-init",
            node,
            [{**uses_init, "volumeMounts": mount}],
            initContainers=[{**init, "volumeMounts": mount}],
            volumes=[volume],
        ),
    )

    def waiting(name: str, reason: str) -> dict[str, Any] | None:
        state = (_state(devcluster, kube_namespace, name) or {}).get("state", {})
        found = state.get("waiting")
        return found if found and found.get("reason") == reason else None

    pulled = wait_until(lambda: waiting("missing", "ErrImagePull"), 60, "ErrImagePull")
    assert "127.0.0.1:1" in pulled.get("message", "")
    wait_until(lambda: waiting("missing", "ImagePullBackOff"), 60, "ImagePullBackOff")

    def start_failed() -> Any:
        status = _state(devcluster, kube_namespace, "bad-command") or {}
        last = status.get("lastState", {}).get("terminated") or {}
        return last.get("reason") == "StartError" and status

    failed = wait_until(start_failed, 60, "bad-command to fail to start")
    assert "/no/such/program" in failed["lastState"]["terminated"]["message"]

    def finished() -> Any:
        status = _status(devcluster, kube_namespace, "job")
        return status.get("phase") == "Failed" and status

    done = wait_until(finished, 60, "the job pod to fail")
    terminated = done["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (3, "Error")
    assert devcluster.kubectl("logs", "-n", kube_namespace, "job").stdout == "working\n"

    def oom_killed_and_restarted() -> Any:
        status = _state(devcluster, kube_namespace, "oom") or {}
        last = status.get("lastState", {}).get("terminated") or {}
        return last.get("reason") == "OOMKilled" and status["restartCount"] >= 1 and status

    wait_until(oom_killed_and_restarted, 90, "the oom pod to be OOMKilled and restarted")
    previous = devcluster.kubectl("logs", "--previous", "-n", kube_namespace, "oom")
    assert previous.stdout.startswith("eating\n")  # the run before the current one

    def init_ran() -> Any:
        status = _status(devcluster, kube_namespace, "with-init")
        return status.get("phase") == "Running" and status

    ran = wait_until(init_ran, 60, "with-init to run")
    init_state = ran["initContainerStatuses"][0]["state"]["terminated"]
    assert (init_state["exitCode"], init_state["reason"]) == (0, "Completed")
    logs = devcluster.kubectl("logs", "-n", kube_namespace, "with-init", "-c", "main")
    assert logs.stdout == "prepared\n"


def test_kill_9_of_the_agent_adopts_running_containers(
    devcluster: DevCluster, kube_namespace: str, start_agent: AgentFactory, containerd: Containerd
) -> None:
    agent = _agent(start_agent, containerd)
    create(
        devcluster,
        kube_namespace,
        _pod("sleeper", agent.node_name, [_container("main", "echo up; exec sleep 3600")]),
    )
    first = wait_until(
        lambda: (
            (_state(devcluster, kube_namespace, "sleeper") or {}).get("state", {}).get("running")
            and _state(devcluster, kube_namespace, "sleeper")
        ),
        60,
        "sleeper to run",
    )
    agent.kill()
    _agent(start_agent, containerd, name=agent.node_name)
    logs = devcluster.kubectl("logs", "-n", kube_namespace, "sleeper")  # from the new agent
    assert logs.stdout == "up\n"
    again = _state(devcluster, kube_namespace, "sleeper")
    assert again["containerID"] == first["containerID"]
    assert again["restartCount"] == 0
    uid = pod(devcluster, kube_namespace, "sleeper")["metadata"]["uid"]  # type: ignore[index]
    assert len(sandboxes(containerd, uid)) == 1
    assert len(containers(containerd, uid)) == 1
    devcluster.kubectl("delete", "pod", "-n", kube_namespace, "sleeper", "--wait=false")
    wait_until(lambda: sandboxes(containerd, uid) == [], 30, "the sandbox to be removed")


def test_unreachable_runtime_makes_the_node_not_ready_until_it_returns(
    devcluster: DevCluster, start_agent: AgentFactory, containerd: Containerd, tmp_path: Any
) -> None:
    socket = tmp_path / "runtime.sock"
    agent = start_agent(
        ready=False,
        provider="cri",
        provider_config={"runtime_endpoint": f"unix://{socket}", "call_timeout_seconds": 2},
    )

    def ready_condition() -> Any:
        result = devcluster.kubectl("get", "node", agent.node_name, "-o", "json", check=False)
        if result.returncode != 0:
            return None
        for c in json.loads(result.stdout)["status"].get("conditions", []):
            if c["type"] == "Ready":
                return c
        return None

    not_ready = wait_until(
        lambda: (c := ready_condition()) and c["status"] == "False" and c, 60, "NotReady"
    )
    assert "unreachable" in not_ready.get("message", ""), not_ready
    assert agent.process is not None
    assert agent.process.poll() is None, "the agent must not crash"
    socket.symlink_to(containerd.socket)  # the runtime "comes back" at that address
    agent.wait_ready(timeout=60)


def test_backend_helper_is_idempotent(containerd: Containerd) -> None:
    pid = containerd.pid()
    containerd.up()
    assert containerd.pid() == pid
    listed = subprocess.run(
        ["ctr", "--address", str(containerd.socket), "-n", "k8s.io", "images", "ls", "-q"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert BUSYBOX in listed.stdout.split()


def _pull_secret(name: str, host: str, user: str, password: str) -> dict[str, Any]:
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    config = {"auths": {host: {"username": user, "password": password, "auth": auth}}}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": base64.b64encode(json.dumps(config).encode()).decode()},
    }


def test_pull_from_a_local_registry_with_an_image_pull_secret(
    devcluster: DevCluster,
    kube_namespace: str,
    start_agent: AgentFactory,
    containerd: Containerd,
    tmp_path: Path,
) -> None:
    password = secrets.token_hex(8)
    try:
        registry = LocalRegistry(tmp_path / "registry", "puller", password).start()
    except BackendUnavailable as exc:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"no local registry here: {exc}")
    try:
        registry.trust_from(containerd)
        image = registry.push(containerd, BUSYBOX, f"vk/busybox-{secrets.token_hex(3)}:1")
        wrong = "not-" + password
        create(devcluster, kube_namespace, _pull_secret("good", registry.host, "puller", password))
        create(devcluster, kube_namespace, _pull_secret("bad", registry.host, "puller", wrong))
        agent = _agent(start_agent, containerd, kubeconfig=str(devcluster.kubeconfig))
        pulled = {**_container("main", "echo pulled; exec sleep 3600"), "image": image}
        pulled["imagePullPolicy"] = "Always"
        for name, secret in (("with-secret", "good"), ("wrong-secret", "bad")):
            spec = _pod(name, agent.node_name, [pulled], imagePullSecrets=[{"name": secret}])
            create(devcluster, kube_namespace, spec)

        def running() -> Any:
            state = (_state(devcluster, kube_namespace, "with-secret") or {}).get("state", {})
            if not state.get("running"):
                raise AssertionError(state)  # shown if it never runs
            return state

        wait_until(running, 60, "the pod pulled with the right secret to run")
        logs = devcluster.kubectl("logs", "-n", kube_namespace, "with-secret")
        assert logs.stdout == "pulled\n"

        def waiting(reason: str) -> Any:
            state = (_state(devcluster, kube_namespace, "wrong-secret") or {}).get("state", {})
            found = state.get("waiting") or {}
            return found if found.get("reason") == reason else None

        refused = wait_until(lambda: waiting("ErrImagePull"), 60, "ErrImagePull")
        assert "401 Unauthorized" in refused["message"], refused
        assert password not in refused["message"]
        assert wrong not in refused["message"]
        wait_until(lambda: waiting("ImagePullBackOff"), 60, "ImagePullBackOff")
        assert password not in agent.log()
        assert wrong not in agent.log()
    finally:
        registry.stop()


def test_deletion_runs_the_pre_stop_hook_and_logs_follow(
    devcluster: DevCluster,
    kube_namespace: str,
    start_agent: AgentFactory,
    containerd: Containerd,
    tmp_path: Path,
) -> None:
    agent = _agent(start_agent, containerd)
    hook_dir = tmp_path / "hook"
    hook_dir.mkdir()
    ticker = _container(
        "main",
        "trap 'echo terminated; exit 0' TERM; i=0; while true; do echo tick-$i; i=$((i+1)); sleep 0.2; done",
        volumeMounts=[{"name": "hook", "mountPath": "/hook"}],
        lifecycle={"preStop": {"exec": {"command": ["sh", "-c", "echo hook-ran > /hook/done"]}}},
    )
    spec = _pod(
        "ticker",
        agent.node_name,
        [ticker],
        volumes=[{"name": "hook", "hostPath": {"path": str(hook_dir)}}],
        terminationGracePeriodSeconds=20,
    )
    create(devcluster, kube_namespace, spec)
    wait_until(
        lambda: (
            (_state(devcluster, kube_namespace, "ticker") or {}).get("state", {}).get("running")
        ),
        60,
        "ticker to run",
    )
    follower = subprocess.Popen(
        [kubectl_path(), "logs", "-f", "-n", kube_namespace, "ticker"],
        stdout=subprocess.PIPE,
        env=dict(os.environ, KUBECONFIG=str(devcluster.kubeconfig)),
    )
    try:
        assert follower.stdout is not None
        seen = [follower.stdout.readline() for _ in range(5)]
        assert seen[-1].startswith(b"tick-")  # new lines arrive while it runs
    finally:
        follower.kill()
        follower.wait(10)
    uid = pod(devcluster, kube_namespace, "ticker")["metadata"]["uid"]  # type: ignore[index]
    started = time.monotonic()
    devcluster.kubectl("delete", "pod", "-n", kube_namespace, "ticker", "--wait=false")
    wait_until(lambda: sandboxes(containerd, uid) == [], 30, "the sandbox to be removed")
    assert time.monotonic() - started < 20  # the trap ended it, not the grace period's kill
    assert (hook_dir / "done").read_text() == "hook-ran\n"


def test_exec_stdin_ends_cp_into_the_pod_and_a_terminal_with_resize_and_exit_code(
    devcluster: DevCluster,
    kube_namespace: str,
    start_agent: AgentFactory,
    containerd: Containerd,
    tmp_path: Path,
) -> None:
    agent = _agent(start_agent, containerd)
    create(
        devcluster,
        kube_namespace,
        _pod("shell", agent.node_name, [_container("main", "exec sleep 3600")]),
    )
    wait_until(
        lambda: (_state(devcluster, kube_namespace, "shell") or {}).get("state", {}).get("running"),
        60,
        "shell to run",
    )
    payload = "".join(f"line {i}\n" for i in range(2000))
    piped = devcluster.kubectl(
        "exec", "-i", "-n", kube_namespace, "shell", "--", "cat", input=payload
    )
    assert piped.stdout == payload  # cat only ends when stdin ends: the end arrived
    upload = tmp_path / "upload.bin"
    upload.write_bytes(os.urandom(200_000))
    devcluster.kubectl("cp", str(upload), f"{kube_namespace}/shell:/tmp/upload.bin")
    digest = devcluster.kubectl(
        "exec", "-n", kube_namespace, "shell", "--", "md5sum", "/tmp/upload.bin"
    ).stdout.split()[0]
    assert digest == hashlib.md5(upload.read_bytes()).hexdigest()

    # The first size may arrive just after the shell starts (busybox stty then prints nothing
    # on stdout): wait for it.
    script = (
        'until s=$(stty size 2>/dev/null) && [ -n "$s" ]; do sleep 0.1; done; echo $s; '
        # then the size after the resize, once it has arrived; then a line of input.
        'while [ "$(stty size)" = "$s" ]; do sleep 0.1; done; stty size; read x; exit 5'
    )
    command = (
        f"KUBECONFIG={devcluster.kubeconfig} {kubectl_path()} exec -it -n {kube_namespace} "
        f"shell -- sh -c '{script}'; echo rc=$?; sleep 60"
    )
    with terminal(command) as tty:

        def sized(text: str) -> bool:
            shown = tty.screen()
            if text not in shown:
                raise AssertionError(shown)  # what the terminal showed, if it never comes
            return True

        wait_until(lambda: sized("24 80"), 30, "the terminal size to arrive")
        tty.resize(120, 40)
        wait_until(lambda: "40 120" in tty.screen(), 30, "the resize to arrive")
        tty.type("go")
        wait_until(lambda: "rc=5" in tty.screen(), 30, "the exit code")


def test_readiness_and_liveness_probes(
    devcluster: DevCluster, kube_namespace: str, start_agent: AgentFactory, containerd: Containerd
) -> None:
    agent = _agent(start_agent, containerd)
    web = _container(
        "main",
        "mkdir -p /www && touch /www/healthz && exec httpd -f -p 8080 -h /www",
        readinessProbe={"exec": {"command": ["test", "-f", "/tmp/ready"]}, "periodSeconds": 1},
        livenessProbe={
            "httpGet": {"path": "/healthz", "port": 8080},
            "periodSeconds": 1,
            "failureThreshold": 2,
        },
    )
    create(
        devcluster,
        kube_namespace,
        _pod("probed", agent.node_name, [web], terminationGracePeriodSeconds=2),
    )

    def main_state() -> dict[str, Any]:
        return _state(devcluster, kube_namespace, "probed") or {}

    wait_until(lambda: main_state().get("state", {}).get("running"), 60, "probed to run")
    assert main_state()["ready"] is False  # /tmp/ready is not there yet
    devcluster.kubectl("exec", "-n", kube_namespace, "probed", "--", "touch", "/tmp/ready")
    wait_until(lambda: main_state().get("ready"), 30, "the readiness probe to pass")
    assert (condition(pod(devcluster, kube_namespace, "probed"), "Ready") or {})["status"] == "True"

    devcluster.kubectl("exec", "-n", kube_namespace, "probed", "--", "rm", "/www/healthz")
    restarted = wait_until(
        lambda: main_state().get("restartCount", 0) >= 1 and main_state(),
        60,
        "the liveness probe to restart the container",
    )
    assert restarted["lastState"]["terminated"]["exitCode"] == 137  # killed after the grace period
    wait_until(lambda: main_state().get("state", {}).get("running"), 60, "the new run")
    assert main_state()["ready"] is False  # a new run: /tmp/ready is gone with the old one


def test_a_runtime_restart_makes_the_node_not_ready_and_keeps_the_containers(
    devcluster: DevCluster, kube_namespace: str, start_agent: AgentFactory, tmp_path: Path
) -> None:
    # A containerd of its own (its own bridge and subnet): the shared one keeps running.
    backend = Containerd(tmp_path / "ctrd", bridge="vkcri1", subnet="10.244.78.0/24")
    try:
        backend.up()
    except BackendUnavailable as exc:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"no containerd here: {exc}")
    try:
        agent = _agent(start_agent, backend)
        create(
            devcluster,
            kube_namespace,
            _pod("survivor", agent.node_name, [_container("main", "exec sleep 3600")]),
        )
        before = wait_until(
            lambda: (
                (s := _state(devcluster, kube_namespace, "survivor") or {})
                .get("state", {})
                .get("running")
                and s
            ),
            60,
            "survivor to run",
        )

        def ready() -> Any:
            result = devcluster.kubectl("get", "node", agent.node_name, "-o", "json")
            for c in json.loads(result.stdout)["status"].get("conditions", []):
                if c["type"] == "Ready":
                    return c
            return None

        backend.stop_daemon()
        down = wait_until(lambda: (c := ready()) and c["status"] == "False" and c, 60, "NotReady")
        assert "unreachable" in down["message"]
        backend.up()
        wait_until(lambda: (c := ready()) and c["status"] == "True", 60, "Ready again")
        after = _state(devcluster, kube_namespace, "survivor")
        assert after["containerID"] == before["containerID"]
        assert after["restartCount"] == 0
        assert "running" in after["state"]
    finally:
        backend.down()


def test_post_start_hooks_run_before_the_pod_goes_on_and_a_failing_one_restarts(
    devcluster: DevCluster, kube_namespace: str, start_agent: AgentFactory, containerd: Containerd
) -> None:
    agent = _agent(start_agent, containerd)
    hooked = _container(
        "main",
        "until [ -f /tmp/started ]; do sleep 0.1; done; cat /tmp/started; exec sleep 3600",
        lifecycle={"postStart": {"exec": {"command": ["sh", "-c", "echo hooked > /tmp/started"]}}},
    )
    failing = _container(
        "main",
        "exec sleep 3600",
        lifecycle={"postStart": {"exec": {"command": ["sh", "-c", "exit 7"]}}},
    )
    for name, container in (("hooked", hooked), ("hook-fails", failing)):
        spec = _pod(name, agent.node_name, [container], terminationGracePeriodSeconds=1)
        create(devcluster, kube_namespace, spec)
    wait_until(
        lambda: (
            devcluster.kubectl("logs", "-n", kube_namespace, "hooked", check=False).stdout
            == "hooked\n"
        ),
        60,
        "the hook's file to be seen by the container",
    )

    def failed_hook() -> Any:
        status = _state(devcluster, kube_namespace, "hook-fails") or {}
        last = status.get("lastState", {}).get("terminated") or {}
        restarted = status.get("restartCount", 0) >= 1
        return restarted and last.get("message", "").startswith("PostStartHookError") and status

    status = wait_until(failed_hook, 60, "the failed postStart hook to restart the container")
    assert "exited with 7" in status["lastState"]["terminated"]["message"]


def test_a_new_image_replaces_the_running_container(
    devcluster: DevCluster, kube_namespace: str, start_agent: AgentFactory, containerd: Containerd
) -> None:
    updated = "localhost/busybox:updated"
    containerd.ctr("images", "tag", "--force", BUSYBOX, updated)
    agent = _agent(start_agent, containerd)
    spec = _pod("changing", agent.node_name, [_container("main", "exec sleep 3600")])
    spec["spec"]["restartPolicy"] = "Never"  # a new image restarts it all the same
    spec["spec"]["terminationGracePeriodSeconds"] = 1
    create(devcluster, kube_namespace, spec)
    before = wait_until(
        lambda: (
            (s := _state(devcluster, kube_namespace, "changing") or {})
            .get("state", {})
            .get("running")
            and s
        ),
        60,
        "changing to run",
    )
    devcluster.kubectl("set", "image", "-n", kube_namespace, "pod/changing", f"main={updated}")

    def replaced() -> Any:
        status = _state(devcluster, kube_namespace, "changing") or {}
        new_run = status.get("containerID") != before["containerID"]
        return new_run and status.get("state", {}).get("running") and status

    after = wait_until(replaced, 60, "the container to run the new image")
    assert after["image"] == updated
    assert after["restartCount"] == 1
    assert _status(devcluster, kube_namespace, "changing")["phase"] == "Running"


def test_active_deadline_fails_the_pod_and_stops_its_containers(
    devcluster: DevCluster, kube_namespace: str, start_agent: AgentFactory, containerd: Containerd
) -> None:
    agent = _agent(start_agent, containerd)
    spec = _pod(
        "deadline",
        agent.node_name,
        [_container("main", "trap 'exit 0' TERM; while true; do sleep 0.2; done")],
        activeDeadlineSeconds=8,
        terminationGracePeriodSeconds=3,
    )
    create(devcluster, kube_namespace, spec)
    running = wait_until(
        lambda: (
            (_state(devcluster, kube_namespace, "deadline") or {}).get("state", {}).get("running")
        ),
        60,
        "the pod to run",
    )
    assert running

    def failed() -> Any:
        status = _status(devcluster, kube_namespace, "deadline")
        terminated = ((status.get("containerStatuses") or [{}])[0].get("state") or {}).get(
            "terminated"
        )
        return status.get("phase") == "Failed" and terminated and status

    status = wait_until(failed, 60, "the pod to fail past its deadline")
    assert status["reason"] == "DeadlineExceeded"
    assert "deadline" in status["message"]
    main = status["containerStatuses"][0]
    # SIGTERM reached the container (its trap exited 0): a graceful stop, not a restart.
    assert main["state"]["terminated"]["exitCode"] == 0
    assert main["restartCount"] == 0
    uid = (pod(devcluster, kube_namespace, "deadline") or {})["metadata"]["uid"]
    runs = containers(containerd, uid)
    # One run, exited: nothing left running, nothing restarted.
    assert [c.state for c in runs] == [cri_api.CONTAINER_EXITED]  # type: ignore[attr-defined]
    ready = condition(pod(devcluster, kube_namespace, "deadline"), "Ready") or {}
    assert ready.get("status") == "False"


def test_termination_messages_from_the_file_and_from_the_logs(
    devcluster: DevCluster, kube_namespace: str, start_agent: AgentFactory, containerd: Containerd
) -> None:
    agent = _agent(start_agent, containerd)
    node = agent.node_name
    fallback = {"terminationMessagePolicy": "FallbackToLogsOnError"}
    pods = {
        "default-path": _container("main", "printf 'written by the app' > /dev/termination-log"),
        "custom-path": _container(
            "main",
            "echo not this; printf 'custom path' > /tmp/why; exit 2",
            terminationMessagePath="/tmp/why",
            securityContext={"runAsUser": 1000},  # not root: the file is still writable
        ),
        "from-logs": _container("main", "echo first; echo 'it went wrong'; exit 3", **fallback),
        "file-wins": _container(
            "main", "echo noise; printf 'from the file' > /dev/termination-log; exit 4", **fallback
        ),
        "success": _container("main", "echo all fine", **fallback),
    }
    for name, container in pods.items():
        create(devcluster, kube_namespace, _pod(name, node, [container], restartPolicy="Never"))

    def terminated(name: str) -> Any:
        state = (_state(devcluster, kube_namespace, name) or {}).get("state", {})
        return state.get("terminated")

    found = {name: wait_until(partial(terminated, name), 90, f"{name} to end") for name in pods}
    assert found["default-path"].get("message") == "written by the app"
    assert (found["custom-path"]["exitCode"], found["custom-path"].get("message")) == (
        2,
        "custom path",
    )
    assert found["from-logs"].get("message") == "first\nit went wrong\n"
    assert found["file-wins"].get("message") == "from the file"
    assert "message" not in found["success"]  # FallbackToLogsOnError only on an error
