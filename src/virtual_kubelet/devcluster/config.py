"""`DevClusterConfig`: how a dev cluster runs (versions, controller timings, ports, extra flags,
start timeout, detached, node address, metrics-server)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .components import ALL_COMPONENTS, ALL_PORT_NAMES, COMPONENTS, METRICS_SERVER
from .versions import Versions


@dataclass(frozen=True)
class DevClusterConfig:
    """How to run a dev cluster. The defaults suit a person's demo; tests shorten the periods."""

    versions: Versions = field(default_factory=Versions.from_env)
    #: How often the node-lifecycle controller looks at nodes, and how long it waits for a heartbeat.
    node_monitor_period: str = "2s"
    node_monitor_grace_period: str = "40s"
    node_startup_grace_period: str = "60s"
    #: Fixed ports by name (see PORT_NAMES); the rest are chosen free.
    ports: Mapping[str, int] = field(default_factory=dict)
    #: Extra command-line flags per component, appended after ours (so they win).
    extra_args: Mapping[str, Sequence[str]] = field(default_factory=dict)
    #: Seconds each component may take to become ready (2-core machines need generous values).
    start_timeout: float = 120.0
    #: Leave the components running after this Python process exits (the CLI's `up`).
    detached: bool = False
    #: Give virtual nodes a non-loopback local address (see nodeaddr.py); needs root. The API
    #: server's `nodes/<name>/proxy` refuses loopback node addresses, logs and exec do not.
    node_address: bool = False
    #: Also run metrics-server (built from its Go module) and register it as metrics.k8s.io, so
    #: `kubectl top` works; `metrics_resolution` is how often it scrapes each kubelet.
    metrics_server: bool = False
    metrics_resolution: str = "15s"

    def __post_init__(self) -> None:
        unknown = set(self.ports) - set(ALL_PORT_NAMES)
        if unknown:
            raise ValueError(f"unknown port names {sorted(unknown)}; known: {list(ALL_PORT_NAMES)}")
        unknown = set(self.extra_args) - set(ALL_COMPONENTS)
        if unknown:
            raise ValueError(f"unknown components {sorted(unknown)}; known: {list(ALL_COMPONENTS)}")

    @property
    def components(self) -> tuple[str, ...]:
        """The components this configuration runs, in start order."""
        return (*COMPONENTS, METRICS_SERVER) if self.metrics_server else COMPONENTS
