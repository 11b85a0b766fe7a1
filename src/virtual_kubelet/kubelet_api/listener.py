"""The kubelet port's listening socket, bound at start-up so a port that is taken stops the agent
with one clear message (naming the address and, where /proc tells, the process holding it)
instead of a Ready node whose kubelet API never answers.

The default address is the node's InternalIP, not 0.0.0.0: several agents on one host (two
virtual nodes, a demo next to a test run) then each own `<their address>:10250`, and the API
server's requests for one node cannot reach another node's agent.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket

from ..procnet import port_holder

log = logging.getLogger(__name__)

ANY_ADDRESS = "0.0.0.0"


class ListenError(RuntimeError):
    """The kubelet port could not be bound; the message says which address and why."""


def bind_listener(address: str, port: int, *, fallback_any: bool = False) -> socket.socket:
    """A listening TCP socket on `address:port` (SO_REUSEADDR, non-blocking).

    With `fallback_any`, an address that is not assigned to this host (e.g. a NAT address given
    as the node's InternalIP) falls back to all addresses, with a warning, instead of failing."""
    try:
        return _bind(address, port)
    except OSError as exc:
        if fallback_any and exc.errno == errno.EADDRNOTAVAIL:
            log.warning(
                "the node address %s is not an address of this host; the kubelet API listens on "
                "%s:%d instead (set --kubelet-listen-address to choose)",
                address,
                ANY_ADDRESS,
                port,
            )
            return bind_listener(ANY_ADDRESS, port)
        raise ListenError(_explain(address, port, exc)) from None


def _bind(address: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _explain(address: str, port: int, exc: OSError) -> str:
    where = f"{address}:{port}"
    if exc.errno == errno.EADDRINUSE:
        holder = port_holder(port, address)
        by = f" by {holder}" if holder else " by another process"
        return (
            f"cannot listen on {where} for the kubelet API: the port is already in use{by}. "
            "Another agent on this host? Give each agent its own node address (VKUBELET_POD_IP) "
            "or its own KUBELET_PORT, or set --kubelet-listen-address"
        )
    if exc.errno == errno.EACCES:
        return f"cannot listen on {where} for the kubelet API: permission denied (a port < 1024?)"
    return f"cannot listen on {where} for the kubelet API: {exc.strerror or exc}"


def unreachable_reason(address: str) -> str | None:
    """Why the API server will not proxy to `address` (loopback, link-local, unspecified), or None."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_unspecified:
        return "the unspecified address"
    return None
