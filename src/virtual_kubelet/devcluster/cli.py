"""`virtual-kubelet devcluster ...`: build, start, inspect and stop a local control plane by hand.

Clusters started here keep running after the command returns; their files, ports and node
addresses are theirs under `$XDG_STATE_HOME/virtual-kubelet/devcluster/<name>` (or `--dir`) until
`down --purge`. `up` on a cluster that is partly running starts only what is not.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from .build import ensure_binaries
from .cluster import DevCluster
from .config import DevClusterConfig
from .errors import AlreadyRunningError, DevClusterError
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
    """A real local control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler;
    metrics-server for `kubectl top` with `up --metrics-server`).

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
@click.option(
    "--api-port",
    type=int,
    help="Port for kube-apiserver (default: a free one). A cluster keeps its ports until purged.",
)
@click.option(
    "--node-monitor-grace-period",
    default="40s",
    show_default=True,
    help="How long a node may miss heartbeats before it is marked NotReady/Unknown.",
)
@click.option(
    "--node-address/--no-node-address",
    default=None,
    show_default="on when run as root, for a new cluster; an existing one keeps what it has",
    help="Create a private 198.18.x.y address for virtual nodes, so `nodes/<n>/proxy` works.",
)
@click.option(
    "--metrics-server/--no-metrics-server",
    default=None,
    show_default="off for a new cluster; an existing one keeps what it has",
    help="Also run metrics-server (built from its Go module) behind the API server's aggregation "
    "layer, so `kubectl top nodes/pods` works; it scrapes each kubelet's /metrics/resource.",
)
def up(
    name: str,
    directory: Path | None,
    kubernetes_version: str,
    etcd_version: str,
    api_port: int | None,
    node_monitor_grace_period: str,
    node_address: bool | None,
    metrics_server: bool | None,
) -> None:
    """Start a cluster that keeps running after this command; print its kubeconfig path.

    On a cluster that exists already, start just the components that are not running (say, a
    killed kube-apiserver), on the ports the cluster has always had, so running agents and loaded
    kubeconfigs reconnect; on a fully running one, do nothing.
    """
    workdir = _workdir(name, directory)
    if metrics_server is None:
        metrics_server = _recorded(workdir, "metrics_server")
    if node_address is None:
        # A cluster keeps its node address for its lifetime; `--node-address` can add one later.
        if (workdir / "state.json").exists():
            node_address = DevCluster.attach(workdir).node_address is not None
        else:
            node_address = os.geteuid() == 0
    config = DevClusterConfig(
        versions=_versions(kubernetes_version, etcd_version),
        ports={"kube-apiserver": api_port} if api_port else {},
        node_monitor_grace_period=node_monitor_grace_period,
        detached=True,
        node_address=node_address,
        metrics_server=metrics_server,
    )
    cluster = DevCluster(workdir, config, progress=_progress)
    try:
        started = cluster.start()
    except AlreadyRunningError:
        _progress(f"already running at {cluster.server}; nothing to start")
        started = []
    except DevClusterError as exc:
        raise click.ClickException(str(exc)) from exc
    if started and len(started) < len(config.components):
        _progress(f"restarted {', '.join(started)}; the other components kept running")
    click.echo(str(cluster.kubeconfig))
    _progress(f"use it with: export KUBECONFIG={cluster.kubeconfig}")


def _recorded(workdir: Path, key: str) -> bool:
    """A setting the cluster in `workdir` was started with (False for a new cluster)."""
    try:
        return bool(json.loads((workdir / "state.json").read_text()).get(key))
    except FileNotFoundError:
        return False


@devcluster.command()
@_name_option
@_dir_option
@click.option(
    "--purge", is_flag=True, help="Also delete the cluster's data, certificates and logs."
)
def down(name: str, directory: Path | None, purge: bool) -> None:
    """Stop a cluster started with `up` (only the processes it started).

    Its data, ports and node addresses are kept for the next `up`, unless --purge.
    """
    workdir = _workdir(name, directory)
    if not (workdir / "state.json").exists():
        raise click.ClickException(f"no dev cluster recorded in {workdir}")
    cluster = DevCluster.attach(workdir, progress=_progress)
    if purge:
        cluster.purge()
        _progress(f"stopped and removed {workdir}")
    else:
        cluster.stop()
        _progress(
            f"stopped; data kept in {workdir} (`up` restarts it on the same ports, "
            "`down --purge` removes it)"
        )


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
    for node, address in info["node_addresses"].items():
        click.echo(f"  node {node}: {address}")
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


@devcluster.command("node-address")
@click.argument("node", required=False)
@_name_option
@_dir_option
def node_address(node: str | None, name: str, directory: Path | None) -> None:
    """Print a non-loopback address for a virtual node of this cluster, for `VKUBELET_POD_IP`.

    With NODE, one address per node name: made on first use on the cluster's own interface, the
    same on every later call, until `down --purge` (agents listen on their node address, so two
    agents need two). Without NODE, the cluster's primary node address. Needs a running cluster
    that has node addresses (started as root).
    """
    workdir = _workdir(name, directory)
    if not (workdir / "state.json").exists():
        raise click.ClickException(f"no dev cluster recorded in {workdir}; run `devcluster up`")
    try:
        click.echo(DevCluster.attach(workdir).node_address_for(node))
    except DevClusterError as exc:
        raise click.ClickException(str(exc)) from exc


@devcluster.command("kill-pods")
@click.argument(
    "state_dir", type=click.Path(file_okay=False, path_type=Path), metavar="AGENT_STATE_DIR"
)
def kill_pods(state_dir: Path) -> None:
    """SIGKILL the process-provider pods (shims and their containers) of an agent's state directory.

    Pods outlive their agent by design, so that a restarted agent adopts them; this is for taking
    a dev setup down when the agent cannot delete them any more (say, its API server is gone).
    """
    from .agent import kill_shims_under  # imports the agent's modules; only this command needs it

    # The agent records the path as it was given; match a symlink-free spelling too.
    spellings = {state_dir.absolute(), state_dir.resolve()}
    killed = sum(kill_shims_under(path) for path in spellings)
    _progress(f"killed {killed} pod shim(s) under {state_dir}")
