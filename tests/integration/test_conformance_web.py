"""The web provider (original protocol) passes the provider conformance suite
(virtual_kubelet.testing), with the backend written from the protocol table
(web_table_backend.py) behind it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from virtual_kubelet.testing import ConformanceProfile, ProviderConformance, Workload, Workloads

from .test_web_provider import TableBackend

#: The table backend's annotations (see web_table_backend.py).
TABLE = "table.test/"


class TableWorkloads(Workloads):
    """The table backend runs nothing: its containers run until deleted, exit with the code an
    annotation gives, and log the line an annotation gives. It has no exec, attach or
    port-forward (the protocol has none) and its containers see no volume files."""

    image = "registry.invalid/conformance:1"

    def runs(self) -> Workload:
        return Workload()

    def exits(self, code: int) -> Workload | None:
        return Workload(annotations={TABLE + "exit-code": str(code)})

    def prints(self, text: str) -> Workload | None:
        return Workload(annotations={TABLE + "log-line": text})

    def reports(self, mount_path: str, file_name: str) -> Workload | None:
        return None

    def echoes_stdin(self) -> Workload | None:
        return None

    def serves(self, port: int) -> Workload | None:
        return None

    def read_command(self, mount_path: str, file_name: str) -> list[str] | None:
        return None


@pytest.fixture(scope="class")
def table_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TableBackend]:
    backend = TableBackend(Path(tmp_path_factory.mktemp("table"))).start()
    yield backend
    backend.kill()


class TestWebConformance(ProviderConformance):
    @pytest.fixture(scope="class")
    @classmethod
    def conformance_profile(cls, table_backend: TableBackend) -> ConformanceProfile:
        return ConformanceProfile(
            provider="web",
            config={"request_timeout": 5},
            env={"WEB_ENDPOINT_URL": table_backend.url},
            workloads=TableWorkloads(),
        )
