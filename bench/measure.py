"""Measuring instruments shared by the scenarios: pod creation, a readiness watch, percentiles,
process resources, the API server's per-contender request counters, and lease/heartbeat gaps."""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psutil

from virtual_kubelet.kube.client import KubeClient, path
from virtual_kubelet.kube.errors import ApiError
from virtual_kubelet.kube.timefmt import parse

CREATE_CONCURRENCY = 64


def pod_manifest(name: str, node: str, toleration: dict[str, str] | None) -> dict[str, Any]:
    # The default 30 s grace period: deleting the pod then waits for the kubelet (contender) to
    # finish it, which is what the delete time measures.
    spec: dict[str, Any] = {
        "nodeName": node,
        "containers": [{"name": "c", "image": "registry.invalid/bench:1"}],
    }
    if toleration:
        spec["tolerations"] = [toleration]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"bench": "1"}},
        "spec": spec,
    }


def is_ready(pod: dict[str, Any]) -> bool:
    status = pod.get("status", {})
    return status.get("phase") == "Running" and any(
        c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", [])
    )


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


async def new_namespace(client: KubeClient) -> str:
    name = f"bench-{secrets.token_hex(3)}"
    await client.create(path("v1", "namespaces"), {"metadata": {"name": name}})
    for _ in range(400):  # pods need the default ServiceAccount (admission)
        with contextlib.suppress(ApiError):
            await client.get(path("v1", "serviceaccounts", name, "default"))
            return name
        await asyncio.sleep(0.05)
    raise RuntimeError("the default ServiceAccount never appeared")


class PodWatch:
    """Watches a namespace's pods and timestamps (monotonic) when each is first Ready and gone."""

    def __init__(self, client: KubeClient, namespace: str) -> None:
        self.client = client
        self.namespace = namespace
        self.ready_at: dict[str, float] = {}
        self.present: set[str] = set()
        self.changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        url = path("v1", "pods", self.namespace)
        listing = await self.client.get(url)
        rv = listing["metadata"]["resourceVersion"]
        opened = asyncio.Event()

        async def run() -> None:
            nonlocal rv
            while True:
                opened.set()
                async for event in self.client.watch(
                    url, {"resourceVersion": rv, "timeoutSeconds": 900}
                ):
                    obj = event["object"]
                    rv = obj["metadata"].get("resourceVersion", rv)
                    name = obj["metadata"].get("name")
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self.present.add(name)
                        if name not in self.ready_at and is_ready(obj):
                            self.ready_at[name] = time.monotonic()
                    elif event["type"] == "DELETED":
                        self.present.discard(name)
                    self.changed.set()

        self._task = asyncio.create_task(run())
        await opened.wait()
        await asyncio.sleep(0.2)  # the watch request is on the wire before anything is created

    async def until(self, predicate: Callable[[], bool], deadline: float) -> bool:
        """Wait until `predicate()` holds or the monotonic `deadline` passes."""
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(remaining, 1.0))
        return True

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()


async def create_pods(
    client: KubeClient,
    namespace: str,
    names: list[str],
    node: str,
    toleration: dict[str, str] | None,
) -> dict[str, float]:
    """Create pods as fast as the API server takes them; returns each one's send time."""
    semaphore = asyncio.Semaphore(CREATE_CONCURRENCY)
    sent: dict[str, float] = {}

    async def one(name: str) -> None:
        async with semaphore:
            sent[name] = time.monotonic()
            await client.create(path("v1", "pods", namespace), pod_manifest(name, node, toleration))

    await asyncio.gather(*(one(n) for n in names))
    return sent


async def delete_all(client: KubeClient, namespace: str, *, force: bool = False) -> None:
    """Delete the bench pods: gracefully (the contender finishes it), or at once (cleanup)."""
    body = {"gracePeriodSeconds": 0} if force else None
    await client.delete(path("v1", "pods", namespace), body, params={"labelSelector": "bench=1"})


@dataclass
class ProcessUsage:
    """Peak and final RSS and CPU seconds of a process, sampled every 100 ms in a thread."""

    pid: int | None
    peak_rss: int = 0
    rss: int = 0
    cpu_start: float = 0.0
    cpu_end: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)

    def _cpu(self) -> float:
        if self.pid is None:
            return 0.0
        try:
            times = psutil.Process(self.pid).cpu_times()
            return float(times.user + times.system)
        except psutil.Error:
            return self.cpu_end

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(psutil.Error):
                if self.pid is not None:
                    self.rss = psutil.Process(self.pid).memory_info().rss
                    self.peak_rss = max(self.peak_rss, self.rss)
            self._stop.wait(0.1)

    def __enter__(self) -> ProcessUsage:
        self.cpu_start = self._cpu()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cpu_end = self._cpu()
        self._stop.set()
        self._thread.join()

    @property
    def cpu(self) -> float:
        return self.cpu_end - self.cpu_start


_DISPATCHED = re.compile(
    r'^apiserver_flowcontrol_dispatched_requests_total\{flow_schema="([^"]+)",[^}]*\} (\S+)$', re.M
)


async def requests_by_contender(client: KubeClient) -> dict[str, float]:
    """Requests the API server dispatched per FlowSchema (contenders use `bench-<name>`)."""
    async with client._http().get("/metrics", headers=await client._headers()) as response:
        text = await response.text()
    counts: dict[str, float] = {}
    for schema, value in _DISPATCHED.findall(text):
        counts[schema] = counts.get(schema, 0.0) + float(value)
    return counts


class HeartbeatWatch:
    """Gaps between successive renewals of a node's Lease, and the age of its Ready heartbeat."""

    def __init__(self, client: KubeClient, node: str) -> None:
        self.client = client
        self.node = node
        self.renewals: list[float] = []  # renewTime values, seconds since the epoch
        self.max_status_age = 0.0
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._leases()), asyncio.create_task(self._status())]

    async def _leases(self) -> None:
        url = path("coordination.k8s.io/v1", "leases", "kube-node-lease")
        params = {"fieldSelector": f"metadata.name={self.node}", "timeoutSeconds": 900}
        while True:
            with contextlib.suppress(ApiError):
                async for event in self.client.watch(url, params):
                    renew = event["object"].get("spec", {}).get("renewTime")
                    if renew:
                        stamp = parse(renew).timestamp()
                        if not self.renewals or stamp > self.renewals[-1]:
                            self.renewals.append(stamp)
            await asyncio.sleep(0.5)

    async def _status(self) -> None:
        while True:
            with contextlib.suppress(ApiError, KeyError):
                node = await self.client.get(path("v1", "nodes", None, self.node))
                for c in node["status"].get("conditions", []):
                    if c["type"] == "Ready" and c.get("lastHeartbeatTime"):
                        age = time.time() - parse(c["lastHeartbeatTime"]).timestamp()
                        self.max_status_age = max(self.max_status_age, age)
            await asyncio.sleep(1.0)

    def stop(self) -> None:
        for task in self._tasks:
            task.cancel()

    def max_gap(self) -> float | None:
        gaps = [b - a for a, b in zip(self.renewals, self.renewals[1:], strict=False)]
        return max(gaps) if gaps else None
