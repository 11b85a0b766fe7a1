"""Starting a dev cluster's components: spawn each with its command line and log, and wait until it
is ready (etcd healthy, API server /readyz, controllers healthy, metrics-server Available)."""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from . import metrics_server
from .access import http_get, https_get
from .build import Binaries
from .components import (
    APISERVER,
    CONTROLLER_MANAGER,
    ETCD,
    METRICS_SERVER,
    SCHEDULER,
    apiserver_argv,
    controller_manager_argv,
    etcd_argv,
    metrics_server_argv,
    scheduler_argv,
)
from .kubeconfig import write_kubeconfig
from .process import Component
from .statefile import save_state

if TYPE_CHECKING:
    from .cluster import DevCluster


def spawn(cluster: DevCluster, name: str, argv: list[str]) -> Component:
    argv = [*argv, *cluster.config.extra_args.get(name, ())]
    log = cluster.log(name)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as f:
        f.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} starting: {' '.join(argv)}\n")
    component = Component.spawn(name, argv, log, detached=cluster.config.detached)
    cluster.components[name] = component
    save_state(cluster)
    return component


def start_etcd(cluster: DevCluster, binaries: Binaries) -> None:
    cluster.progress("starting etcd")
    etcd = spawn(cluster, ETCD, etcd_argv(binaries.etcd, cluster.workdir, cluster.ports))

    def healthy() -> bool:
        code, body = http_get("127.0.0.1", cluster.ports[ETCD], "/health")
        return code == 200 and json.loads(body).get("health") == "true"

    etcd.wait_ready(healthy, cluster.config.start_timeout, "healthy")


def start_apiserver(cluster: DevCluster, binaries: Binaries) -> None:
    cluster.progress("starting kube-apiserver")
    pki = cluster.pki_dir
    cert_dir = cluster.workdir / APISERVER
    cert_dir.mkdir(exist_ok=True)
    apiserver = spawn(
        cluster,
        APISERVER,
        apiserver_argv(
            binaries.kube_apiserver,
            cert_dir,
            cluster.ports,
            pki,
            cluster.ca,
            cluster.kubelet_client,
            cluster.front_proxy_ca,
            cluster.front_proxy_client,
        ),
    )

    def ready() -> bool:
        code, _ = cluster.api_get("/readyz", timeout=5)
        return code == 200

    apiserver.wait_ready(ready, cluster.config.start_timeout, "ready (/readyz)")


def start_controllers(cluster: DevCluster, binaries: Binaries, names: Sequence[str]) -> None:
    if not names:
        return
    cluster.progress(f"starting {' and '.join(names)}")
    for name in (CONTROLLER_MANAGER, SCHEDULER):
        (cluster.workdir / name).mkdir(exist_ok=True)
    argv = {
        CONTROLLER_MANAGER: controller_manager_argv(
            binaries.kube_controller_manager,
            cluster.workdir,
            cluster.kubeconfig,
            cluster.ports,
            cluster.pki_dir,
            cluster.ca,
            cluster.config,
        ),
        SCHEDULER: scheduler_argv(
            binaries.kube_scheduler, cluster.workdir, cluster.kubeconfig, cluster.ports
        ),
    }
    # Both start before either is waited for: they need nothing from each other.
    started = [spawn(cluster, name, argv[name]) for name in names]
    insecure = ssl.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE  # cluster-signed serving certs made by the components

    def healthy(name: str) -> Callable[[], bool]:
        def check() -> bool:
            code, _ = https_get("127.0.0.1", cluster.ports[name], "/healthz", insecure, 5)
            return code == 200

        return check

    for component in started:
        component.wait_ready(healthy(component.name), cluster.config.start_timeout, "healthy")


def start_metrics_server(cluster: DevCluster, binary: Path) -> None:
    cluster.progress("starting metrics-server")
    write_kubeconfig(
        cluster.metrics_server_kubeconfig,
        server=cluster.server,
        ca=cluster.ca.cert,
        client=cluster.metrics_server_client,
        cluster="virtual-kubelet-devcluster",
        user=metrics_server.USER,
    )
    port = cluster.ports[METRICS_SERVER]
    # Registered first: metrics-server reads its RBAC-guarded configuration as it starts.
    metrics_server.register(cluster, cluster.ca.cert, port)
    component = spawn(
        cluster,
        METRICS_SERVER,
        metrics_server_argv(
            binary,
            cluster.metrics_server_kubeconfig,
            cluster.ports,
            cluster.ca,
            cluster.metrics_server_serving,
            cluster.config.metrics_resolution,
        ),
    )
    trusting_ca = ssl.create_default_context(cafile=str(cluster.ca.cert))

    def live() -> bool:
        code, _ = https_get("127.0.0.1", port, "/livez", trusting_ca, 5)
        return code == 200

    component.wait_ready(live, cluster.config.start_timeout, "live (/livez)")

    # The aggregator reached it: `kubectl top` and discovery of metrics.k8s.io work.
    def registered() -> bool:
        code, body = cluster.api_get(
            f"/apis/apiregistration.k8s.io/v1/apiservices/{metrics_server.APISERVICE}"
        )
        return code == 200 and metrics_server.available(json.loads(body))

    component.wait_ready(
        registered, cluster.config.start_timeout, f"{metrics_server.APISERVICE} Available"
    )


def wait_for_default_service_account(cluster: DevCluster) -> None:
    # The service-account controller creating `default` proves the controllers really run.
    def exists() -> bool:
        code, _ = cluster.api_get("/api/v1/namespaces/default/serviceaccounts/default")
        return code == 200

    cluster.components[CONTROLLER_MANAGER].wait_ready(
        exists, cluster.config.start_timeout, "creating the default ServiceAccount"
    )
