import pytest

from virtual_kubelet.devcluster.versions import (
    DEFAULT_KUBERNETES_VERSION,
    VersionError,
    Versions,
    cache_root,
)


def test_defaults_are_release_tags() -> None:
    versions = Versions()
    assert versions.kubernetes == DEFAULT_KUBERNETES_VERSION
    assert versions.staging == "v0." + DEFAULT_KUBERNETES_VERSION.removeprefix("v1.")
    assert versions.kubernetes_minor == int(DEFAULT_KUBERNETES_VERSION.split(".")[1])


@pytest.mark.parametrize("bad", ["1.36.4", "v1.36", "v2.0.0", "latest", "v1.36.4-rc.0", ""])
def test_malformed_kubernetes_pins_are_refused(bad: str) -> None:
    with pytest.raises(VersionError, match="not a release tag"):
        Versions(kubernetes=bad)


def test_malformed_etcd_pin_is_refused() -> None:
    with pytest.raises(VersionError, match="etcd version"):
        Versions(etcd="3.6.16")


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VK_KUBERNETES_VERSION", "v1.35.4")
    monkeypatch.setenv("VK_ETCD_VERSION", "v3.6.5")
    assert Versions.from_env() == Versions(kubernetes="v1.35.4", etcd="v3.6.5")
    monkeypatch.setenv("VK_CACHE_DIR", "/somewhere/else")
    assert str(cache_root()) == "/somewhere/else"
