"""`python -m bench memory`: what one held pod costs our agent, quickly, and who holds it.

One fresh dev cluster, one agent (mock provider, CLI defaults, started as users start it) per pod
count. RSS is read (psutil) with no pods, after N pods are Running and Ready and the burst settled,
and after they are all deleted again; bytes per pod = (RSS held - RSS empty) / N.

With `--breakdown` the agent runs under tracemalloc (same command line, started through a small
wrapper that dumps a snapshot on SIGUSR1): the growth between the empty and the loaded snapshot is
attributed to the innermost frame in the agent's own code (`virtual_kubelet/...`), so it says
which module keeps what (the pod cache, the provider's copies, the status writer...). tracemalloc
slows the agent and costs memory of its own, so the RSS figures of a breakdown run are not the
headline ones.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import tracemalloc
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import psutil

from virtual_kubelet.devcluster import DevCluster
from virtual_kubelet.devcluster.agent import AgentProcess
from virtual_kubelet.devcluster.ports import free_port
from virtual_kubelet.devcluster.pytest_plugin import config_for_tests
from virtual_kubelet.devcluster.waiting import wait_until
from virtual_kubelet.kube import config as kubeconfig
from virtual_kubelet.kube.client import KubeClient
from virtual_kubelet.kube.errors import ApiError

from .contenders import account_identities, identity
from .measure import PodWatch, create_pods, delete_all, new_namespace

#: Let queued events and last status writes finish before RSS is read.
SETTLE_S = 10.0
#: Runs the agent exactly like `python -m virtual_kubelet`, plus: SIGUSR1 writes a tracemalloc
#: snapshot to the path in $VK_BENCH_SNAPSHOT (".<n>" appended, n counting up).
_WRAPPER = """
import gc, os, runpy, signal, sys, tracemalloc
tracemalloc.start(25)
count = [0]
def dump(*_):
    gc.collect()
    count[0] += 1
    tracemalloc.take_snapshot().dump(os.environ["VK_BENCH_SNAPSHOT"] + f".{count[0]}")
signal.signal(signal.SIGUSR1, dump)
sys.argv[0] = "virtual_kubelet"
runpy.run_module("virtual_kubelet", run_name="__main__", alter_sys=True)
"""


class _TracedAgent(AgentProcess):
    def command(self) -> list[str]:
        argv = super().command()
        assert argv[1:3] == ["-m", "virtual_kubelet"]
        return [argv[0], "-c", _WRAPPER, *argv[3:]]


@dataclass
class Held:
    pods: int
    rss_empty_mb: float
    rss_held_mb: float
    rss_after_delete_mb: float
    bytes_per_pod: float
    breakdown: list[tuple[str, float]] | None = None

    def line(self) -> str:
        return (
            f"{self.pods} pods: RSS empty {self.rss_empty_mb:.1f} MB, held {self.rss_held_mb:.1f}"
            f" MB, after deleting them {self.rss_after_delete_mb:.1f} MB;"
            f" growth {self.bytes_per_pod / 1024:.1f} KB per pod"
        )


def _rss(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


def _snapshot(agent: AgentProcess, base: Path, number: int) -> tracemalloc.Snapshot:
    assert agent.process is not None
    target = Path(f"{base}.{number}")
    agent.process.send_signal(signal.SIGUSR1)
    wait_until(lambda: target.exists() and target.stat().st_size > 0, 300, "a snapshot")
    size = -1
    while size != target.stat().st_size:  # written in one go, but not atomically
        size = target.stat().st_size
        time.sleep(0.5)
    return tracemalloc.Snapshot.load(str(target))


def _owner(frames: tracemalloc.Traceback) -> str:
    """The innermost frame in the agent's own code, as `module.py:line`."""
    for frame in reversed(frames):  # stored oldest call first
        marker = "/virtual_kubelet/"
        if marker in frame.filename and "/devcluster/" not in frame.filename:
            return f"{frame.filename.split(marker, 1)[1]}:{frame.lineno}"
    return "(outside virtual_kubelet)"


def breakdown(
    empty: tracemalloc.Snapshot, held: tracemalloc.Snapshot, pods: int
) -> list[tuple[str, float]]:
    """Bytes per pod by owner, largest first."""
    by_owner: dict[str, float] = defaultdict(float)
    for stat in held.compare_to(empty, "traceback"):
        by_owner[_owner(stat.traceback)] += stat.size_diff
    return sorted(((k, v / pods) for k, v in by_owner.items()), key=lambda kv: -kv[1])


async def _hold(cluster: DevCluster, agent: AgentProcess, pods: int, timeout: float) -> None:
    async with KubeClient(kubeconfig.load(str(cluster.kubeconfig)), name="bench") as client:
        namespace = await new_namespace(client)
        watch = PodWatch(client, namespace)
        await watch.start()
        names = [f"m{i:05d}" for i in range(pods)]
        await create_pods(client, namespace, names, agent.node_name, _toleration())
        if not await watch.until(lambda: len(watch.ready_at) >= pods, time.monotonic() + timeout):
            raise RuntimeError(f"only {len(watch.ready_at)} of {pods} pods became Ready")
        watch.stop()
        # One held pod as the API server has it, to size its representations offline.
        sample = await client.get(f"/api/v1/namespaces/{namespace}/pods/{names[0]}")
        (agent.workdir / "sample-pod.json").write_bytes(orjson.dumps(sample))


async def _release(cluster: DevCluster, timeout: float) -> None:
    async with KubeClient(kubeconfig.load(str(cluster.kubeconfig)), name="bench") as client:
        listing = await client.get("/api/v1/pods", {"labelSelector": "bench=1"})
        namespaces = {p["metadata"]["namespace"] for p in listing["items"]}
        for namespace in namespaces:
            try:
                await delete_all(client, namespace)
            except ApiError as exc:
                # A collection DELETE of thousands of pods can outlast the API server's request
                # timeout (504), or its answer be cut off (0), while it goes on deleting them:
                # wait for that below.
                if exc.status not in (0, 504):
                    raise
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            left = await client.get("/api/v1/pods", {"labelSelector": "bench=1", "limit": 1})
            if not left["items"]:
                return
            await asyncio.sleep(1.0)
        raise RuntimeError("the pods were not deleted in time")


def _toleration() -> dict[str, str]:
    return {"key": "virtual-kubelet.io/provider", "operator": "Exists", "effect": "NoSchedule"}


def measure(
    cluster: DevCluster,
    workdir: Path,
    pods: int,
    traced: bool,
    timeout: float,
    settle: float = SETTLE_S,
) -> Held:
    node = f"mem-{pods}-{os.getpid() % 10000}"
    metrics = f"127.0.0.1:{free_port()}"
    snapshots = workdir / node / "snapshot"
    factory = _TracedAgent if traced else AgentProcess
    agent = factory(
        cluster,
        node,
        workdir / node,
        provider_config={"pods": "20000"},
        args=["--kubeconfig", str(identity(cluster, workdir, "agent")), "--metrics-addr", metrics],
        env={"VK_BENCH_SNAPSHOT": str(snapshots)},
    ).start()
    try:
        try:
            agent.wait_ready(600)  # slow under tracemalloc on a loaded machine
        except Exception:
            print(agent.log()[-3000:])
            raise
        agent.approve_serving_certificate()
        assert agent.process is not None
        pid = agent.process.pid
        time.sleep(SETTLE_S)
        empty_snapshot = _snapshot(agent, snapshots, 1) if traced else None
        empty = _rss(pid)
        asyncio.run(_hold(cluster, agent, pods, timeout))
        time.sleep(settle)
        held_snapshot = _snapshot(agent, snapshots, 2) if traced else None
        held = _rss(pid)
        print(
            f"{pods} pods held: RSS {held / 2**20:.1f} MB (empty {empty / 2**20:.1f} MB)",
            flush=True,
        )
        asyncio.run(_release(cluster, timeout))
        time.sleep(SETTLE_S)
        after = _rss(pid)
    finally:
        agent.stop()
        agent.cleanup()
        cluster.kubectl("delete", "node", node, "--wait=false", check=False)
    result = Held(
        pods=pods,
        rss_empty_mb=empty / 2**20,
        rss_held_mb=held / 2**20,
        rss_after_delete_mb=after / 2**20,
        bytes_per_pod=(held - empty) / pods,
    )
    if empty_snapshot is not None and held_snapshot is not None:
        result.breakdown = breakdown(empty_snapshot, held_snapshot, pods)
    return result


def run(
    counts: list[int],
    traced: bool,
    workdir: Path,
    timeout: float,
    settle: float = SETTLE_S,
) -> list[dict[str, Any]]:
    """Measure each count in turn on one dev cluster under `workdir` (snapshots and a sample pod
    are left under `workdir/mem-<count>-*`)."""
    results = []
    with DevCluster(
        workdir / "cluster", config_for_tests(), progress=lambda m: print(f"devcluster: {m}")
    ) as cluster:
        account_identities(cluster)
        for pods in counts:
            held = measure(cluster, workdir, pods, traced, timeout, settle)
            print(held.line(), flush=True)
            if held.breakdown is not None:
                total = sum(v for _, v in held.breakdown)
                print(f"  tracemalloc growth: {total:.0f} B per pod, by owner:")
                by_file: dict[str, float] = defaultdict(float)
                for owner, size in held.breakdown:
                    by_file[owner.rsplit(":", 1)[0]] += size
                for module, size in sorted(by_file.items(), key=lambda kv: -kv[1])[:15]:
                    print(f"  {size:9.0f} B  {module}")
                print("  largest single allocation sites:")
                for owner, size in held.breakdown[:25]:
                    print(f"  {size:9.0f} B  {owner}")
            results.append(held.__dict__)
    return results
