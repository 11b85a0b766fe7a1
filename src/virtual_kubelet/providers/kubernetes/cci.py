"""Mode `huawei-cci`: the same offloading machinery against Huawei Cloud Container Instance, a
Kubernetes-style API, with what CCI requires on top:

- IAM token auth: `POST /v3/auth/tokens` (password method, project scope) answers the token in
  `X-Subject-Token` with its `expires_at`; every CCI call carries it as `X-Auth-Token`. Tokens are
  fetched again once 90 % of their lifetime has passed (24 h at IAM) or when CCI answers 401.
  The credentials come from a file (`{domain, user, password}`) and appear in no log or error;
- a namespace carries the flavor annotation, and gets CCI's network object before any pod;
- every container's CPU and memory are rounded up to the shapes CCI accepts, requests equal to
  limits (`round_resources`).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import ssl
from collections.abc import AsyncIterator
from decimal import ROUND_CEILING, Decimal
from pathlib import Path
from typing import Any

import aiohttp

from ...sdk import (
    Pod,
    ProviderConfigError,
    ProviderError,
    format_quantity,
    parse_quantity,
    parse_time,
    read_mapping,
)
from ...sdk.kube_api import ApiError, ClientConfig, KubeClient, path
from .config import CciConfig

__all__ = [
    "FLAVOR_ANNOTATION",
    "CciClient",
    "IamTokens",
    "cci_client_config",
    "network_object",
    "round_resources",
]

log = logging.getLogger(__name__)

FLAVOR_ANNOTATION = "namespace.kubernetes.io/flavor"
NETWORK_API = "networking.cci.io/v1beta1"
#: CPU in steps of a quarter core, memory in steps of half a GiB, per container.
_CPU_STEP = Decimal("0.25")
_MEMORY_STEP = Decimal(512 * 1024 * 1024)
_GIB = Decimal(1024**3)
#: A pod's memory (GiB) per core: at least 2, at most 8.
_MIN_GIB_PER_CPU, _MAX_GIB_PER_CPU = Decimal(2), Decimal(8)


class CciAuthError(ProviderError):
    """IAM refused the credentials, or CCI refused the token."""


def _ssl(ca_file: Path | None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if ca_file is not None:
        context.load_verify_locations(cafile=str(ca_file))
    return context


class IamTokens:
    """The project-scoped IAM token, fetched and renewed from the credentials file."""

    def __init__(self, config: CciConfig) -> None:
        self._config = config
        self._token: str | None = None
        self._issued = datetime.datetime.min.replace(tzinfo=datetime.UTC)
        self._expires = self._issued
        self._lock = asyncio.Lock()
        self.fetched = 0

    def _credentials(self) -> tuple[str, str, str]:
        doc = read_mapping(self._config.credentials_file)
        missing = [k for k in ("domain", "user", "password") if not doc.get(k)]
        if missing:
            raise ProviderConfigError(
                f"CCI credentials file {self._config.credentials_file} lacks {', '.join(missing)}"
            )
        return str(doc["domain"]), str(doc["user"]), str(doc["password"])

    def invalidate(self) -> None:
        self._token = None

    async def token(self) -> str:
        async with self._lock:
            now = datetime.datetime.now(datetime.UTC)
            renew_at = self._issued + (self._expires - self._issued) * 0.9
            if self._token is None or now >= renew_at:
                await self._fetch()
            assert self._token is not None
            return self._token

    async def _fetch(self) -> None:
        domain, user, password = self._credentials()
        body = {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {"name": user, "password": password, "domain": {"name": domain}}
                    },
                },
                "scope": {"project": {"name": self._config.project}},
            }
        }
        url = self._config.iam_endpoint.rstrip("/") + "/v3/auth/tokens"
        try:
            async with (
                aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(ssl=_ssl(self._config.ca_file)),
                    timeout=aiohttp.ClientTimeout(total=15),
                ) as session,
                session.post(url, json=body) as response,
            ):
                status = response.status
                token = response.headers.get("X-Subject-Token")
                answer = await response.json(content_type=None) if status < 300 else None
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise CciAuthError(f"IAM {url} cannot be reached: {type(exc).__name__}") from None
        if status in (400, 401, 403):
            raise CciAuthError(
                f"IAM {url} refused the credentials in {self._config.credentials_file} "
                f"({status}): check domain, user, password and project {self._config.project!r}"
            )
        if status >= 300 or not token:
            raise CciAuthError(f"IAM {url} answered {status} without a token")
        issued = datetime.datetime.now(datetime.UTC)
        try:
            expires = parse_time(str(answer["token"]["expires_at"]))  # type: ignore[index]
        except (KeyError, TypeError, ValueError):
            expires = issued + datetime.timedelta(hours=24)
        self._token, self._issued, self._expires = token, issued, expires
        self.fetched += 1
        log.info("IAM token for project %s valid until %s", self._config.project, expires)


def cci_client_config(config: CciConfig) -> ClientConfig:
    """How to reach the CCI API (its CA; the token is added per request by `CciClient`)."""
    ca = config.ca_file.read_bytes() if config.ca_file is not None else None
    return ClientConfig(
        server=config.api_server.rstrip("/"), source=f"huawei-cci {config.api_server}", ca_data=ca
    )


class CciClient(KubeClient):
    """The agent's API client, authenticating with `X-Auth-Token` from IAM instead of a bearer
    token; a 401 makes the next request fetch a new IAM token."""

    def __init__(self, config: ClientConfig, tokens: IamTokens, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self._iam = tokens

    async def _headers(self, content_type: str | None = None) -> dict[str, str]:
        try:
            headers = {"X-Auth-Token": await self._iam.token()}
        except CciAuthError as exc:
            raise ApiError(0, "Unauthorized", str(exc)) from None
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    async def request(self, method: str, url: str, **kwargs: Any) -> Any:
        try:
            return await super().request(method, url, **kwargs)
        except ApiError as exc:
            if exc.status == 401:
                self._iam.invalidate()
                raise ApiError(401, "Unauthorized", "CCI refused the IAM token") from None
            raise

    async def watch(self, url: str, params: Any) -> AsyncIterator[dict[str, Any]]:
        try:
            async for event in super().watch(url, params):
                yield event
        except ApiError as exc:
            if exc.status == 401:
                self._iam.invalidate()
            raise


def network_object(config: CciConfig, namespace: str) -> dict[str, Any]:
    """CCI's network object a namespace needs before it can run pods."""
    network = config.network
    return {
        "apiVersion": NETWORK_API,
        "kind": "Network",
        "metadata": {
            "name": network.name,
            "namespace": namespace,
            "annotations": {
                "network.alpha.kubernetes.io/default-security-group": network.security_group_id,
                "network.alpha.kubernetes.io/domain-id": network.domain_id,
                "network.alpha.kubernetes.io/project-id": network.project_id,
            },
        },
        "spec": {
            "availableZone": network.available_zone,
            "cidr": network.cidr,
            "attachedVPC": network.vpc_id,
            "networkID": network.network_id,
            "networkType": "underlay_neutron",
            "subnetID": network.subnet_id,
        },
    }


async def ensure_namespace(target: KubeClient, config: CciConfig, namespace: str) -> None:
    """The namespace with its flavor, and its network object."""
    body = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": namespace, "annotations": {FLAVOR_ANNOTATION: config.flavor}},
    }
    for url, obj in (
        (path("v1", "namespaces"), body),
        (path(NETWORK_API, "networks", namespace), network_object(config, namespace)),
    ):
        try:
            await target.create(url, obj)
        except ApiError as exc:
            if not exc.conflict:
                raise


def _round_up(value: Decimal, step: Decimal) -> Decimal:
    return (value / step).to_integral_value(rounding=ROUND_CEILING) * step


def round_resources(pod: Pod) -> None:
    """Every container's CPU and memory rounded up to CCI's steps, requests equal to limits, and
    the pod's memory per core brought within CCI's ratio (in place)."""
    containers = pod["spec"].get("containers") or []
    shapes: list[dict[str, Decimal]] = []
    for container in containers:
        resources = container.get("resources") or {}
        shape: dict[str, Decimal] = {}
        for name, step in (("cpu", _CPU_STEP), ("memory", _MEMORY_STEP)):
            values = [
                parse_quantity((resources.get(kind) or {})[name])
                for kind in ("requests", "limits")
                if name in (resources.get(kind) or {})
            ]
            shape[name] = _round_up(max([step, *values]), step)
        shapes.append(shape)
    if shapes:
        # Too little memory per core: add memory to the first container; too much: add CPU.
        total_cpu = sum((s["cpu"] for s in shapes), Decimal(0))
        total_memory = sum((s["memory"] for s in shapes), Decimal(0))
        if total_memory < total_cpu * _MIN_GIB_PER_CPU * _GIB:
            missing = total_cpu * _MIN_GIB_PER_CPU * _GIB - total_memory
            shapes[0]["memory"] += _round_up(missing, _MEMORY_STEP)
        elif total_memory > total_cpu * _MAX_GIB_PER_CPU * _GIB:
            missing = total_memory / _MAX_GIB_PER_CPU / _GIB - total_cpu
            shapes[0]["cpu"] += _round_up(missing, _CPU_STEP)
    for container, shape in zip(containers, shapes, strict=True):
        quantities = {name: format_quantity(value) for name, value in shape.items()}
        container["resources"] = {"requests": dict(quantities), "limits": dict(quantities)}
    for container in pod["spec"].get("initContainers") or []:
        resources = container.setdefault("resources", {})
        requests = resources.get("requests") or resources.get("limits") or {}
        init = {
            "cpu": format_quantity(
                _round_up(parse_quantity(requests.get("cpu", "250m")), _CPU_STEP)
            ),
            "memory": format_quantity(
                _round_up(parse_quantity(requests.get("memory", "512Mi")), _MEMORY_STEP)
            ),
        }
        container["resources"] = {"requests": dict(init), "limits": dict(init)}
