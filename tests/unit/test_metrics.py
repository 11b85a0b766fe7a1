"""The agent's own metrics that need no cluster."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys

import pytest
from prometheus_client import REGISTRY

from virtual_kubelet.errors import NotFound
from virtual_kubelet.metrics import watch_gc_pauses
from virtual_kubelet.pods.lifecycle import Op, ProviderCalls


def _full_collections() -> float:
    value = REGISTRY.get_sample_value("virtual_kubelet_gc_pause_seconds_count", {"generation": "2"})
    return value or 0.0


def test_every_full_collection_is_timed_once() -> None:
    watch_gc_pauses()
    watch_gc_pauses()  # idempotent: one timer, not two
    before = _full_collections()
    gc.collect()
    assert _full_collections() == before + 1


def test_kube_layer_counts_without_the_agents_metrics_module() -> None:
    """kube/ has its own metrics (it must not import the agent's), and they reach the registry
    the agent's /metrics endpoint serves."""
    code = (
        "import sys\n"
        "import virtual_kubelet.kube.client, virtual_kubelet.kube.events\n"
        "import virtual_kubelet.kube.workqueue\n"
        "from prometheus_client import REGISTRY, generate_latest\n"
        "assert 'virtual_kubelet.metrics' not in sys.modules, 'kube imported the agent metrics'\n"
        "text = generate_latest(REGISTRY).decode()\n"
        "for name in ('virtual_kubelet_api_requests_total', 'virtual_kubelet_workqueue_depth',\n"
        "             'virtual_kubelet_events_dropped_total'):\n"
        "    assert name in text, name\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def _calls(method: str, result: str) -> float:
    value = REGISTRY.get_sample_value(
        "virtual_kubelet_provider_calls_total", {"method": method, "result": result}
    )
    return value or 0.0


def _latency(method: str, suffix: str, le: str | None = None) -> float:
    labels = {"method": method, **({"le": le} if le else {})}
    value = REGISTRY.get_sample_value(
        f"virtual_kubelet_provider_call_duration_seconds_{suffix}", labels
    )
    return value or 0.0


def test_provider_calls_are_timed_and_counted_by_method_and_result() -> None:
    calls = ProviderCalls(timeout=0.2)

    async def slow() -> str:
        await asyncio.sleep(0.06)  # the provider's own latency, which the histogram must show
        return "created"

    async def gone() -> None:
        raise NotFound("no such pod")

    async def hangs() -> None:
        await asyncio.Event().wait()

    async def scenario() -> None:
        assert await calls(Op.CREATE_POD, slow()) == "created"
        with pytest.raises(NotFound):
            await calls(Op.GET_POD, gone())
        with pytest.raises(TimeoutError, match="did not return within"):
            await calls(Op.DELETE_POD, hangs())

    before = {
        "ok": _calls("create_pod", "ok"),
        "not_found": _calls("get_pod", "not_found"),
        "timeout": _calls("delete_pod", "timeout"),
        "create_count": _latency("create_pod", "count"),
        "create_fast": _latency("create_pod", "bucket", "0.05"),
        "create_sum": _latency("create_pod", "sum"),
        "delete_slow": _latency("delete_pod", "bucket", "0.1"),
        "delete_count": _latency("delete_pod", "count"),
    }
    asyncio.run(scenario())
    assert _calls("create_pod", "ok") == before["ok"] + 1
    assert _calls("get_pod", "not_found") == before["not_found"] + 1
    assert _calls("delete_pod", "timeout") == before["timeout"] + 1
    assert _latency("create_pod", "count") == before["create_count"] + 1
    assert _latency("create_pod", "sum") - before["create_sum"] >= 0.06
    # 60 ms is above the 50 ms bucket; the timed-out call took its full 200 ms, above 100 ms.
    assert _latency("create_pod", "bucket", "0.05") == before["create_fast"]
    assert _latency("delete_pod", "count") == before["delete_count"] + 1
    assert _latency("delete_pod", "bucket", "0.1") == before["delete_slow"]
