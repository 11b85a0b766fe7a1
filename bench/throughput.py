"""Throughput scenario: N pods bound to one node -> all Running+Ready -> all deleted.

Time is measured by a watch on the pods (what any client observes), from the first create to the
last pod seen Running+Ready, and from the delete request to the last pod gone. Contenders:
- `agent`: our virtual-kubelet with the mock provider, started as users start it;
- `ceiling`: no kubelet at all; a raw client PATCHes each pod's status to Running+Ready the moment
  it sees it. No kubelet can beat this on the same API server; it is the physical limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from virtual_kubelet.devcluster import DevCluster
from virtual_kubelet.devcluster.agent import AgentProcess
from virtual_kubelet.kube import config as kubeconfig
from virtual_kubelet.kube.client import KubeClient, path
from virtual_kubelet.kube.errors import ApiError
from virtual_kubelet.kube.timefmt import rfc3339

TOLERATION = {"key": "virtual-kubelet.io/provider", "operator": "Exists"}
CREATE_CONCURRENCY = 64


@dataclass
class Result:
    contender: str
    pods: int
    create_to_running_s: float
    pods_per_s: float
    delete_s: float
    agent_peak_rss_mb: float | None = None
    agent_cpu_s: float | None = None
    notes: dict[str, Any] = field(default_factory=dict)


def _pod(name: str, node: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"bench": "1"}},
        "spec": {
            "nodeName": node,
            "tolerations": [TOLERATION],
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "c", "image": "registry.invalid/bench:1"}],
        },
    }


def _ready(pod: dict[str, Any]) -> bool:
    status = pod.get("status", {})
    if status.get("phase") != "Running":
        return False
    return any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", []))


class _ResourceSampler:
    """Peak RSS and CPU time of a process (and its children), sampled in a thread."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak_rss = 0
        self.cpu = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(psutil.Error):
                self.peak_rss = max(self.peak_rss, self.process.memory_info().rss)
                times = self.process.cpu_times()
                self.cpu = times.user + times.system
            self._stop.wait(0.1)

    def __enter__(self) -> _ResourceSampler:
        with contextlib.suppress(psutil.Error):
            times = self.process.cpu_times()
            self._cpu_start = times.user + times.system
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def cpu_used(self) -> float:
        return self.cpu - getattr(self, "_cpu_start", 0.0)


async def _ceiling_kubelet(client: KubeClient, namespace: str, stop: asyncio.Event) -> None:
    """Mark every pod Running+Ready as soon as it appears; the fastest possible 'kubelet'."""
    url = path("v1", "pods", namespace)
    listing = await client.get(url)
    rv = listing["metadata"]["resourceVersion"]
    pending: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for pod in listing["items"]:
        pending.put_nowait(pod)

    async def patcher() -> None:
        while True:
            pod = await pending.get()
            now = rfc3339()
            status = {
                "phase": "Running",
                "podIP": "10.244.0.1",
                "startTime": now,
                "conditions": [
                    {"type": t, "status": "True", "lastTransitionTime": now}
                    for t in ("Initialized", "Ready", "ContainersReady")
                ],
            }
            meta = pod["metadata"]
            with contextlib.suppress(ApiError):
                await client.patch(
                    path("v1", "pods", namespace, meta["name"], "status"),
                    {"metadata": {"uid": meta["uid"]}, "status": status},
                    "strategic",
                )

    async def deleter(pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        with contextlib.suppress(ApiError):
            await client.delete(
                path("v1", "pods", namespace, meta["name"]),
                {"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}},
            )

    workers = [asyncio.create_task(patcher()) for _ in range(CREATE_CONCURRENCY)]
    deletions: set[asyncio.Task[None]] = set()
    try:
        while not stop.is_set():
            async for event in client.watch(url, {"resourceVersion": rv, "timeoutSeconds": 300}):
                obj = event["object"]
                rv = obj["metadata"].get("resourceVersion", rv)
                if event["type"] == "ADDED":
                    pending.put_nowait(obj)
                elif event["type"] == "MODIFIED" and obj["metadata"].get("deletionTimestamp"):
                    task = asyncio.create_task(deleter(obj))
                    deletions.add(task)
                    task.add_done_callback(deletions.discard)
    finally:
        for w in workers:
            w.cancel()


async def _measure(
    client: KubeClient, namespace: str, node: str, count: int
) -> tuple[float, float]:
    """Create `count` pods; return (seconds to all Ready, seconds to all deleted)."""
    url = path("v1", "pods", namespace)
    listing = await client.get(url)
    rv = listing["metadata"]["resourceVersion"]
    ready: set[str] = set()
    present: set[str] = set()
    all_ready = asyncio.Event()
    all_gone = asyncio.Event()
    deleting = False

    async def watch() -> None:
        nonlocal rv
        while True:
            async for event in client.watch(url, {"resourceVersion": rv, "timeoutSeconds": 600}):
                obj = event["object"]
                rv = obj["metadata"].get("resourceVersion", rv)
                name = obj["metadata"].get("name")
                if event["type"] in ("ADDED", "MODIFIED"):
                    present.add(name)
                    if _ready(obj):
                        ready.add(name)
                        if len(ready) >= count:
                            all_ready.set()
                elif event["type"] == "DELETED":
                    present.discard(name)
                    if deleting and not present:
                        all_gone.set()

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0.5)  # let the watch open before the first create
    names = [f"p{i:05d}" for i in range(count)]
    semaphore = asyncio.Semaphore(CREATE_CONCURRENCY)

    async def create(name: str) -> None:
        async with semaphore:
            await client.create(url, _pod(name, node))

    started = time.monotonic()
    await asyncio.gather(*(create(n) for n in names))
    await all_ready.wait()
    running_s = time.monotonic() - started

    deleting = True
    started = time.monotonic()
    await client.delete(url, params={"labelSelector": "bench=1"})
    await all_gone.wait()
    delete_s = time.monotonic() - started
    watcher.cancel()
    return running_s, delete_s


def _cpu_seconds(pid: int) -> float:
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return float(times.user + times.system)


class _ControlPlaneCpu:
    """CPU seconds kube-apiserver and etcd spent during a measurement."""

    def __init__(self, cluster: DevCluster) -> None:
        self.pids = {
            name: cluster.components[name].record.pid for name in ("kube-apiserver", "etcd")
        }

    def __enter__(self) -> _ControlPlaneCpu:
        self.start = {n: _cpu_seconds(p) for n, p in self.pids.items()}
        self.wall = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.used = {n: round(_cpu_seconds(p) - self.start[n], 2) for n, p in self.pids.items()}
        self.wall = time.monotonic() - self.wall

    def notes(self) -> dict[str, Any]:
        return {f"{n}_cpu_s": v for n, v in self.used.items()} | {"wall_s": round(self.wall, 2)}


async def _namespace(client: KubeClient) -> str:
    name = f"bench-{secrets.token_hex(3)}"
    await client.create(path("v1", "namespaces"), {"metadata": {"name": name}})
    # Pods need the default ServiceAccount (admission): wait for the controller to create it.
    for _ in range(200):
        try:
            await client.get(path("v1", "serviceaccounts", name, "default"))
            return name
        except ApiError:
            await asyncio.sleep(0.05)
    raise RuntimeError("no default ServiceAccount")


async def _run_agent(cluster: DevCluster, workdir: Path, count: int) -> Result:
    node = f"bench-vk-{secrets.token_hex(2)}"
    agent = AgentProcess(
        cluster, node, workdir / node, provider_config={"pods": str(count * 2)}
    ).start()
    try:
        agent.wait_ready(60)
        assert agent.process is not None
        async with KubeClient(kubeconfig.load(str(cluster.kubeconfig)), name="bench") as client:
            namespace = await _namespace(client)
            with _ResourceSampler(agent.process.pid) as sampler, _ControlPlaneCpu(cluster) as cp:
                running_s, delete_s = await _measure(client, namespace, node, count)
        return Result(
            "agent",
            count,
            round(running_s, 2),
            round(count / running_s, 1),
            round(delete_s, 2),
            agent_peak_rss_mb=round(sampler.peak_rss / 2**20, 1),
            agent_cpu_s=round(sampler.cpu_used, 2),
            notes=cp.notes(),
        )
    finally:
        agent.stop()
        agent.cleanup()


async def _run_ceiling(cluster: DevCluster, count: int) -> Result:
    node = f"bench-raw-{secrets.token_hex(2)}"
    async with KubeClient(kubeconfig.load(str(cluster.kubeconfig)), name="bench") as client:
        await client.create(path("v1", "nodes"), {"metadata": {"name": node}})
        namespace = await _namespace(client)
        stop = asyncio.Event()
        raw = asyncio.create_task(_ceiling_kubelet(client, namespace, stop))
        try:
            with _ControlPlaneCpu(cluster) as cp:
                running_s, delete_s = await _measure(client, namespace, node, count)
        finally:
            stop.set()
            raw.cancel()
        return Result(
            "ceiling",
            count,
            round(running_s, 2),
            round(count / running_s, 1),
            round(delete_s, 2),
            notes=cp.notes(),
        )


def run(counts: list[int], contenders: list[str], workdir: Path, repeats: int) -> list[Result]:
    results: list[Result] = []
    with DevCluster(workdir / "cluster") as cluster:
        for count in counts:
            for _ in range(repeats):
                for contender in contenders:  # interleaved, so drift hits both alike
                    if contender == "agent":
                        result = asyncio.run(_run_agent(cluster, workdir, count))
                    else:
                        result = asyncio.run(_run_ceiling(cluster, count))
                    print(json.dumps(asdict(result)), flush=True)
                    results.append(result)
    return results
