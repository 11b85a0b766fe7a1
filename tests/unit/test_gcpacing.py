"""Full garbage collections are paced: at most one per interval, and only after enough young ones."""

from __future__ import annotations

import gc

from virtual_kubelet.gcpacing import FullCollectionPacer


def test_automatic_full_collections_are_replaced_and_restored() -> None:
    before = gc.get_threshold()
    pacer = FullCollectionPacer()
    pacer.install()
    try:
        young, middle, full = gc.get_threshold()
        assert (young, middle) == before[:2]
        assert full > 10**6  # CPython never starts a full collection by itself now
    finally:
        pacer.uninstall()
    assert gc.get_threshold() == before


def test_at_most_one_full_collection_per_interval_and_only_when_worthwhile() -> None:
    now = [1000.0]
    runs: list[int] = []

    def collect(generation: int) -> int:
        runs.append(generation)
        return 0

    pacer = FullCollectionPacer(
        min_interval=60, min_young_collections=0, clock=lambda: now[0], collect=collect
    )
    assert not pacer.tick()  # the interval starts at creation
    now[0] += 61
    assert pacer.tick()
    assert runs == [2]
    now[0] += 30
    assert not pacer.tick()
    now[0] += 31
    assert pacer.tick()
    # Without enough generation-1 collections since the last full one, nothing runs.
    idle = FullCollectionPacer(
        min_interval=0, min_young_collections=1 << 30, clock=lambda: now[0], collect=collect
    )
    assert not idle.tick()
    assert runs == [2, 2]
