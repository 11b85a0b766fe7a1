"""The provider conformance kit: one suite that says what "works" means for any provider, run
against the real dev cluster with real kubectl.

    from virtual_kubelet.testing import ConformanceProfile, ProviderConformance

    class TestMyProvider(ProviderConformance):
        profile = ConformanceProfile(provider="mine", config={"endpoint": "..."})

The fixtures come from the `pytest11` plugin `virtual_kubelet.testing.pytest_plugin` (installed
with virtual-kubelet, like the `devcluster` one). Dev tooling: no product module imports it.
See docs/providers.md, "Test your provider".
"""

from __future__ import annotations

from .profile import ConformanceProfile
from .suite import ProviderConformance
from .workloads import IdleWorkloads, MockWorkloads, ProcessWorkloads, Workload, Workloads

__all__ = [
    "ConformanceProfile",
    "IdleWorkloads",
    "MockWorkloads",
    "ProcessWorkloads",
    "ProviderConformance",
    "Workload",
    "Workloads",
]
