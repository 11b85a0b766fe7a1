"""Streaming scenario (our agent only: the others' mock providers do not run exec or forwarding):
`kubectl exec -i -- cat` and `kubectl port-forward` throughput for a large payload, and
`kubectl logs -f` latency (line written in the provider -> line printed by kubectl)."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import json
import os
import socket
import subprocess
import threading
import time
from typing import Any

from virtual_kubelet.devcluster import DevCluster, kubectl_path, wait_until

from .measure import ProcessUsage, percentile


def _kubectl(cluster: DevCluster, *args: str) -> list[str]:
    return [kubectl_path(), "--kubeconfig", str(cluster.kubeconfig), *args]


def _exec_cat(cluster: DevCluster, namespace: str, size: int) -> float:
    chunk = os.urandom(1 << 20)
    process = subprocess.Popen(
        _kubectl(cluster, "exec", "-i", "-n", namespace, "stream", "--", "cat"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert process.stdin is not None
    assert process.stdout is not None
    received = 0
    digest_in, digest_out = hashlib.sha256(), hashlib.sha256()

    def read() -> None:
        nonlocal received
        assert process.stdout is not None
        while data := process.stdout.read(1 << 20):
            received += len(data)
            digest_out.update(data)

    started = time.monotonic()
    reader = threading.Thread(target=read)
    reader.start()
    sent = 0
    while sent < size:
        process.stdin.write(chunk)
        digest_in.update(chunk)
        sent += len(chunk)
    process.stdin.close()
    reader.join(600)
    elapsed = time.monotonic() - started
    process.wait(30)
    if received != size or digest_in.digest() != digest_out.digest():
        raise RuntimeError(f"exec cat returned {received} of {size} bytes (or corrupted)")
    return elapsed


def _port_forward(cluster: DevCluster, namespace: str, size: int) -> float:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    forwarder = subprocess.Popen(
        _kubectl(cluster, "port-forward", "-n", namespace, "pod/stream", f"{port}:9000"),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert forwarder.stdout is not None
        forwarder.stdout.readline()
        chunk = os.urandom(1 << 20)
        received = 0
        with socket.create_connection(("127.0.0.1", port), timeout=60) as conn:

            def read() -> None:
                nonlocal received
                while received < size and (data := conn.recv(1 << 20)):
                    received += len(data)

            started = time.monotonic()
            reader = threading.Thread(target=read)
            reader.start()
            for _ in range(size // len(chunk)):
                conn.sendall(chunk)
            reader.join(600)
            elapsed = time.monotonic() - started
        if received != size:
            raise RuntimeError(f"port-forward echoed {received} of {size} bytes")
        return elapsed
    finally:
        forwarder.kill()
        forwarder.wait(10)


def _logs_latency(cluster: DevCluster, namespace: str, lines: int) -> list[float]:
    process = subprocess.Popen(
        _kubectl(cluster, "logs", "-f", "--timestamps", "--tail=0", "-n", namespace, "stream"),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    latencies = []
    try:
        assert process.stdout is not None
        while len(latencies) < lines:
            line = process.stdout.readline().decode()
            if not line:
                break
            written = datetime.datetime.fromisoformat(line.split(" ", 1)[0][:26] + "+00:00")
            latencies.append(datetime.datetime.now(datetime.UTC).timestamp() - written.timestamp())
    finally:
        process.kill()
        process.wait(10)
    return latencies


async def streaming(cluster: DevCluster, contender: Any, size_mb: int) -> dict[str, Any]:
    namespace = f"bench-stream-{os.urandom(2).hex()}"
    cluster.kubectl("create", "namespace", namespace)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "stream",
            "annotations": {"mock.virtual-kubelet.io/log-every-seconds": "0.1"},
        },
        "spec": {
            "nodeName": contender.node,
            "tolerations": [contender.toleration],
            "containers": [{"name": "c", "image": "registry.invalid/bench:1"}],
        },
    }
    cluster.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(pod))
    wait_until(
        lambda: (
            "Running"
            in cluster.kubectl(
                "get", "pod", "stream", "-n", namespace, "-o", "jsonpath={.status.phase}"
            ).stdout
        ),
        60,
        "the streaming pod",
    )
    size = size_mb * (1 << 20)
    # CPU seconds of the agent and of kube-apiserver per transfer: which side is the bottleneck.
    server = cluster.components["kube-apiserver"].record.pid
    with ProcessUsage(contender.pid) as exec_agent, ProcessUsage(server) as exec_server:
        exec_s = await asyncio.to_thread(_exec_cat, cluster, namespace, size)
    with ProcessUsage(contender.pid) as forward_agent, ProcessUsage(server) as forward_server:
        forward_s = await asyncio.to_thread(_port_forward, cluster, namespace, size)
    latencies = await asyncio.to_thread(_logs_latency, cluster, namespace, 50)
    cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
    return {
        "payload_mb": size_mb,
        "exec_cat_mb_per_s": round(size_mb / exec_s, 1),
        "port_forward_mb_per_s": round(size_mb / forward_s, 1),
        "exec_agent_cpu_s": round(exec_agent.cpu, 2),
        "exec_apiserver_cpu_s": round(exec_server.cpu, 2),
        "port_forward_agent_cpu_s": round(forward_agent.cpu, 2),
        "port_forward_apiserver_cpu_s": round(forward_server.cpu, 2),
        "logs_follow_p50_ms": round(1000 * percentile(latencies, 50), 1),
        "logs_follow_p99_ms": round(1000 * percentile(latencies, 99), 1),
        "complete": len(latencies) == 50,
    }
