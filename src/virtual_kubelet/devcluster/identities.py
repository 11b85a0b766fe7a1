"""A dev cluster's identities: its CAs, certificates and the admin kubeconfig, created once per
workdir and kept across restarts (the aggregation layer's are added to clusters made before it)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import metrics_server
from .components import FRONT_PROXY_CLIENT
from .kubeconfig import write_kubeconfig
from .pki import CertificateAuthority, create_service_account_keys

if TYPE_CHECKING:
    from .cluster import DevCluster


def write_pki(cluster: DevCluster) -> None:
    if cluster.kubeconfig.exists() and cluster.ca.key.exists():
        # Restarting in the same workdir: keep identities. The kubeconfig is rewritten only if
        # its server is not this cluster's (a workdir from before ports were kept), because
        # people and agents may be reading it right now.
        if f'"{cluster.server}"' not in cluster.kubeconfig.read_text():
            write_admin_kubeconfig(cluster)
        return
    cluster.pki_dir.mkdir(parents=True, exist_ok=True)
    ca = CertificateAuthority.create(cluster.pki_dir)
    ca.issue(
        cluster.pki_dir,
        "apiserver",
        common_name="kube-apiserver",
        server_names=[
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
            "127.0.0.1",
            "10.0.0.1",
        ],
    )
    ca.issue(
        cluster.pki_dir,
        "admin",
        common_name="kubernetes-admin",
        organizations=["system:masters"],
        client=True,
    )
    ca.issue(
        cluster.pki_dir,
        "apiserver-kubelet-client",
        common_name="kube-apiserver-kubelet-client",
        organizations=["system:masters"],
        client=True,
    )
    create_service_account_keys(cluster.pki_dir)
    write_admin_kubeconfig(cluster)


def write_aggregation_pki(cluster: DevCluster) -> None:
    # Separate from write_pki so that clusters created before the aggregation layer was
    # configured get these files too (their other identities are kept).
    if not cluster.front_proxy_ca.key.exists():
        front = CertificateAuthority.create(
            cluster.pki_dir, "virtual-kubelet-devcluster-front-proxy-ca", stem="front-proxy-ca"
        )
        front.issue(
            cluster.pki_dir, FRONT_PROXY_CLIENT, common_name=FRONT_PROXY_CLIENT, client=True
        )
    if not cluster.metrics_server_client.key.exists():
        ca = CertificateAuthority.load(cluster.ca)
        ca.issue(
            cluster.pki_dir,
            "metrics-server-serving",
            common_name="metrics-server",
            server_names=list(metrics_server.SERVING_NAMES),
        )
        ca.issue(cluster.pki_dir, "metrics-server", common_name=metrics_server.USER, client=True)


def write_admin_kubeconfig(cluster: DevCluster) -> None:
    write_kubeconfig(
        cluster.kubeconfig,
        server=cluster.server,
        ca=cluster.ca.cert,
        client=cluster.admin,
        cluster="virtual-kubelet-devcluster",
        user="admin",
    )
