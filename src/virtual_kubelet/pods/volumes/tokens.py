"""Service-account tokens for projected volumes: fetched through `VolumeSources` (TokenRequest),
cached per pod and volume path, and refreshed on the kubelet's schedule (at 80 % of their lifetime,
at most a day old); a failed refresh keeps serving the still-valid token and retries soon.

A token never appears in a message, Event, log line or exception (`_redact`).
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .payloads import namespace_of, pod_uid
from .sources import VolumeError, VolumeEvent, VolumeSources

__all__ = ["TokenCache"]

log = logging.getLogger(__name__)

TOKEN_DEFAULT_EXPIRATION = 3600
TOKEN_MIN_EXPIRATION = 600
#: The kubelet refreshes a token once it is this old, whatever its expiry.
TOKEN_MAX_AGE = 24 * 3600.0
#: ... or once this fraction of its lifetime has passed.
TOKEN_REFRESH_FRACTION = 0.8
#: After a failed refresh of a still-valid token, when to try again.
TOKEN_RETRY_SECONDS = 30.0


@dataclass
class _CachedToken:
    params: tuple[str, str | None, int]
    token: str
    expires_at: float
    refresh_at: float


class TokenCache:
    """The tokens of every pod's projected volumes. Not safe to use concurrently for one pod."""

    def __init__(self, sources: VolumeSources, clock: Callable[[], float]) -> None:
        self.sources = sources
        self._clock = clock
        #: pod uid -> (volume, path) -> token
        self._pods: dict[str, dict[tuple[str, str], _CachedToken]] = {}

    def forget(self, uid: str) -> None:
        """Drop the pod's tokens (its volumes were removed)."""
        self._pods.pop(uid, None)

    async def token(
        self,
        pod: Mapping[str, Any],
        volume: str,
        source: Mapping[str, Any],
        events: list[VolumeEvent],
        refresh: list[float],
    ) -> tuple[str, str]:
        """(path, token) for one `serviceAccountToken` projection. Appends when the token must be
        refreshed to `refresh`, and a warning to `events` when a refresh failed."""
        path = source.get("path") or ""
        audience = source.get("audience") or None
        expiration = max(
            int(source.get("expirationSeconds") or TOKEN_DEFAULT_EXPIRATION), TOKEN_MIN_EXPIRATION
        )
        spec = pod.get("spec") or {}
        account = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
        params = (account, audience, expiration)
        key = (volume, path)
        uid = pod_uid(pod)
        tokens = self._pods.setdefault(uid, {})
        cached = tokens.get(key)
        if cached is not None and cached.params != params:
            cached = None
        now = self._clock()
        if cached is not None and now < cached.refresh_at:
            refresh.append(cached.refresh_at)
            return path, cached.token
        try:
            fresh = await self.sources.service_account_token(
                namespace_of(pod),
                account,
                audience=audience,
                expiration_seconds=expiration,
                pod_name=(pod.get("metadata") or {}).get("name") or "",
                pod_uid=uid,
            )
        except Exception as exc:
            reason = _redact(str(exc) or type(exc).__name__, cached)
            if cached is not None and now < cached.expires_at:
                # Like the kubelet: keep serving a still-valid token and try again soon.
                cached.refresh_at = min(now + TOKEN_RETRY_SECONDS, cached.expires_at)
                refresh.append(cached.refresh_at)
                log.warning("pod %s: could not refresh token for volume %s", uid, volume)
                events.append(
                    VolumeEvent(
                        "Warning",
                        "FailedMount",
                        f'volume "{volume}": could not refresh the service account token '
                        f"(the current one stays until it expires): {reason}",
                    )
                )
                return path, cached.token
            raise VolumeError("FailedMount", f"failed to fetch token: {reason}") from exc
        expires_at = _timestamp(fresh.expires_at)
        lifetime = max(expires_at - now, 0.0)
        refresh_at = now + min(lifetime * TOKEN_REFRESH_FRACTION, TOKEN_MAX_AGE)
        tokens[key] = _CachedToken(params, fresh.token, expires_at, refresh_at)
        refresh.append(refresh_at)
        return path, fresh.token


def _timestamp(moment: datetime.datetime) -> float:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def _redact(text: str, cached: _CachedToken | None) -> str:
    if cached is not None and cached.token:
        text = text.replace(cached.token, "<redacted>")
    return text[:500]
