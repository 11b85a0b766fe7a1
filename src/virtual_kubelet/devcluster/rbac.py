"""deploy/rbac.yaml, generated from the chart's rule file: one source for both ClusterRoles.

`charts/virtual-kubelet/files/rbac-rules.yaml` holds the rules, each commented with why it exists;
the chart includes that file as it is, and `deploy/rbac.yaml` (for users who do not use Helm) is
this module's rendering of it. `python -m virtual_kubelet.devcluster.rbac --write` regenerates it,
`--check` fails if it is stale (a unit test runs the check). Works in a source checkout only.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
RULES = Path("charts/virtual-kubelet/files/rbac-rules.yaml")
DEPLOY = Path("deploy/rbac.yaml")

HEADER = """\
# The permissions virtual-kubelet needs, as a ClusterRole. Bind it to the identity the agent uses
# (a ServiceAccount when it runs in the cluster, or a user in its kubeconfig):
#   kubectl apply -f deploy/rbac.yaml
#   kubectl create clusterrolebinding virtual-kubelet --clusterrole=virtual-kubelet \\
#     --serviceaccount=<namespace>:<name>
# The Helm chart (charts/virtual-kubelet) creates the same ClusterRole and its binding.
# tests/integration/test_agent_rbac.py runs the agent with exactly these permissions.
#
# GENERATED from charts/virtual-kubelet/files/rbac-rules.yaml: edit that file, then run
#   python -m virtual_kubelet.devcluster.rbac --write
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: virtual-kubelet
rules:
"""


def render(repo: Path = REPO) -> str:
    """deploy/rbac.yaml's text: our header, then the rules (without the rule file's own header,
    which ends at its first lone `#` line), indented under `rules:`."""
    text = (repo / RULES).read_text()
    _, separator, rules = text.partition("\n#\n")
    if not separator:
        raise ValueError(f"{RULES}: no lone '#' line ends the file's header")
    indented = "".join(f"  {line}" if line.strip() else line for line in rules.splitlines(True))
    return HEADER + indented


def main(argv: list[str]) -> int:
    if argv not in (["--write"], ["--check"]):
        print("usage: python -m virtual_kubelet.devcluster.rbac --write | --check")
        return 2
    wanted = render()
    target = REPO / DEPLOY
    if argv == ["--write"]:
        target.write_text(wanted)
        print(f"wrote {target}")
        return 0
    if target.read_text() != wanted:
        print(f"{DEPLOY} is stale: run python -m virtual_kubelet.devcluster.rbac --write")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
