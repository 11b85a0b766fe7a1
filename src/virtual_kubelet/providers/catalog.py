"""The original virtual-kubelet's provider list, row by row, and what each row is here.

The rows are those of the upstream project's provider list (its README's "Providers" section and
the website's providers.yaml) plus the providers that once lived in its tree (`providers/` up to
v0.10: hypersh, sfmesh, vic, mock, web, huawei, cri, azurebatch). `virtual-kubelet providers`
prints them; a retired name given to `--provider` fails with the row's reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

State = Literal["built", "planned", "retired", "not built"]


@dataclass(frozen=True)
class UpstreamRow:
    """One provider of the original project."""

    #: the name the original used for `--provider` (or the project's short name)
    name: str
    #: the row's title in the upstream list
    title: str
    state: State
    #: which provider (and mode) here covers it; empty when none does
    here: str
    #: one line: what covers it, or why nothing does
    note: str


UPSTREAM: tuple[UpstreamRow, ...] = (
    UpstreamRow(
        "admiralty",
        "Admiralty Multi-Cluster Scheduler",
        "built",
        "kubernetes",
        "pods offloaded to another cluster, as Admiralty's delegate pods are",
    ),
    UpstreamRow(
        "alibabacloud-eci",
        "Alibaba Cloud Elastic Container Instance (ECI)",
        "not built",
        "",
        "needs an Alibaba Cloud account and has no documented stand-in to test against here",
    ),
    UpstreamRow(
        "aws",
        "AWS Fargate",
        "built",
        "aws",
        "a Fargate task per pod (ECS RunTask, DescribeTasks, awslogs); tested against moto",
    ),
    UpstreamRow(
        "azurebatch",
        "Azure Batch",
        "built",
        "azurebatch",
        "a Batch task per container in a job per node (azure-batch 15); tested against a loopback Batch",
    ),
    UpstreamRow(
        "azure",
        "Azure Container Instances (ACI)",
        "built",
        "azure",
        "a container group per pod through ARM (api 2023-05-01); tested against a loopback ARM",
    ),
    UpstreamRow(
        "cisco",
        "Cisco Virtual Kubelet",
        "not built",
        "",
        "runs containers through IOS XE application hosting on Cisco devices; none to test with",
    ),
    UpstreamRow(
        "kip",
        "Elotl Kip",
        "not built",
        "",
        "starts a cloud VM per pod; no cloud is reachable from the machines that test this",
    ),
    UpstreamRow(
        "cri",
        "Kubernetes Container Runtime Interface (CRI)",
        "built",
        "cri",
        "pods run on a local containerd or CRI-O through the CRI gRPC API",
    ),
    UpstreamRow(
        "huawei",
        "Huawei Cloud Container Instance (CCI)",
        "built",
        "kubernetes (mode huawei-cci)",
        "CCI's Kubernetes-compatible API with IAM tokens",
    ),
    UpstreamRow(
        "nomad",
        "HashiCorp Nomad",
        "not built",
        "",
        "not started; the slurm and web providers show the shape a Nomad provider would take",
    ),
    UpstreamRow(
        "interlink",
        "interLink",
        "built",
        "web (mode interlink)",
        "speaks the interLink plugin API directly",
    ),
    UpstreamRow(
        "liqo",
        "Liqo",
        "built",
        "kubernetes",
        "pods and Services offloaded to a peered cluster (no Liqo network fabric)",
    ),
    UpstreamRow(
        "openstack",
        "OpenStack Zun",
        "not built",
        "",
        "not started; needs an OpenStack cloud with Zun",
    ),
    UpstreamRow(
        "tensile-kube",
        "Tencent Games Tensile Kube",
        "built",
        "kubernetes",
        "pods run as pods of other Kubernetes clusters",
    ),
    UpstreamRow(
        "stackpath",
        "StackPath Edge Compute",
        "not built",
        "",
        "needs a StackPath account; no stand-in to test against here",
    ),
    UpstreamRow(
        "mock",
        "Mock (in the original tree)",
        "built",
        "mock",
        "pods that run nowhere, for tests",
    ),
    UpstreamRow(
        "web",
        "Web (in the original tree)",
        "built",
        "web",
        "the original's HTTP provider protocol, plus the extended and interlink modes",
    ),
    UpstreamRow(
        "hypersh",
        "Hyper.sh",
        "retired",
        "",
        "Hyper.sh shut down in January 2019; there is no service left to connect to",
    ),
    UpstreamRow(
        "sfmesh",
        "Azure Service Fabric Mesh",
        "retired",
        "",
        "Service Fabric Mesh was retired on 28 April 2021; there is no service left to connect to",
    ),
    UpstreamRow(
        "vic",
        "vSphere Integrated Containers",
        "retired",
        "",
        "vSphere Integrated Containers reached end of general support in August 2021",
    ),
)


def retired(name: str) -> UpstreamRow | None:
    """The retired upstream row called `name`, if there is one."""
    for row in UPSTREAM:
        if row.name == name and row.state == "retired":
            return row
    return None
