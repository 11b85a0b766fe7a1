"""The pod controller's settings: `PodSettings` holds its tunables, whose defaults are the only
ones (the agent's settings nest it and the command line reads its defaults from there);
`PodNode` holds what it must know of its node, which the agent learns only once it runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["PodNode", "PodSettings"]


@dataclass(frozen=True)
class PodSettings:
    #: Pods synced with the provider concurrently (`--pod-sync-workers`).
    sync_workers: int = 32
    #: Pod statuses written concurrently (and statuses polled concurrently, see `poll_interval`).
    status_workers: int = 16
    #: Failed provider calls for one pod before giving up (create: the pod becomes Failed).
    retry_limit: int = 10
    retry_base_delay: float = 1.0
    retry_max_delay: float = 60.0
    #: Seconds between status polls for providers without notify_pods.
    poll_interval: float = 5.0
    #: Bound on how long a single provider call may take.
    provider_timeout: float = 120.0


@dataclass(frozen=True)
class PodNode:
    """The node the pods run on, as the pod controller needs it."""

    name: str
    #: The node's InternalIPs: the pods' hostIP(s).
    host_ips: list[str]
    #: What `resourceFieldRef` falls back to for a container without limits.
    allocatable: dict[str, str] = field(default_factory=dict)
