"""The web provider in `mode: extended` passes the provider conformance suite
(virtual_kubelet.testing) with the reference backend (examples/web-bridge: pods as local
processes) behind it, bearer token included: the kubelet API checks (logs, exec, attach,
port-forward, stats) run, since the backend offers every feature."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from virtual_kubelet.sdk import Capabilities
from virtual_kubelet.testing import ConformanceProfile, ProviderConformance, Workload, Workloads

from .test_web_extended import ReferenceBackend


class BridgeWorkloads(Workloads):
    """The default shell workloads: the reference backend runs commands as local processes. Its
    containers do not see the agent's volume files (they are not mounted anywhere), so the checks
    reading one are skipped."""

    image = "registry.invalid/conformance:1"

    def reports(self, mount_path: str, file_name: str) -> Workload | None:
        return None

    def read_command(self, mount_path: str, file_name: str) -> list[str] | None:
        return None


@pytest.fixture(scope="class")
def reference_backend(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ReferenceBackend, str]]:
    token = secrets.token_urlsafe(16)
    workdir = tmp_path_factory.mktemp("bridge")
    backend = ReferenceBackend(workdir / "backend", token).start()
    token_file = workdir / "agent-token"
    token_file.write_text(token)
    yield backend, str(token_file)
    backend.stop()


class TestWebExtendedConformance(ProviderConformance):
    @pytest.fixture(scope="class")
    @classmethod
    def conformance_profile(
        cls, reference_backend: tuple[ReferenceBackend, str]
    ) -> ConformanceProfile:
        backend, token_file = reference_backend
        return ConformanceProfile(
            provider="web",
            config={"mode": "extended", "url": backend.url, "token_file": token_file},
            workloads=BridgeWorkloads(),
            # What the backend advertises; an unstarted provider has not asked it yet.
            capabilities=Capabilities(
                notify_pods=True,
                notify_node_status=True,
                get_container_logs=True,
                run_in_container=True,
                attach_to_container=True,
                port_forward=True,
                get_stats_summary=True,
            ),
            # Pods are processes of the backend, not of the agent: they outlive a killed agent.
            survives_restart=True,
            reports_pod_ip=False,  # pods share the backend's network; it has no pod IPs
        )
