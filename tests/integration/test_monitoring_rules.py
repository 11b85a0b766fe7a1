"""The chart's Prometheus alert rules pass `promtool check rules` and their unit tests
(`promtool test rules`), and the PrometheusRule the chart renders carries them unchanged.

promtool is built from its Go module and cached (`virtual_kubelet.devcluster.tools`); where it
cannot be built the tests are skipped, except under CI=true, where that is a failure.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from virtual_kubelet.devcluster import DevClusterError
from virtual_kubelet.devcluster.tools import ensure_promtool

from .test_helm_chart import CHART, run_helm

RULES = CHART / "files" / "prometheus-rules.yaml"
RULE_TESTS = CHART / "files" / "prometheus-rules.test.yaml"


@pytest.fixture(scope="module")
def promtool() -> Path:
    try:
        return ensure_promtool(progress=print)
    except DevClusterError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"promtool must build under CI=true: {exc}")
        pytest.skip(f"promtool cannot be built here: {exc}")


def run(tool: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(tool), *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_rules_pass_promtool_check_and_their_unit_tests(promtool: Path) -> None:
    checked = run(promtool, "check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    count = sum(len(g["rules"]) for g in yaml.safe_load(RULES.read_text())["groups"])
    assert f"SUCCESS: {count} rules found" in checked.stdout + checked.stderr
    tested = run(promtool, "test", "rules", str(RULE_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_promtool_catches_a_broken_rule(promtool: Path, tmp_path: Path) -> None:
    broken = yaml.safe_load(RULES.read_text())
    broken["groups"][0]["rules"][0]["expr"] = "max by (pod) (virtual_kubelet_leader > "
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(broken))
    checked = run(promtool, "check", "rules", str(path))
    assert checked.returncode != 0
    assert "parse error" in checked.stdout + checked.stderr


def test_the_chart_ships_the_rules_unchanged(helm: Path) -> None:
    rendered = run_helm(
        helm,
        "template",
        "vk",
        str(CHART),
        "--set",
        "provider=mock",
        "--set",
        "metrics.prometheusRule.enabled=true",
        "--show-only",
        "templates/prometheusrule.yaml",
    )
    assert rendered.returncode == 0, rendered.stderr
    rule = yaml.safe_load(rendered.stdout)
    assert rule["kind"] == "PrometheusRule"
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]
