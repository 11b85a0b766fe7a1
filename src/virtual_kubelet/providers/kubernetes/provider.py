"""The `kubernetes` provider: pods bound to this virtual node run in another cluster.

Create rewrites the pod for its target namespace (rewrite.py) after reflecting the ConfigMaps and
Secrets it uses (reflection.py); status comes back through one shared watch of our remote pods
(remote_pods.py); deletion, adoption after a restart and the node's health and capacity all go
through the owner label, so nothing this node did not create is ever touched. `/stats/summary`
comes from the target's metrics (stats.py).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ...sdk import (
    ContainerIO,
    DuplexStream,
    InvalidInput,
    LogOptions,
    Node,
    NodeCallback,
    NotFound,
    Pod,
    PodCallback,
    Provider,
    ProviderConfigError,
    ProviderContext,
    ProviderError,
    deep_copy,
    key_of,
    uid_of,
)
from ...sdk.kube_api import (
    ApiError,
    ClientConfig,
    ConfigError,
    KubeClient,
    from_kubeconfig,
    load_client_config,
    path,
)
from .capacity import quota_capacity, target_capacity
from .cci import CciAuthError, CciClient, IamTokens, cci_client_config, round_resources
from .cci import ensure_namespace as cci_namespace
from .config import KubernetesConfig, SecretRef, load_config
from .naming import OWNER_LABEL, SOURCE_UID, NamespaceMapper, owner_value
from .reflection import ObjectReflection
from .remote_events import RemoteEvents
from .remote_exec import RemoteExec
from .remote_pods import RemotePods
from .rewrite import references, target_pod
from .service_account import SourceTokens
from .services import ServiceReflection
from .stats import RemoteStats
from .streams import TargetStreams

__all__ = ["KubernetesProvider"]

log = logging.getLogger(__name__)

#: How long list_pods waits for the first listing of the target's pods.
_SYNC_TIMEOUT = 30.0
#: Seconds of a deletion's grace period kept for the round trip back to the source.
_GRACE_HEADROOM_SECONDS = 2
#: Statuses from the target that no retry can fix (the pod as rewritten is refused).
_PERMANENT = {400, 403, 422}


def _parse_kubeconfig(data: bytes, context: str | None) -> ClientConfig:
    """A kubeconfig given as bytes: the parser reads files, so a private, memory-backed one,
    removed at once."""
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    with tempfile.TemporaryDirectory(prefix="vk-target-", dir=base) as tmp:
        os.chmod(tmp, 0o700)
        kubeconfig = Path(tmp) / "kubeconfig"
        kubeconfig.touch(mode=0o600)
        kubeconfig.write_bytes(data)
        try:
            return from_kubeconfig(kubeconfig, context)
        except ConfigError as exc:
            message = str(exc)
            if "not valid YAML" in message:
                # The YAML error quotes the offending line, which may hold a credential.
                raise ConfigError("it is not valid YAML") from None
            raise ConfigError(
                message.replace(f"kubeconfig {kubeconfig}", "it").replace(str(kubeconfig), "it")
            ) from None


def _host_port(url: str) -> tuple[str, int]:
    parsed = urlsplit(url)
    default = 443 if parsed.scheme == "https" else 80
    return parsed.hostname or "", parsed.port or default


class KubernetesProvider(Provider):
    """Runs pods in a target Kubernetes cluster (multi-cluster offloading)."""

    description = "Pods run in another Kubernetes cluster (offloading, bursting)."

    def __init__(self, context: ProviderContext, config: KubernetesConfig | None = None) -> None:
        super().__init__(context)
        self.config = config or load_config(context.config_path)
        self._iam: IamTokens | None = None
        try:
            if self.config.cci is not None and self.config.mode == "huawei-cci":
                self._iam = IamTokens(self.config.cci)
                self._target_config = cci_client_config(self.config.cci)
            elif self.config.target.kubeconfig is not None:
                self._target_config = from_kubeconfig(
                    self.config.target.kubeconfig, self.config.target.context
                )
            else:  # target.kubeconfig_secret: read from the source cluster in start()
                self._target_config = ClientConfig(
                    server="https://target.invalid", source="target kubeconfig Secret"
                )
            source = self.config.source
            self._source_config = load_client_config(
                str(source.kubeconfig) if source.kubeconfig else None, source.context
            )
        except ConfigError as exc:
            raise ProviderConfigError(f"kubernetes provider: {exc}") from None
        except OSError as exc:
            raise ProviderConfigError(
                f"kubernetes provider: cannot read {exc.filename}: {exc.strerror}"
            ) from None
        self.owner = owner_value(self.config.cluster_id, context.node_name)
        self.namespaces = NamespaceMapper(self.config.namespaces, self.config.cluster_id)
        self._target: KubeClient | None = None
        self._source: KubeClient | None = None
        self._remote: RemotePods | None = None
        self._reflection: ObjectReflection | None = None
        self._streams: TargetStreams | None = None
        self._node_callback: NodeCallback | None = None
        self._capacity: dict[str, str] | None = None
        self._capacity_task: asyncio.Task[None] | None = None
        self._adopted = False
        self._node: Node | None = None
        self._services: ServiceReflection | None = None
        self._pushed_capacity: dict[str, str] | None = None
        self._tokens: SourceTokens | None = None
        self._stats: RemoteStats | None = None
        self._background: list[asyncio.Task[None]] = []
        self._home_api = _host_port(
            self.config.pods.source_api_server or self._source_config.server
        )

    # --- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        self._source = KubeClient(self._source_config, name="source", request_timeout=30)
        if self._iam is not None:
            assert self.config.cci is not None
            iam, cci = self._iam, self.config.cci
            try:
                await iam.token()  # wrong credentials stop the start, naming the file
            except CciAuthError as exc:
                raise ProviderConfigError(str(exc)) from None
            target: KubeClient = CciClient(
                self._target_config, iam, name="target", request_timeout=30
            )

            async def auth() -> dict[str, str]:
                return {"X-Auth-Token": await iam.token()}

            async def create_namespace(namespace: str) -> None:
                await cci_namespace(target, cci, namespace)

            self._streams = TargetStreams(self._target_config, auth)
            self._reflection = ObjectReflection(
                self._source, target, self.owner, self.config.cluster_id, create_namespace
            )
        else:
            if self.config.target.kubeconfig_secret is not None:
                self._target_config = await self._kubeconfig_from_secret(
                    self.config.target.kubeconfig_secret
                )
            target = KubeClient(self._target_config, name="target", request_timeout=30)
            self._streams = TargetStreams(self._target_config)
            self._reflection = ObjectReflection(
                self._source, target, self.owner, self.config.cluster_id
            )
        self._target = target
        if self.config.reflect_services:
            self._services = ServiceReflection(
                self._source, target, self.owner, self.config.cluster_id, self.context.node_name
            )
        if self.config.pods.service_account == "source":
            self._tokens = SourceTokens(
                self._source,
                self._target,
                self.owner,
                self.config.cluster_id,
                self.config.pods.token_expiration_seconds,
            )
            self._background.append(asyncio.get_running_loop().create_task(self._tokens.run()))
        self._remote = RemotePods(
            self._target, self.owner, self.context.internal_ip, self._remote_pod_gone
        )
        self._remote.start()
        self._stats = RemoteStats(
            self._target, self.owner, self.context.node_name, self._remote.all, self._remote.view_of
        )
        if self._iam is None:  # CCI: a cluster-wide event watch is not offered
            events = RemoteEvents(
                self._source, self._target, self.config.cluster_id, self._remote.by_remote_uid
            )
            self._background.append(asyncio.get_running_loop().create_task(events.run()))
        # The node registers with the target's capacity if it answers soon, else with 0 until then.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await self._read_capacity()
        self._capacity_task = asyncio.get_running_loop().create_task(self._refresh_capacity())
        log.info(
            "kubernetes provider: target %s, owner label %s=%s",
            self._target_config.source,
            OWNER_LABEL,
            self.owner,
        )

    async def _kubeconfig_from_secret(self, ref: SecretRef) -> ClientConfig:
        """The target's connection from a kubeconfig held in a source Secret (read once)."""
        assert self._source is not None
        where = f"Secret {ref.namespace}/{ref.name} key {ref.key!r} in the source cluster"
        try:
            secret = await self._source.get(path("v1", "secrets", ref.namespace, ref.name))
        except ApiError as exc:
            raise ProviderConfigError(
                f"target kubeconfig: cannot read {where}: {exc.reason or exc}"
            ) from None
        encoded = (secret.get("data") or {}).get(ref.key)
        if not encoded:
            raise ProviderConfigError(f"target kubeconfig: {where} is missing or empty")
        try:
            config = await asyncio.to_thread(
                _parse_kubeconfig, base64.b64decode(encoded), self.config.target.context
            )
        except ConfigError as exc:
            raise ProviderConfigError(f"target kubeconfig in {where}: {exc}") from None
        return replace(
            config, source=f"{where} (context {self.config.target.context or 'current'})"
        )

    def _remote_pod_gone(self, key: str) -> None:
        self.reflection.release(key)
        if self._tokens is not None:
            self._tokens.forget(key)

    async def stop(self) -> None:
        if self._capacity_task is not None:
            self._background.append(self._capacity_task)
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        for part in (
            self._remote,
            self._reflection,
            self._services,
            self._streams,
            self._target,
            self._source,
        ):
            if part is not None:
                await part.close()

    @property
    def remote(self) -> RemotePods:
        assert self._remote is not None, "start() first"
        return self._remote

    @property
    def target(self) -> KubeClient:
        assert self._target is not None, "start() first"
        return self._target

    @property
    def reflection(self) -> ObjectReflection:
        assert self._reflection is not None, "start() first"
        return self._reflection

    def notify_pods(self, callback: PodCallback) -> None:
        self.remote.notify(callback)

    def wants_volume_files(self) -> bool:
        return False  # ConfigMaps and Secrets are reflected into the target, not written here

    # --- pods -------------------------------------------------------------------------------------

    async def create_pod(self, pod: Pod) -> None:
        key = key_of(pod)
        namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        target_ns = self.namespaces.target(namespace)
        existing = self.remote.get(key)
        if existing is not None and existing["metadata"]["labels"].get(SOURCE_UID) == uid_of(pod):
            return  # already there (adopted, or a retried create that had succeeded)
        assert self._source is not None
        try:
            original = await self._source.get(path("v1", "pods", namespace, name))
        except ApiError as exc:
            if exc.not_found:
                raise NotFound(f"pod {key} is gone from the source cluster") from None
            raise
        if uid_of(original) != uid_of(pod):
            raise NotFound(f"pod {key} was replaced in the source cluster")
        body = target_pod(
            original,
            pod,
            namespace=target_ns,
            owner=self.owner,
            cluster_id=self.config.cluster_id,
            rewrite=self.config.pods,
            home_api=self._home_api,
        )
        if self._iam is not None:
            round_resources(body)
        # What the rewritten pod references (the source's token volume, and with it the source's
        # kube-root-ca.crt, is gone by now).
        await self.reflection.ensure(key, namespace, target_ns, references(body))
        if self._services is not None:
            self._services.follow(namespace, target_ns)
        if self._tokens is not None:
            await self._tokens.ensure(key, original, target_ns)
        try:
            try:
                await self.target.create(path("v1", "pods", target_ns), body)
            except ApiError as exc:
                if exc.conflict:
                    await self._name_taken(key, pod, target_ns)
                    return
                if exc.status in _PERMANENT and "service account" not in exc.message:
                    raise InvalidInput(
                        f"the target cluster refused pod {key}: {exc.message}"
                    ) from None
                raise
        except InvalidInput:
            # The pod will never exist in the target: what was copied for it alone goes.
            if self.remote.get(key) is None:
                self._remote_pod_gone(key)
            raise
        log.info("pod %s created in the target as %s/%s", key, target_ns, name)

    async def _name_taken(self, key: str, pod: Pod, target_ns: str) -> None:
        name = pod["metadata"]["name"]
        remote = await self.target.get(path("v1", "pods", target_ns, name))
        labels = remote["metadata"].get("labels") or {}
        if labels.get(OWNER_LABEL) != self.owner:
            raise InvalidInput(
                f"a pod {target_ns}/{name} that this node did not create exists in the target "
                "cluster; it is left untouched"
            )
        if labels.get(SOURCE_UID) == uid_of(pod):
            return  # ours, from an earlier attempt: adopt it
        # An earlier pod of the same name (an older UID) is still there: remove it, retry later.
        await self._delete_remote(target_ns, name, remote["metadata"]["uid"], grace=None)
        raise ProviderError(f"the previous pod {key} is still terminating in the target cluster")

    async def update_pod(self, pod: Pod) -> None:
        remote = self.remote.get(key_of(pod))
        if remote is None:
            raise NotFound(key_of(pod))
        meta = pod["metadata"]
        patch: dict[str, Any] = {
            "metadata": {
                "labels": {**(meta.get("labels") or {})},
                "annotations": {**(meta.get("annotations") or {})},
            }
        }
        patch["spec"] = {
            "containers": [
                {"name": c["name"], "image": c["image"]} for c in pod["spec"]["containers"]
            ]
        }
        await self.target.patch(
            path("v1", "pods", remote["metadata"]["namespace"], remote["metadata"]["name"]),
            patch,
            "strategic",
        )

    async def delete_pod(self, pod: Pod) -> None:
        key = key_of(pod)
        remote = self.remote.get(key)
        if remote is None or (remote["metadata"].get("labels") or {}).get(SOURCE_UID) != uid_of(
            pod
        ):
            raise NotFound(key)
        grace = pod["metadata"].get("deletionGracePeriodSeconds")
        if grace is not None:
            # The source pod must be gone within its grace period, and the news travels through
            # two API servers and two watches: give the remote pod a little less.
            grace = max(1, int(grace) - _GRACE_HEADROOM_SECONDS) if grace > 0 else 0
        self.remote.deleting.add(key)
        meta = remote["metadata"]
        log.info("deleting pod %s in the target (grace period %s s)", key, grace)
        await self._delete_remote(meta["namespace"], meta["name"], meta["uid"], grace)

    async def _delete_remote(self, namespace: str, name: str, uid: str, grace: int | None) -> None:
        body: dict[str, Any] = {"preconditions": {"uid": uid}}
        if grace is not None:
            body["gracePeriodSeconds"] = grace
        try:
            await self.target.delete(path("v1", "pods", namespace, name), body)
        except ApiError as exc:
            if exc.not_found or exc.conflict:
                raise NotFound(f"{namespace}/{name} is gone from the target cluster") from None
            raise

    async def get_pod(self, namespace: str, name: str) -> Pod | None:
        return self.remote.view(f"{namespace}/{name}")

    async def list_pods(self) -> list[Pod]:
        try:
            async with asyncio.timeout(_SYNC_TIMEOUT):
                await self.remote.synced.wait()
        except TimeoutError:
            raise ProviderError(
                f"the target cluster's pods could not be listed within {_SYNC_TIMEOUT:.0f} s"
            ) from None
        if not self._adopted:
            self._adopted = True
            for remote in self.remote.all():
                view = self.remote.view_of(remote)
                self.reflection.adopt(
                    key_of(view),
                    view["metadata"]["namespace"],
                    remote["metadata"]["namespace"],
                    references(remote),
                )
                if self._services is not None:
                    self._services.follow(
                        view["metadata"]["namespace"], remote["metadata"]["namespace"]
                    )
                if self._tokens is not None:
                    # Renewed at once: the last run's token may be near its end.
                    self._tokens.adopt(key_of(view), remote)
            with contextlib.suppress(ApiError):
                await self.reflection.collect_garbage()
        return [self.remote.view_of(remote) for remote in self.remote.all()]

    # --- the node ---------------------------------------------------------------------------------

    async def configure_node(self, node: Node) -> None:
        self._node = node
        capacity = self._pushed_capacity = self._capacity_now()
        node["status"]["capacity"] = dict(capacity)
        node["status"]["allocatable"] = dict(capacity)
        node["status"]["nodeInfo"]["containerRuntimeVersion"] = "kubernetes://offload"
        node["metadata"].setdefault("labels", {})["offload.virtual-kubelet.io/cluster-id"] = (
            self.config.cluster_id
        )

    def notify_node_status(self, callback: NodeCallback) -> None:
        self._node_callback = callback

    def _capacity_now(self) -> dict[str, str]:
        fixed = self.config.capacity
        if fixed is not None:
            return {"cpu": fixed.cpu, "memory": fixed.memory, "pods": str(fixed.pods)}
        return self._capacity or {"cpu": "0", "memory": "0", "pods": "0"}

    async def _refresh_capacity(self) -> None:
        while True:
            await self._read_capacity()
            # Pushed whenever it differs from what the node last got: the first reading may come
            # before the agent registered its callback.
            capacity = self._capacity_now()
            if (
                self._node_callback is not None
                and self._node is not None
                and capacity != self._pushed_capacity
            ):
                node = deep_copy(self._node)
                await self.configure_node(node)
                self._node_callback(node)
                self._pushed_capacity = capacity
            await asyncio.sleep(self.config.capacity_refresh_seconds)

    async def _read_capacity(self) -> None:
        if self.config.capacity is not None:
            return
        quota = self.config.capacity_quota
        try:
            if quota is not None:
                self._capacity = await quota_capacity(
                    self.target, self.owner, quota.namespace, quota.name
                )
            else:
                self._capacity = await target_capacity(
                    self.target, self.owner, exclude_node=self.context.node_name
                )
        except ApiError as exc:
            log.warning("cannot read the target cluster's capacity: %s", exc)

    async def ping(self) -> None:
        try:
            await self.target.request("GET", "/version", timeout=4)
        except ApiError as exc:
            raise ProviderError(
                f"target cluster {self._target_config.server} unreachable: {exc}"
            ) from None

    # --- the kubelet API --------------------------------------------------------------------------

    def _remote_name(self, namespace: str, pod: str) -> tuple[str, str]:
        remote = self.remote.get(f"{namespace}/{pod}")
        if remote is None:
            raise NotFound(f"pod {namespace}/{pod} does not run in the target cluster")
        return remote["metadata"]["namespace"], remote["metadata"]["name"]

    async def get_container_logs(
        self, namespace: str, pod: str, container: str, options: LogOptions
    ) -> AsyncIterator[bytes]:
        target_ns, name = self._remote_name(namespace, pod)
        assert self._streams is not None
        async for chunk in self._streams.logs(target_ns, name, container, options):
            yield chunk

    async def run_in_container(
        self, namespace: str, pod: str, container: str, command: list[str], io: ContainerIO
    ) -> int:
        target_ns, name = self._remote_name(namespace, pod)
        code = await self._exec().run(target_ns, name, container, command, io)
        return 0 if code is None else code

    async def attach_to_container(
        self, namespace: str, pod: str, container: str, io: ContainerIO
    ) -> int | None:
        target_ns, name = self._remote_name(namespace, pod)
        return await self._exec().run(target_ns, name, container, None, io)

    async def port_forward(self, namespace: str, pod: str, port: int, stream: DuplexStream) -> None:
        target_ns, name = self._remote_name(namespace, pod)
        await self._exec().port_forward(target_ns, name, port, stream)

    async def get_stats_summary(self) -> dict[str, Any]:
        """Our remote pods' usage as the target measures it, under their source names
        (stats.py)."""
        assert self._stats is not None, "start() first"
        return await self._stats.summary()

    def _exec(self) -> RemoteExec:
        assert self._streams is not None, "start() first"
        return RemoteExec(self._streams)
