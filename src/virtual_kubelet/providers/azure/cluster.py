"""What the provider reads from and writes to the cluster itself: the Secrets behind a pod's
imagePullSecrets, azureFile storage keys, and pod Events (ACI's container events, ARM
throttling). Which env names came from Secrets is not read here: the agent names them on the pod
it hands over (`secret_env_names`).

Secret values only ever go into the container group request: never into a log, an Event or an
error message."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import logging
from typing import Any

import orjson

from ...sdk import Pod, rfc3339
from ...sdk.kube_api import ApiError, KubeClient, load_client_config, path

__all__ = ["Cluster", "auths_of"]

log = logging.getLogger(__name__)

_COMPONENT = "virtual-kubelet/azure"
_QUEUE_LIMIT = 1000
_COUNTS_LIMIT = 10000


def _normalised(host: str) -> str:
    host = host.removeprefix("https://").removeprefix("http://").split("/", 1)[0]
    return "index.docker.io" if host in ("docker.io", "registry-1.docker.io") else host


def auths_of(secret: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """host -> (username, password) of a docker config Secret (empty for any other Secret)."""
    data = secret.get("data") or {}
    try:
        if ".dockerconfigjson" in data:
            entries = orjson.loads(base64.b64decode(data[".dockerconfigjson"])).get("auths") or {}
        elif ".dockercfg" in data:
            entries = orjson.loads(base64.b64decode(data[".dockercfg"]))
        else:
            return {}
    except (ValueError, binascii.Error, AttributeError):
        return {}
    found = {}
    for host, entry in entries.items() if isinstance(entries, dict) else ():
        if not isinstance(entry, dict):
            continue
        user, password = str(entry.get("username") or ""), str(entry.get("password") or "")
        if not user and entry.get("auth"):
            with contextlib.suppress(ValueError, binascii.Error):
                user, _, password = base64.b64decode(str(entry["auth"])).decode().partition(":")
        found[_normalised(str(host))] = (user, password)
    return found


class Cluster:
    """The agent's cluster, through its kubeconfig (Events are queued: a burst never blocks)."""

    def __init__(self, kubeconfig: str | None) -> None:
        self.kubeconfig = kubeconfig
        self._client: KubeClient | None = None
        self._events: asyncio.Queue[tuple[Pod, str, str, str, str]] = asyncio.Queue(_QUEUE_LIMIT)
        self._counts: dict[str, int] = {}
        self._sender: asyncio.Task[None] | None = None

    def client(self) -> KubeClient | None:
        if self._client is None:
            try:
                self._client = KubeClient(load_client_config(self.kubeconfig), name="azure")
            except Exception as exc:
                log.warning("the cluster cannot be read (no kubeconfig): %s", exc)
                return None
        return self._client

    async def close(self) -> None:
        if self._sender is not None:
            self._sender.cancel()
            await asyncio.gather(self._sender, return_exceptions=True)
        if self._client is not None:
            await self._client.close()

    async def _secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        client = self.client()
        if client is None:
            return None
        try:
            found: dict[str, Any] = await client.get(path("v1", "secrets", namespace, name))
            return found
        except ApiError as exc:
            log.info("secret %s/%s: %s", namespace, name, exc.reason)
            return None

    async def registry_auth(self, pod: Pod) -> dict[str, tuple[str, str]]:
        """Registry host -> credentials from the pod's imagePullSecrets (first Secret wins)."""
        found: dict[str, tuple[str, str]] = {}
        namespace = pod["metadata"]["namespace"]
        for ref in pod["spec"].get("imagePullSecrets") or []:
            if not isinstance(ref, dict) or not ref.get("name"):
                continue
            secret = await self._secret(namespace, str(ref["name"]))
            for host, creds in auths_of(secret or {}).items():
                found.setdefault(host, creds)
        return found

    async def azure_file_keys(self, pod: Pod) -> dict[str, tuple[str, str]]:
        """Volume name -> (account, key) for azureFile volumes (keys `azurestorageaccountname`
        and `azurestorageaccountkey` of the named Secret, as the in-tree plugin reads them)."""
        found = {}
        namespace = pod["metadata"]["namespace"]
        for volume in pod["spec"].get("volumes") or []:
            spec = volume.get("azureFile")
            if not spec:
                continue
            secret = await self._secret(namespace, str(spec.get("secretName")))
            data = (secret or {}).get("data") or {}
            try:
                account = base64.b64decode(data.get("azurestorageaccountname", "")).decode()
                key = base64.b64decode(data.get("azurestorageaccountkey", "")).decode()
            except (ValueError, binascii.Error):
                account = key = ""
            found[str(volume["name"])] = (account, key)
        return found

    # --- Events -----------------------------------------------------------------------------

    def event(self, pod: Pod, kind: str, reason: str, message: str, key: str = "") -> None:
        """Queue an Event on `pod`; the same `key` (default: reason and message) raises the count
        of one Event instead of writing another."""
        if self._sender is None:
            self._sender = asyncio.create_task(self._send_all(), name="azure-events")
        try:
            self._events.put_nowait((pod, kind, reason, message, key or f"{reason}/{message}"))
        except asyncio.QueueFull:
            log.debug("event for %s dropped: too many pending", pod["metadata"]["name"])

    async def _send_all(self) -> None:
        while True:
            pod, kind, reason, message, key = await self._events.get()
            try:
                await self._send(pod, kind, reason, message, key)
            except ApiError as exc:
                log.debug("event not written: %s", exc)

    async def _send(self, pod: Pod, kind: str, reason: str, message: str, key: str) -> None:
        client = self.client()
        if client is None:
            return
        meta = pod["metadata"]
        digest = hashlib.sha256(f"{meta.get('uid')}/{key}".encode()).hexdigest()[:16]
        name = f"{meta['name']}.aci-{digest}"
        namespace = meta["namespace"]
        now = rfc3339()
        if len(self._counts) > _COUNTS_LIMIT:
            self._counts.clear()  # old pods' counts; a repeat then writes a fresh Event
        count = self._counts.get(name, 0) + 1
        self._counts[name] = count
        if count > 1:
            with contextlib.suppress(ApiError):
                await client.patch(
                    path("v1", "events", namespace, name),
                    {"count": count, "lastTimestamp": now, "message": message},
                )
                return
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": meta["name"],
                "namespace": namespace,
                "uid": meta.get("uid"),
            },
            "reason": reason,
            "message": message[:1024],
            "type": kind,
            "source": {"component": _COMPONENT},
            "reportingComponent": _COMPONENT,
            "reportingInstance": "",
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": count,
        }
        try:
            await client.create(path("v1", "events", namespace), body)
        except ApiError as exc:
            if not exc.conflict:
                raise
