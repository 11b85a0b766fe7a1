"""`virtual-kubelet providers` lists the original project's providers with their state here, and a
retired one given to --provider fails with the reason it is retired."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from virtual_kubelet.cli import main
from virtual_kubelet.providers import catalog, registry

ORIGINAL_ROWS = {
    # the upstream website's providers.yaml and README "Providers" section
    "Admiralty Multi-Cluster Scheduler",
    "Alibaba Cloud Elastic Container Instance (ECI)",
    "AWS Fargate",
    "Azure Batch",
    "Azure Container Instances (ACI)",
    "Cisco Virtual Kubelet",
    "Elotl Kip",
    "Kubernetes Container Runtime Interface (CRI)",
    "Huawei Cloud Container Instance (CCI)",
    "HashiCorp Nomad",
    "interLink",
    "Liqo",
    "OpenStack Zun",
    "Tencent Games Tensile Kube",
    "StackPath Edge Compute",
    # once in the upstream tree or README, now retired services
    "Hyper.sh",
    "Azure Service Fabric Mesh",
    "vSphere Integrated Containers",
}


def _listing(*args: str) -> str:
    result = CliRunner().invoke(main, ["providers", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_listing_has_every_original_row_with_its_state() -> None:
    text = _listing()
    usable, _, original = text.partition("Providers of the original virtual-kubelet")
    assert original, text
    for title in ORIGINAL_ROWS:
        assert title in original, title
    rows = {line.split()[0]: line for line in original.splitlines()[1:] if line.strip()}
    assert rows["hypersh"].split()[1] == "retired"
    assert "shut down in January 2019" in rows["hypersh"]
    assert "retired on 28 April 2021" in rows["sfmesh"]
    assert "end of general support in August 2021" in rows["vic"]
    assert "-> kubernetes (mode huawei-cci)" in rows["huawei"]
    assert "-> web (mode interlink)" in rows["interlink"]
    for name in ("admiralty", "liqo", "tensile-kube"):
        assert "-> kubernetes" in rows[name], name
    assert "-> cri" in rows["cri"]
    # the usable section still starts each line with a provider name, sorted
    names = [line.split()[0] for line in usable.splitlines() if line.strip()]
    assert names == sorted(names)
    assert "mock" in names


def test_built_rows_name_providers_that_exist() -> None:
    available = registry.available()
    for row in catalog.UPSTREAM:
        assert row.note, row.name
        if row.state == "built":
            assert row.here.split()[0] in available, row
        if row.state in ("retired", "not built"):
            assert not row.here, row


@pytest.mark.parametrize("name", ["hypersh", "sfmesh", "vic"])
def test_retired_provider_is_refused_with_its_reason(name: str) -> None:
    with pytest.raises(registry.UnknownProvider) as caught:
        registry.load(name)
    row = catalog.retired(name)
    assert row is not None
    assert f"provider {name!r}" in str(caught.value)
    assert "is retired" in str(caught.value)
    assert row.note in str(caught.value)
    shown = _listing(name)
    assert row.note in shown
    assert "retired" in shown


def test_cli_refuses_retired_provider_naming_why(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"  # never read: the provider is refused first
    kubeconfig.write_text("{}")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "virtual_kubelet",
            "--provider",
            "hypersh",
            "--kubeconfig",
            str(kubeconfig),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "provider 'hypersh' (Hyper.sh) is retired and not built" in result.stderr
    assert "shut down in January 2019" in result.stderr


def test_unknown_name_still_lists_available() -> None:
    result = CliRunner().invoke(main, ["providers", "nope"])
    assert result.exit_code != 0
    assert "provider 'nope' not found (available:" in result.output
