"""deploy/rbac.yaml and the chart's ClusterRole come from one rule file and cannot drift."""

from __future__ import annotations

from pathlib import Path

import yaml

from virtual_kubelet.devcluster import rbac

REPO = Path(__file__).resolve().parents[2]


def test_deploy_rbac_is_generated_from_the_chart_rules() -> None:
    assert rbac.main(["--check"]) == 0, "run: python -m virtual_kubelet.devcluster.rbac --write"


def test_both_grant_the_same_rules() -> None:
    rules = yaml.safe_load((REPO / rbac.RULES).read_text())
    deploy = yaml.safe_load((REPO / rbac.DEPLOY).read_text())
    assert deploy["kind"] == "ClusterRole"
    assert deploy["rules"] == rules
    chart_role = (REPO / "charts/virtual-kubelet/templates/clusterrole.yaml").read_text()
    assert '.Files.Get "files/rbac-rules.yaml"' in chart_role


def test_least_privilege_never_grants_wildcards_or_cluster_admin_verbs() -> None:
    rules = yaml.safe_load((REPO / rbac.RULES).read_text())
    for rule in rules:
        assert "*" not in rule["verbs"], rule
        assert "*" not in rule["resources"], rule
        assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), rule
