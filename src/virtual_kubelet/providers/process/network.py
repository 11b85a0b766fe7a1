"""Per-pod network namespaces (`network: pod` in the provider config).

On this machine only: one bridge (config `bridge`, default vkpods0) holds the first address of
`pod_cidr` (default 198.19.0.0/16) as the pods' gateway. Nothing else is added on the host: no NAT,
no routes, no firewall rules; and IPv4 forwarding is switched off for packets that arrive on the
bridge (net.ipv4.conf.<bridge>.forwarding = 0, re-checked at every pod set-up), so even on a host
that routes, a pod's packets are delivered to this machine's own addresses (the gateway, the node
address) or to other pods on the bridge, and never forwarded to another machine.

Per pod: a named network namespace `vk-<id>` (`ip netns add`, so /var/run/netns/vk-<id>), a veth
pair whose host end `vkh<id>` is a port of the bridge and whose other end is `eth0` in the
namespace with the pod's address, `lo` up, and a default route via the gateway. <id> is the first
12 hex digits of the pod UID (a hash of it for UIDs that are not UUIDs). The shim enters the
namespace (setns) before it execs a container or an exec session.

One agent per bridge: the agent holds an flock on /run/virtual-kubelet/bridge-<name>.lock while it
runs, and refuses a `pod_cidr` that overlaps an address or route of another interface.

Everything here is blocking (it runs `ip` and writes sysctls): call it from a thread.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

#: Where `ip netns add` puts its namespaces (iproute2's NETNS_RUN_DIR).
NETNS_DIR = Path("/var/run/netns")
LOCK_DIR = Path("/run/virtual-kubelet")
SYS_NET = Path("/sys/class/net")
PROC_CONF = Path("/proc/sys/net/ipv4/conf")
#: The interface name a pod sees.
POD_INTERFACE = "eth0"
CAP_NET_ADMIN = 12
CAP_SYS_ADMIN = 21
_IP_FALLBACKS = ("/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip")
_ROUTE_TYPES = {
    "unicast",
    "local",
    "broadcast",
    "multicast",
    "throw",
    "unreachable",
    "prohibit",
    "blackhole",
    "nat",
    "anycast",
}


class NetworkError(Exception):
    """Pod networking cannot be set up; the message says why (and never holds env values)."""


@dataclass(frozen=True)
class PodNetwork:
    """What a pod's network is made of (kept in its record, so a restarted agent finds it)."""

    netns: str
    veth: str
    ip: str

    @property
    def netns_path(self) -> str:
        return str(NETNS_DIR / self.netns)


def short_id(uid: str) -> str:
    """12 hex digits naming a pod's interfaces: the start of a UUID, or a hash of other UIDs."""
    digits = uid.replace("-", "").lower()
    if re.fullmatch(r"[0-9a-f]{12,}", digits):
        return digits[:12]
    return hashlib.sha256(uid.encode()).hexdigest()[:12]


def names_for(uid: str) -> tuple[str, str]:
    """The pod's network namespace and the host end of its veth pair (15 characters at most)."""
    ident = short_id(uid)
    return f"vk-{ident}", f"vkh{ident}"


def gateway_of(network: ipaddress.IPv4Network) -> ipaddress.IPv4Address:
    return network.network_address + 1


def allocate(
    network: ipaddress.IPv4Network, used: Iterable[str | None], after: str | None = None
) -> str:
    """A free pod address in `network`: not the network or broadcast address, not the gateway
    (the first address), not in `used`. The search starts after `after` and wraps around, so a
    freed address is handed out again as late as possible. NetworkError if none is left."""
    first = int(network.network_address) + 2
    last = int(network.broadcast_address) - 1
    count = last - first + 1
    if count < 1:
        raise NetworkError(f"pod_cidr {network} has no room for pod addresses")
    taken = set()
    for address in used:
        with contextlib.suppress(ValueError):
            if address:
                taken.add(int(ipaddress.IPv4Address(address)))
    start = first
    if after is not None:
        with contextlib.suppress(ValueError):
            previous = int(ipaddress.IPv4Address(after))
            if first <= previous <= last:
                start = previous + 1 if previous < last else first
    for offset in range(count):
        candidate = first + (start - first + offset) % count
        if candidate not in taken:
            return str(ipaddress.IPv4Address(candidate))
    raise NetworkError(f"no free address left in pod_cidr {network} ({count} in use)")


def missing_capabilities() -> list[str]:
    """The capabilities `network: pod` needs that this process lacks."""
    effective = 0
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                effective = int(line.split()[1], 16)
    return [
        name
        for bit, name in ((CAP_NET_ADMIN, "CAP_NET_ADMIN"), (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"))
        if not effective & (1 << bit)
    ]


def ip_tool() -> str | None:
    """The `ip` command of iproute2 (also where PATH lacks the sbin directories)."""
    found = shutil.which("ip")
    if found:
        return found
    return next((p for p in _IP_FALLBACKS if os.access(p, os.X_OK)), None)


def _run(tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [tool, *args], capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL
    )
    if check and result.returncode != 0:
        detail = result.stderr.strip() or f"exit code {result.returncode}"
        raise NetworkError(f"`ip {' '.join(args)}` failed: {detail}")
    return result


def remove_pod_network(netns: str, veth: str, tool: str | None = None) -> None:
    """Delete a pod's veth pair and network namespace; missing ones are fine."""
    tool = tool or ip_tool()
    if tool is None:
        log.warning("process provider: cannot remove netns %s: the `ip` command is missing", netns)
        return
    if (SYS_NET / veth).exists():
        _run(tool, "link", "del", veth, check=False)
    if (NETNS_DIR / netns).exists():
        result = _run(tool, "netns", "del", netns, check=False)
        if result.returncode != 0:
            log.warning(
                "process provider: cannot remove network namespace %s: %s",
                netns,
                result.stderr.strip(),
            )


class Bridge:
    """The pods' bridge and per-pod namespaces for one agent."""

    def __init__(self, name: str, pod_cidr: str) -> None:
        self.name = name
        self.network = ipaddress.IPv4Network(pod_cidr)
        self.gateway = str(gateway_of(self.network))
        self._tool = ""
        self._lock: int | None = None

    # --- the bridge -----------------------------------------------------------------------------

    def start(self) -> None:
        """Check the requirements, take the bridge's lock and create or adopt the bridge."""
        missing = missing_capabilities()
        if missing:
            raise NetworkError(
                f"it needs root ({' and '.join(missing)} missing) to create network namespaces"
            )
        tool = ip_tool()
        if tool is None:
            raise NetworkError("it needs the `ip` command (iproute2), which is not installed")
        self._tool = tool
        self._take_lock()
        try:
            self._check_overlaps()
            self._create()
        except BaseException:
            self.close()
            raise

    def _take_lock(self) -> None:
        LOCK_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        path = LOCK_DIR / f"bridge-{self.name}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise NetworkError(
                f"bridge {self.name} is in use by another virtual-kubelet on this machine "
                f"(it holds {path}); give each agent its own `bridge` and `pod_cidr`"
            ) from None
        self._lock = fd

    def _check_overlaps(self) -> None:
        for line in self._ip("-o", "-4", "addr", "show").stdout.splitlines():
            fields = line.split()
            if "inet" not in fields or len(fields) < 2 or fields[1] == self.name:
                continue
            with contextlib.suppress(ValueError):
                interface = ipaddress.IPv4Interface(fields[fields.index("inet") + 1])
                if interface.network.overlaps(self.network):
                    raise NetworkError(
                        f"pod_cidr {self.network} overlaps address {interface} of interface "
                        f"{fields[1]}; choose another pod_cidr"
                    )
        for line in self._ip("-4", "route", "show").stdout.splitlines():
            fields = line.split()
            if fields and fields[0] in _ROUTE_TYPES:
                fields = fields[1:]
            if not fields or fields[0] == "default":
                continue
            device = fields[fields.index("dev") + 1] if "dev" in fields[:-1] else ""
            if device == self.name:
                continue
            with contextlib.suppress(ValueError):
                route = ipaddress.IPv4Network(fields[0], strict=False)
                if route.prefixlen > 0 and route.overlaps(self.network):
                    where = f" via {device}" if device else ""
                    raise NetworkError(
                        f"pod_cidr {self.network} overlaps the route to {route}{where}; "
                        "choose another pod_cidr"
                    )

    def _create(self) -> None:
        address = f"{self.gateway}/{self.network.prefixlen}"
        if (SYS_NET / self.name).exists():
            if not (SYS_NET / self.name / "bridge").is_dir():
                raise NetworkError(f"interface {self.name} exists and is not a bridge")
            for line in self._ip("-o", "-4", "addr", "show", "dev", self.name).stdout.splitlines():
                fields = line.split()
                if "inet" in fields and fields[fields.index("inet") + 1] != address:
                    old = fields[fields.index("inet") + 1]
                    log.warning("process provider: removing %s from bridge %s", old, self.name)
                    self._ip("addr", "del", old, "dev", self.name)
        else:
            self._ip("link", "add", "name", self.name, "type", "bridge")
        self._ip("addr", "replace", address, "dev", self.name)
        self._ip("link", "set", self.name, "up")
        self.no_forwarding()

    def no_forwarding(self) -> None:
        """Packets arriving on the bridge are never routed elsewhere (writing net.ipv4.ip_forward,
        as container engines do, resets this: so it is checked again before each pod)."""
        path = PROC_CONF / self.name / "forwarding"
        try:
            if path.read_text().strip() == "0":
                return
            path.write_text("0\n")
        except OSError as exc:
            raise NetworkError(
                f"cannot switch off IPv4 forwarding on bridge {self.name} ({path}): "
                f"{exc.strerror or exc}"
            ) from None

    def remove(self) -> None:
        """Delete the bridge (only when no pod uses it any more)."""
        if self._tool and (SYS_NET / self.name).exists():
            _run(self._tool, "link", "del", self.name, check=False)

    def close(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def _ip(self, *args: str) -> subprocess.CompletedProcess[str]:
        return _run(self._tool, *args)

    # --- pods -----------------------------------------------------------------------------------

    def allocate(self, used: Iterable[str | None], after: str | None = None) -> str:
        return allocate(self.network, used, after)

    def contains(self, address: str | None) -> bool:
        try:
            ip = ipaddress.IPv4Address(address or "")
        except ValueError:
            return False
        first, last = self.network.network_address + 2, self.network.broadcast_address - 1
        return first <= ip <= last

    def set_up(self, uid: str, ip: str, *, fresh: bool) -> PodNetwork:
        """The pod's namespace, veth pair, address and route. `fresh`: remove leftovers with the
        same names first (a new pod); otherwise keep what exists (adoption) and add what is
        missing (e.g. after a reboot). On failure of a fresh set-up nothing is left behind."""
        netns, veth = names_for(uid)
        pod = PodNetwork(netns, veth, ip)
        if fresh:
            self.remove_pod(pod)
        try:
            self.no_forwarding()
            if not (NETNS_DIR / netns).exists():
                self._ip("netns", "add", netns)
            inside = ("-n", netns)
            if not (SYS_NET / veth).exists():
                _run(self._tool, *inside, "link", "del", POD_INTERFACE, check=False)
                peer = ("peer", "name", POD_INTERFACE, "netns", netns)
                self._ip("link", "add", veth, "type", "veth", *peer)
                address = f"{ip}/{self.network.prefixlen}"
                self._ip(*inside, "addr", "add", address, "dev", POD_INTERFACE)
                self._ip(*inside, "link", "set", POD_INTERFACE, "up")
                self._ip(*inside, "route", "replace", "default", "via", self.gateway)
            self._ip("link", "set", veth, "master", self.name, "up")
            self._ip(*inside, "link", "set", "lo", "up")
        except NetworkError:
            if fresh:
                self.remove_pod(pod)
            raise
        return pod

    def remove_pod(self, pod: PodNetwork) -> None:
        remove_pod_network(pod.netns, pod.veth, self._tool or None)
