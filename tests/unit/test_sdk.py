"""The provider SDK: one import with everything, old import paths still working, and the one table
of optional hooks the core reads."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

import virtual_kubelet.sdk as sdk
from virtual_kubelet.providers.mock import MockProvider
from virtual_kubelet.sdk import Capabilities, Pod, PodCallback, Provider, ProviderContext


class _Minimal(Provider):
    async def create_pod(self, pod: Pod) -> None: ...
    async def update_pod(self, pod: Pod) -> None: ...
    async def delete_pod(self, pod: Pod) -> None: ...
    async def get_pod(self, namespace: str, name: str) -> Pod | None:
        return None

    async def list_pods(self) -> list[Pod]:
        return []


class _Pushing(_Minimal):
    def notify_pods(self, callback: PodCallback) -> None: ...

    async def port_forward(self, namespace: str, pod: str, port: int, stream: object) -> None: ...


def _context(tmp_path: Path, config: str | None = None) -> ProviderContext:
    path = None
    if config is not None:
        path = tmp_path / "mock.yaml"
        path.write_text(config)
    return ProviderContext("n1", "linux", "198.18.0.9", 10250, config_path=path, state_dir=tmp_path)


def test_every_sdk_name_is_importable_and_documented() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "providers.md").read_text()
    for name in sdk.__all__:
        assert getattr(sdk, name) is not None
        assert f"`{name}`" in docs, f"{name} is not listed in docs/providers.md"


@pytest.mark.parametrize(
    ("module", "names"),
    [
        (
            "virtual_kubelet.providers.base",
            [
                "ContainerIO",
                "DuplexStream",
                "InvalidInput",
                "LogOptions",
                "Node",
                "NotFound",
                "Pod",
                "PodCallback",
                "PodStatus",
                "Provider",
                "ProviderContext",
                "implements",
            ],
        ),
        ("virtual_kubelet.providers.configfile", ["ProviderConfigError", "read_mapping"]),
        ("virtual_kubelet.kubelet_api.logs", ["LogOptions", "format_line", "select_history"]),
        ("virtual_kubelet.pods.env", ["expand", "expand_command"]),
        ("virtual_kubelet.errors", ["NotFound", "InvalidInput"]),
        ("virtual_kubelet.streams", ["ContainerIO", "TermSize"]),
    ],
)
def test_old_import_paths_give_the_same_objects(module: str, names: list[str]) -> None:
    old = importlib.import_module(module)
    for name in names:
        assert getattr(old, name) is getattr(sdk, name), f"{module}.{name}"


def test_capabilities_are_the_hooks_a_provider_overrides(tmp_path: Path) -> None:
    assert Capabilities.of(_Minimal(_context(tmp_path))).implemented == ()
    pushing = Capabilities.of(_Pushing(_context(tmp_path)))
    assert pushing.implemented == ("notify_pods", "port_forward")
    assert "notify_pods" in pushing
    assert "run_in_container" not in pushing
    assert "create_pod" not in pushing  # required methods are not capabilities


def test_the_mock_switches_push_off_from_its_config(tmp_path: Path) -> None:
    pushing = MockProvider(_context(tmp_path))
    polled = MockProvider(_context(tmp_path, "push: false\n"))
    assert "notify_pods" in Capabilities.of(pushing)
    assert "notify_pods" not in Capabilities.of(polled)
    # Everything else the mock implements is unaffected.
    assert Capabilities.of(polled).implemented == tuple(
        hook for hook in Capabilities.of(pushing).implemented if hook != "notify_pods"
    )
    assert sdk.implements(pushing, "notify_pods")
    assert not sdk.implements(polled, "notify_pods")
    assert sdk.implements(polled, "configure_node")  # not a capability: overridden or not


def test_the_table_is_built_once_per_provider(tmp_path: Path) -> None:
    class Counting(_Pushing):
        asked = 0

        def capabilities(self) -> Capabilities:
            Counting.asked += 1
            return super().capabilities()

    provider = Counting(_context(tmp_path))
    assert Capabilities.of(provider) is Capabilities.of(provider)
    assert Counting.asked == 1
