"""Go command-line tools the deployment tests and the dev cluster need (helm, promtool,
metrics-server), built from their Go modules and cached.

Like the control plane, each tool is compiled once from its published module through a wrapper
module (`build.ensure_tool`) into `~/.cache/virtual-kubelet/tools/<name>-<version>`; nothing is
downloaded as a binary and nothing lands in the repository. `python -m
virtual_kubelet.devcluster.tools helm` builds it and prints its path.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .build import GoTool, Progress, ensure_tool

#: helm, pinned. Its version string is stamped as the release build does (`helm version`).
HELM_VERSION = "v3.22.0"
HELM = GoTool(
    name="helm",
    module="helm.sh/helm/v3",
    version=HELM_VERSION,
    package="helm.sh/helm/v3/cmd/helm",
    binary="helm",
    ldflags=f"-s -w -X helm.sh/helm/v3/internal/version.version={HELM_VERSION}",
)


#: promtool (Prometheus' rule checker), pinned: Prometheus v3.16.0 is Go module v0.316.0.
PROMTOOL_VERSION = "v0.316.0"
PROMTOOL = GoTool(
    name="promtool",
    module="github.com/prometheus/prometheus",
    version=PROMTOOL_VERSION,
    package="github.com/prometheus/prometheus/cmd/promtool",
    binary="promtool",
    ldflags="-s -w -X github.com/prometheus/common/version.Version=3.16.0",
)


#: metrics-server (serves metrics.k8s.io for `kubectl top`), pinned: v0.8.x supports Kubernetes
#: 1.31 and later and scrapes each kubelet's `/metrics/resource`. Stamped like its release build.
METRICS_SERVER_VERSION = "v0.8.0"
METRICS_SERVER = GoTool(
    name="metrics-server",
    module="sigs.k8s.io/metrics-server",
    version=METRICS_SERVER_VERSION,
    package="sigs.k8s.io/metrics-server/cmd/metrics-server",
    binary="metrics-server",
    # Its Makefile stamps client-go's version package (what `metrics-server --version` prints).
    ldflags=f"-s -w -X k8s.io/client-go/pkg/version.gitVersion={METRICS_SERVER_VERSION}",
)


def _silent(_: str) -> None:
    pass


def ensure_helm(progress: Progress = _silent) -> Path:
    """The path of helm: `$VK_HELM` if set (a ready-made binary), else built once and cached."""
    explicit = os.environ.get("VK_HELM")
    if explicit:
        return Path(explicit)
    return ensure_tool(HELM, progress=progress)


def ensure_promtool(progress: Progress = _silent) -> Path:
    """The path of promtool: `$VK_PROMTOOL` if set, else built once and cached."""
    explicit = os.environ.get("VK_PROMTOOL")
    if explicit:
        return Path(explicit)
    return ensure_tool(PROMTOOL, progress=progress)


def ensure_metrics_server(progress: Progress = _silent) -> Path:
    """The path of metrics-server: `$VK_METRICS_SERVER` if set, else built once and cached."""
    explicit = os.environ.get("VK_METRICS_SERVER")
    if explicit:
        return Path(explicit)
    return ensure_tool(METRICS_SERVER, progress=progress)


def main(argv: list[str]) -> int:
    tools = {
        "helm": ensure_helm,
        "promtool": ensure_promtool,
        "metrics-server": ensure_metrics_server,
    }
    if len(argv) != 1 or argv[0] not in tools:
        print(f"usage: python -m virtual_kubelet.devcluster.tools {{{','.join(tools)}}}")
        return 2
    print(tools[argv[0]](progress=lambda m: print(m, file=sys.stderr, flush=True)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
