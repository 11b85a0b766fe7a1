"""Who is calling the kubelet port, and may they: x509 client certificates, bearer tokens checked
with TokenReview, and SubjectAccessReview on `nodes/<subresource>` (the kubelet's webhook mode).

Decisions are cached like the kubelet's (tokens 2 min; allowed 5 min, denied 30 s). Tokens are never
logged or echoed back; a failing review is a 500, not an allow.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from ..kube.client import KubeClient, path
from ..kube.errors import ApiError

log = logging.getLogger(__name__)

ANONYMOUS = "system:anonymous"

_VERBS = {
    "GET": "get",
    "HEAD": "get",
    "POST": "create",
    "PUT": "update",
    "PATCH": "patch",
    "DELETE": "delete",
}


@dataclass(frozen=True)
class User:
    name: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: dict[str, list[str]] = field(default_factory=dict, hash=False, compare=False)


class AuthError(Exception):
    """Authentication or authorisation could not be decided (the review call failed)."""


def subresource_for(path_: str) -> str:
    """The `nodes/<subresource>` a kubelet API path is authorised against (kubelet's auth.go)."""
    first = path_.lstrip("/").split("/", 1)[0]
    if first == "stats":
        return "stats"
    if first == "metrics":
        return "metrics"
    if first == "logs":
        return "log"
    if first in ("pods", "runningpods"):
        return "pods"
    if first == "healthz":
        return "healthz"
    return "proxy"


def verb_for(method: str) -> str:
    return _VERBS.get(method.upper(), method.lower())


def user_from_certificate(peer: dict[str, Any] | None) -> User | None:
    """CN -> user, O -> groups, from `SSLSocket.getpeercert()` (already verified by TLS)."""
    if not peer:
        return None
    name = ""
    groups: list[str] = []
    for rdn in peer.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                name = value
            elif key == "organizationName":
                groups.append(value)
    return User(name, (*groups, "system:authenticated")) if name else None


class _TtlCache:
    def __init__(self) -> None:
        self._entries: dict[Any, tuple[float, Any]] = {}

    def get(self, key: Any) -> Any:
        entry = self._entries.get(key)
        if entry is None or entry[0] < time.monotonic():
            self._entries.pop(key, None)
            return None
        return entry[1]

    def put(self, key: Any, value: Any, ttl: float) -> None:
        if len(self._entries) > 10_000:
            self._entries.clear()  # bounded: a flood of distinct tokens cannot grow memory
        self._entries[key] = (time.monotonic() + ttl, value)


class Authenticator:
    def __init__(
        self, client: KubeClient | None, *, anonymous: bool = False, token_ttl: float = 120.0
    ) -> None:
        self.client = client
        self.anonymous = anonymous
        self.token_ttl = token_ttl
        self._tokens = _TtlCache()

    async def authenticate(
        self, peer_cert: dict[str, Any] | None, authorization: str | None
    ) -> User | None:
        """The caller, or None (-> 401). Raises AuthError if TokenReview itself fails."""
        user = user_from_certificate(peer_cert)
        if user is not None:
            return user
        if authorization and authorization[:7].lower() == "bearer ":
            return await self._token(authorization[7:].strip())
        if self.anonymous:
            return User(ANONYMOUS, ("system:unauthenticated",))
        return None

    async def _token(self, token: str) -> User | None:
        if not token or self.client is None:
            return None
        key = hashlib.sha256(token.encode()).digest()  # never keep tokens themselves
        cached = self._tokens.get(key)
        if cached is not None:
            return cached or None
        review = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token},
        }
        try:
            result = await self.client.create(
                path("authentication.k8s.io/v1", "tokenreviews"), review
            )
        except ApiError as exc:
            raise AuthError(f"TokenReview failed: {exc.status} {exc.reason}") from None
        status = result.get("status", {})
        user: User | None = None
        if status.get("authenticated"):
            info = status.get("user", {})
            user = User(
                info.get("username", ""),
                tuple(info.get("groups") or ()),
                info.get("uid", ""),
                dict(info.get("extra") or {}),
            )
        self._tokens.put(key, user or False, self.token_ttl)
        return user


class Authorizer:
    def __init__(
        self,
        client: KubeClient | None,
        node_name: str,
        *,
        always_allow: bool = False,
        allowed_ttl: float = 300.0,
        denied_ttl: float = 30.0,
    ) -> None:
        self.client = client
        self.node_name = node_name
        self.always_allow = always_allow
        self.allowed_ttl = allowed_ttl
        self.denied_ttl = denied_ttl
        self._cache = _TtlCache()

    async def authorize(self, user: User, method: str, path_: str) -> tuple[bool, str]:
        """(allowed, the attributes checked, for the 403 message)."""
        verb, subresource = verb_for(method), subresource_for(path_)
        attributes = f"user={user.name}, verb={verb}, resource=nodes, subresource={subresource}"
        if self.always_allow:
            return True, attributes
        allowed = await self._review(user, verb, subresource)
        if not allowed and subresource in ("pods", "healthz"):
            # Fine-grained kubelet authorisation falls back to nodes/proxy for these.
            allowed = await self._review(user, verb, "proxy")
        return allowed, attributes

    async def _review(self, user: User, verb: str, subresource: str) -> bool:
        key = (user.name, user.groups, user.uid, verb, subresource)
        cached = self._cache.get(key)
        if cached is not None:
            return bool(cached)
        if self.client is None:
            return False
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": user.name,
                "groups": list(user.groups),
                "uid": user.uid,
                "extra": user.extra,
                "resourceAttributes": {
                    "verb": verb,
                    "version": "v1",
                    "resource": "nodes",
                    "subresource": subresource,
                    "name": self.node_name,
                },
            },
        }
        try:
            result = await self.client.create(
                path("authorization.k8s.io/v1", "subjectaccessreviews"), review
            )
        except ApiError as exc:
            raise AuthError(f"SubjectAccessReview failed: {exc.status} {exc.reason}") from None
        allowed = bool(result.get("status", {}).get("allowed"))
        self._cache.put(key, allowed, self.allowed_ttl if allowed else self.denied_ttl)
        return allowed
