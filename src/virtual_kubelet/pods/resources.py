"""ConfigMaps, Secrets and Services that pods on this node can reference, cached per namespace.

Watching them cluster-wide (as upstream does) keeps every Secret of the cluster in this process.
Instead, a namespace's ConfigMaps, Secrets and Services are listed and watched only while at least one
pod of this node lives there, and dropped a while after the last one leaves. The `kubernetes`
Service of `default` (for service-link variables) is always watched. Lookups are synchronous reads
of the caches; `ensure(namespace)` waits until a namespace's caches are filled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from ..kube.client import KubeClient, path
from ..kube.reflector import CallbackHandler, Reflector
from ..kube.timefmt import parse
from .volumes.sources import ServiceAccountToken

log = logging.getLogger(__name__)

KINDS = {"ConfigMap": "configmaps", "Secret": "secrets", "Service": "services"}
_LINGER_S = 60.0

Changed = Callable[[str, str, str], None]  # (kind, namespace, name)


class _Namespace:
    def __init__(self) -> None:
        self.reflectors: dict[str, Reflector] = {}
        self.tasks: list[asyncio.Task[None]] = []
        self.users: set[str] = set()
        self.release: asyncio.TimerHandle | None = None


class ResourceCache:
    def __init__(self, client: KubeClient, on_change: Changed | None = None) -> None:
        self.client = client
        self.on_change = on_change
        self._namespaces: dict[str, _Namespace] = {}
        self._kubernetes_service: Reflector | None = None
        self._master_task: asyncio.Task[None] | None = None

    def _handler(self, kind: str) -> CallbackHandler:
        def changed(obj: dict[str, Any]) -> None:
            if self.on_change is not None:
                meta = obj["metadata"]
                self.on_change(kind, meta.get("namespace", ""), meta["name"])

        return CallbackHandler(
            on_add=changed, on_update=lambda _old, new: changed(new), on_delete=changed
        )

    def _start_master_service(self) -> None:
        if self._kubernetes_service is None:
            self._kubernetes_service = Reflector(
                self.client,
                path("v1", "services", "default"),
                name="service default/kubernetes",
                field_selector="metadata.name=kubernetes",
            )
            self._master_task = asyncio.create_task(self._kubernetes_service.run())

    def use(self, namespace: str, user: str) -> None:
        """Note that `user` (a pod key) needs `namespace`; starts its caches if needed."""
        self._start_master_service()
        ns = self._namespaces.get(namespace)
        if ns is None:
            ns = self._namespaces[namespace] = _Namespace()
            for kind, plural in KINDS.items():
                reflector = Reflector(
                    self.client,
                    path("v1", plural, namespace),
                    name=f"{plural} {namespace}",
                    handler=self._handler(kind),
                )
                ns.reflectors[kind] = reflector
                ns.tasks.append(asyncio.create_task(reflector.run()))
        if ns.release is not None:
            ns.release.cancel()
            ns.release = None
        ns.users.add(user)

    def release(self, namespace: str, user: str) -> None:
        """`user` no longer needs `namespace`; its caches stop a while after the last user."""
        ns = self._namespaces.get(namespace)
        if ns is None:
            return
        ns.users.discard(user)
        if not ns.users and ns.release is None:
            ns.release = asyncio.get_running_loop().call_later(_LINGER_S, self._drop, namespace)

    def _drop(self, namespace: str) -> None:
        ns = self._namespaces.get(namespace)
        if ns is None or ns.users:
            return
        for task in ns.tasks:
            task.cancel()
        del self._namespaces[namespace]

    async def ensure(self, namespace: str, timeout: float = 30.0) -> None:
        """Wait until `namespace`'s caches (and the kubernetes Service) have been listed once."""
        ns = self._namespaces.get(namespace)
        waits = [r.synced.wait() for r in ns.reflectors.values()] if ns else []
        if self._kubernetes_service is not None:
            waits.append(self._kubernetes_service.synced.wait())
        async with asyncio.timeout(timeout):
            await asyncio.gather(*waits)

    async def close(self) -> None:
        tasks = [t for ns in self._namespaces.values() for t in ns.tasks]
        if self._master_task is not None:
            tasks.append(self._master_task)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._namespaces.clear()

    # --- lookups (EnvSources / VolumeSources) ---------------------------------------------------

    def _get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        ns = self._namespaces.get(namespace)
        if ns is None:
            return None
        return ns.reflectors[kind].get(f"{namespace}/{name}")

    def config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get("ConfigMap", namespace, name)

    def secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get("Secret", namespace, name)

    def services(self, namespace: str) -> list[dict[str, Any]]:
        if namespace == "default" and "default" not in self._namespaces:
            return list(self._kubernetes_service.store.values()) if self._kubernetes_service else []
        ns = self._namespaces.get(namespace)
        return list(ns.reflectors["Service"].store.values()) if ns else []

    async def service_account_token(
        self,
        namespace: str,
        service_account: str,
        *,
        audience: str | None,
        expiration_seconds: int,
        pod_name: str,
        pod_uid: str,
    ) -> ServiceAccountToken:
        """A bound service-account token from the TokenRequest API."""
        spec: dict[str, Any] = {
            "expirationSeconds": expiration_seconds,
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": pod_name, "uid": pod_uid},
        }
        if audience:
            spec["audiences"] = [audience]
        result = await self.client.create(
            path("v1", "serviceaccounts", namespace, service_account, "token"),
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec},
        )
        status = result["status"]
        return ServiceAccountToken(
            token=status["token"], expires_at=parse(status["expirationTimestamp"])
        )
