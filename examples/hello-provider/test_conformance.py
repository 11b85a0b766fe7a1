"""The provider conformance suite for the tutorial provider (docs/providers.md, "Test your
provider"): what a provider package adds to run it. With the package installed
(`pip install -e examples/hello-provider`): `pytest examples/hello-provider`. CI runs this class
from tests/integration/test_third_party_provider.py.
"""

from virtual_kubelet.testing import ConformanceProfile, IdleWorkloads, ProviderConformance


class TestHelloProvider(ProviderConformance):
    profile = ConformanceProfile(
        provider="hello",
        # Its pods run from creation to deletion, whatever they ask for...
        workloads=IdleWorkloads(),
        # ...as records in the agent's memory, so they cannot outlive it.
        survives_restart=False,
    )
