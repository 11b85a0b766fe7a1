"""`virtual-kubelet devcluster ...`: build, start, inspect and stop a local control plane by hand.

Clusters started here keep running after the command returns; their files live under
`$XDG_STATE_HOME/virtual-kubelet/devcluster/<name>` (or `--dir`) until `down --purge`.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from .build import ensure_binaries
from .cluster import DevCluster, DevClusterConfig
from .errors import DevClusterError
from .gotoolchain import GO_VERSION, MIN_GO, find_go
from .gotoolchain import install_go as fetch_go
from .versions import (
    DEFAULT_ETCD_VERSION,
    DEFAULT_KUBERNETES_VERSION,
    VersionError,
    Versions,
    state_root,
)


def _progress(message: str) -> None:
    click.echo(f"devcluster: {message}", err=True)


def _workdir(name: str, directory: Path | None) -> Path:
    return directory if directory is not None else state_root() / name


def _versions(kubernetes: str, etcd: str) -> Versions:
    try:
        return Versions(kubernetes=kubernetes, etcd=etcd)
    except VersionError as exc:
        raise click.BadParameter(str(exc)) from exc


_name_option = click.option(
    "--name", default="default", show_default=True, help="Which local cluster (several may run)."
)
_dir_option = click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep the cluster's files here instead of the state directory.",
)
_version_options = [
    click.option(
        "--kubernetes-version",
        envvar="VK_KUBERNETES_VERSION",
        default=DEFAULT_KUBERNETES_VERSION,
        show_default=True,
        help="Kubernetes release to build and run (env VK_KUBERNETES_VERSION).",
    ),
    click.option(
        "--etcd-version",
        envvar="VK_ETCD_VERSION",
        default=DEFAULT_ETCD_VERSION,
        show_default=True,
        help="etcd release to build and run (env VK_ETCD_VERSION).",
    ),
]


F = TypeVar("F", bound=Callable[..., Any])


def _with_versions(f: F) -> F:
    for option in reversed(_version_options):
        f = option(f)
    return f


@click.group("devcluster")
def devcluster() -> None:
    """A real local control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler).

    Binaries are built once from the published Go modules (needs Go >= 1.26; the first build takes
    about 5 minutes on 2 cores) and cached in $VK_CACHE_DIR, default ~/.cache/virtual-kubelet.
    Everything listens on 127.0.0.1 only.
    """


@devcluster.command()
@_with_versions
@click.option(
    "--install-go",
    is_flag=True,
    help=f"If no Go >= {MIN_GO[0]}.{MIN_GO[1]} is on PATH, fetch Go {GO_VERSION} from the Go "
    "module proxy into the cache first (verified against the checksum database).",
)
def build(kubernetes_version: str, etcd_version: str, install_go: bool) -> None:
    """Build (or find in the cache) the control-plane binaries and print where they are."""
    try:
        if install_go:
            try:
                find_go()
            except DevClusterError:
                fetch_go(_progress)
        binaries = ensure_binaries(_versions(kubernetes_version, etcd_version), progress=_progress)
    except DevClusterError as exc:
        raise click.ClickException(str(exc)) from exc
    for path in binaries.__dict__.values():
        click.echo(str(path))


@devcluster.command()
@_name_option
@_dir_option
@_with_versions
@click.option("--api-port", type=int, help="Port for kube-apiserver (default: a free one).")
@click.option(
    "--node-monitor-grace-period",
    default="40s",
    show_default=True,
    help="How long a node may miss heartbeats before it is marked NotReady/Unknown.",
)
@click.option(
    "--node-address/--no-node-address",
    default=os.geteuid() == 0,
    show_default="on when run as root",
    help="Create a private 198.18.x.y address for virtual nodes, so `nodes/<n>/proxy` works.",
)
def up(
    name: str,
    directory: Path | None,
    kubernetes_version: str,
    etcd_version: str,
    api_port: int | None,
    node_monitor_grace_period: str,
    node_address: bool,
) -> None:
    """Start a cluster that keeps running after this command; print its kubeconfig path."""
    config = DevClusterConfig(
        versions=_versions(kubernetes_version, etcd_version),
        ports={"kube-apiserver": api_port} if api_port else {},
        node_monitor_grace_period=node_monitor_grace_period,
        detached=True,
        node_address=node_address,
    )
    cluster = DevCluster(_workdir(name, directory), config, progress=_progress)
    try:
        cluster.start()
    except DevClusterError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(str(cluster.kubeconfig))
    _progress(f"use it with: export KUBECONFIG={cluster.kubeconfig}")


@devcluster.command()
@_name_option
@_dir_option
@click.option(
    "--purge", is_flag=True, help="Also delete the cluster's data, certificates and logs."
)
def down(name: str, directory: Path | None, purge: bool) -> None:
    """Stop a cluster started with `up` (only the processes it started)."""
    workdir = _workdir(name, directory)
    if not (workdir / "state.json").exists():
        raise click.ClickException(f"no dev cluster recorded in {workdir}")
    DevCluster.attach(workdir, progress=_progress).stop()
    if purge:
        shutil.rmtree(workdir)
        _progress(f"stopped and removed {workdir}")
    else:
        _progress(f"stopped; data kept in {workdir} (`up` reuses it, `down --purge` removes it)")


@devcluster.command()
@_name_option
@_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def status(name: str, directory: Path | None, as_json: bool) -> None:
    """Show which components run, their ports and logs, and the API server's /readyz."""
    workdir = _workdir(name, directory)
    if not (workdir / "state.json").exists():
        raise click.ClickException(f"no dev cluster recorded in {workdir}")
    info = DevCluster.attach(workdir).status()
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(f"workdir:    {info['workdir']}")
    click.echo(f"server:     {info['server']}")
    click.echo(f"kubeconfig: {info['kubeconfig']}")
    click.echo(f"node IP:    {info['node_ip']}")
    click.echo(f"readyz:     {info['readyz'] or 'not running'}")
    for component, c in info["components"].items():
        state = f"running (pid {c['pid']})" if c["running"] else "stopped"
        port = f"port {c['port']}" if c["port"] else ""
        click.echo(f"  {component:<24} {state:<22} {port:<11} log {c['log']}")
    if not any(c["running"] for c in info["components"].values()):
        raise SystemExit(3)


@devcluster.command()
@_name_option
@_dir_option
def kubeconfig(name: str, directory: Path | None) -> None:
    """Print the path of the cluster's admin kubeconfig (`export KUBECONFIG=$(...)`)."""
    path = _workdir(name, directory) / "admin.kubeconfig"
    if not path.exists():
        raise click.ClickException(f"no dev cluster kubeconfig at {path}; run `devcluster up`")
    click.echo(str(path))
