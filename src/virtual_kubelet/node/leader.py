"""Leader election between agents for the same node, on a coordination.k8s.io/v1 Lease.

The rules are client-go's `leaderelection` with a Lease lock, so operators can reason about it the
same way: a candidate takes the Lease when it is free or its holder has not renewed it for
`lease_duration` (measured on our own clock from when we last *saw* it change, so clock skew
between hosts does not matter); the leader renews it every `retry_period` and gives up leadership
when it could not renew for `renew_deadline` (shorter than the duration, so it has stopped before
anyone else may take over). Writes carry the resourceVersion read, so two candidates racing for a
free Lease cannot both win. On a graceful stop the leader releases the Lease (empty holder), so a
standby takes over at its next try instead of waiting for the duration to pass.

This Lease is not the node heartbeat (`lease.py`, `kube-node-lease/<node>`): it is named
`virtual-kubelet-<node>` and lives in its own namespace.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from ..kube.client import KubeClient, path
from ..kube.errors import ApiError
from ..kube.timefmt import micro
from ..metrics import LEADER

log = logging.getLogger(__name__)

#: client-go's defaults (kube-scheduler, kube-controller-manager use the same).
DEFAULT_LEASE_DURATION_S = 15
DEFAULT_RENEW_DEADLINE_S = 10.0
DEFAULT_RETRY_PERIOD_S = 2.0
DEFAULT_NAMESPACE = "kube-system"


def default_identity() -> str:
    """`<pod or host name>_<random>`, as client-go components do: `$POD_NAME` (the chart sets it
    from the downward API) or the hostname says which pod or host leads, and the random part
    makes every process a candidate of its own: a leader's container restarted in the same pod
    must wait for its Lease like any standby, since it starts from nothing."""
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4()}"


def lease_name(node_name: str) -> str:
    return f"virtual-kubelet-{node_name}"


@dataclass(frozen=True)
class ElectionSettings:
    """`--leader-elect-*`: which Lease, who we are, and its timing."""

    node_name: str
    namespace: str = DEFAULT_NAMESPACE
    identity: str = field(default_factory=default_identity)
    lease_duration: int = DEFAULT_LEASE_DURATION_S
    renew_deadline: float = DEFAULT_RENEW_DEADLINE_S
    retry_period: float = DEFAULT_RETRY_PERIOD_S

    def __post_init__(self) -> None:
        # client-go's own checks: otherwise a leader could still act after others may take over.
        if not self.lease_duration > self.renew_deadline:
            raise ValueError(
                f"the leader election lease duration ({self.lease_duration}s) must be greater "
                f"than the renew deadline ({self.renew_deadline:g}s)"
            )
        if not self.renew_deadline > self.retry_period > 0:
            raise ValueError(
                f"the renew deadline ({self.renew_deadline:g}s) must be greater than the retry "
                f"period ({self.retry_period:g}s), which must be positive"
            )


class LeadershipLost(RuntimeError):
    """The leader could not renew its Lease within the renew deadline, or someone else holds it."""


class LeaderElector:
    def __init__(self, client: KubeClient, settings: ElectionSettings) -> None:
        self.client = client
        self.settings = settings
        self.name = lease_name(settings.node_name)
        self.url = path("coordination.k8s.io/v1", "leases", settings.namespace, self.name)
        self.leading = False
        # What we last saw of the Lease and when (monotonic): expiry is judged on our clock.
        self._observed: tuple[str, str, int] | None = None  # holder, renewTime, duration
        self._observed_at = 0.0
        self.holder: str = ""
        LEADER.set(0)

    async def acquire(self) -> None:
        """Return once we hold the Lease (trying every retry period, with client-go's jitter)."""
        s = self.settings
        log.info(
            "waiting to lead node %s: Lease %s/%s as %s",
            s.node_name,
            s.namespace,
            self.name,
            s.identity,
        )
        reported = ""
        while True:
            try:
                if await self._try_acquire_or_renew():
                    self._became_leader()
                    return
                if self.holder != reported:
                    reported = self.holder
                    log.info("standing by: %s leads node %s", self.holder, s.node_name)
            except (ApiError, TimeoutError) as exc:
                log.warning("leader election: cannot read or write the Lease: %s", exc)
            await asyncio.sleep(s.retry_period * (1 + random.random() * 1.2))

    def _became_leader(self) -> None:
        self.leading = True
        LEADER.set(1)
        log.info(
            "became the leader of node %s (%s)", self.settings.node_name, self.settings.identity
        )

    async def keep_leading(self) -> None:
        """Renew every retry period; raise LeadershipLost when that failed for the renew deadline
        (or the Lease is someone else's). Never returns while we lead."""
        s = self.settings
        last_renewal = time.monotonic()
        while True:
            await asyncio.sleep(s.retry_period)
            remaining = s.renew_deadline - (time.monotonic() - last_renewal)
            renewed = False
            try:
                # A hanging request must not keep us leading past the deadline.
                async with asyncio.timeout(max(remaining, 0.01)):
                    renewed = await self._try_acquire_or_renew()
            except (ApiError, TimeoutError) as exc:
                log.warning("leader election: renewing the Lease failed: %s", exc)
            if renewed:
                last_renewal = time.monotonic()
                continue
            if self.holder and self.holder != s.identity:
                self._lost(f"{self.holder} holds the Lease now")
            if time.monotonic() - last_renewal >= s.renew_deadline:
                self._lost(f"could not renew the Lease within {s.renew_deadline:g}s")

    def _lost(self, why: str) -> None:
        self.leading = False
        LEADER.set(0)
        raise LeadershipLost(f"lost the leadership of node {self.settings.node_name}: {why}")

    async def release(self) -> None:
        """Give the Lease up (graceful stop) so a standby need not wait for it to expire."""
        if not self.leading:
            return
        self.leading = False
        LEADER.set(0)
        try:
            # Bounded: an unreachable API server must not hold up the exit; the Lease expires.
            async with asyncio.timeout(self.settings.renew_deadline):
                await self._release()
            log.info("released the leadership of node %s", self.settings.node_name)
        except (ApiError, TimeoutError) as exc:
            log.warning("could not release the leader Lease (it expires by itself): %s", exc)

    async def _release(self) -> None:
        current = await self.client.get(self.url)
        if current.get("spec", {}).get("holderIdentity") != self.settings.identity:
            return
        await self.client.patch(
            self.url,
            {
                "metadata": {"resourceVersion": current["metadata"]["resourceVersion"]},
                "spec": {"holderIdentity": None, "leaseDurationSeconds": 1, "renewTime": micro()},
            },
        )

    async def _try_acquire_or_renew(self) -> bool:
        """One round of client-go's tryAcquireOrRenew: True if we hold the Lease afterwards."""
        s = self.settings
        now = micro()
        try:
            current: dict[str, Any] = await self.client.get(self.url)
        except ApiError as exc:
            if not exc.not_found:
                raise
            return await self._create(now)
        spec = current.get("spec", {})
        holder = spec.get("holderIdentity") or ""
        duration = int(spec.get("leaseDurationSeconds") or s.lease_duration)
        record = (holder, str(spec.get("renewTime")), duration)
        if record != self._observed:
            self._observed, self._observed_at = record, time.monotonic()
        self.holder = holder
        ours = holder == s.identity
        if holder and not ours and time.monotonic() < self._observed_at + duration:
            return False  # held, and its holder renewed it within its duration
        new_spec: dict[str, Any] = {
            "holderIdentity": s.identity,
            "leaseDurationSeconds": s.lease_duration,
            "renewTime": now,
        }
        if not ours:
            new_spec["acquireTime"] = now
            new_spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + (
                1 if holder else 0
            )
        try:
            # The resourceVersion makes this a compare-and-swap: a racing candidate gets 409.
            await self.client.patch(
                self.url,
                {
                    "metadata": {"resourceVersion": current["metadata"]["resourceVersion"]},
                    "spec": new_spec,
                },
            )
        except ApiError as exc:
            if exc.conflict:
                return False
            raise
        self.holder = s.identity
        return True

    async def _create(self, now: str) -> bool:
        s = self.settings
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": self.name,
                "namespace": s.namespace,
                "labels": {"virtual-kubelet.io/node": s.node_name},
            },
            "spec": {
                "holderIdentity": s.identity,
                "leaseDurationSeconds": s.lease_duration,
                "acquireTime": now,
                "renewTime": now,
                "leaseTransitions": 0,
            },
        }
        try:
            await self.client.create(path("coordination.k8s.io/v1", "leases", s.namespace), body)
        except ApiError as exc:
            if exc.already_exists:
                return False  # someone was quicker; the next round reads theirs
            raise
        self.holder = s.identity
        return True
