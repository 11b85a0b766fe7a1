"""The kubelet port's routing, listening socket and certificate reuse rules."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from virtual_kubelet.kubelet_api.api import KubeletApi
from virtual_kubelet.kubelet_api.certs import ServingIdentity, mismatch, self_signed
from virtual_kubelet.kubelet_api.http import HttpError
from virtual_kubelet.kubelet_api.listener import (
    ListenError,
    bind_listener,
    port_holder,
    unreachable_reason,
)
from virtual_kubelet.providers.base import ProviderContext
from virtual_kubelet.providers.mock import MockProvider


@pytest.fixture
def api(tmp_path: Path) -> KubeletApi:
    context = ProviderContext("n1", "linux", "198.18.0.9", 10250, state_dir=tmp_path)
    return KubeletApi(MockProvider(context), "n1", list)


@pytest.mark.parametrize(
    "path",
    [
        "/pods",
        "/pods/",
        "/runningpods",
        "/runningpods/",
        "/stats/summary",
        "/stats/summary/",
        "/metrics/resource",
        "/metrics/resource/",
        "/healthz",
        "/healthz/",
        "/containerLogs/ns/p/c",
        "/containerLogs/ns/p/c/",
        "/exec/ns/p/c",
        "/exec/ns/p/uid/c/",
        "/portForward/ns/p",
        "/portForward/ns/p/",
    ],
)
def test_every_route_answers_with_and_without_the_trailing_slash(
    api: KubeletApi, path: str
) -> None:
    handler, _ = api.router.match("GET", path)
    assert handler is not None


def test_unknown_paths_and_methods_are_still_refused(api: KubeletApi) -> None:
    for path in ("/runningpodsx", "/pods//", "/containerLogs/ns/p", "/stats"):
        with pytest.raises(HttpError) as caught:
            api.router.match("GET", path)
        assert caught.value.status == 404, path
    with pytest.raises(HttpError) as caught:
        api.router.match("DELETE", "/pods")
    assert caught.value.status == 405


def test_path_parameters_are_the_same_in_both_forms(api: KubeletApi) -> None:
    _, with_slash = api.router.match("GET", "/containerLogs/ns/p/c/")
    _, without = api.router.match("GET", "/containerLogs/ns/p/c")
    assert with_slash == without == {"namespace": "ns", "pod": "p", "container": "c"}


def test_a_certificate_is_reused_only_while_it_covers_the_node() -> None:
    identity = ServingIdentity("node-a", ("198.18.0.7",))
    cert, _ = self_signed(identity)
    assert mismatch(cert, identity) is None
    moved = mismatch(cert, ServingIdentity("node-a", ("198.18.0.8",)))
    assert moved is not None
    assert "198.18.0.8" in moved
    assert "198.18.0.7" in moved  # says what it was valid for
    renamed = mismatch(cert, ServingIdentity("node-b", ("198.18.0.7",)))
    assert renamed is not None
    assert "system:node:node-a" in renamed


def test_ipv6_addresses_are_compared_as_addresses() -> None:
    cert, _ = self_signed(ServingIdentity("n", ("fd00::0:1",)))
    assert mismatch(cert, ServingIdentity("n", ("fd00::1",))) is None


def test_a_taken_port_names_the_address_and_the_process_holding_it() -> None:
    first = bind_listener("127.0.0.1", 0)
    try:
        port = first.getsockname()[1]
        with pytest.raises(ListenError) as caught:
            bind_listener("127.0.0.1", port)
        message = str(caught.value)
        assert f"127.0.0.1:{port}" in message
        assert "already in use" in message
        assert f"pid {os.getpid()} " in message  # we hold it ourselves here
        assert port_holder(port, "127.0.0.1") is not None
    finally:
        first.close()


def test_another_address_on_the_same_port_is_free() -> None:
    first = bind_listener("127.0.0.1", 0)
    try:
        port = first.getsockname()[1]
        second = bind_listener("127.0.0.2", port)  # two node addresses, one port each
        second.close()
    finally:
        first.close()


def test_a_node_address_that_is_not_local_falls_back_to_all_addresses() -> None:
    with pytest.raises(ListenError, match=r"192\.0\.2\.1"):
        bind_listener("192.0.2.1", 0)
    sock = bind_listener("192.0.2.1", 0, fallback_any=True)
    try:
        assert sock.getsockname()[0] == "0.0.0.0"
        assert sock.type == socket.SOCK_STREAM
    finally:
        sock.close()


def test_addresses_the_api_server_will_not_proxy_to() -> None:
    assert unreachable_reason("127.0.0.1") == "a loopback address"
    assert unreachable_reason("::1") == "a loopback address"
    assert unreachable_reason("169.254.3.4") == "a link-local address"
    assert unreachable_reason("0.0.0.0") == "the unspecified address"
    assert unreachable_reason("198.18.0.5") is None
    assert unreachable_reason("node.example") is None
