"""The benchmark scenarios. Each takes a running contender and returns plain numbers.

throughput  N pods bound to the node: create -> all Ready (pods/s) -> delete -> all gone.
latency     pods created at a steady rate: p50/p99 from create request to Ready seen by a watch.
scheduler   a Deployment scaled 0 -> N through the real scheduler: time to N available.
steady      N pods held for a while: RSS, idle CPU, API requests/s, lease renewal gaps.
churn       heartbeat health (lease gaps, node status age) while N pods come and go.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from virtual_kubelet.kube.client import KubeClient, path

from .contenders import Contender
from .measure import (
    HeartbeatWatch,
    PodWatch,
    ProcessUsage,
    create_pods,
    delete_all,
    new_namespace,
    percentile,
    pod_manifest,
    requests_by_contender,
)

SETTLE_S = 10.0


def _rss_mb(usage: ProcessUsage) -> float | None:
    return round(usage.peak_rss / 2**20, 1) if usage.pid else None


async def throughput(
    client: KubeClient, contender: Contender, count: int, timeout: float
) -> dict[str, Any]:
    namespace = await new_namespace(client)
    watch = PodWatch(client, namespace)
    await watch.start()
    names = [f"p{i:05d}" for i in range(count)]
    requests_before = await requests_by_contender(client)
    with ProcessUsage(contender.pid) as usage:
        started = time.monotonic()
        await create_pods(client, namespace, names, contender.node, contender.toleration)
        done = await watch.until(
            lambda: len(watch.ready_at) >= count or bool(contender.crashed()), started + timeout
        )
        done = done and len(watch.ready_at) >= count
        to_ready = time.monotonic() - started
        ready = len(watch.ready_at)
        deleting = time.monotonic()
        await delete_all(client, namespace)
        gone = await watch.until(
            lambda: not watch.present or bool(contender.crashed()), deleting + timeout
        )
        gone = gone and not watch.present
        delete_s = time.monotonic() - deleting
        if not gone:
            await delete_all(client, namespace, force=True)
    requests_after = await requests_by_contender(client)
    watch.stop()
    schema = f"bench-{contender.name}"
    return {
        "pods": count,
        "ready": ready,
        "complete": done,
        "to_ready_s": round(to_ready, 2),
        "pods_per_s": round(ready / to_ready, 1),
        "delete_s": round(delete_s, 2),
        "deleted": gone,
        "peak_rss_mb": _rss_mb(usage),
        "cpu_s": round(usage.cpu, 2) if usage.pid else None,
        "api_requests": requests_after.get(schema, 0) - requests_before.get(schema, 0),
        "crashed": contender.crashed(),
    }


async def latency(
    client: KubeClient, contender: Contender, rate: float, duration: float, timeout: float
) -> dict[str, Any]:
    namespace = await new_namespace(client)
    watch = PodWatch(client, namespace)
    await watch.start()
    count = int(rate * duration)
    sent: dict[str, float] = {}
    failures = 0

    async def create(name: str) -> None:
        nonlocal failures
        sent[name] = time.monotonic()
        try:
            await client.create(
                path("v1", "pods", namespace),
                pod_manifest(name, contender.node, contender.toleration),
            )
        except Exception:
            failures += 1

    started = time.monotonic()
    tasks = []
    for i in range(count):
        await asyncio.sleep(max(0.0, started + i / rate - time.monotonic()))
        tasks.append(asyncio.create_task(create(f"l{i:05d}")))
    await asyncio.gather(*tasks)
    done = await watch.until(
        lambda: len(watch.ready_at) >= count or bool(contender.crashed()),
        time.monotonic() + timeout,
    )
    done = done and len(watch.ready_at) >= count
    latencies = [watch.ready_at[n] - sent[n] for n in watch.ready_at if n in sent]
    await delete_all(client, namespace)
    await watch.until(
        lambda: not watch.present or bool(contender.crashed()), time.monotonic() + timeout
    )
    if watch.present:
        await delete_all(client, namespace, force=True)
    watch.stop()
    return {
        "rate": rate,
        "pods": count,
        "ready": len(latencies),
        "complete": done,
        "create_failures": failures,
        "p50_s": round(percentile(latencies, 50), 3),
        "p99_s": round(percentile(latencies, 99), 3),
        "max_s": round(max(latencies), 3) if latencies else None,
        "crashed": contender.crashed(),
    }


async def scheduler(
    client: KubeClient, contender: Contender, replicas: int, timeout: float
) -> dict[str, Any]:
    namespace = await new_namespace(client)
    template: dict[str, Any] = {
        "metadata": {"labels": {"app": "rollout", "bench": "1"}},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": contender.node},
            "containers": [{"name": "c", "image": "registry.invalid/bench:1"}],
        },
    }
    if contender.toleration:
        template["spec"]["tolerations"] = [contender.toleration]
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "rollout"},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "rollout"}},
            "template": template,
        },
    }
    url = path("apps/v1", "deployments", namespace)
    await client.create(url, deployment)
    started = time.monotonic()
    await client.patch(f"{url}/rollout", {"spec": {"replicas": replicas}})
    available = 0
    while time.monotonic() - started < timeout:
        status = (await client.get(f"{url}/rollout")).get("status", {})
        available = status.get("availableReplicas", 0)
        if available >= replicas or contender.crashed():
            break
        await asyncio.sleep(0.25)
    rollout_s = time.monotonic() - started
    await client.delete(f"{url}/rollout", params={"propagationPolicy": "Background"})
    await delete_all(client, namespace, force=True)
    return {
        "replicas": replicas,
        "available": available,
        "complete": available >= replicas,
        "rollout_s": round(rollout_s, 2),
        "pods_per_s": round(available / rollout_s, 1),
        "crashed": contender.crashed(),
    }


async def steady(
    client: KubeClient, contender: Contender, count: int, hold: float, timeout: float
) -> dict[str, Any]:
    namespace = await new_namespace(client)
    watch = PodWatch(client, namespace)
    await watch.start()
    names = [f"s{i:05d}" for i in range(count)]
    started = time.monotonic()
    await create_pods(client, namespace, names, contender.node, contender.toleration)
    done = await watch.until(
        lambda: len(watch.ready_at) >= count or bool(contender.crashed()), started + timeout
    )
    done = done and len(watch.ready_at) >= count
    # Let the burst settle (queued events, last status writes) so only the idle cost is measured.
    await asyncio.sleep(SETTLE_S)
    heartbeat = HeartbeatWatch(client, contender.node)
    await heartbeat.start()
    schema = f"bench-{contender.name}"
    before = await requests_by_contender(client)
    with ProcessUsage(contender.pid) as usage:
        await asyncio.sleep(hold)
    after = await requests_by_contender(client)
    heartbeat.stop()
    await delete_all(client, namespace)
    await watch.until(
        lambda: not watch.present or bool(contender.crashed()), time.monotonic() + timeout
    )
    if watch.present:
        await delete_all(client, namespace, force=True)
    watch.stop()
    gap = heartbeat.max_gap()
    return {
        "pods": count,
        "ready": len(watch.ready_at),
        "complete": done,
        "hold_s": hold,
        "rss_mb": round(usage.rss / 2**20, 1) if usage.pid else None,
        "idle_cpu_percent": round(100 * usage.cpu / hold, 2) if usage.pid else None,
        "api_requests_per_s": round((after.get(schema, 0) - before.get(schema, 0)) / hold, 2),
        "lease_max_gap_s": round(gap, 1) if gap is not None else None,
        "crashed": contender.crashed(),
    }


async def churn(
    client: KubeClient, contender: Contender, count: int, timeout: float
) -> dict[str, Any]:
    heartbeat = HeartbeatWatch(client, contender.node)
    await heartbeat.start()
    result = await throughput(client, contender, count, timeout)
    # One more renewal period after the churn, so a renewal delayed by it is seen.
    await asyncio.sleep(11)
    heartbeat.stop()
    gap = heartbeat.max_gap()
    return {
        "pods": count,
        "to_ready_s": result["to_ready_s"],
        "delete_s": result["delete_s"],
        "lease_max_gap_s": round(gap, 1) if gap is not None else None,
        "node_status_max_age_s": round(heartbeat.max_status_age, 1),
        "complete": result["complete"],
        "crashed": contender.crashed(),
    }
