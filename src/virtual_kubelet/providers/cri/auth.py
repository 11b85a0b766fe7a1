"""Registry credentials for PullImage, as a kubelet finds them: the pod's imagePullSecrets
(`kubernetes.io/dockerconfigjson` or `kubernetes.io/dockercfg` Secrets, read from the API with
the provider's kubeconfig), then the provider config's `registry_auth`, by registry host.
Credentials are only ever handed to the runtime: never logged, never put in a message."""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
from typing import Any

import orjson

from ...sdk import Pod
from ...sdk.kube_api import ApiError, KubeClient, load_client_config, path
from .client import cri
from .config import CriConfig

log = logging.getLogger(__name__)

DOCKER_HUB = "docker.io"


def registry_of(image: str) -> str:
    """The registry host of an image reference, as docker resolves it."""
    first, _, rest = image.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return first
    return DOCKER_HUB


def _normalised(host: str) -> str:
    host = host.removeprefix("https://").removeprefix("http://").split("/", 1)[0]
    return DOCKER_HUB if host in ("index.docker.io", "registry-1.docker.io") else host


def auths_of(secret: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """host -> entry of a docker config Secret (empty for any other Secret, or a bad one)."""
    data = secret.get("data") or {}
    try:
        if ".dockerconfigjson" in data:
            doc = orjson.loads(base64.b64decode(data[".dockerconfigjson"]))
            entries = doc.get("auths") or {}
        elif ".dockercfg" in data:
            entries = orjson.loads(base64.b64decode(data[".dockercfg"]))
        else:
            return {}
    except (ValueError, binascii.Error, orjson.JSONDecodeError):
        return {}
    if not isinstance(entries, dict):
        return {}
    return {_normalised(str(h)): e for h, e in entries.items() if isinstance(e, dict)}


def auth_config(entry: dict[str, Any]) -> Any:
    username, password = str(entry.get("username") or ""), str(entry.get("password") or "")
    if not username and entry.get("auth"):
        with contextlib.suppress(ValueError, binascii.Error):  # a bad entry: anonymous
            username, _, password = base64.b64decode(str(entry["auth"])).decode().partition(":")
    # No server_address: containerd parses it as a URL and refuses a bare `host:port`; the
    # credentials are only given for the one pull from `host` anyway.
    return cri.AuthConfig(username=username, password=password)


class RegistryAuth:
    """Finds the credentials for one pull."""

    def __init__(self, config: CriConfig) -> None:
        self.config = config
        self._client: KubeClient | None = None

    def _kube(self) -> KubeClient | None:
        if self._client is None:
            try:
                self._client = KubeClient(
                    load_client_config(self.config.kubeconfig), name="cri-pull-secrets"
                )
            except Exception as exc:
                log.warning("imagePullSecrets cannot be read (no kubeconfig): %s", exc)
                return None
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()

    async def for_image(self, pod: Pod, image: str) -> Any:
        """The AuthConfig to pull `image` for `pod`, or None (anonymous)."""
        host = registry_of(image)
        secrets = [
            str(ref["name"])
            for ref in (pod.get("spec") or {}).get("imagePullSecrets") or []
            if isinstance(ref, dict) and ref.get("name")
        ]
        client = self._kube() if secrets else None
        namespace = pod["metadata"]["namespace"]
        for name in secrets if client is not None else []:
            assert client is not None
            try:
                secret = await client.get(path("v1", "secrets", namespace, name))
            except ApiError as exc:
                log.info("imagePullSecret %s/%s: %s", namespace, name, exc.reason)
                continue
            entry = auths_of(secret).get(host)
            if entry is not None:
                return auth_config(entry)
        configured = self.config.registry_auth.get(host)
        if configured is not None:
            return cri.AuthConfig(
                username=configured.username, password=configured.password.get_secret_value()
            )
        return None
