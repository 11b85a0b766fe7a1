"""A dev cluster's `state.json`: its versions, ports, node addresses and the processes it started,
so that another process (`status`, `down`, `node-address`) and a later start find them."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

from .nodeaddr import NodeAddress
from .process import Component, ProcessRecord

if TYPE_CHECKING:
    from .cluster import DevCluster


def save_state(cluster: DevCluster) -> None:
    state = {
        "versions": {
            "kubernetes": cluster.config.versions.kubernetes,
            "etcd": cluster.config.versions.etcd,
        },
        "ports": cluster.ports,
        "metrics_server": cluster.with_metrics_server,
        "node_address": cluster.node_address.__dict__ if cluster.node_address else None,
        # Merged with what is on disk: `node-address` may have added one from another process.
        "node_addresses": {
            **read_state(cluster).get("node_addresses", {}),
            **cluster.node_addresses,
        },
        "processes": [c.record.to_json() for c in cluster.components.values()],
    }
    # Per process: `up` and `node-address` may save at the same moment.
    tmp = cluster.state_file.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.replace(cluster.state_file)


def read_state(cluster: DevCluster) -> dict[str, Any]:
    try:
        state: dict[str, Any] = json.loads(cluster.state_file.read_text())
    except FileNotFoundError:
        return {}
    return state


def load_state(cluster: DevCluster) -> None:
    state = read_state(cluster)
    if not state:
        return
    cluster.ports = {str(k): int(v) for k, v in state.get("ports", {}).items()}
    cluster.components = {
        rec["name"]: Component(ProcessRecord.from_json(rec)) for rec in state.get("processes", [])
    }
    address = state.get("node_address")
    cluster.node_address = NodeAddress(**address) if address else None
    cluster.node_addresses = {str(k): str(v) for k, v in state.get("node_addresses", {}).items()}
    cluster.with_metrics_server = bool(state.get("metrics_server", False))
