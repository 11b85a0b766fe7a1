"""The kubernetes provider's `/stats/summary`: PodMetrics from the target's metrics API as PodStats,
only our remote pods kept and renamed to their source names, CPU counters integrated from rates
and the node's counter monotonic as pods come and go."""

from __future__ import annotations

import asyncio
from typing import Any

from virtual_kubelet.providers.kubernetes.stats import RemoteStats, from_pod_metrics, rename_pods


def _view(name: str, uid: str) -> dict[str, Any]:
    return {"metadata": {"namespace": "home", "name": name, "uid": uid}}


def test_pod_metrics_become_pod_stats() -> None:
    stats = from_pod_metrics(
        {
            "metadata": {"name": "web-abc", "namespace": "home-kit"},
            "timestamp": "2026-01-01T00:00:00Z",
            "containers": [
                {"name": "main", "usage": {"cpu": "250m", "memory": "64Mi"}},
                {"name": "side", "usage": {"cpu": "1500000n", "memory": "1Ki"}},
            ],
        }
    )
    assert stats["podRef"] == {"name": "web-abc", "namespace": "home-kit"}
    assert [c["cpu"]["usageNanoCores"] for c in stats["containers"]] == [250_000_000, 1_500_000]
    assert stats["cpu"]["usageNanoCores"] == 251_500_000
    assert stats["memory"]["workingSetBytes"] == 64 * 1024 * 1024 + 1024


def test_only_our_pods_are_kept_under_their_source_names() -> None:
    pods = [
        {"podRef": {"namespace": "home-kit", "name": "web-abc", "uid": "remote-1"}, "cpu": {}},
        {"podRef": {"namespace": "home-kit", "name": "not-ours", "uid": "remote-2"}, "cpu": {}},
    ]
    kept = rename_pods(pods, {("home-kit", "web-abc"): _view("web", "source-1")})
    assert [p["podRef"] for p in kept] == [{"name": "web", "namespace": "home", "uid": "source-1"}]
    assert pods[0]["podRef"]["uid"] == "remote-1"  # the target's answer is left as it was


class _Target:
    """Answers the metrics API with `usage` for the pod web-abc, as metrics-server would."""

    def __init__(self) -> None:
        self.cpu = "500m"
        self.asked: list[str] = []

    async def request(self, method: str, url: str, **_: Any) -> Any:
        self.asked.append(url)
        return {
            "items": [
                {
                    "metadata": {"name": "web-abc", "namespace": "home-kit"},
                    "containers": [{"name": "main", "usage": {"cpu": self.cpu, "memory": "1Mi"}}],
                }
            ]
        }


def test_counters_are_integrated_and_the_nodes_never_goes_back(monkeypatch: Any) -> None:
    clock = [100.0]
    monkeypatch.setattr(
        "virtual_kubelet.providers.kubernetes.stats.time.monotonic", lambda: clock[0]
    )
    remote = {"metadata": {"namespace": "home-kit", "name": "web-abc"}, "spec": {"nodeName": "w"}}
    remotes = [remote]
    target = _Target()
    stats = RemoteStats(
        target,  # type: ignore[arg-type]
        "owner",
        "vnode",
        lambda: remotes,
        lambda _: _view("web", "source-1"),
    )
    first = asyncio.run(stats.summary())
    assert first["node"]["nodeName"] == "vnode"
    assert first["pods"][0]["cpu"]["usageCoreNanoSeconds"] == 0
    clock[0] += 10
    second = asyncio.run(stats.summary())
    pod = second["pods"][0]
    assert pod["containers"][0]["cpu"]["usageCoreNanoSeconds"] == 5 * 10**9  # 0.5 core for 10 s
    assert second["node"]["cpu"]["usageCoreNanoSeconds"] == 5 * 10**9
    assert second["node"]["memory"]["workingSetBytes"] == 1024 * 1024
    remotes.clear()  # the pod is gone: the node's counter keeps what it used
    third = asyncio.run(stats.summary())
    assert third["pods"] == []
    assert third["node"]["cpu"]["usageCoreNanoSeconds"] == 5 * 10**9
    assert target.asked == ["/apis/metrics.k8s.io/v1beta1/pods"] * 2
