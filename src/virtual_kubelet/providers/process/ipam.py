"""Pod addresses with `network: pod`: the bridge the pods' veths join (set up through network.py,
in threads) and which pod holds which address of `pod_cidr`.

An address is taken while a live pod record holds it, while `assign_pod_ips` has promised it to
a pod not created yet (for RESERVATION_SECONDS), and while a deleted pod's namespace is still
being removed. Searches for a free one go round the range from the address handed out last, so
a freed address is not reused at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import Callable, Iterator

from .config import ProcessConfig, ProviderConfigError
from .network import Bridge, NetworkError
from .state import PodRecord
from .status import TERMINAL
from .status import phase as pod_phase

log = logging.getLogger(__name__)

#: How long an address handed out by assign_pod_ips is kept for a pod that is not created yet.
RESERVATION_SECONDS = 3600.0


class PodAddresses:
    """The bridge and the address book of `network: pod` (inactive with `network: host`)."""

    def __init__(self, config: ProcessConfig, held: Callable[[], set[str]]) -> None:
        self.config = config
        #: The addresses live pod records hold (asked each time, never copied).
        self._held = held
        self.bridge: Bridge | None = None
        #: Addresses promised to pods not created yet (uid -> address, when), addresses of
        #: deleted pods whose namespace is still being removed, and the one handed out last.
        self._reserved: dict[str, tuple[str, float]] = {}
        self._releasing: set[str] = set()
        self._last_ip: str | None = None

    @property
    def active(self) -> bool:
        """Whether pods get network namespaces of their own."""
        return self.bridge is not None

    async def start(self) -> None:
        """Create or adopt the bridge; ProviderConfigError if this host cannot have it."""
        bridge = Bridge(self.config.bridge, self.config.pod_cidr)
        try:
            await asyncio.to_thread(bridge.start)
        except NetworkError as exc:
            raise ProviderConfigError(f"network: pod is not possible on this host: {exc}") from None
        self.bridge = bridge
        log.info(
            "process provider: pods get network namespaces with addresses from %s on bridge %s "
            "(gateway %s; no NAT, no forwarding: they reach this machine only)",
            bridge.network,
            bridge.name,
            bridge.gateway,
        )

    async def stop(self, pods_left: bool) -> None:
        """Let go of the bridge; remove it if no pod uses it (pods left running keep it)."""
        if self.bridge is None:
            return
        if not pods_left and not self._releasing:
            # Nothing uses it: leave the host as it was found.
            log.info("process provider: no pods left; removing bridge %s", self.bridge.name)
            await asyncio.to_thread(self.bridge.remove)
        self.bridge.close()
        self.bridge = None

    async def adopt(self, record: PodRecord) -> None:
        """A restarted agent: the pod keeps its address; its namespace is re-created if it went
        missing (a reboot), so its containers can start again."""
        if self.bridge is None:
            log.warning(
                "process provider: pod %s has network namespace %s but `network` is not `pod` "
                "any more; its containers stay in that namespace until the pod is deleted",
                record.key,
                record.netns,
            )
            return
        pod_ip = str(record.pod_ip)
        if self._last_ip is None or _ip_key(pod_ip) > _ip_key(self._last_ip):
            self._last_ip = pod_ip
        if record.deleting or pod_phase(record) in TERMINAL:
            return  # being removed, or ended: its namespace goes (see Supervisor.run_pod)
        try:
            await asyncio.to_thread(self.bridge.set_up, record.uid, pod_ip, fresh=False)
        except NetworkError as exc:
            log.error("process provider: cannot restore the network of pod %s: %s", record.key, exc)

    def reserve(self, uid: str, wanted: str | None = None) -> str:
        """The address of pod `uid`: its reservation, else `wanted` if free, else a new one
        (NetworkError if none is left)."""
        assert self.bridge is not None
        used = self._used(uid)
        if uid in self._reserved:
            address = self._reserved[uid][0]
        elif wanted is not None and self.bridge.contains(wanted) and wanted not in used:
            address = wanted
        else:
            address = self.bridge.allocate(used, self._last_ip)
            self._last_ip = address
        self._reserved[uid] = (address, time.time())
        return address

    def forget_reservation(self, uid: str) -> None:
        """Pod `uid` was created (its record holds the address now) or failed to be."""
        self._reserved.pop(uid, None)

    async def set_up(self, record: PodRecord) -> None:
        """The new pod's namespace and address (the one assign_pod_ips promised, if any)."""
        assert self.bridge is not None
        given = (record.pod.get("status") or {}).get("podIP")
        try:
            address = self.reserve(record.uid, str(given) if given else None)
            network = await asyncio.to_thread(self.bridge.set_up, record.uid, address, fresh=True)
        except NetworkError as exc:
            raise RuntimeError(f"cannot set up the pod's network: {exc}") from None
        record.pod_ip, record.netns, record.veth = network.ip, network.netns, network.veth
        status = record.pod.setdefault("status", {})
        status["podIP"], status["podIPs"] = network.ip, [{"ip": network.ip}]

    @contextlib.contextmanager
    def releasing(self, address: str | None) -> Iterator[None]:
        """While a deleted pod's namespace is removed, its address is not handed out again."""
        if address:
            self._releasing.add(address)
        try:
            yield
        finally:
            if address:
                self._releasing.discard(address)

    def _used(self, uid: str) -> set[str]:
        """Addresses other pods hold: live records, pods being removed, fresh reservations."""
        now = time.time()
        for other, (_, since) in list(self._reserved.items()):
            if now - since > RESERVATION_SECONDS:
                del self._reserved[other]  # assigned to a pod that was never created
        used = set(self._held())
        used.update(ip for other, (ip, _) in self._reserved.items() if other != uid)
        return used | self._releasing


def _ip_key(address: str) -> int:
    try:
        return int(ipaddress.IPv4Address(address))
    except ValueError:
        return -1
