"""The process provider passes the provider conformance suite (virtual_kubelet.testing)."""

from __future__ import annotations

from virtual_kubelet.testing import ConformanceProfile, ProcessWorkloads, ProviderConformance


class TestProcessConformance(ProviderConformance):
    profile = ConformanceProfile(provider="process", workloads=ProcessWorkloads())
