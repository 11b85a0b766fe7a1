"""The mock provider passes the provider conformance suite (virtual_kubelet.testing)."""

from __future__ import annotations

from virtual_kubelet.testing import ConformanceProfile, MockWorkloads, ProviderConformance


class TestMockConformance(ProviderConformance):
    # `persist`: the mock keeps its pods in a journal, so a restarted agent finds them again.
    profile = ConformanceProfile(
        provider="mock", config={"persist": True}, workloads=MockWorkloads()
    )
