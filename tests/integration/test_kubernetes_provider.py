"""The `kubernetes` provider against two real dev clusters: the session's cluster is the source
(our virtual node, provider `kubernetes`), a second one started here is the target, whose pods are
run by a second virtual node with the process provider (no real kubelet exists here)."""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from virtual_kubelet.devcluster import DevCluster, kubectl_path, wait_until
from virtual_kubelet.devcluster.agent import AgentProcess
from virtual_kubelet.devcluster.pytest_plugin import config_for_tests
from virtual_kubelet.sdk import parse_quantity
from virtual_kubelet.testing import ConformanceProfile, ProcessWorkloads, ProviderConformance
from virtual_kubelet.testing.node import ConformanceNode

from .cci_proxy import CciProxy
from .conftest import TOLERATION, AgentFactory, create, events_for
from .terminal import terminal

OWNER = "offload.virtual-kubelet.io/owner"
MANAGED_BY = "endpointslice.kubernetes.io/managed-by"
OFFLOAD = "offload.virtual-kubelet.io"


class Offload:
    """The two clusters and the two agents of this module."""

    def __init__(self, source: DevCluster, target: DevCluster, workdir: Path) -> None:
        self.source = source
        self.target = target
        self.workdir = workdir
        self.node = f"offload-{secrets.token_hex(3)}"
        self.worker = AgentProcess(target, "target-worker", workdir / "worker", provider="process")
        self.config = {
            "target": {"kubeconfig": str(target.kubeconfig)},
            "source": {"kubeconfig": str(source.kubeconfig)},
            "cluster_id": "home",
            "namespaces": {"template": "{namespace}-{cluster}"},
            "pods": {"tolerations": [TOLERATION], "service_account": "source"},
            "capacity_refresh_seconds": 2,
            "reflect_services": True,
        }
        self.agent = self.new_agent()

    def new_agent(self) -> AgentProcess:
        return AgentProcess(
            self.source,
            self.node,
            self.workdir / "agent",
            provider="kubernetes",
            provider_config=self.config,
        )

    def target_pods(self, namespace: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.target.get_json("pods", "-n", namespace)["items"]
        return items


@pytest.fixture(scope="module")
def offload(devcluster: DevCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Offload]:
    target = DevCluster(tmp_path_factory.mktemp("target"), config_for_tests())
    target.start()
    setup = Offload(devcluster, target, tmp_path_factory.mktemp("offload"))
    try:
        setup.worker.start().wait_ready()
        setup.agent.start().wait_ready()
        # kubectl logs/exec go source API server -> our agent -> target API server -> worker.
        setup.worker.approve_serving_certificate()
        setup.agent.approve_serving_certificate()
        yield setup
    finally:
        setup.agent.stop()
        setup.worker.stop()
        setup.worker.cleanup()
        devcluster.kubectl("delete", "node", setup.node, "--wait=false", check=False)
        devcluster.kubectl("delete", "secret", "offload-target", "-n", "default", check=False)
        target.stop()


def _deployment(name: str, node: str, replicas: int, **container: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "nodeSelector": {"kubernetes.io/hostname": node},
                    "tolerations": [TOLERATION],
                    "terminationGracePeriodSeconds": 2,
                    "containers": [
                        {"name": "main", "image": "registry.invalid/app:1", **container}
                    ],
                },
            },
        },
    }


def _follow(cluster: DevCluster, namespace: str, name: str, until: str) -> str:
    """`kubectl logs -f` until `until` shows up; the stream must still be open then."""
    command = [kubectl_path(), "--kubeconfig", str(cluster.kubeconfig), "logs", "-f", "-n"]
    with subprocess.Popen(
        [*command, namespace, name], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    ) as follower:
        assert follower.stdout is not None
        os.set_blocking(follower.stdout.fileno(), False)
        seen = b""

        def arrived() -> bool:
            nonlocal seen
            seen += follower.stdout.read() or b""  # type: ignore[union-attr]
            return until.encode() in seen

        try:
            wait_until(arrived, 30, f"{until!r} in kubectl logs -f")
            assert follower.poll() is None, "kubectl logs -f ended instead of following"
        finally:
            follower.kill()
    return seen.decode()


def _pods(cluster: DevCluster, namespace: str, selector: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.get_json("pods", "-n", namespace, "-l", selector)["items"]
    return items


def _running(pods: list[dict[str, Any]], count: int) -> list[dict[str, Any]] | None:
    ready = [p for p in pods if p.get("status", {}).get("phase") == "Running"]
    return ready if len(ready) == count and len(pods) == count else None


def test_a_deployment_runs_in_the_target_with_its_config_and_status_flowing_back(
    offload: Offload, kube_namespace: str
) -> None:
    source, target, ns = offload.source, offload.target, kube_namespace
    remote_ns = f"{ns}-home"
    create(
        source,
        ns,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "conf"},
            "data": {"greeting": "hello", "file.txt": "from-a-file"},
        },
    )
    create(
        source,
        ns,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "creds"},
            "stringData": {"password": "s3cret-value"},
        },
    )
    script = (
        'echo "greeting=$GREETING password=$PASSWORD me=$ME"; cat /conf/file.txt; echo; '
        "exec sleep 3600"
    )
    env = [
        {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "conf", "key": "greeting"}}},
        {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
        {"name": "ME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
    ]
    deployment = _deployment(
        "web",
        offload.node,
        2,
        command=["sh", "-c", script],
        env=env,
        volumeMounts=[{"name": "conf", "mountPath": "/conf"}],
    )
    deployment["spec"]["template"]["spec"]["volumes"] = [
        {"name": "conf", "configMap": {"name": "conf"}}
    ]
    create(source, ns, deployment)

    pods = wait_until(lambda: _running(_pods(source, ns, "app=web"), 2), 90, "2 pods Running")
    remote = wait_until(lambda: _running(offload.target_pods(remote_ns), 2), 30, "2 remote pods")
    # Traced back, owned by our node, rewritten for the target (no nodeName of ours).
    by_name = {p["metadata"]["name"]: p for p in remote}
    for pod in pods:
        twin = by_name[pod["metadata"]["name"]]
        assert twin["metadata"]["labels"][OWNER] == f"home.{offload.node}"
        assert (
            twin["metadata"]["labels"]["offload.virtual-kubelet.io/source-uid"]
            == (pod["metadata"]["uid"])
        )
        assert twin["spec"]["nodeName"] == "target-worker"
        assert pod["status"]["podIP"] == twin["status"]["podIP"]
        statuses = pod["status"]["containerStatuses"]
        assert statuses[0]["ready"]
        assert statuses[0]["restartCount"] == 0
    # Logs through the source cluster, with the env and volume from the reflected objects.
    name = pods[0]["metadata"]["name"]
    logs = wait_until(
        lambda: (
            (out := source.kubectl("logs", "-n", ns, name).stdout) and "from-a-file" in out and out
        ),
        30,
        "the pod's log",
    )
    assert f"greeting=hello password=s3cret-value me={ns}" in logs
    assert source.kubectl("logs", "-n", ns, name, "--tail=1").stdout.strip() == "from-a-file"
    followed = _follow(source, ns, name, "from-a-file")
    # The target's Events about the pod show on the source pod (the target scheduler's, say).
    wait_until(
        lambda: any(
            e.get("source", {}).get("component", "").startswith("target/")
            for e in events_for(source, ns, name)
        ),
        30,
        "the target's Events on the source pod",
    )
    # The node offers what the target's Ready nodes offer.
    worker = target.get_json("node", "target-worker")["status"]["allocatable"]
    offered = source.get_json("node", offload.node)["status"]["allocatable"]
    assert (offered["cpu"], offered["memory"]) == (
        worker["cpu"],
        str(parse_quantity(worker["memory"])),
    )
    assert "greeting=hello" in followed
    # The pod's token is its own service account's, minted in the source (service_account:
    # source): it authenticates to the home API server, which the pod is pointed at.
    twin_spec = by_name[name]["spec"]
    assert twin_spec["automountServiceAccountToken"] is False
    token_secret = f"{name}-vk-sa-token"
    token_volume = next(v for v in twin_spec["volumes"] if v["name"].startswith("kube-api"))
    assert token_volume["secret"]["secretName"] == token_secret
    home = next(
        e for e in twin_spec["containers"][0]["env"] if e["name"] == "KUBERNETES_SERVICE_HOST"
    )
    assert home["value"] == "127.0.0.1"
    minted = target.get_json("secret", token_secret, "-n", remote_ns)["data"]
    assert base64.b64decode(minted["namespace"]).decode() == ns
    review = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": {"token": base64.b64decode(minted["token"]).decode()},
    }
    answer = json.loads(
        source.kubectl("create", "-o", "json", "-f", "-", input=json.dumps(review)).stdout
    )
    assert answer["status"]["user"]["username"] == f"system:serviceaccount:{ns}:default"
    # The secret's value never travels in the remote pod's spec: it references the reflected copy.
    assert "s3cret-value" not in json.dumps(by_name[name]["spec"])
    copy = target.get_json("secret", "creds", "-n", remote_ns)
    assert copy["metadata"]["labels"][OWNER] == f"home.{offload.node}"
    # An edit in the source reaches the target.
    source.kubectl("patch", "configmap", "conf", "-n", ns, "-p", '{"data":{"greeting":"bonjour"}}')
    wait_until(
        lambda: (
            target.get_json("configmap", "conf", "-n", remote_ns)["data"]["greeting"] == "bonjour"
        ),
        30,
        "the ConfigMap edit to reach the target",
    )
    # A Service selecting the pods is reflected: in the target, its endpoints are the remote pods.
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    create(source, ns, service)

    def endpoints() -> set[str]:
        slices = target.get_json(
            "endpointslices", "-n", remote_ns, "-l", "kubernetes.io/service-name=web"
        )["items"]
        return {a for s in slices for e in s.get("endpoints") or [] for a in e["addresses"]}

    remote_ips = {p["status"]["podIP"] for p in remote}
    wait_until(lambda: endpoints() == remote_ips, 30, "the reflected Service's endpoints")
    copy_service = target.get_json("service", "web", "-n", remote_ns)
    assert copy_service["metadata"]["labels"][OWNER] == f"home.{offload.node}"
    assert copy_service["spec"]["ports"][0]["targetPort"] == 8080
    source.kubectl("delete", "service", "web", "-n", ns)
    wait_until(
        lambda: not target.get_json("services", "-n", remote_ns, "-l", OWNER)["items"],
        30,
        "the reflected Service to go with the source's",
    )
    # Deleting the Deployment deletes the remote pods and, once unused, the reflected objects.
    source.kubectl("delete", "deployment", "web", "-n", ns)
    wait_until(lambda: not _pods(source, ns, "app=web"), 60, "the source pods to go")
    wait_until(lambda: not offload.target_pods(remote_ns), 30, "the remote pods to go")
    wait_until(
        lambda: not target.get_json("configmaps,secrets", "-n", remote_ns, "-l", OWNER)["items"],
        30,
        "the reflected ConfigMap and Secret to be removed",
    )


def _remote_uids(offload: Offload, namespace: str) -> dict[str, str]:
    """source pod UID -> remote pod UID, for our pods in the target namespace."""
    return {
        p["metadata"]["labels"]["offload.virtual-kubelet.io/source-uid"]: p["metadata"]["uid"]
        for p in offload.target.get_json("pods", "-n", namespace, "-l", OWNER)["items"]
    }


def test_a_pod_our_node_did_not_create_is_never_touched(
    offload: Offload, kube_namespace: str
) -> None:
    source, target, ns = offload.source, offload.target, kube_namespace
    remote_ns = f"{ns}-home"
    target.kubectl("create", "namespace", remote_ns)
    bystander = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "bystander", "labels": {"app": "web"}},
        "spec": {
            "tolerations": [TOLERATION],
            "containers": [
                {"name": "main", "image": "x", "command": ["sh", "-c", "exec sleep 3600"]}
            ],
        },
    }
    create(target, remote_ns, bystander)
    before = target.get_json("pod", "bystander", "-n", remote_ns)
    # A source pod of the same name on our node is refused, with the reason, and nothing else.
    mine = json.loads(json.dumps(bystander))
    mine["spec"]["nodeName"] = offload.node
    create(source, ns, mine)
    failed = wait_until(
        lambda: (
            (p := source.get_json("pod", "bystander", "-n", ns))["status"].get("phase") == "Failed"
            and p
        ),
        60,
        "the clashing source pod to fail",
    )
    assert "not create" in json.dumps(failed["status"]) or "not create" in json.dumps(
        source.get_json("events", "-n", ns)
    )
    source.kubectl("delete", "pod", "bystander", "-n", ns, "--grace-period=0", "--force")
    # A restarted agent adopts nothing of it and deletes nothing of it. (It reads the target's
    # kubeconfig from a Secret in the source cluster this time.)
    offload.agent.stop()
    source.kubectl(
        "create",
        "secret",
        "generic",
        "offload-target",
        "-n",
        "default",
        f"--from-file=kubeconfig={target.kubeconfig}",
    )
    offload.config["target"] = {
        "kubeconfig_secret": {"namespace": "default", "name": "offload-target"}
    }
    offload.agent = offload.new_agent()
    offload.agent.start().wait_ready()
    wait_until(
        lambda: "adopted" in offload.agent.log() or "serving pods" in offload.agent.log(),
        30,
        "the agent to reconcile",
    )
    after = target.get_json("pod", "bystander", "-n", remote_ns)
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    assert "deletionTimestamp" not in after["metadata"]
    assert OWNER not in after["metadata"].get("labels", {})
    assert "Secret default/offload-target key 'kubeconfig'" in offload.agent.log()


def test_kill_9_during_a_30_pod_rollout_adopts_and_recreates_nothing(
    offload: Offload, kube_namespace: str
) -> None:
    source, ns = offload.source, kube_namespace
    remote_ns = f"{ns}-home"
    create(source, ns, _deployment("many", offload.node, 30, command=["sleep", "3600"]))
    wait_until(lambda: len(_remote_uids(offload, remote_ns)) >= 8, 60, "the rollout to start")
    offload.agent.kill()
    before_restart = _remote_uids(offload, remote_ns)
    early = offload.target.get_json("pods", "-n", remote_ns, "-l", OWNER)["items"][0]
    token_secret = f"{early['metadata']['name']}-vk-sa-token"
    minted = offload.target.get_json("secret", token_secret, "-n", remote_ns)
    offload.agent = offload.new_agent()
    offload.agent.start().wait_ready()
    pods = wait_until(
        lambda: _running(_pods(source, ns, "app=many"), 30), 120, "30 pods Running in the source"
    )
    remote = _remote_uids(offload, remote_ns)
    assert len(remote) == 30
    assert set(remote) == {p["metadata"]["uid"] for p in pods}
    # Every remote pod that existed at the kill is the same object: adopted, not recreated.
    assert {uid: remote[uid] for uid in before_restart} == before_restart
    # The new agent took over renewing their source tokens (the last run's may be near its end).
    wait_until(
        lambda: (
            offload.target.get_json("secret", token_secret, "-n", remote_ns)["metadata"][
                "resourceVersion"
            ]
            != minted["metadata"]["resourceVersion"]
        ),
        30,
        "an adopted pod's source token to be renewed",
    )
    # Scaling away deletes every remote pod (and leaves the target's worker idle for the next).
    source.kubectl("delete", "deployment", "many", "-n", ns, "--wait=false")
    wait_until(lambda: not offload.target_pods(remote_ns), 90, "the 30 remote pods to go")


def test_target_unreachable_marks_the_node_not_ready_and_deletes_nothing(
    offload: Offload, kube_namespace: str
) -> None:
    source, target, ns = offload.source, offload.target, kube_namespace
    remote_ns = f"{ns}-home"
    create(source, ns, _deployment("steady", offload.node, 3, command=["sleep", "3600"]))
    pods = wait_until(lambda: _running(_pods(source, ns, "app=steady"), 3), 60, "3 pods Running")
    remote_before = _remote_uids(offload, remote_ns)
    target.components["kube-apiserver"].stop(5)

    def not_ready() -> dict[str, Any] | None:
        node = source.get_json("node", offload.node)
        ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
        return ready if ready["status"] != "True" else None

    ready = wait_until(not_ready, 60, "the virtual node to go NotReady")
    assert "target cluster" in ready.get("message", "")
    assert {p["metadata"]["uid"] for p in _pods(source, ns, "app=steady")} == {
        p["metadata"]["uid"] for p in pods
    }
    target.start()
    offload.agent.wait_ready(60)
    assert _remote_uids(offload, remote_ns) == remote_before
    after = wait_until(lambda: _running(_pods(source, ns, "app=steady"), 3), 60, "3 pods Running")
    assert {p["metadata"]["uid"] for p in after} == {p["metadata"]["uid"] for p in pods}
    source.kubectl("delete", "deployment", "steady", "-n", ns, "--wait=false")
    wait_until(lambda: not offload.target_pods(remote_ns), 60, "the remote pods to go")


class TestKubernetesConformance(ProviderConformance):
    """The conformance kit against a `kubernetes` node offloading to the target, whose worker runs
    pods as processes (so the process provider's workloads apply)."""

    @pytest.fixture(scope="class")
    @classmethod
    def conformance_profile(cls, offload: Offload) -> ConformanceProfile:
        # This node offers what a ResourceQuota in the target leaves (capacity_quota).
        offload.target.kubectl("create", "namespace", "kit-quota", check=False)
        quota = {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": "offload"},
            "spec": {"hard": {"pods": "40", "requests.cpu": "6", "requests.memory": "12Gi"}},
        }
        create(offload.target, "kit-quota", quota)
        return ConformanceProfile(
            provider="kubernetes",
            config={
                **offload.config,
                "target": {"kubeconfig": str(offload.target.kubeconfig)},
                "cluster_id": "kit",
                "pods": {"tolerations": [TOLERATION], "service_account": "target"},
                "capacity_quota": {"namespace": "kit-quota", "name": "offload"},
            },
            workloads=ProcessWorkloads(),
        )

    def test_the_node_offers_what_the_target_quota_leaves(
        self, conformance_node: ConformanceNode
    ) -> None:
        def offered() -> dict[str, str] | None:
            node = conformance_node.cluster.get_json("node", conformance_node.name)
            allocatable: dict[str, str] = node["status"]["allocatable"]
            return allocatable if allocatable.get("pods") == "40" else None

        allocatable = wait_until(offered, 30, "the quota's capacity on the node")
        assert allocatable["cpu"] == "6"
        assert parse_quantity(allocatable["memory"]) == 12 * 1024**3


CCI_CREDENTIALS = {"domain": "acme", "user": "offloader", "password": "pa55-w0rd-not-logged"}


def _cci_config(offload: Offload, proxy: CciProxy, credentials: Path) -> dict[str, Any]:
    network = {
        key: f"{key}-1"
        for key in (
            "vpc_id",
            "subnet_id",
            "network_id",
            "security_group_id",
            "project_id",
            "domain_id",
        )
    }
    return {
        "mode": "huawei-cci",
        "source": {"kubeconfig": str(offload.source.kubeconfig)},
        "cluster_id": "cci",
        "cci": {
            "api_server": proxy.url,
            "iam_endpoint": proxy.url,
            "project": "cn-north-4",
            "credentials_file": str(credentials),
            "network": {**network, "available_zone": "cn-north-4a", "cidr": "192.168.0.0/24"},
        },
        "capacity": {"cpu": "32", "memory": "128Gi", "pods": 100},
        "pods": {"tolerations": [TOLERATION]},
    }


@pytest.fixture
def cci(offload: Offload, tmp_path: Path) -> Iterator[tuple[CciProxy, Path]]:
    proxy = CciProxy(offload.target, CCI_CREDENTIALS, "cn-north-4").start()
    credentials = tmp_path / "cci-credentials.yaml"
    credentials.write_text(json.dumps(CCI_CREDENTIALS))
    try:
        yield proxy, credentials
    finally:
        proxy.stop()


def test_huawei_cci_mode_runs_pods_through_iam_tokens_flavor_network_and_shapes(
    offload: Offload, cci: tuple[CciProxy, Path], kube_namespace: str, tmp_path: Path
) -> None:
    proxy, credentials = cci
    source, target, ns = offload.source, offload.target, kube_namespace
    agent = AgentProcess(
        source,
        f"cci-{secrets.token_hex(3)}",
        tmp_path / "cci-agent",
        provider="kubernetes",
        provider_config=_cci_config(offload, proxy, credentials),
    )
    try:
        agent.start().wait_ready()
        agent.approve_serving_certificate()

        def small_pod(name: str) -> dict[str, Any]:
            return {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name},
                "spec": {
                    "nodeName": agent.node_name,
                    "tolerations": [TOLERATION],
                    "terminationGracePeriodSeconds": 2,
                    "containers": [
                        {
                            "name": "main",
                            "image": "x",
                            "command": [
                                "sh",
                                "-c",
                                f"echo hi-from-{name} $SETTING; exec sleep 3600",
                            ],
                            "env": [
                                {
                                    "name": "SETTING",
                                    "valueFrom": {
                                        "configMapKeyRef": {"name": "settings", "key": "value"}
                                    },
                                }
                            ],
                            "resources": {"requests": {"cpu": "100m", "memory": "100Mi"}},
                        }
                    ],
                },
            }

        create(
            source,
            ns,
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "settings"},
                "data": {"value": "via-cci"},
            },
        )
        create(source, ns, small_pod("first"))
        wait_until(
            lambda: source.get_json("pod", "first", "-n", ns)["status"].get("phase") == "Running",
            60,
            "the pod to run through CCI",
        )
        remote = target.get_json("pod", "first", "-n", ns)
        shape = remote["spec"]["containers"][0]["resources"]
        assert shape["requests"] == shape["limits"]
        assert parse_quantity(shape["requests"]["cpu"]) == Decimal("0.25")
        assert parse_quantity(shape["requests"]["memory"]) == 512 * 1024**2
        namespace = target.get_json("namespace", ns)
        assert namespace["metadata"]["annotations"]["namespace.kubernetes.io/flavor"] == (
            "general-computing"
        )
        assert proxy.networks[(ns, "vk-network")]["spec"]["subnetID"] == "subnet_id-1"
        assert wait_until(
            lambda: "hi-from-first via-cci" in source.kubectl("logs", "-n", ns, "first").stdout,
            30,
            "logs through CCI",
        )
        # Every token expires (as after 24 h): CCI answers 401, the agent fetches a new one.
        issued = proxy.issued
        proxy.expire_all()
        create(source, ns, small_pod("second"))
        wait_until(
            lambda: source.get_json("pod", "second", "-n", ns)["status"].get("phase") == "Running",
            60,
            "a pod to run after the token expired",
        )
        assert proxy.issued > issued
        assert "the token has expired" in proxy.refused
        source.kubectl("delete", "pod", "first", "second", "-n", ns, "--wait=false")
        wait_until(lambda: not target.get_json("pods", "-n", ns)["items"], 60, "the CCI pods to go")
        assert CCI_CREDENTIALS["password"] not in agent.log()
    finally:
        agent.stop()
        source.kubectl("delete", "node", agent.node_name, "--wait=false", check=False)


def test_huawei_cci_mode_refuses_wrong_credentials_clearly(
    offload: Offload, cci: tuple[CciProxy, Path], tmp_path: Path
) -> None:
    proxy, _ = cci
    wrong = tmp_path / "wrong-credentials.yaml"
    wrong.write_text(json.dumps({**CCI_CREDENTIALS, "password": "guessed-secret"}))
    agent = AgentProcess(
        offload.source,
        f"cci-{secrets.token_hex(3)}",
        tmp_path / "wrong",
        provider="kubernetes",
        provider_config=_cci_config(offload, proxy, wrong),
    )
    agent.start()
    assert agent.process is not None
    assert agent.process.wait(60) == 1
    log = agent.log()
    assert f"refused the credentials in {wrong}" in log
    assert "guessed-secret" not in log
    assert proxy.issued == 0


def test_exec_with_a_terminal_and_resize_reaches_the_remote_pod(
    offload: Offload, kube_namespace: str
) -> None:
    source, ns = offload.source, kube_namespace
    manifest = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "shell"},
        "spec": {
            "nodeName": offload.node,
            "tolerations": [TOLERATION],
            "terminationGracePeriodSeconds": 2,
            "containers": [{"name": "main", "image": "x", "command": ["sleep", "3600"]}],
        },
    }
    create(source, ns, manifest)
    wait_until(
        lambda: source.get_json("pod", "shell", "-n", ns)["status"].get("phase") == "Running",
        60,
        "the shell pod to run",
    )
    script = "stty size; trap 'stty size' WINCH; while true; do sleep 0.2; done"
    command = (
        f"KUBECONFIG={source.kubeconfig} {kubectl_path()} exec -it shell "
        f'-n {ns} -- sh -c "{script}"; sleep 30'
    )
    with terminal(command) as tty:
        wait_until(lambda: "24 80" in tty.screen(), 30, "the terminal size in the remote pod")
        tty.resize(120, 40)
        wait_until(lambda: "40 120" in tty.screen(), 30, "the resize to reach the remote pod")
    source.kubectl("delete", "pod", "shell", "-n", ns, "--wait=false")


def test_stats_summary_shows_the_offloaded_pods_usage_under_their_source_names(
    offload: Offload, kube_namespace: str
) -> None:
    """The target has no metrics API here: the summary comes from the target worker's own
    `/stats/summary` through the target API server's node proxy."""
    source, ns = offload.source, kube_namespace
    busy = "i=0; while true; do i=$((i+1)); done"  # a core's worth of CPU, some memory
    create(
        source,
        ns,
        _deployment("busy", offload.node, 1, command=["sh", "-c", busy]),
    )
    pods = wait_until(lambda: _running(_pods(source, ns, "app=busy"), 1), 90, "busy to run")
    meta = pods[0]["metadata"]
    ours = {"name": meta["name"], "namespace": ns, "uid": meta["uid"]}

    def measured() -> dict[str, Any] | None:
        raw = source.kubectl(
            "get", "--raw", f"/api/v1/nodes/{offload.node}/proxy/stats/summary", check=False
        )
        if raw.returncode != 0:
            return None
        summary: dict[str, Any] = json.loads(raw.stdout)
        for pod in summary.get("pods") or []:
            cpu, memory = pod.get("cpu") or {}, pod.get("memory") or {}
            if (
                pod["podRef"] == ours
                and cpu.get("usageNanoCores")
                and memory.get("workingSetBytes")
            ):
                return summary
        return None

    summary = wait_until(measured, 60, "the busy pod's CPU and memory in the node's summary")
    assert summary["node"]["nodeName"] == offload.node
    (pod,) = [p for p in summary["pods"] if p["podRef"] == ours]
    assert [c["name"] for c in pod["containers"]] == ["main"]
    assert pod["cpu"]["usageNanoCores"] > 10_000_000  # busy: well above 10 millicores
    # Only our pods, under source names: nothing of the target's own namespaces shows.
    assert all(p["podRef"]["namespace"] == ns for p in summary["pods"] if p["podRef"] != ours)
    assert summary["node"]["cpu"]["usageNanoCores"] >= pod["cpu"]["usageNanoCores"]
    source.kubectl("delete", "deployment", "busy", "-n", ns, "--wait=false")


def test_endpoint_slices_of_pods_that_stayed_home_are_reflected_into_the_target(
    offload: Offload, kube_namespace: str, start_agent: AgentFactory
) -> None:
    """A Service with pods on a home node and on the virtual node: in the target, the copy of the
    Service lists the remote pods (the target's controller) and the home pods (our copies of the
    source's EndpointSlices); deleting the home pod or the Service removes them."""
    source, target, ns = offload.source, offload.target, kube_namespace
    remote_ns = f"{ns}-home"
    home = start_agent(provider="process")
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "mixed"},
        "spec": {"selector": {"app": "mixed"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    create(source, ns, service)
    for name, node in (("at-home", home.node_name), ("away", offload.node)):
        create(
            source,
            ns,
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "labels": {"app": "mixed"}},
                "spec": {
                    "nodeName": node,
                    "tolerations": [TOLERATION],
                    "terminationGracePeriodSeconds": 1,
                    "containers": [
                        {
                            "name": "main",
                            "image": "registry.invalid/app:1",
                            "command": ["sh", "-c", "exec sleep 3600"],
                        }
                    ],
                },
            },
        )
    running = wait_until(lambda: _running(_pods(source, ns, "app=mixed"), 2), 90, "both to run")
    ips = {p["metadata"]["name"]: p["status"]["podIP"] for p in running}

    def slices() -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = target.get_json(
            "endpointslices", "-n", remote_ns, "-l", "kubernetes.io/service-name=mixed"
        )["items"]
        return items

    def addresses(only_ours: bool = False) -> set[str]:
        return {
            address
            for s in slices()
            if not only_ours or s["metadata"]["labels"].get(MANAGED_BY) == OFFLOAD
            for e in s.get("endpoints") or []
            for address in e["addresses"]
        }

    both = {ips["at-home"], ips["away"]}
    wait_until(lambda: addresses() == both, 60, "both pods behind the Service in the target")
    # Ours carry only the home pod (the target lists the remote one itself), managed by us.
    assert addresses(only_ours=True) == {ips["at-home"]}
    ours = [s for s in slices() if s["metadata"]["labels"].get(MANAGED_BY) == OFFLOAD]
    assert {s["metadata"]["labels"].get(OWNER) for s in ours} == {f"home.{offload.node}"}
    assert all("nodeName" not in e for s in ours for e in s.get("endpoints") or [])
    source.kubectl("delete", "pod", "at-home", "-n", ns, "--wait=false")
    wait_until(lambda: addresses() == {ips["away"]}, 60, "the home pod to leave the target")
    source.kubectl("delete", "service", "mixed", "-n", ns)
    wait_until(
        lambda: (
            not target.get_json("endpointslices", "-n", remote_ns, "-l", f"{MANAGED_BY}={OFFLOAD}")[
                "items"
            ]
        ),
        60,
        "our EndpointSlices to go with the Service",
    )
    source.kubectl("delete", "pod", "away", "-n", ns, "--wait=false")
