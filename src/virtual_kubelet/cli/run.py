"""The agent command's work: check its flags, build `AgentSettings` from them and run the agent."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import click

from ..agent import Agent, AgentSettings, StartupError
from ..kubelet_api.service import KubeletApiSettings
from ..logs import setup as setup_logging
from ..node import leader
from ..pods.settings import PodSettings
from ..providers import registry
from ..sdk import ProviderConfigError
from .settings import (
    AGENT_DEFAULTS,
    default_state_dir,
    duration,
    election_settings,
    taints,
)

log = logging.getLogger("virtual_kubelet")


def run_agent(
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
    port_text = os.environ.get("KUBELET_PORT", str(AGENT_DEFAULTS.daemon_port))
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
            stream_creation_timeout=duration(stream_creation_timeout, "--stream-creation-timeout"),
            stream_idle_timeout=duration(stream_idle_timeout, "--stream-idle-timeout"),
        )
    election = None
    if leader_elect:
        election = election_settings(
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
        taints=taints(provider, taint_key, disable_taint),
        state_dir=state_dir or default_state_dir(nodename),
        volumes_dir=volumes_dir,
        kubelet_api=api_settings,
        cluster_domain=cluster_domain,
        pods=PodSettings(sync_workers=pod_sync_workers, retry_limit=provider_retry_limit),
        full_resync_period=duration(full_resync_period, "--full-resync-period"),
        startup_timeout=duration(startup_timeout, "--startup-timeout"),
        kube_api_qps=kube_api_qps,
        kube_api_burst=kube_api_burst,
        event_qps=event_qps,
        event_burst=event_burst,
        metrics_addr=metrics_addr,
        leader_election=election,
        node_status_interval=duration(
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
