"""The node's heartbeat: a coordination.k8s.io/v1 Lease in kube-node-lease, renewed every 10 s.

It uses its own API client (own connection pool and rate budget) so pod traffic can never delay
it, and it renews on a fixed schedule measured from the previous attempt's start. A failed provider
ping skips the renewal: the node-lifecycle controller then marks the node unreachable, as intended.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from ..kube.client import KubeClient, path
from ..kube.errors import ApiError
from ..kube.timefmt import micro
from ..metrics import LEASE_RENEWAL_AGE, LEASE_RENEWALS
from .health import ProviderHealth

log = logging.getLogger(__name__)

NAMESPACE = "kube-node-lease"
DURATION_S = 40


class LeaseController:
    def __init__(
        self,
        client: KubeClient,
        node_name: str,
        health: ProviderHealth,
        node_uid: Callable[[], str | None],
        *,
        duration: int = DURATION_S,
        renew_interval: float | None = None,
    ) -> None:
        self.client = client
        self.node_name = node_name
        self.health = health
        self.node_uid = node_uid
        self.duration = duration
        self.renew_interval = renew_interval or duration / 4
        self.last_renewal: float | None = None  # monotonic

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            next_at = loop.time() + self.renew_interval
            if await self.health.check():
                await self._renew_with_retries()
            else:
                LEASE_RENEWALS.labels("skipped").inc()
            if self.last_renewal is not None:
                LEASE_RENEWAL_AGE.set(time.monotonic() - self.last_renewal)

    async def _renew_with_retries(self) -> None:
        delay = 0.2
        for attempt in range(5):
            try:
                await self.renew()
                return
            except ApiError as exc:
                LEASE_RENEWALS.labels("error").inc()
                log.warning("lease renewal failed (attempt %d): %s", attempt + 1, exc)
                await asyncio.sleep(min(delay, self.renew_interval / 2))
                delay *= 2

    async def renew(self) -> None:
        spec = {
            "holderIdentity": self.node_name,
            "leaseDurationSeconds": self.duration,
            "renewTime": micro(),
        }
        url = path("coordination.k8s.io/v1", "leases", NAMESPACE, self.node_name)
        try:
            await self.client.patch(url, {"spec": spec})
        except ApiError as exc:
            if not exc.not_found:
                raise
            await self._create(spec)
        self.last_renewal = time.monotonic()
        LEASE_RENEWALS.labels("ok").inc()

    async def _create(self, spec: dict[str, object]) -> None:
        metadata: dict[str, object] = {"name": self.node_name, "namespace": NAMESPACE}
        uid = self.node_uid()
        if uid:
            # Owned by the Node: deleting the node deletes its lease, as with a real kubelet.
            metadata["ownerReferences"] = [
                {"apiVersion": "v1", "kind": "Node", "name": self.node_name, "uid": uid}
            ]
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": metadata,
            "spec": spec,
        }
        try:
            await self.client.create(path("coordination.k8s.io/v1", "leases", NAMESPACE), body)
        except ApiError as exc:
            if not exc.already_exists:
                raise
            await self.client.patch(
                path("coordination.k8s.io/v1", "leases", NAMESPACE, self.node_name), {"spec": spec}
            )
