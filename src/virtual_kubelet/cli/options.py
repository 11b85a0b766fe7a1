"""The `virtual-kubelet` group: the agent command's flags (upstream-compatible) and their help.

Without a subcommand it runs the agent (`run.py`); `devcluster` is loaded only when used.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..node import leader
from .run import run_agent
from .settings import (
    AGENT_DEFAULTS,
    DEFAULT_TAINT_KEY,
    KUBELET_API_DEFAULTS,
    duration_text,
)


class _AgentCommands(click.Group):
    """The agent's commands, plus `devcluster`, which is imported only when it is used: the dev
    tooling is no part of the agent (see the import contracts in .importlinter)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), "devcluster"])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name == "devcluster":
            from ..devcluster.cli import devcluster

            return devcluster
        return super().get_command(ctx, cmd_name)


@click.group(
    cls=_AgentCommands,
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="Environment: KUBECONFIG, DEFAULT_NODE_NAME, KUBELET_PORT (kubelet API port to "
    f"advertise, default {AGENT_DEFAULTS.daemon_port}), VKUBELET_POD_IP (the node's InternalIP; default: "
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
    default=AGENT_DEFAULTS.operating_system.capitalize(),
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
    "--cluster-domain",
    default=AGENT_DEFAULTS.cluster_domain,
    show_default=True,
    help="Cluster DNS domain.",
)
@click.option(
    "--pod-sync-workers",
    type=click.IntRange(1, 1000),
    default=AGENT_DEFAULTS.pods.sync_workers,
    show_default=True,
    help="Pods handled concurrently.",
)
@click.option(
    "--full-resync-period",
    default=duration_text(AGENT_DEFAULTS.full_resync_period),
    show_default=True,
    help="How often every pod is re-checked against the provider (0 = never).",
)
@click.option(
    "--startup-timeout",
    default=duration_text(AGENT_DEFAULTS.startup_timeout),
    show_default=True,
    help="Give up if the API server does not answer within this time (0 = wait forever).",
)
@click.option(
    "--kube-api-qps",
    type=float,
    default=AGENT_DEFAULTS.kube_api_qps,
    show_default=True,
    help="Client-side limit of API requests per second (0 = none).",
)
@click.option(
    "--kube-api-burst",
    type=click.IntRange(1),
    default=AGENT_DEFAULTS.kube_api_burst,
    show_default=True,
    help="Burst above --kube-api-qps.",
)
@click.option(
    "--event-qps",
    type=float,
    default=AGENT_DEFAULTS.event_qps,
    show_default=True,
    help="Events per second sent to the API server; more are dropped (0 = no limit).",
)
@click.option(
    "--event-burst",
    type=click.IntRange(1),
    default=AGENT_DEFAULTS.event_burst,
    show_default=True,
    help="Burst above --event-qps.",
)
@click.option(
    "--provider-retry-limit",
    type=click.IntRange(1),
    default=AGENT_DEFAULTS.pods.retry_limit,
    show_default=True,
    help="Failed provider calls for a pod before giving up (a never-started pod becomes Failed).",
)
@click.option(
    "--node-status-update-frequency",
    default=duration_text(AGENT_DEFAULTS.node_status_interval),
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
    default=KUBELET_API_DEFAULTS.authorization_mode,
    show_default=True,
    help="Webhook: SubjectAccessReview on nodes/<subresource>. AlwaysAllow: development only.",
)
@click.option(
    "--stream-idle-timeout",
    default=duration_text(KUBELET_API_DEFAULTS.stream_idle_timeout),
    show_default=True,
    help="Close an exec/attach/port-forward connection idle this long.",
)
@click.option(
    "--stream-creation-timeout",
    default=duration_text(KUBELET_API_DEFAULTS.stream_creation_timeout),
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
    default=duration_text(leader.DEFAULT_LEASE_DURATION_S),
    show_default=True,
    help="How long a standby waits after the leader's last renewal before taking over.",
)
@click.option(
    "--leader-elect-renew-deadline",
    default=duration_text(leader.DEFAULT_RENEW_DEADLINE_S),
    show_default=True,
    help="A leader that could not renew for this long stops serving (and exits).",
)
@click.option(
    "--leader-elect-retry-period",
    default=duration_text(leader.DEFAULT_RETRY_PERIOD_S),
    show_default=True,
    help="How often candidates try to take the Lease and the leader renews it.",
)
@click.option(
    "--metrics-addr",
    default=AGENT_DEFAULTS.metrics_addr,
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
    sys.exit(run_agent(**opts))  # type: ignore[arg-type]
