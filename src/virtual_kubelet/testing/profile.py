"""A conformance profile: which provider to test, with what configuration, and what to expect of
it beyond what its capabilities table says."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..sdk import Capabilities
from .workloads import Workloads

__all__ = ["ConformanceProfile"]


@dataclass(frozen=True)
class ConformanceProfile:
    """What the suite runs and expects. Which kubelet API checks run (logs, exec, attach,
    port-forward, stats) follows the provider's `Capabilities`; the flags here cover what a
    capabilities table cannot tell."""

    #: The provider's name, as `virtual-kubelet --provider` takes it (built in or installed).
    provider: str
    #: Written to a file and passed as `--provider-config` (None: no config file).
    config: Mapping[str, Any] | None = None
    #: More agent arguments, e.g. `["--provider-retry-limit", "2"]`.
    args: Sequence[str] = ()
    #: More environment for the agent (and for reading the provider's capabilities).
    env: Mapping[str, str] = field(default_factory=dict)
    #: How the suite's workloads are expressed for this backend.
    workloads: Workloads = field(default_factory=Workloads)
    #: Pods keep running when the agent is killed (`kill -9`), and the next agent, started on the
    #: same state directory, adopts them instead of creating them again.
    survives_restart: bool = True
    #: Running pods report `status.podIP`, as a kubelet's do.
    reports_pod_ip: bool = True
    #: None: the provider's own answer, `Capabilities.of(provider)` (read in a child process with
    #: `env`). Set it only for a provider that cannot be constructed away from its backend.
    capabilities: Capabilities | None = None
    #: Seconds a pod may take to start, finish, or leave the provider after a forced deletion.
    timeout: float = 60.0
    #: `terminationGracePeriodSeconds` of the pod the graceful-deletion check deletes: it must be
    #: gone from the API and the provider within this many seconds.
    grace_period_seconds: int = 20
