"""Service-account tokens minted in the source cluster for offloaded pods (`pods.service_account:
source`, as Liqo does): the pod in the target talks to its home API server as its own service
account.

For each pod a TokenRequest bound to the source pod is written, with the source's CA bundle and
namespace, into a Secret in the target (owner-labelled, named after the pod) that replaces the
pod's projected token volume; tokens are minted again when 80 % of their lifetime has passed. The
token never appears in logs or errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from dataclasses import dataclass
from typing import Any

from ...sdk import Pod, parse_time
from ...sdk.kube_api import ApiError, KubeClient, path
from .naming import (
    OWNER_LABEL,
    SOURCE_CLUSTER,
    SOURCE_NAME,
    SOURCE_NAMESPACE,
    SOURCE_SERVICE_ACCOUNT,
    SOURCE_UID,
)

__all__ = ["SourceTokens", "token_secret_name"]

log = logging.getLogger(__name__)

_REFRESH_CHECK_SECONDS = 30.0


def token_secret_name(pod_name: str) -> str:
    """The target Secret holding a pod's source token (pod names leave room: 253 - 12)."""
    return f"{pod_name}-vk-sa-token"[:253]


@dataclass
class _Grant:
    source_ns: str
    service_account: str
    pod_name: str
    pod_uid: str
    target_ns: str
    minted: datetime.datetime
    expires: datetime.datetime


class SourceTokens:
    """Mints and renews source tokens into target Secrets."""

    def __init__(
        self, source: KubeClient, target: KubeClient, owner: str, cluster_id: str, lifetime: int
    ) -> None:
        self._source = source
        self._target = target
        self._owner = owner
        self._cluster_id = cluster_id
        self._lifetime = lifetime
        self._grants: dict[str, _Grant] = {}
        #: Set when adopted grants wait for their renewal.
        self._wake = asyncio.Event()

    async def ensure(self, key: str, original: Pod, target_ns: str) -> None:
        """Mint a token for source pod `original` into its Secret in `target_ns`."""
        meta = original["metadata"]
        grant = _Grant(
            source_ns=meta["namespace"],
            service_account=original["spec"].get("serviceAccountName") or "default",
            pod_name=meta["name"],
            pod_uid=meta["uid"],
            target_ns=target_ns,
            minted=datetime.datetime.now(datetime.UTC),
            expires=datetime.datetime.now(datetime.UTC),
        )
        await self._mint(grant)
        self._grants[key] = grant

    def adopt(self, key: str, remote: Pod) -> None:
        """Take over renewing the token of a remote pod found at start-up (minted again at the
        next check, since the earlier run's token may be near its end)."""
        meta = remote["metadata"]
        annotations = meta.get("annotations") or {}
        account = annotations.get(SOURCE_SERVICE_ACCOUNT)
        if account is None:
            return  # created without a source token
        past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=1)
        self._grants[key] = _Grant(
            source_ns=annotations.get(SOURCE_NAMESPACE, meta["namespace"]),
            service_account=account,
            pod_name=annotations.get(SOURCE_NAME, meta["name"]),
            pod_uid=(meta.get("labels") or {}).get(SOURCE_UID, ""),
            target_ns=meta["namespace"],
            minted=past,
            expires=past,
        )
        self._wake.set()

    def forget(self, key: str) -> None:
        """The pod is gone (its Secret goes with the pod's other reflected objects)."""
        self._grants.pop(key, None)

    async def run(self) -> None:
        """Renew tokens past 80 % of their lifetime, until cancelled."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), _REFRESH_CHECK_SECONDS)
            self._wake.clear()
            now = datetime.datetime.now(datetime.UTC)
            for key, grant in list(self._grants.items()):
                if now >= grant.minted + (grant.expires - grant.minted) * 0.8:
                    try:
                        await self._mint(grant)
                    except ApiError as exc:
                        log.warning("cannot renew the source token of pod %s: %s", key, exc.reason)

    async def _mint(self, grant: _Grant) -> None:
        request = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "expirationSeconds": self._lifetime,
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": grant.pod_name,
                    "uid": grant.pod_uid,
                },
            },
        }
        answer = await self._source.create(
            path("v1", "serviceaccounts", grant.source_ns, grant.service_account, "token"),
            request,
        )
        token = str(answer["status"]["token"])
        grant.minted = datetime.datetime.now(datetime.UTC)
        grant.expires = parse_time(answer["status"]["expirationTimestamp"])
        try:
            root_ca = await self._source.get(
                path("v1", "configmaps", grant.source_ns, "kube-root-ca.crt")
            )
            ca = str((root_ca.get("data") or {}).get("ca.crt", ""))
        except ApiError as exc:
            if not exc.not_found:
                raise
            ca = ""
        name = token_secret_name(grant.pod_name)
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {
                "name": name,
                "namespace": grant.target_ns,
                "labels": {OWNER_LABEL: self._owner},
                "annotations": {
                    SOURCE_CLUSTER: self._cluster_id,
                    SOURCE_NAMESPACE: grant.source_ns,
                    SOURCE_NAME: grant.pod_name,
                },
            },
            "stringData": {"token": token, "ca.crt": ca, "namespace": grant.source_ns},
        }
        target_path = path("v1", "secrets", grant.target_ns)
        try:
            await self._target.create(target_path, body)
        except ApiError as exc:
            if not exc.conflict:
                raise
            existing = await self._target.get(path("v1", "secrets", grant.target_ns, name))
            if (existing["metadata"].get("labels") or {}).get(OWNER_LABEL) != self._owner:
                raise ApiError(
                    409, "AlreadyExists", f"Secret {grant.target_ns}/{name} is not ours"
                ) from None
            body["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
            await self._target.replace(path("v1", "secrets", grant.target_ns, name), body)
