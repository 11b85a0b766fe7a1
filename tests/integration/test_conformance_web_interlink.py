"""The web provider in interLink mode passes the provider conformance suite
(virtual_kubelet.testing), with the plugin written from the interLink contract
(interlink_test_plugin.py) behind it, on a unix socket with a bearer token."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from virtual_kubelet.testing import ConformanceProfile, ProviderConformance, Workload, Workloads

from .test_web_interlink import Plugin

#: The test plugin's annotations (see interlink_test_plugin.py).
PLUGIN = "plugin.test/"


class PluginWorkloads(Workloads):
    """The test plugin runs nothing: its containers run until deleted, exit with the code an
    annotation gives, and log the line an annotation gives, or the env and ConfigMap data the
    plugin was sent. The plugin API has no exec, attach or port-forward."""

    image = "registry.invalid/conformance:1"

    def runs(self) -> Workload:
        return Workload()

    def exits(self, code: int) -> Workload | None:
        return Workload(annotations={PLUGIN + "exit-code": str(code)})

    def prints(self, text: str) -> Workload | None:
        return Workload(annotations={PLUGIN + "log-line": text})

    def reports(self, mount_path: str, file_name: str) -> Workload | None:
        # The plugin logs the env and the ConfigMap data it was sent: what a remote container
        # would see.
        return Workload(annotations={PLUGIN + "report": f"{mount_path}|{file_name}"})

    def echoes_stdin(self) -> Workload | None:
        return None

    def serves(self, port: int) -> Workload | None:
        return None

    def read_command(self, mount_path: str, file_name: str) -> list[str] | None:
        return None


@pytest.fixture(scope="class")
def interlink_plugin() -> Iterator[Plugin]:
    plugin = Plugin()
    yield plugin
    plugin.stop()


class TestWebInterlinkConformance(ProviderConformance):
    @pytest.fixture(scope="class")
    @classmethod
    def conformance_profile(cls, interlink_plugin: Plugin) -> ConformanceProfile:
        return ConformanceProfile(
            provider="web",
            config={
                "mode": "interlink",
                "url": f"unix://{interlink_plugin.socket}",
                "token_file": str(interlink_plugin.token_file),
                "interlink": {"status_interval": 1},
            },
            workloads=PluginWorkloads(),
            # Plugins report container states only; pod IPs are the remote site's business.
            reports_pod_ip=False,
        )
