"""Runs scenarios x contenders on fresh dev clusters, interleaving contenders across repeats."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from virtual_kubelet.devcluster import DevCluster, DevClusterConfig
from virtual_kubelet.devcluster.pytest_plugin import config_for_tests
from virtual_kubelet.kube import config as kubeconfig
from virtual_kubelet.kube.client import KubeClient

from . import scenarios
from .contenders import account_identities, make
from .streaming import streaming

SCENARIOS = ("throughput", "latency", "scheduler", "steady", "churn", "streaming")
#: Controller-manager and scheduler client limits for the scheduler scenario (their defaults,
#: QPS 20 / burst 30 and 50 / 100, would measure the controllers, not the kubelets).
CONTROLLER_QPS = ["--kube-api-qps=1000", "--kube-api-burst=2000"]


@dataclass(frozen=True)
class Sizes:
    throughput: tuple[int, ...]
    latency: tuple[tuple[float, float], ...]  # (pods/s, seconds)
    scheduler: int
    steady: tuple[tuple[int, float], ...]  # (pods, seconds held)
    churn: int
    streaming_mb: int


FULL = Sizes(
    (100, 1000, 5000, 10000),
    ((20, 30), (100, 30)),
    1000,
    ((5000, 600), (10000, 600)),
    1000,
    100,
)
QUICK = Sizes((100,), ((20, 5),), 50, ((100, 15),), 100, 10)


def _cluster_config(scenario: str) -> DevClusterConfig:
    extra = {}
    if scenario == "scheduler":
        extra = {"kube-controller-manager": CONTROLLER_QPS, "kube-scheduler": CONTROLLER_QPS}
    return config_for_tests(extra_args=extra)


async def _one(
    cluster: DevCluster,
    workdir: Path,
    scenario: str,
    contender_name: str,
    sizes: Sizes,
    timeout: float,
) -> list[dict[str, Any]]:
    node = f"bench-{contender_name}-{secrets.token_hex(2)}"
    contender = make(contender_name, cluster, workdir / node, node)
    await contender.start()
    results: list[dict[str, Any]] = []
    try:
        # The load generator and observer is the cluster admin (its requests are not counted
        # against any contender).
        async with KubeClient(kubeconfig.load(str(cluster.kubeconfig)), name="bench") as client:
            runs: list[tuple[dict[str, Any], Callable[[], Any]]] = []
            if scenario == "throughput":
                runs = [
                    ({"pods": n}, lambda n=n: scenarios.throughput(client, contender, n, timeout))
                    for n in sizes.throughput
                ]
            elif scenario == "latency":
                runs = [
                    (
                        {"rate": r},
                        lambda r=r, d=d: scenarios.latency(client, contender, r, d, timeout),
                    )
                    for r, d in sizes.latency
                ]
            elif scenario == "scheduler":
                runs = [
                    ({}, lambda: scenarios.scheduler(client, contender, sizes.scheduler, timeout))
                ]
            elif scenario == "steady":
                runs = [
                    (
                        {"pods": n},
                        lambda n=n, h=h: scenarios.steady(client, contender, n, h, timeout),
                    )
                    for n, h in sizes.steady
                ]
            elif scenario == "churn":
                runs = [({}, lambda: scenarios.churn(client, contender, sizes.churn, timeout))]
            elif scenario == "streaming":
                runs = [({}, lambda: streaming(cluster, contender, sizes.streaming_mb))]
            for _, run in runs:
                started = time.monotonic()
                gc_before = contender.gc_pauses()
                result = await run()
                gc_after = contender.gc_pauses()
                if gc_before is not None and gc_after is not None:
                    # Time the contender's event loop stood still in Python's garbage collector.
                    result["gc_pause_s"] = round(gc_after[0] - gc_before[0], 3)
                    result["full_gcs"] = int(gc_after[1] - gc_before[1])
                result.update(
                    scenario=scenario,
                    contender=contender_name,
                    wall_s=round(time.monotonic() - started, 1),
                )
                print(result, flush=True)
                results.append(result)
    finally:
        await contender.stop()
        cluster.kubectl("delete", "node", node, "--wait=false", check=False)
    return results


def run(
    scenario_names: list[str],
    contenders: list[str],
    repeats: int,
    sizes: Sizes,
    workdir: Path,
    timeout: float,
    sink: Callable[[dict[str, Any]], None] = lambda _: None,
) -> list[dict[str, Any]]:
    """Every measurement, in order; each is also handed to `sink` as soon as it is taken."""
    results: list[dict[str, Any]] = []
    for scenario in scenario_names:
        config = _cluster_config(scenario)
        with DevCluster(
            workdir / scenario, config, progress=lambda m: print(f"devcluster: {m}")
        ) as cluster:
            account_identities(cluster)
            for repeat in range(repeats):
                # Only our agent's provider runs exec and port-forward: the others have no-ops.
                for name in ["agent"] if scenario == "streaming" else contenders:
                    for result in asyncio.run(
                        _one(cluster, workdir, scenario, name, sizes, timeout)
                    ):
                        result["repeat"] = repeat
                        if scenario == "scheduler":
                            result["controller_flags"] = " ".join(CONTROLLER_QPS)
                        sink(result)
                        results.append(result)
    return results
