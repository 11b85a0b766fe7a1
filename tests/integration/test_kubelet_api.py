"""The kubelet API end to end: real kubectl -> real API server -> this agent's kubelet port."""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import secrets
import socket
import subprocess
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from virtual_kubelet.devcluster import DevCluster, kubectl_path, wait_until
from virtual_kubelet.devcluster.agent import AgentProcess

from .conftest import create, pod, pod_manifest
from .terminal import terminal


@dataclass
class ApiNode:
    agent: AgentProcess
    namespace: str
    cluster: DevCluster

    def kubectl(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return self.cluster.kubectl("-n", self.namespace, *args, **kwargs)


@pytest.fixture(scope="module")
def api_node(devcluster: DevCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiNode]:
    name = f"vk-api-{secrets.token_hex(3)}"
    # A short stream-creation timeout keeps the hostile-input test quick: a client that upgrades
    # and then stalls is dropped after it.
    agent = AgentProcess(
        devcluster, name, tmp_path_factory.mktemp(name), args=["--stream-creation-timeout", "5s"]
    ).start()
    namespace = f"kubelet-api-{secrets.token_hex(3)}"
    try:
        agent.wait_ready()
        agent.approve_serving_certificate()
        devcluster.kubectl("create", "namespace", namespace)
        manifest = pod_manifest(
            "web", name, annotations={"mock.virtual-kubelet.io/log-every-seconds": "0.5"}
        )
        manifest["spec"]["containers"][0]["env"] = [{"name": "GREETING", "value": "hello"}]
        create(devcluster, namespace, manifest)
        wait_until(
            lambda: (
                (pod(devcluster, namespace, "web") or {}).get("status", {}).get("phase")
                == "Running"
            ),
            60,
            "the pod to run",
        )
        yield ApiNode(agent, namespace, devcluster)
    finally:
        agent.stop()
        agent.cleanup()
        devcluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        devcluster.kubectl("delete", "node", name, "--wait=false", check=False)


# --- logs ------------------------------------------------------------------------------------------


def test_logs_tail_timestamps_limit_and_since(api_node: ApiNode) -> None:
    wait_until(lambda: "tick 3" in api_node.kubectl("logs", "web").stdout, 30, "a few ticks")
    full = api_node.kubectl("logs", "web").stdout.splitlines()
    assert full[0].startswith("mock: container main of pod")
    two = api_node.kubectl("logs", "web", "--tail=2").stdout.splitlines()
    assert len(two) == 2
    first, second = (int(line.split()[1]) for line in two)
    assert second == first + 1  # the last two lines, in order
    tail = api_node.kubectl("logs", "web", "--tail=1").stdout.splitlines()
    assert len(tail) == 1
    assert tail[0].startswith("tick ")
    stamped = api_node.kubectl("logs", "web", "--timestamps", "--tail=2").stdout.splitlines()
    assert len(stamped) == 2
    assert all(
        re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z (tick \d+|mock: )", line)
        for line in stamped
    )
    assert api_node.kubectl("logs", "web", "--limit-bytes=7").stdout == "mock: c"
    recent = api_node.kubectl("logs", "web", "--since=1s").stdout.splitlines()
    assert recent, "the pod ticks twice a second"
    assert all(line.startswith("tick ") for line in recent)  # the start line is older than 1 s

    # Bad values straight to the kubelet port (kubectl would refuse some itself): 400 + reason.
    import http.client
    import ssl

    cluster = api_node.cluster
    ctx = ssl.create_default_context(cafile=str(cluster.ca.cert))
    ctx.check_hostname = False
    ctx.load_cert_chain(str(cluster.kubelet_client.cert), str(cluster.kubelet_client.key))
    base = f"/containerLogs/{api_node.namespace}/web/main"
    for query, reason in (
        ("tailLines=-5", "tailLines must be at least 0"),
        ("sinceSeconds=5&sinceTime=2026-01-01T00:00:00Z", "cannot both be set"),
        ("limitBytes=lots", "not an integer"),
    ):
        conn = http.client.HTTPSConnection(
            cluster.node_ip, api_node.agent.kubelet_port, context=ctx, timeout=10
        )
        try:
            conn.request("GET", f"{base}?{query}")
            response = conn.getresponse()
            assert response.status == 400, query
            assert reason in response.read().decode(), query
        finally:
            conn.close()


def test_logs_follow_streams_lines_as_they_are_written(api_node: ApiNode) -> None:
    env = dict(os.environ, KUBECONFIG=str(api_node.cluster.kubeconfig))
    process = subprocess.Popen(
        [kubectl_path(), "logs", "-f", "web", "-n", api_node.namespace, "--tail=0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        assert process.stdout is not None
        seen: list[str] = []
        started = time.monotonic()
        while len(seen) < 3:
            line = process.stdout.readline().decode()
            assert line, process.stderr.read().decode() if process.stderr else ""
            seen.append(line)
        elapsed = time.monotonic() - started
        numbers = [int(x.split()[1]) for x in seen]
        assert numbers == sorted(numbers)
        assert numbers[-1] - numbers[0] == 2  # consecutive ticks, delivered as they happen
        assert elapsed >= 0.5  # they arrived over time, not as one burst of history
    finally:
        process.kill()
        process.wait(10)


# --- exec, attach, cp --------------------------------------------------------------------------------


def test_exec_stdout_stderr_and_exit_code(api_node: ApiNode) -> None:
    result = api_node.kubectl("exec", "web", "--", "echo", "hello", "world")
    assert result.stdout == "hello world\n"
    failed = api_node.kubectl("exec", "web", "--", "sh", "-c", "exit 3", check=False)
    assert failed.returncode == 3
    err = api_node.kubectl("exec", "web", "--", "stderr", "to", "stderr")
    assert err.stdout == ""
    assert err.stderr == "to stderr\n"
    missing = api_node.kubectl("exec", "web", "--", "no-such-command", check=False)
    assert missing.returncode == 127
    env = api_node.kubectl("exec", "web", "--", "env").stdout
    assert "GREETING=hello" in env.splitlines()


def test_exec_stdin_reaches_the_command_with_eof(api_node: ApiNode) -> None:
    payload = "".join(f"line {i}\n" for i in range(2000))
    result = api_node.kubectl("exec", "-i", "web", "--", "cat", input=payload)
    assert result.stdout == payload  # cat only ends when stdin ends: EOF arrived


def test_exec_with_tty_and_resize(api_node: ApiNode, tmp_path: Path) -> None:
    env = f"KUBECONFIG={api_node.cluster.kubeconfig}"
    command = f"{env} {kubectl_path()} exec -it web -n {api_node.namespace} -- watch-size; sleep 30"
    with terminal(command) as tty:
        wait_until(lambda: "size 80x24" in tty.screen(), 30, "the terminal size to arrive")
        tty.resize(120, 40)
        wait_until(lambda: "size 120x40" in tty.screen(), 30, "the resize to arrive")


def test_attach_echoes_input_to_the_console(api_node: ApiNode) -> None:
    marker = f"attached-{secrets.token_hex(3)}"
    env = dict(os.environ, KUBECONFIG=str(api_node.cluster.kubeconfig))
    process = subprocess.Popen(
        [kubectl_path(), "attach", "-i", "web", "-n", api_node.namespace],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        assert process.stdin is not None
        assert process.stdout is not None
        process.stdin.write(f"{marker}\n".encode())
        process.stdin.flush()
        seen = b""
        while marker.encode() not in seen:
            chunk = process.stdout.readline()
            assert chunk, "attach ended before echoing"
            seen += chunk
    finally:
        process.kill()
        process.wait(10)
    wait_until(
        lambda: marker in api_node.kubectl("logs", "web").stdout, 10, "the input in the logs"
    )


def test_cp_to_and_from_the_pod(api_node: ApiNode, tmp_path: Path) -> None:
    source = tmp_path / "upload.bin"
    source.write_bytes(os.urandom(300_000))
    api_node.kubectl("cp", str(source), f"{api_node.namespace}/web:/data/upload.bin")
    assert "/data/upload.bin" in api_node.kubectl("exec", "web", "--", "ls", "/data").stdout
    back = tmp_path / "back.bin"
    api_node.kubectl("cp", f"{api_node.namespace}/web:/data/upload.bin", str(back))
    assert back.read_bytes() == source.read_bytes()


# --- port-forward ------------------------------------------------------------------------------------


def test_port_forward_carries_10_mb_both_ways_on_several_connections(api_node: ApiNode) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        local = probe.getsockname()[1]
    env = dict(os.environ, KUBECONFIG=str(api_node.cluster.kubeconfig))
    forwarder = subprocess.Popen(
        [kubectl_path(), "port-forward", "-n", api_node.namespace, "pod/web", f"{local}:8080"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        assert forwarder.stdout is not None
        assert b"Forwarding from" in forwarder.stdout.readline()
        results: dict[int, bool] = {}

        def roundtrip(index: int, size: int) -> None:
            data = os.urandom(size)
            received = bytearray()
            with socket.create_connection(("127.0.0.1", local), timeout=60) as conn:
                reader = threading.Thread(target=lambda: _read_exactly(conn, size, received))
                reader.start()
                conn.sendall(data)
                reader.join(120)
            results[index] = hashlib.sha256(received).digest() == hashlib.sha256(data).digest()

        threads = [threading.Thread(target=roundtrip, args=(0, 10 * 1024 * 1024))]
        threads += [threading.Thread(target=roundtrip, args=(i, 256 * 1024)) for i in range(1, 4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(180)
        assert results == {0: True, 1: True, 2: True, 3: True}
    finally:
        forwarder.kill()
        forwarder.wait(10)


def _read_exactly(conn: socket.socket, size: int, into: bytearray) -> None:
    while len(into) < size:
        chunk = conn.recv(1 << 20)
        if not chunk:
            return
        into.extend(chunk)


# --- read-only routes through the node proxy --------------------------------------------------------------


def test_node_proxy_pods_stats_and_resource_metrics(api_node: ApiNode) -> None:
    node = api_node.agent.node_name

    def raw(route):
        return api_node.cluster.kubectl(
            "get", "--raw", f"/api/v1/nodes/{node}/proxy/{route}"
        ).stdout

    pods = json.loads(raw("pods"))
    assert pods["kind"] == "PodList"
    assert [p["metadata"]["name"] for p in pods["items"]] == ["web"]
    summary = json.loads(raw("stats/summary"))
    assert summary["node"]["nodeName"] == node
    (pod_stats,) = summary["pods"]
    assert pod_stats["podRef"]["name"] == "web"
    container = pod_stats["containers"][0]
    assert pod_stats["cpu"]["usageNanoCores"] == container["cpu"]["usageNanoCores"] > 0  # adds up
    assert (
        summary["node"]["memory"]["workingSetBytes"] >= pod_stats["memory"]["workingSetBytes"] > 0
    )
    metrics = raw("metrics/resource")
    line = next(
        x for x in metrics.splitlines() if x.startswith("container_cpu_usage_seconds_total{")
    )
    assert 'container="main"' in line
    assert 'pod="web"' in line
    assert f'namespace="{api_node.namespace}"' in line
    value = float(line.split()[1])
    assert value > 0
    assert re.search(r"^container_memory_working_set_bytes\{[^}]*\} [1-9]", metrics, re.M)
    assert "resource_scrape_error 0.0" in metrics
    assert raw("healthz") == "ok"


# --- security on the kubelet port itself --------------------------------------------------------------


def test_tokens_and_certificates_on_the_kubelet_port(api_node: ApiNode, tmp_path: Path) -> None:
    import http.client
    import ssl

    cluster = api_node.cluster
    host, port = cluster.node_ip, api_node.agent.kubelet_port
    ca = ssl.create_default_context(cafile=str(cluster.ca.cert))
    ca.check_hostname = False

    def get(path: str, ctx: ssl.SSLContext, token: str | None = None) -> int:
        conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=10)
        try:
            conn.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
            return conn.getresponse().status
        finally:
            conn.close()

    logs = f"/containerLogs/{api_node.namespace}/web/main"
    assert get(logs, ca) == 401  # anonymous
    account = f"reader-{secrets.token_hex(3)}"
    cluster.kubectl("create", "serviceaccount", account, "-n", api_node.namespace)
    token = cluster.kubectl("create", "token", account, "-n", api_node.namespace).stdout.strip()
    assert get(logs, ca, token) == 403
    assert get(f"/exec/{api_node.namespace}/web/main?command=true&output=1", ca, token) == 403
    role = f"kubelet-proxy-{account}"
    cluster.kubectl("create", "clusterrole", role, "--verb=get,create", "--resource=nodes/proxy")
    cluster.kubectl(
        "create",
        "clusterrolebinding",
        role,
        f"--clusterrole={role}",
        f"--serviceaccount={api_node.namespace}:{account}",
    )
    try:
        wait_until(lambda: get(logs, ca, token) == 200, 60, "the denial cache (30 s) to expire")
        assert get("/stats/summary", ca, token) == 403  # nodes/stats was not granted
    finally:
        cluster.kubectl("delete", "clusterrolebinding", role, check=False)
        cluster.kubectl("delete", "clusterrole", role, check=False)
    # The API server's client certificate is accepted...
    trusted = ssl.create_default_context(cafile=str(cluster.ca.cert))
    trusted.check_hostname = False
    trusted.load_cert_chain(str(cluster.kubelet_client.cert), str(cluster.kubelet_client.key))
    assert get(logs, trusted) == 200
    # ...one from another CA is refused in the handshake, and so is TLS below 1.2.
    from virtual_kubelet.devcluster.pki import CertificateAuthority

    rogue_ca = CertificateAuthority.create(tmp_path, "rogue")
    rogue = rogue_ca.issue(
        tmp_path,
        "rogue",
        common_name="kube-apiserver-kubelet-client",
        organizations=["system:masters"],
        client=True,
    )
    impostor = ssl.create_default_context(cafile=str(cluster.ca.cert))
    impostor.check_hostname = False
    impostor.load_cert_chain(str(rogue.cert), str(rogue.key))
    with pytest.raises((ssl.SSLError, ConnectionError)):
        get(logs, impostor)
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname = False
    old.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the point is to offer an old version
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises((ssl.SSLError, ConnectionError)):
        get("/healthz", old)


def test_hostile_input_never_crashes_or_leaks_connections(api_node: ApiNode) -> None:
    import ssl
    import urllib.request

    cluster = api_node.cluster
    host, port = cluster.node_ip, api_node.agent.kubelet_port
    ctx = ssl.create_default_context(cafile=str(cluster.ca.cert))
    ctx.check_hostname = False
    ctx.load_cert_chain(str(cluster.kubelet_client.cert), str(cluster.kubelet_client.key))
    exec_path = f"/exec/{api_node.namespace}/web/main?command=cat&input=1&output=1"
    upgrade = (
        f"POST {exec_path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
        "X-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n"
    ).encode()
    hostile = [
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n",  # oversized headers
        upgrade + b"\x80\x03\x00\x01\x00\xff\xff\xff" + bytes(64),  # SYN_STREAM claiming 16 MB
        *(upgrade + random.Random(seed).randbytes(4096) for seed in range(6)),  # random frames
        f"GET {exec_path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n".encode()
        + b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Protocol: v4.channel.k8s.io\r\n\r\n" + random.Random(7).randbytes(512),
    ]

    def gauge() -> float:
        match = re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", api_node.agent.log())
        assert match
        text = (
            urllib.request.urlopen(f"http://127.0.0.1:{match.group(1)}/metrics", timeout=5)
            .read()
            .decode()
        )
        found = re.search(r"^virtual_kubelet_kubelet_api_connections (\S+)$", text, re.M)
        assert found
        return float(found.group(1))

    # The API server keeps some connections to us alive between requests: count from there.
    baseline = gauge()
    for payload in hostile:
        with socket.create_connection((host, port), timeout=10) as raw, ctx.wrap_socket(raw) as tls:
            tls.sendall(payload)
            tls.settimeout(20)
            try:
                while tls.recv(65536):  # the server answers, then ends the connection itself
                    pass
            except (ssl.SSLError, ConnectionError):
                pass
    # A half-open connection holds one slot only while it is open.
    with socket.create_connection((host, port), timeout=10) as raw, ctx.wrap_socket(raw):
        wait_until(lambda: gauge() >= baseline + 1, 10, "the idle connection to be counted")
    wait_until(lambda: gauge() <= baseline, 30, "every hostile connection to be cleaned up")
    assert api_node.kubectl("exec", "web", "--", "echo", "still", "alive").stdout == "still alive\n"


def test_websocket_v4_client_execs_through_the_api_server(api_node: ApiNode) -> None:
    """A client that asks only for v4.channel.k8s.io is passed through to us untranslated."""
    import asyncio

    import aiohttp

    cluster = api_node.cluster

    async def main() -> tuple[bytes, dict[str, Any]]:
        ctx = cluster.ssl_context()
        url = (
            f"{cluster.server}/api/v1/namespaces/{api_node.namespace}/pods/web/exec"
            "?command=echo&command=over&command=websocket&stdout=true&stderr=true"
        )
        out = b""
        status: dict[str, Any] = {}
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(url, ssl=ctx, protocols=("v4.channel.k8s.io",)) as ws,
        ):
            assert ws.protocol == "v4.channel.k8s.io"
            async for message in ws:
                if message.type != aiohttp.WSMsgType.BINARY:
                    continue
                channel, payload = message.data[0], message.data[1:]
                if channel == 1:
                    out += payload
                elif channel == 3:
                    status = json.loads(payload)
        return out, status

    out, status = asyncio.run(main())
    assert out == b"over websocket\n"
    assert status["status"] == "Success"


def test_websocket_port_forward_through_the_api_server(api_node: ApiNode) -> None:
    """A client speaking the WebSocket `portforward.k8s.io` protocol (data and error channel per
    port, each opened with the port number) is passed through to us untranslated."""
    import asyncio

    import aiohttp

    cluster = api_node.cluster
    payload = os.urandom(256 * 1024)

    async def main() -> tuple[list[tuple[int, bytes]], bytes]:
        url = (
            f"{cluster.server}/api/v1/namespaces/{api_node.namespace}/pods/web/portforward"
            "?ports=8080"
        )
        headers: list[tuple[int, bytes]] = []
        echoed = b""
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(
                url, ssl=cluster.ssl_context(), protocols=("portforward.k8s.io",)
            ) as ws,
        ):
            assert ws.protocol == "portforward.k8s.io"
            while len(headers) < 2:  # the port number on the data and on the error channel
                message = await ws.receive(timeout=30)
                assert message.type == aiohttp.WSMsgType.BINARY, message
                headers.append((message.data[0], message.data[1:]))
            for start in range(0, len(payload), 32 * 1024):
                await ws.send_bytes(b"\x00" + payload[start : start + 32 * 1024])
            while len(echoed) < len(payload):
                message = await ws.receive(timeout=30)
                assert message.type == aiohttp.WSMsgType.BINARY, message
                channel, data = message.data[0], message.data[1:]
                assert channel == 0, data  # nothing on the error channel
                echoed += data
        return headers, echoed

    headers, echoed = asyncio.run(main())
    port = (8080).to_bytes(2, "little")
    assert sorted(headers) == [(0, port), (1, port)]
    assert hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest()
