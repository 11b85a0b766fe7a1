"""What `PodVolumes` is given and gives back: the sources of volume content (`VolumeSources`: the
ConfigMap/Secret caches and TokenRequest), service-account tokens, and the errors and Events a
caller reports on the pod.

Messages built here and by the rest of the package are shown to users: they never contain secret or
token values.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["ServiceAccountToken", "VolumeError", "VolumeEvent", "VolumeSources"]


@dataclass(frozen=True)
class VolumeEvent:
    """A Kubernetes Event for the caller to emit on the pod."""

    type: str
    reason: str
    message: str


class VolumeError(Exception):
    """A volume cannot be set up (e.g. a mandatory source is missing): the pod must not start yet;
    the caller retries. The message is safe to show: it never contains secret data."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class ServiceAccountToken:
    token: str
    #: Aware, UTC.
    expires_at: datetime.datetime

    def __repr__(self) -> str:
        return f"ServiceAccountToken(token=<redacted>, expires_at={self.expires_at!r})"


class VolumeSources(Protocol):
    """Where the objects behind a pod's volumes come from (informer caches, TokenRequest)."""

    def config_map(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    def secret(self, namespace: str, name: str) -> dict[str, Any] | None: ...

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
        """A token from the TokenRequest API, bound to the pod. May raise any Exception."""
        ...
