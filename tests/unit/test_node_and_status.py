"""Pure logic of node adoption and pod status patches."""

from __future__ import annotations

import datetime
from typing import Any

from virtual_kubelet.node.controller import NodeSettings, default_node, merge_taints
from virtual_kubelet.pods.status import SYNC_CONDITION, failed_patch, status_patch
from virtual_kubelet.pods.tracking import SPEC_HASH, spec_hash

OURS = {"key": "virtual-kubelet.io/provider", "value": "mock", "effect": "NoSchedule"}


def test_merge_taints_keeps_foreign_taints_in_place_and_replaces_ours() -> None:
    existing = [
        {"key": "virtual-kubelet.io/provider", "value": "old", "effect": "NoSchedule"},
        {"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"},
        {"key": "example.com/gpu", "value": "a100", "effect": "NoSchedule"},
    ]
    merged = merge_taints(existing, [OURS], {"virtual-kubelet.io/provider"})
    assert merged == [OURS, existing[1], existing[2]]


def test_merge_taints_drops_ours_when_disabled() -> None:
    existing = [OURS, {"key": "example.com/gpu", "effect": "NoSchedule"}]
    assert merge_taints(existing, [], {"virtual-kubelet.io/provider"}) == [existing[1]]


def test_default_node_labels_and_address() -> None:
    node = default_node(
        NodeSettings(name="n1", provider="mock", internal_ip="198.18.0.1", taints=(OURS,))
    )
    labels = node["metadata"]["labels"]
    assert labels["kubernetes.io/hostname"] == "n1"
    assert labels["type"] == "virtual-kubelet"
    assert node["status"]["addresses"][0] == {"type": "InternalIP", "address": "198.18.0.1"}
    assert node["spec"]["taints"] == [OURS]


def _api_pod(**status: Any) -> dict[str, Any]:
    return {"metadata": {"uid": "u1"}, "spec": {"containers": [{"name": "c"}]}, "status": status}


def test_status_patch_is_none_when_nothing_changed() -> None:
    status = {
        "phase": "Running",
        "podIP": "10.0.0.5",
        "podIPs": [{"ip": "10.0.0.5"}],
        "hostIP": "1.2.3.4",
        "hostIPs": [{"ip": "1.2.3.4"}],
        "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "t1"}],
    }
    api = _api_pod(**status)
    newer = {
        **status,
        "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "t2"}],
    }
    assert status_patch(api, newer, ["1.2.3.4"]) is None


def test_status_patch_carries_uid_changed_fields_and_keeps_transition_times() -> None:
    api = _api_pod(
        phase="Pending",
        conditions=[
            {"type": "Ready", "status": "False", "lastTransitionTime": "t0"},
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": "t0"},
        ],
    )
    provider = {
        "phase": "Running",
        "podIP": "10.0.0.5",
        "labels": "ignored",
        "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": "t1"},
            {"type": "PodScheduled", "status": "True", "reason": "x", "lastTransitionTime": "t9"},
        ],
    }
    patch = status_patch(api, provider, ["1.2.3.4"])
    assert patch is not None
    assert patch["metadata"] == {"uid": "u1"}
    status = patch["status"]
    assert status["phase"] == "Running"
    assert status["podIPs"] == [{"ip": "10.0.0.5"}]
    assert status["hostIP"] == "1.2.3.4"
    assert "labels" not in status
    ready, scheduled = status["conditions"]
    assert ready["lastTransitionTime"] == "t1"  # a real transition keeps the provider's time
    assert scheduled["lastTransitionTime"] == "t0"  # same status: the original transition time


def test_failed_patch() -> None:
    patch = failed_patch(_api_pod(phase="Pending"), "ProviderFailed", "boom")
    assert patch["status"]["phase"] == "Failed"
    assert patch["status"]["reason"] == "ProviderFailed"
    assert patch["status"]["conditions"][0]["type"] == SYNC_CONDITION


def test_spec_hash_ignores_status_and_our_own_annotation() -> None:
    pod = {
        "metadata": {"labels": {"a": "1"}, "annotations": {}},
        "spec": {"containers": [{"name": "c"}]},
        "status": {"phase": "Pending"},
    }
    base = spec_hash(pod)
    pod["status"]["phase"] = "Running"
    pod["metadata"]["annotations"][SPEC_HASH] = "whatever"
    assert spec_hash(pod) == base
    pod["spec"]["containers"][0]["image"] = "new"
    assert spec_hash(pod) != base


def test_deletion_deadline_counts_the_grace_period_from_when_it_is_seen() -> None:
    from virtual_kubelet.pods.deletion import DELETION_SLACK_S, deletion_deadline

    pod = {
        "metadata": {
            "deletionTimestamp": "2026-11-22T10:00:03Z",  # whole seconds: up to 1 s early
            "deletionGracePeriodSeconds": 3,
        }
    }
    seen = datetime.datetime(2026, 11, 22, 10, 0, 0, 900000, tzinfo=datetime.UTC).timestamp()
    assert deletion_deadline(pod, seen) == seen + 3 + DELETION_SLACK_S
    # Seen late (the agent was down): deletionTimestamp has long passed; still a full grace.
    late = seen + 3600
    assert deletion_deadline(pod, late) == late + 3 + DELETION_SLACK_S
    # Without a grace period the timestamp is all there is.
    del pod["metadata"]["deletionGracePeriodSeconds"]
    stamp = datetime.datetime(2026, 11, 22, 10, 0, 3, tzinfo=datetime.UTC).timestamp()
    assert deletion_deadline(pod, seen) == stamp + DELETION_SLACK_S
