"""Packed API objects (`kube.packed`): what goes in comes out, each read is a private copy, and a
held pod costs a few hundred bytes (issue 18)."""

from __future__ import annotations

import copy
import sys
from typing import Any

from virtual_kubelet.kube.packed import PackedStore, Packer


def _pod(name: str, phase: str | None = "Running") -> dict[str, Any]:
    """A pod as the API server returns it to a kubelet (managedFields already dropped)."""
    pod: dict[str, Any] = {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "namespace": "bench-2f1c0a",
            "uid": "1f2b79e4-9590-43d7-8c0e-3ca76549d88f",
            "resourceVersion": "130321",
            "creationTimestamp": "2026-11-26T14:28:41Z",
            "labels": {"bench": "1"},
            "annotations": {"note": "ünïcode ✓", "empty": ""},
        },
        "spec": {
            "containers": [
                {
                    "name": "c",
                    "image": "registry.invalid/bench:1",
                    "env": [{"name": "N", "value": "x" * 3000}],  # bigger than the window
                    "terminationMessagePath": "/dev/termination-log",
                }
            ],
            "nodeName": "vk-1",
            "tolerations": [
                {"key": "virtual-kubelet.io/provider", "operator": "Exists", "effect": "NoSchedule"}
            ],
            "terminationGracePeriodSeconds": 30,
            "priority": 0,
            "enableServiceLinks": True,
            "securityContext": {},
        },
        "status": {"conditions": [{"type": "Ready", "status": "True", "lastProbeTime": None}]},
    }
    if phase is not None:
        pod["status"]["phase"] = phase
    return pod


def test_what_is_packed_unpacks_equal() -> None:
    packer = Packer()
    for obj in (_pod("a"), {}, [], {"x": [1, 2.5, None, True, "é"]}, "text"):
        assert packer.unpack(packer.pack(obj)) == obj


def test_a_store_reads_private_copies_and_keeps_summaries() -> None:
    store: PackedStore[str | None] = PackedStore(Packer(), lambda p: p["status"].get("phase"))
    original = _pod("a")
    store["ns/a"] = original
    store["ns/b"] = _pod("b", phase=None)
    original["metadata"]["name"] = "changed after storing"
    first = store["ns/a"]
    first["spec"]["containers"].clear()  # a reader changing its copy
    assert store["ns/a"] == _pod("a")
    assert store.get("ns/missing") is None
    assert "ns/a" in store
    assert "ns/missing" not in store
    assert sorted(store) == ["ns/a", "ns/b"]
    assert len(store) == 2
    assert list(store.summaries()) == ["Running", None]
    store["ns/a"] = _pod("a", phase="Succeeded")
    del store["ns/b"]
    assert list(store.summaries()) == ["Succeeded"]
    assert [p["metadata"]["name"] for p in store.values()] == ["a"]


def test_a_typical_pod_packs_to_a_few_hundred_bytes() -> None:
    pod = _pod("m00001")
    pod["spec"]["containers"][0]["env"] = []
    packer = Packer()
    packed = packer.pack(pod)
    assert len(packed) < 400, len(packed)
    # As dicts and lists the same pod is tens of times larger.
    assert _deep_size(copy.deepcopy(pod)) > 10 * sys.getsizeof(packed)


def _deep_size(obj: Any) -> int:
    size = sys.getsizeof(obj)
    if isinstance(obj, dict):
        size += sum(_deep_size(k) + _deep_size(v) for k, v in obj.items())
    elif isinstance(obj, list):
        size += sum(_deep_size(v) for v in obj)
    return size
