"""The control plane's components: their names, ports, and the command line each one runs with.
Pure functions of the cluster's paths, ports and certificates; `startup.py` starts them."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from .pki import KeyPair

ETCD = "etcd"
APISERVER = "kube-apiserver"
CONTROLLER_MANAGER = "kube-controller-manager"
SCHEDULER = "kube-scheduler"
COMPONENTS = (ETCD, APISERVER, CONTROLLER_MANAGER, SCHEDULER)
#: Optional: serves metrics.k8s.io (`kubectl top`) through the API server's aggregation layer.
METRICS_SERVER = "metrics-server"
#: Every component a cluster may run, in start order (stopped in reverse).
ALL_COMPONENTS = (*COMPONENTS, METRICS_SERVER)
#: Port names: one per component plus etcd's peer port.
PORT_NAMES = (ETCD, "etcd-peer", APISERVER, CONTROLLER_MANAGER, SCHEDULER)
ALL_PORT_NAMES = (*PORT_NAMES, METRICS_SERVER)

SERVICE_CIDR = "10.0.0.0/24"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
#: The client the aggregation layer presents to extension API servers (metrics-server), and the
#: only name they accept request headers (X-Remote-User...) from.
FRONT_PROXY_CLIENT = "front-proxy-client"


class ControllerTimings(Protocol):
    """The node-lifecycle settings of DevClusterConfig the controller manager runs with."""

    @property
    def node_monitor_period(self) -> str: ...
    @property
    def node_monitor_grace_period(self) -> str: ...
    @property
    def node_startup_grace_period(self) -> str: ...


def etcd_argv(binary: Path, workdir: Path, ports: Mapping[str, int]) -> list[str]:
    client = f"http://127.0.0.1:{ports[ETCD]}"
    peer = f"http://127.0.0.1:{ports['etcd-peer']}"
    return [
        str(binary),
        "--name=devcluster",
        f"--data-dir={workdir / 'etcd-data'}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=devcluster={peer}",
        # A throw-away cluster: durability across power loss is not worth the fsync cost.
        "--unsafe-no-fsync=true",
        "--auto-compaction-mode=periodic",
        "--auto-compaction-retention=5m",
        "--quota-backend-bytes=8589934592",
        "--log-level=warn",
    ]


def apiserver_argv(
    binary: Path,
    cert_dir: Path,
    ports: Mapping[str, int],
    pki: Path,
    ca: KeyPair,
    kubelet_client: KeyPair,
    front_proxy_ca: KeyPair,
    front_proxy_client: KeyPair,
) -> list[str]:
    return [
        str(binary),
        f"--etcd-servers=http://127.0.0.1:{ports[ETCD]}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--secure-port={ports[APISERVER]}",
        f"--cert-dir={cert_dir}",
        f"--tls-cert-file={pki / 'apiserver.crt'}",
        f"--tls-private-key-file={pki / 'apiserver.key'}",
        f"--client-ca-file={ca.cert}",
        f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
        f"--service-account-key-file={pki / 'sa.pub'}",
        f"--service-account-signing-key-file={pki / 'sa.key'}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--authorization-mode=Node,RBAC",
        "--enable-admission-plugins=NodeRestriction",
        "--allow-privileged=true",
        # Kubelet serving certificates are checked (the CSR path issues them from our CA).
        f"--kubelet-certificate-authority={ca.cert}",
        f"--kubelet-client-certificate={kubelet_client.cert}",
        f"--kubelet-client-key={kubelet_client.key}",
        "--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname",
        # The aggregation layer (metrics.k8s.io for `kubectl top`): the API server proxies to
        # extension API servers as front-proxy-client, passing the caller in request headers that
        # they trust only from a client certificate of the front-proxy CA with that name.
        f"--requestheader-client-ca-file={front_proxy_ca.cert}",
        f"--requestheader-allowed-names={FRONT_PROXY_CLIENT}",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-uid-headers=X-Remote-Uid",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--proxy-client-cert-file={front_proxy_client.cert}",
        f"--proxy-client-key-file={front_proxy_client.key}",
        "--profiling=false",
    ]


def _common(kubeconfig: Path) -> list[str]:
    return [
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--leader-elect=false",
        "--bind-address=127.0.0.1",
        "--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics",
    ]


def controller_manager_argv(
    binary: Path,
    workdir: Path,
    kubeconfig: Path,
    ports: Mapping[str, int],
    pki: Path,
    ca: KeyPair,
    timings: ControllerTimings,
) -> list[str]:
    return [
        str(binary),
        *_common(kubeconfig),
        f"--secure-port={ports[CONTROLLER_MANAGER]}",
        f"--cert-dir={workdir / CONTROLLER_MANAGER}",
        f"--root-ca-file={ca.cert}",
        f"--service-account-private-key-file={pki / 'sa.key'}",
        # Signs approved CSRs (kubelet serving certificates among them) with the cluster CA.
        f"--cluster-signing-cert-file={ca.cert}",
        f"--cluster-signing-key-file={ca.key}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--controllers=*",
        f"--node-monitor-period={timings.node_monitor_period}",
        f"--node-monitor-grace-period={timings.node_monitor_grace_period}",
        f"--node-startup-grace-period={timings.node_startup_grace_period}",
    ]


def scheduler_argv(
    binary: Path, workdir: Path, kubeconfig: Path, ports: Mapping[str, int]
) -> list[str]:
    return [
        str(binary),
        *_common(kubeconfig),
        f"--secure-port={ports[SCHEDULER]}",
        f"--cert-dir={workdir / SCHEDULER}",
    ]


def metrics_server_argv(
    binary: Path,
    kubeconfig: Path,
    ports: Mapping[str, int],
    ca: KeyPair,
    serving: KeyPair,
    resolution: str,
) -> list[str]:
    return [
        str(binary),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={ports[METRICS_SERVER]}",
        # Served with a certificate of the cluster CA, which the APIService's caBundle names.
        f"--tls-cert-file={serving.cert}",
        f"--tls-private-key-file={serving.key}",
        # Kubelets, virtual ones included, are scraped as upstream's deployment scrapes them: at
        # the InternalIP and port their Node reports, their serving certificates (CSR-issued by
        # the cluster CA) verified, as the kubeconfig's user (its client certificate).
        f"--kubelet-certificate-authority={ca.cert}",
        "--kubelet-preferred-address-types=InternalIP",
        "--kubelet-use-node-status-port",
        f"--metric-resolution={resolution}",
        "--profiling=false",
    ]
