"""The kubelets that compete: ours, upstream virtual-kubelet, KWOK, and the raw-client ceiling.

Each runs with its own client identity (`bench-<name>`), so the API server's own metrics (API
Priority and Fairness counts per FlowSchema) tell how many requests each one made. Upstream and
KWOK are built once from their published Go modules into the same cache as the control plane and
run with their CLI defaults, as their users run them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

from virtual_kubelet.devcluster import DevCluster, wait_until
from virtual_kubelet.devcluster.agent import AgentProcess
from virtual_kubelet.devcluster.build import GoTool, ensure_tool
from virtual_kubelet.devcluster.kubeconfig import write_kubeconfig
from virtual_kubelet.devcluster.pki import CertificateAuthority
from virtual_kubelet.devcluster.ports import free_port
from virtual_kubelet.kube import config as kubeconfig
from virtual_kubelet.kube.client import KubeClient, path
from virtual_kubelet.kube.errors import ApiError
from virtual_kubelet.kube.timefmt import micro, rfc3339

UPSTREAM = GoTool(
    name="virtual-kubelet-upstream",
    module="github.com/virtual-kubelet/virtual-kubelet",
    version="v1.13.0",
    package="github.com/virtual-kubelet/virtual-kubelet/cmd/virtual-kubelet",
    binary="virtual-kubelet",
    ldflags="-s -w -X main.buildVersion=v1.13.0",
)
KWOK = GoTool(
    name="kwok",
    module="sigs.k8s.io/kwok",
    version="v0.8.0",
    package="sigs.k8s.io/kwok/cmd/kwok",
    binary="kwok",
)
#: The "fast" stage set KWOK's own kwokctl uses (node initialise + lease heartbeat + pod stages).
KWOK_STAGES = (
    "kustomize/stage/node/fast/node-initialize.yaml",
    "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "kustomize/stage/pod/fast/pod-ready.yaml",
    "kustomize/stage/pod/fast/pod-complete.yaml",
    "kustomize/stage/pod/fast/pod-delete.yaml",
)
CONTENDERS = ("agent", "upstream", "kwok", "ceiling")
VK_TAINT = {"key": "virtual-kubelet.io/provider", "operator": "Exists", "effect": "NoSchedule"}


def identity(cluster: DevCluster, workdir: Path, name: str) -> Path:
    """A kubeconfig for user `bench-<name>` (cluster-admin, but not system:masters, so the API
    server accounts its requests under the FlowSchema `bench-<name>`)."""
    user = f"bench-{name}"
    ca = CertificateAuthority.load(cluster.ca)
    pair = ca.issue(workdir, user, common_name=user, organizations=["bench"], client=True)
    return write_kubeconfig(
        workdir / f"{user}.kubeconfig",
        server=cluster.server,
        ca=cluster.ca.cert,
        client=pair,
        cluster="devcluster",
        user=user,
    )


def account_identities(cluster: DevCluster) -> None:
    """RBAC and one exempt FlowSchema per contender, created once per cluster."""
    docs: list[dict[str, Any]] = []
    for name in CONTENDERS:
        user = f"bench-{name}"
        docs.append(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": user},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "cluster-admin",
                },
                "subjects": [
                    {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}
                ],
            }
        )
        docs.append(
            {
                "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
                "kind": "FlowSchema",
                "metadata": {"name": user},
                "spec": {
                    # Exempt, like system:masters: counted per contender, never queued by APF.
                    "matchingPrecedence": 10,
                    "priorityLevelConfiguration": {"name": "exempt"},
                    "rules": [
                        {
                            "subjects": [{"kind": "User", "user": {"name": user}}],
                            "resourceRules": [
                                {
                                    "verbs": ["*"],
                                    "apiGroups": ["*"],
                                    "resources": ["*"],
                                    "clusterScope": True,
                                    "namespaces": ["*"],
                                }
                            ],
                            "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
                        }
                    ],
                },
            }
        )
    cluster.kubectl(
        "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs})
    )


class Contender:
    name: str
    pid: int | None = None

    def __init__(self, cluster: DevCluster, workdir: Path, node: str) -> None:
        self.cluster = cluster
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.node = node
        self.kubeconfig = identity(cluster, workdir, self.name)

    @property
    def toleration(self) -> dict[str, str] | None:
        return VK_TAINT

    def crashed(self) -> str | None:
        """Why the contender died during the run (the last lines of its log), or None."""
        return None

    def gc_pauses(self) -> tuple[float, float] | None:
        """(seconds paused in garbage collection, full collections) so far; None if unknown."""
        return None

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    def _wait_ready(self, process: subprocess.Popen[bytes] | None, log: Path) -> None:
        def ready() -> bool:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{log.read_text()[-2000:]}")
            node = self.cluster.kubectl("get", "node", self.node, "-o", "json", check=False)
            if node.returncode != 0:
                return False
            conditions = json.loads(node.stdout)["status"].get("conditions", [])
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

        wait_until(ready, 90, f"{self.name} node {self.node} Ready")


class Agent(Contender):
    """Our virtual-kubelet with the mock provider and CLI defaults."""

    name = "agent"

    async def start(self) -> None:
        self._metrics = f"127.0.0.1:{free_port()}"
        self.process = AgentProcess(
            self.cluster,
            self.node,
            self.workdir,
            provider_config={"pods": "20000"},
            args=["--kubeconfig", str(self.kubeconfig), "--metrics-addr", self._metrics],
        ).start()
        assert self.process.process is not None
        self.pid = self.process.process.pid
        await asyncio.to_thread(self.process.wait_ready, 90)
        # As a cluster's approver would: the kubelet port opens with its CSR-issued certificate.
        await asyncio.to_thread(self.process.approve_serving_certificate)

    def crashed(self) -> str | None:
        process = self.process.process
        if process is None or process.poll() is None:
            return None
        return _crash_reason(self.process.log())

    async def stop(self) -> None:
        self.process.stop()
        self.process.cleanup()

    def gc_pauses(self) -> tuple[float, float] | None:
        try:
            with urllib.request.urlopen(f"http://{self._metrics}/metrics", timeout=5) as reply:
                text = reply.read().decode()
        except OSError:
            return None
        paused = full = 0.0
        for line in text.splitlines():
            if line.startswith("virtual_kubelet_gc_pause_seconds_sum"):
                paused += float(line.rsplit(" ", 1)[1])
            elif line.startswith('virtual_kubelet_gc_pause_seconds_count{generation="2"}'):
                full = float(line.rsplit(" ", 1)[1])
        return paused, full


def _crash_reason(log: str) -> str:
    lines = log.splitlines()
    for marker in ("fatal error:", "panic:", "Traceback"):
        for i, line in enumerate(lines):
            if line.startswith(marker):
                return " | ".join(lines[i : i + 3])[:300]
    return " | ".join(lines[-3:])[:300]


class _Binary(Contender):
    def crashed(self) -> str | None:
        if self._process.poll() is None:
            return None
        return f"exit {self._process.returncode}: {_crash_reason(self.log.read_text(errors='replace'))}"

    def _spawn(self, argv: list[str], env: dict[str, str]) -> None:
        self.log = self.workdir / f"{self.name}.log"
        with self.log.open("ab") as sink:
            self._process = subprocess.Popen(
                argv,
                stdout=sink,
                stderr=subprocess.STDOUT,
                env={**os.environ, **env},
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.pid = self._process.pid

    async def stop(self) -> None:
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self._process.wait, 20)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(5)


class Upstream(_Binary):
    """Upstream virtual-kubelet v1.13.0 with its built-in mock provider and CLI defaults."""

    name = "upstream"

    async def start(self) -> None:
        binary = await asyncio.to_thread(ensure_tool, UPSTREAM, progress=print)
        config = self.workdir / "provider.json"
        config.write_text(
            json.dumps({self.node: {"cpu": "2000", "memory": "4000Gi", "pods": "20000"}})
        )
        ca = CertificateAuthority.load(self.cluster.ca)
        serving = ca.issue(
            self.workdir, "serving", common_name=self.node, server_names=["127.0.0.1"]
        )
        port = free_port()
        self._spawn(
            [
                str(binary),
                "--provider",
                "mock",
                "--provider-config",
                str(config),
                "--nodename",
                self.node,
                "--kubeconfig",
                str(self.kubeconfig),
                "--metrics-addr",
                f"127.0.0.1:{free_port()}",
            ],
            {
                "APISERVER_CERT_LOCATION": str(serving.cert),
                "APISERVER_KEY_LOCATION": str(serving.key),
                "KUBELET_PORT": str(port),
                "VKUBELET_POD_IP": self.cluster.node_ip,
            },
        )
        await asyncio.to_thread(self._wait_ready, self._process, self.log)


class Kwok(_Binary):
    """KWOK v0.8.0 managing one node, with its "fast" stages."""

    name = "kwok"

    @property
    def toleration(self) -> dict[str, str] | None:
        return None

    async def start(self) -> None:
        binary = await asyncio.to_thread(ensure_tool, KWOK, progress=print)
        module_dir = await asyncio.to_thread(_kwok_module_dir)
        stages = self.workdir / "stages.yaml"
        stages.write_text("\n---\n".join((module_dir / s).read_text() for s in KWOK_STAGES))
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.node,
                "labels": {"type": "kwok", "kubernetes.io/hostname": self.node},
                "annotations": {"kwok.x-k8s.io/node": "fake"},
            },
        }
        self.cluster.kubectl("apply", "-f", "-", input=json.dumps(node))
        self._spawn(
            [
                str(binary),
                "--kubeconfig",
                str(self.kubeconfig),
                "--manage-single-node",
                self.node,
                "--config",
                str(stages),
                "--server-address",
                f"127.0.0.1:{free_port()}",
                "--node-ip",
                self.cluster.node_ip,
            ],
            {},
        )
        await asyncio.to_thread(self._wait_ready, self._process, self.log)


class Ceiling(Contender):
    """No kubelet: a raw client PATCHes each pod to Running+Ready the moment it appears and
    deletes pods marked for deletion at once. Nothing on this API server can be faster."""

    name = "ceiling"

    @property
    def toleration(self) -> dict[str, str] | None:
        return None

    async def start(self) -> None:
        self.client = KubeClient(kubeconfig.load(str(self.kubeconfig)), name="ceiling")
        # A node the scheduler can place pods on: labels, capacity and Ready.
        await self.client.create(
            path("v1", "nodes"),
            {"metadata": {"name": self.node, "labels": {"kubernetes.io/hostname": self.node}}},
        )
        resources = {"cpu": "2000", "memory": "4000Gi", "pods": "20000"}
        now = rfc3339()
        await self.client.patch(
            path("v1", "nodes", None, self.node, "status"),
            {
                "status": {
                    "capacity": resources,
                    "allocatable": resources,
                    "addresses": [{"type": "InternalIP", "address": self.cluster.node_ip}],
                    "conditions": [
                        {
                            "type": "Ready",
                            "status": "True",
                            "reason": "KubeletReady",
                            "lastHeartbeatTime": now,
                            "lastTransitionTime": now,
                        }
                    ],
                }
            },
            "strategic",
        )
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._run())
        self.pid = None

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self.client.close()

    async def _run(self) -> None:
        url = path("v1", "pods")
        selector = {"fieldSelector": f"spec.nodeName={self.node}"}
        pending: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        deletions: set[asyncio.Task[None]] = set()

        async def patcher() -> None:
            while True:
                pod = await pending.get()
                now = rfc3339()
                status = {
                    "phase": "Running",
                    "podIP": "10.244.0.1",
                    "startTime": now,
                    "conditions": [
                        {"type": t, "status": "True", "lastTransitionTime": now}
                        for t in ("Initialized", "Ready", "ContainersReady")
                    ],
                }
                meta = pod["metadata"]
                with contextlib.suppress(ApiError):
                    await self.client.patch(
                        path("v1", "pods", meta["namespace"], meta["name"], "status"),
                        {"metadata": {"uid": meta["uid"]}, "status": status},
                        "strategic",
                    )

        async def delete(pod: dict[str, Any]) -> None:
            meta = pod["metadata"]
            with contextlib.suppress(ApiError):
                await self.client.delete(
                    path("v1", "pods", meta["namespace"], meta["name"]),
                    {"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}},
                )

        async def lease() -> None:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.node, "namespace": "kube-node-lease"},
                "spec": {
                    "holderIdentity": self.node,
                    "leaseDurationSeconds": 40,
                    "renewTime": micro(),
                },
            }
            with contextlib.suppress(ApiError):
                await self.client.create(
                    path("coordination.k8s.io/v1", "leases", "kube-node-lease"), body
                )
            while True:
                with contextlib.suppress(ApiError):
                    await self.client.patch(
                        path("coordination.k8s.io/v1", "leases", "kube-node-lease", self.node),
                        {"spec": {"renewTime": micro()}},
                    )
                await asyncio.sleep(10)

        workers = [asyncio.create_task(patcher()) for _ in range(64)]
        workers.append(asyncio.create_task(lease()))
        try:
            listing = await self.client.get(url, selector)
            rv = listing["metadata"]["resourceVersion"]
            for pod in listing["items"]:
                pending.put_nowait(pod)
            while True:
                async for event in self.client.watch(
                    url, {**selector, "resourceVersion": rv, "timeoutSeconds": 300}
                ):
                    obj = event["object"]
                    rv = obj["metadata"].get("resourceVersion", rv)
                    if event["type"] == "ADDED" and not obj["metadata"].get("deletionTimestamp"):
                        pending.put_nowait(obj)
                    elif event["type"] == "MODIFIED" and obj["metadata"].get("deletionTimestamp"):
                        task = asyncio.create_task(delete(obj))
                        deletions.add(task)
                        task.add_done_callback(deletions.discard)
        finally:
            for worker in workers:
                worker.cancel()


def _kwok_module_dir() -> Path:
    """KWOK's module source (its stage files), downloaded by the build into the module cache."""
    cache = subprocess.run(["go", "env", "GOMODCACHE"], capture_output=True, text=True, check=True)
    return Path(cache.stdout.strip()) / f"sigs.k8s.io/kwok@{KWOK.version}"


def make(name: str, cluster: DevCluster, workdir: Path, node: str) -> Contender:
    kinds: dict[str, type[Contender]] = {
        "agent": Agent,
        "upstream": Upstream,
        "kwok": Kwok,
        "ceiling": Ceiling,
    }
    return kinds[name](cluster, workdir, node)
