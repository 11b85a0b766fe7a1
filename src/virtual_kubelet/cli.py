"""The `virtual-kubelet` command line: run the agent, list providers, print the version, dev tools.

Flags and environment variables follow the upstream Go virtual-kubelet so existing deployments keep
working; it parses and wires, the work happens in `agent.py`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import platform
import sys
from pathlib import Path

import click

from . import __version__
from .agent import Agent, AgentSettings, StartupError
from .kubelet_api.service import KubeletApiSettings
from .logs import setup as setup_logging
from .node import leader
from .pods.settings import PodSettings
from .providers import catalog, registry
from .sdk import ProviderConfigError

log = logging.getLogger("virtual_kubelet")

TAINT_EFFECTS = {
    "noschedule": "NoSchedule",
    "noexecute": "NoExecute",
    "prefernoschedule": "PreferNoSchedule",
}
DEFAULT_TAINT_KEY = "virtual-kubelet.io/provider"

#: Where the options' defaults come from: the settings dataclasses hold each default once.
_AGENT = AgentSettings(node_name="", provider="")
_KUBELET_API = KubeletApiSettings()


def _duration(value: str, flag: str) -> float:
    """Seconds from "90", "90s", "5m", "1h", "1m30s"; "0" means off."""
    text = value.strip().lower()
    if text.replace(".", "", 1).isdigit():
        return float(text)
    total, number = 0.0, ""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    i = 0
    while i < len(text):
        ch = text[i]
        if ch.isdigit() or ch == ".":
            number += ch
            i += 1
            continue
        unit = "ms" if text[i : i + 2] == "ms" else ch
        if unit not in units or not number:
            raise click.BadParameter(
                f"{value!r} is not a duration (e.g. 30s, 5m, 1h)", param_hint=flag
            )
        total += float(number) * units[unit]
        number = ""
        i += len(unit)
    if number:
        raise click.BadParameter(f"{value!r} is not a duration (e.g. 30s, 5m, 1h)", param_hint=flag)
    return total


def _duration_text(seconds: float) -> str:
    """A default in seconds the way `--help` shows it and `_duration` reads it: "1m", "4h", "0"."""
    if seconds == 0:
        return "0"
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def _taints(provider: str, key: str | None, disable: bool) -> tuple[dict[str, str], ...]:
    if disable:
        return ()
    key = key or os.environ.get("VKUBELET_TAINT_KEY") or DEFAULT_TAINT_KEY
    value = os.environ.get("VKUBELET_TAINT_VALUE") or provider
    effect_text = os.environ.get("VKUBELET_TAINT_EFFECT") or "NoSchedule"
    effect = TAINT_EFFECTS.get(effect_text.lower())
    if effect is None:
        raise click.BadParameter(
            f"VKUBELET_TAINT_EFFECT={effect_text!r}; use NoSchedule, NoExecute or PreferNoSchedule"
        )
    return ({"key": key, "value": value, "effect": effect},)


def _default_state_dir(node: str) -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/virtual-kubelet") / node
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "virtual-kubelet" / node


class _AgentCommands(click.Group):
    """The agent's commands, plus `devcluster`, which is imported only when it is used: the dev
    tooling is no part of the agent (see the import contracts in .importlinter)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), "devcluster"])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name == "devcluster":
            from .devcluster.cli import devcluster

            return devcluster
        return super().get_command(ctx, cmd_name)


@click.group(
    cls=_AgentCommands,
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="Environment: KUBECONFIG, DEFAULT_NODE_NAME, KUBELET_PORT (kubelet API port to "
    f"advertise, default {_AGENT.daemon_port}), VKUBELET_POD_IP (the node's InternalIP; default: "
    "the address used to reach the API server), VKUBELET_TAINT_KEY / VKUBELET_TAINT_VALUE / "
    "VKUBELET_TAINT_EFFECT (NoSchedule, NoExecute or PreferNoSchedule).",
)
@click.option(
    "--kubeconfig",
    envvar="KUBECONFIG",
    help="kubeconfig file [default: $KUBECONFIG, "
    "then ~/.kube/config, then the in-cluster service account]",
)
@click.option(
    "--nodename",
    envvar="DEFAULT_NODE_NAME",
    default="virtual-kubelet",
    show_default=True,
    help="Name of the Node to register (env DEFAULT_NODE_NAME).",
)
@click.option(
    "--os",
    "operating_system",
    default=_AGENT.operating_system.capitalize(),
    show_default=True,
    help="Operating system the node reports: Linux or Windows.",
)
@click.option("--provider", help="Provider that runs the pods (see `virtual-kubelet providers`).")
@click.option(
    "--provider-config",
    type=click.Path(path_type=Path),
    help="Provider configuration file (JSON or YAML).",
)
@click.option(
    "--taint",
    "taint_key",
    help="Key of the taint the node carries "
    f"[default: $VKUBELET_TAINT_KEY or {DEFAULT_TAINT_KEY}].",
)
@click.option("--disable-taint", is_flag=True, help="Register the node without a taint.")
@click.option(
    "--namespace", hidden=False, help="Deprecated and ignored: nodes watch pods in all namespaces."
)
@click.option(
    "--cluster-domain", default=_AGENT.cluster_domain, show_default=True, help="Cluster DNS domain."
)
@click.option(
    "--pod-sync-workers",
    type=click.IntRange(1, 1000),
    default=_AGENT.pods.sync_workers,
    show_default=True,
    help="Pods handled concurrently.",
)
@click.option(
    "--full-resync-period",
    default=_duration_text(_AGENT.full_resync_period),
    show_default=True,
    help="How often every pod is re-checked against the provider (0 = never).",
)
@click.option(
    "--startup-timeout",
    default=_duration_text(_AGENT.startup_timeout),
    show_default=True,
    help="Give up if the API server does not answer within this time (0 = wait forever).",
)
@click.option(
    "--kube-api-qps",
    type=float,
    default=_AGENT.kube_api_qps,
    show_default=True,
    help="Client-side limit of API requests per second (0 = none).",
)
@click.option(
    "--kube-api-burst",
    type=click.IntRange(1),
    default=_AGENT.kube_api_burst,
    show_default=True,
    help="Burst above --kube-api-qps.",
)
@click.option(
    "--event-qps",
    type=float,
    default=_AGENT.event_qps,
    show_default=True,
    help="Events per second sent to the API server; more are dropped (0 = no limit).",
)
@click.option(
    "--event-burst",
    type=click.IntRange(1),
    default=_AGENT.event_burst,
    show_default=True,
    help="Burst above --event-qps.",
)
@click.option(
    "--provider-retry-limit",
    type=click.IntRange(1),
    default=_AGENT.pods.retry_limit,
    show_default=True,
    help="Failed provider calls for a pod before giving up (a never-started pod becomes Failed).",
)
@click.option(
    "--node-status-update-frequency",
    default=_duration_text(_AGENT.node_status_interval),
    show_default=True,
    help="How often node status is re-posted (the Lease is renewed every 10s regardless).",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where pod volumes and provider state live [default: /var/lib/virtual-kubelet/<node> "
    "as root, else ~/.local/state/virtual-kubelet/<node>].",
)
@click.option(
    "--volumes-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where pod volumes (configMap, secret, projected tokens, ...) are written [default: a "
    "memory-backed directory ($XDG_RUNTIME_DIR, /run or /dev/shm) so secrets never reach a disk; "
    "else <state-dir>/pods].",
)
@click.option(
    "--kubelet-listen-address",
    help="Address the kubelet API (logs, exec, port-forward, stats) listens on; its port is "
    "KUBELET_PORT [default: the node's InternalIP (VKUBELET_POD_IP or detected), so several "
    "agents can share a host; all addresses if it is not one of this host's]. 0.0.0.0 listens "
    "on all addresses. Use --disable-kubelet-api to serve none.",
)
@click.option("--disable-kubelet-api", is_flag=True, help="Do not serve the kubelet API.")
@click.option(
    "--serving-cert",
    type=click.Choice(["files", "csr", "self-signed"]),
    help="Where the kubelet API's TLS certificate comes from [default: files if "
    "--tls-cert-file is given, else a CertificateSigningRequest (signer "
    "kubernetes.io/kubelet-serving) that someone must approve].",
)
@click.option(
    "--tls-cert-file",
    envvar="APISERVER_CERT_LOCATION",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Serving certificate (env APISERVER_CERT_LOCATION).",
)
@click.option(
    "--tls-private-key-file",
    envvar="APISERVER_KEY_LOCATION",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Its key (env APISERVER_KEY_LOCATION).",
)
@click.option(
    "--client-ca-file",
    envvar="APISERVER_CA_CERT_LOCATION",
    type=click.Path(dir_okay=False, path_type=Path),
    help="CA for client certificates on the kubelet API (env APISERVER_CA_CERT_LOCATION) "
    "[default: the cluster CA from the kubeconfig].",
)
@click.option(
    "--anonymous-auth",
    is_flag=True,
    help="Let unauthenticated requests through to authorization as system:anonymous.",
)
@click.option(
    "--authorization-mode",
    type=click.Choice(["Webhook", "AlwaysAllow"]),
    default=_KUBELET_API.authorization_mode,
    show_default=True,
    help="Webhook: SubjectAccessReview on nodes/<subresource>. AlwaysAllow: development only.",
)
@click.option(
    "--stream-idle-timeout",
    default=_duration_text(_KUBELET_API.stream_idle_timeout),
    show_default=True,
    help="Close an exec/attach/port-forward connection idle this long.",
)
@click.option(
    "--stream-creation-timeout",
    default=_duration_text(_KUBELET_API.stream_creation_timeout),
    show_default=True,
    help="How long a client may take to open its streams.",
)
@click.option(
    "--leader-elect",
    is_flag=True,
    help="Run several agents for one node (HA): they elect a leader with a Lease and only the "
    "leader serves the node; the others stand by and take over when its Lease expires.",
)
@click.option(
    "--leader-elect-namespace",
    default=leader.DEFAULT_NAMESPACE,
    show_default=True,
    help="Namespace of the election Lease (named virtual-kubelet-<node>).",
)
@click.option(
    "--leader-elect-identity",
    help="This candidate's name in the Lease [default: <$POD_NAME or hostname>_<random uuid>].",
)
@click.option(
    "--leader-elect-lease-duration",
    default=_duration_text(leader.DEFAULT_LEASE_DURATION_S),
    show_default=True,
    help="How long a standby waits after the leader's last renewal before taking over.",
)
@click.option(
    "--leader-elect-renew-deadline",
    default=_duration_text(leader.DEFAULT_RENEW_DEADLINE_S),
    show_default=True,
    help="A leader that could not renew for this long stops serving (and exits).",
)
@click.option(
    "--leader-elect-retry-period",
    default=_duration_text(leader.DEFAULT_RETRY_PERIOD_S),
    show_default=True,
    help="How often candidates try to take the Lease and the leader renews it.",
)
@click.option(
    "--metrics-addr",
    default=_AGENT.metrics_addr,
    show_default=True,
    help="host:port for the agent's Prometheus /metrics (empty = off; port 0 = any).",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="info",
    show_default=True,
)
@click.option(
    "--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@click.pass_context
def main(ctx: click.Context, /, **opts: object) -> None:
    """A Kubernetes kubelet that runs pods through pluggable Python providers.

    Without a command it runs the agent: it registers the node, keeps its Lease alive and runs every
    pod bound to it through --provider until stopped (SIGTERM/SIGINT; pods keep running).
    """
    if ctx.invoked_subcommand is not None:
        return
    sys.exit(_run_agent(**opts))  # type: ignore[arg-type]


def _run_agent(
    *,
    kubeconfig: str | None,
    nodename: str,
    operating_system: str,
    provider: str | None,
    provider_config: Path | None,
    taint_key: str | None,
    disable_taint: bool,
    namespace: str | None,
    cluster_domain: str,
    pod_sync_workers: int,
    full_resync_period: str,
    startup_timeout: str,
    kube_api_qps: float,
    kube_api_burst: int,
    event_qps: float,
    event_burst: int,
    provider_retry_limit: int,
    node_status_update_frequency: str,
    state_dir: Path | None,
    volumes_dir: Path | None,
    kubelet_listen_address: str | None,
    disable_kubelet_api: bool,
    serving_cert: str | None,
    tls_cert_file: Path | None,
    tls_private_key_file: Path | None,
    client_ca_file: Path | None,
    anonymous_auth: bool,
    authorization_mode: str,
    stream_idle_timeout: str,
    stream_creation_timeout: str,
    leader_elect: bool,
    leader_elect_namespace: str,
    leader_elect_identity: str | None,
    leader_elect_lease_duration: str,
    leader_elect_renew_deadline: str,
    leader_elect_retry_period: str,
    metrics_addr: str,
    log_level: str,
    log_format: str,
) -> int:
    setup_logging(log_level, log_format)
    if not provider:
        raise click.UsageError("--provider is required (see `virtual-kubelet providers`)")
    os_name = operating_system.lower()
    if os_name not in ("linux", "windows"):
        raise click.BadParameter(f"{operating_system!r}; use Linux or Windows", param_hint="--os")
    if namespace:
        log.warning(
            "--namespace is deprecated and ignored: the node watches pods in all namespaces"
        )
    port_text = os.environ.get("KUBELET_PORT", str(_AGENT.daemon_port))
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise click.BadParameter(f"KUBELET_PORT={port_text!r} is not a TCP port")
    if provider_config is not None and not provider_config.is_file():
        raise click.BadParameter(
            f"{provider_config} does not exist", param_hint="--provider-config"
        )
    api_settings = None
    if not disable_kubelet_api:
        source = serving_cert or ("files" if tls_cert_file else "csr")
        if source == "files" and not (tls_cert_file and tls_private_key_file):
            raise click.UsageError(
                "--serving-cert=files needs --tls-cert-file and --tls-private-key-file"
            )
        for given in (tls_cert_file, tls_private_key_file, client_ca_file):
            if given is not None and not given.is_file():
                raise click.BadParameter(f"{given} does not exist")
        api_settings = KubeletApiSettings(
            listen_address=kubelet_listen_address,
            port=int(port_text),
            serving_cert=source,
            cert_file=tls_cert_file,
            key_file=tls_private_key_file,
            client_ca=client_ca_file.read_bytes() if client_ca_file else None,
            anonymous_auth=anonymous_auth,
            authorization_mode=authorization_mode,
            stream_creation_timeout=_duration(stream_creation_timeout, "--stream-creation-timeout"),
            stream_idle_timeout=_duration(stream_idle_timeout, "--stream-idle-timeout"),
        )
    election = None
    if leader_elect:
        election = _election(
            nodename,
            leader_elect_namespace,
            leader_elect_identity,
            leader_elect_lease_duration,
            leader_elect_renew_deadline,
            leader_elect_retry_period,
        )
    settings = AgentSettings(
        node_name=nodename,
        provider=provider,
        kubeconfig=kubeconfig,
        provider_config=provider_config,
        operating_system=os_name,
        internal_ip=os.environ.get("VKUBELET_POD_IP") or None,
        daemon_port=int(port_text),
        taints=_taints(provider, taint_key, disable_taint),
        state_dir=state_dir or _default_state_dir(nodename),
        volumes_dir=volumes_dir,
        kubelet_api=api_settings,
        cluster_domain=cluster_domain,
        pods=PodSettings(sync_workers=pod_sync_workers, retry_limit=provider_retry_limit),
        full_resync_period=_duration(full_resync_period, "--full-resync-period"),
        startup_timeout=_duration(startup_timeout, "--startup-timeout"),
        kube_api_qps=kube_api_qps,
        kube_api_burst=kube_api_burst,
        event_qps=event_qps,
        event_burst=event_burst,
        metrics_addr=metrics_addr,
        leader_election=election,
        node_status_interval=_duration(
            node_status_update_frequency, "--node-status-update-frequency"
        ),
    )
    try:
        registry.load(provider)
    except (registry.UnknownProvider, registry.ProviderLoadError) as exc:
        log.error("%s", exc)
        return 2
    try:
        asyncio.run(Agent(settings).run())
    except (
        StartupError,
        ProviderConfigError,
        registry.ProviderLoadError,
        leader.LeadershipLost,
    ) as exc:
        log.error("%s", exc)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def _election(
    node: str,
    namespace: str,
    identity: str | None,
    lease_duration: str,
    renew_deadline: str,
    retry_period: str,
) -> leader.ElectionSettings:
    duration = _duration(lease_duration, "--leader-elect-lease-duration")
    if duration != int(duration) or duration < 1:
        raise click.BadParameter(
            f"{lease_duration!r}: a Lease lasts whole seconds (at least 1s)",
            param_hint="--leader-elect-lease-duration",
        )
    try:
        return leader.ElectionSettings(
            node_name=node,
            namespace=namespace,
            identity=identity or leader.default_identity(),
            lease_duration=int(duration),
            renew_deadline=_duration(renew_deadline, "--leader-elect-renew-deadline"),
            retry_period=_duration(retry_period, "--leader-elect-retry-period"),
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


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
    from .kube import config as kube_config
    from .kube.client import KubeClient
    from .node.removal import Removal, RemovalError, remove

    setup_logging(log_level.upper(), "text")
    target: tuple[str, str] | None = None
    if deployment is not None:
        namespace, _, name = deployment.partition("/")
        if not namespace or not name:
            raise click.BadParameter("expected NAMESPACE/NAME", param_hint="--deployment")
        target = (namespace, name)
    removal = Removal(nodename, target, _duration(drain_timeout, "--drain-timeout"))
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
