"""The commands besides the agent: `version`, `remove-node` and `providers`."""

from __future__ import annotations

import asyncio
import platform

import click

from .. import __version__
from ..logs import setup as setup_logging
from ..providers import catalog, registry
from .options import main
from .settings import duration


@main.command()
def version() -> None:
    """Print the version of virtual-kubelet and of Python."""
    click.echo(f"virtual-kubelet {__version__} (Python {platform.python_version()})")


@main.command("remove-node")
@click.option(
    "--kubeconfig",
    envvar="KUBECONFIG",
    help="kubeconfig file [default: $KUBECONFIG, "
    "then ~/.kube/config, then the in-cluster service account]",
)
@click.option("--nodename", required=True, help="The virtual node to remove.")
@click.option(
    "--deployment",
    metavar="NAMESPACE/NAME",
    help="The agents' Deployment, scaled to 0 before the node is deleted (else it must be stopped).",
)
@click.option(
    "--drain-timeout",
    default="120s",
    show_default=True,
    help="How long the node's pods get to stop; those left are then deleted with grace period 0.",
)
@click.option("--log-level", default="info", show_default=True, help="debug, info, warning, error.")
def remove_node(
    kubeconfig: str | None,
    nodename: str,
    deployment: str | None,
    drain_timeout: str,
    log_level: str,
) -> None:
    """Remove a virtual node for good (the chart runs it on `helm uninstall`): cordon it, delete
    its pods and wait until they stop, scale the agents' Deployment to 0, delete the Node.
    An agent that stops never deletes its node by itself: pods survive restarts and upgrades."""
    from ..kube import config as kube_config
    from ..kube.client import KubeClient
    from ..node.removal import Removal, RemovalError, remove

    setup_logging(log_level.upper(), "text")
    target: tuple[str, str] | None = None
    if deployment is not None:
        namespace, _, name = deployment.partition("/")
        if not namespace or not name:
            raise click.BadParameter("expected NAMESPACE/NAME", param_hint="--deployment")
        target = (namespace, name)
    removal = Removal(nodename, target, duration(drain_timeout, "--drain-timeout"))
    try:
        config = kube_config.load(kubeconfig)
    except kube_config.ConfigError as exc:
        raise click.ClickException(str(exc)) from None

    async def run() -> list[str]:
        async with KubeClient(config, name="remove-node") as client:
            return await remove(client, removal)

    try:
        forced = asyncio.run(run())
    except RemovalError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"node {nodename} removed" + (f" ({len(forced)} pods forced)" if forced else ""))


@main.command()
@click.argument("name", required=False)
def providers(name: str | None) -> None:
    """List the providers that can be used (built-in and installed), then every provider of the
    original virtual-kubelet with its state here (built, planned, retired, not built); or show one.
    """
    names = registry.available()
    upstream = {row.name: row for row in catalog.UPSTREAM}
    if name is not None:
        if name in names:
            click.echo(f"{name:<12} {registry.describe(name)}  [{names[name]}]")
        if name in upstream:
            _echo_upstream(upstream[name])
        if name not in names and name not in upstream:
            raise click.ClickException(
                f"provider {name!r} not found (available: {', '.join(sorted(names))})"
            )
        return
    for provider_name, target in sorted(names.items()):
        click.echo(f"{provider_name:<12} {registry.describe(provider_name)}  [{target}]")
    click.echo("")
    click.echo("Providers of the original virtual-kubelet, and their state here:")
    for row in catalog.UPSTREAM:
        _echo_upstream(row)


def _echo_upstream(row: catalog.UpstreamRow) -> None:
    here = f" -> {row.here}" if row.here else ""
    click.echo(f"  {row.name:<17} {row.state:<10} {row.title}{here}: {row.note}")
