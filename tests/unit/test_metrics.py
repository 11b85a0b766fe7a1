"""The agent's own metrics that need no cluster."""

from __future__ import annotations

import gc
import subprocess
import sys

from prometheus_client import REGISTRY

from virtual_kubelet.metrics import watch_gc_pauses


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
