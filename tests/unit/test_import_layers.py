"""The package's declared layers (.importlinter) hold, and `lint-imports` (run by `./dev lint`)
catches an import that breaks them: run on a copy of the package, with one import added."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"

pytestmark = pytest.mark.skipif(
    not LINT_IMPORTS.exists(), reason="import-linter is not installed (pip install -e '.[dev]')"
)


def _lint_copy(tmp_path: Path, module: str | None = None, line: str = "") -> tuple[int, str]:
    """lint-imports on a copy of src/virtual_kubelet, with `line` appended to `module`."""
    source = tmp_path / "src"
    shutil.copytree(
        ROOT / "src" / "virtual_kubelet",
        source / "virtual_kubelet",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    shutil.copy(ROOT / ".importlinter", tmp_path / ".importlinter")
    if module is not None:
        path = source / (module.replace(".", "/") + ".py")
        path.write_text(path.read_text() + f"\n{line}\n")
    result = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(source)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    return result.returncode, result.stdout + result.stderr


def test_the_tree_keeps_its_layers(tmp_path: Path) -> None:
    status, output = _lint_copy(tmp_path)
    assert status == 0, output
    assert "BROKEN" not in output


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        (
            "virtual_kubelet.kube.objects",
            "from virtual_kubelet import agent",
            "Product layers: a module imports only from layers below its own BROKEN",
        ),
        (
            "virtual_kubelet.sdk.types",
            "from virtual_kubelet.providers import mock",
            "Product layers: a module imports only from layers below its own BROKEN",
        ),
        (
            "virtual_kubelet.pods.status",
            "from virtual_kubelet.kubelet_api import http",
            "Product layers: a module imports only from layers below its own BROKEN",
        ),
        (
            "virtual_kubelet.kube.client",
            "from virtual_kubelet.devcluster import waiting",
            "Only the CLI imports the dev tooling (devcluster, testing) BROKEN",
        ),
        (
            "virtual_kubelet.pods.status",
            "import virtual_kubelet.testing",
            "Only the CLI imports the dev tooling (devcluster, testing) BROKEN",
        ),
        (
            "virtual_kubelet.node.health",
            "from virtual_kubelet.providers import mock",
            "The node, pod and kubelet API layers use providers only through the SDK BROKEN",
        ),
        (
            "virtual_kubelet.providers.mock.provider",
            "from virtual_kubelet.kube import timefmt",
            "Built-in providers import the agent only through the SDK BROKEN",
        ),
    ],
)
def test_an_import_against_the_layers_fails_the_lint(
    tmp_path: Path, module: str, line: str, contract: str
) -> None:
    status, output = _lint_copy(tmp_path, module, line)
    assert status != 0
    assert contract in output, output
    # The report names the offending import, so the fix is obvious.
    assert module in output
