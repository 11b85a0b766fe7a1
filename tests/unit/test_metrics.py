"""The agent's own metrics that need no cluster."""

from __future__ import annotations

import gc

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
