"""`network: pod` of the process provider: config validation and address allocation (pure), and
per-pod network namespaces on the real kernel (root and iproute2 needed, else skipped): two pods
serving the same port, probes, exec and port-forward in the pod's namespace, adoption after an
agent "crash", clean-up, and the start-up errors."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import random
import secrets
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest

from virtual_kubelet.providers.process.config import ProviderConfigError, load_config
from virtual_kubelet.providers.process.network import (
    NETNS_DIR,
    SYS_NET,
    NetworkError,
    allocate,
    ip_tool,
    missing_capabilities,
    names_for,
    remove_pod_network,
    short_id,
)
from virtual_kubelet.providers.process.state import ContainerRecord, PodRecord
from virtual_kubelet.providers.process.status import pod_status
from virtual_kubelet.sdk import ContainerIO
from virtual_kubelet.streams import QueueInput

from .test_process_provider import Harness, kill_everything, make_pod, run_test, status_of, until
from .test_process_provider_api import Capture

# --- config -------------------------------------------------------------------------------------


def _config(tmp_path: Path, **values: Any) -> Any:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(values))
    return load_config(path)


def _config_error(tmp_path: Path, **values: Any) -> str:
    with pytest.raises(ProviderConfigError) as err:
        _config(tmp_path, **values)
    return str(err.value)


def test_network_config_defaults_and_validation(tmp_path: Path) -> None:
    config = _config(tmp_path)
    assert (config.network, config.pod_cidr, config.bridge) == ("host", "198.19.0.0/16", "vkpods0")
    # The default range is RFC 2544's and does not overlap the dev cluster's node addresses.
    default = ipaddress.IPv4Network(config.pod_cidr)
    assert default.subnet_of(ipaddress.IPv4Network("198.18.0.0/15"))
    assert not default.overlaps(ipaddress.IPv4Network("198.18.0.0/16"))
    config = _config(tmp_path, network="pod", pod_cidr="10.44.0.0/30", bridge="pods-1")
    assert (config.network, config.pod_cidr, config.bridge) == ("pod", "10.44.0.0/30", "pods-1")

    assert "network" in _config_error(tmp_path, network="bridge")
    for cidr, words in (
        ("10.0.0.0/31", "/30 or shorter"),
        ("10.0.0.1/24", "host bits set"),
        ("fd00::/64", "IPv4"),
        ("not-a-network", "IPv4 network"),
        ("8.8.8.0/24", "not a private range"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("224.0.0.0/4", "multicast"),
    ):
        message = _config_error(tmp_path, pod_cidr=cidr)
        assert "pod_cidr" in message
        assert words in message, message
    for bridge in ("a-name-that-is-too-long", "br/0", "", "br 0"):
        message = _config_error(tmp_path, bridge=bridge)
        assert "bridge" in message
        assert "1 to 15" in message, message


# --- addresses and names ------------------------------------------------------------------------


def test_allocation_skips_gateway_used_and_wraps_around() -> None:
    net = ipaddress.IPv4Network("198.19.7.0/29")  # .1 gateway, .2-.6 pods, .7 broadcast
    assert allocate(net, []) == "198.19.7.2"
    assert allocate(net, ["198.19.7.2", "198.19.7.3", None, "garbage"]) == "198.19.7.4"
    # After the last one handed out, wrapping past the end, never the gateway or broadcast.
    assert allocate(net, [], after="198.19.7.3") == "198.19.7.4"
    assert allocate(net, ["198.19.7.2"], after="198.19.7.6") == "198.19.7.3"
    assert allocate(net, [], after="10.0.0.1") == "198.19.7.2"  # a cursor from elsewhere
    full = [f"198.19.7.{i}" for i in range(2, 7)]
    with pytest.raises(NetworkError, match="no free address"):
        allocate(net, full)
    assert allocate(ipaddress.IPv4Network("10.1.0.0/30"), []) == "10.1.0.2"
    with pytest.raises(NetworkError):
        allocate(ipaddress.IPv4Network("10.1.0.0/30"), ["10.1.0.2"])
    # Many pods: every address distinct, all inside the range.
    big = ipaddress.IPv4Network("198.19.0.0/16")
    given: list[str] = []
    for _ in range(300):
        given.append(allocate(big, given, given[-1] if given else None))
    assert len(set(given)) == 300
    assert all(ipaddress.IPv4Address(a) in big for a in given)
    assert "198.19.0.1" not in given


def test_interface_names_come_from_the_uid_and_fit() -> None:
    uid = "3f2a9c1e-77b0-4d7e-9a51-0123456789ab"
    assert names_for(uid) == ("vk-3f2a9c1e77b0", "vkh3f2a9c1e77b0")
    assert all(len(name) <= 15 for name in names_for("not-a-uuid at all"))
    assert short_id("x") != short_id("y")


def test_status_reports_the_pods_own_address() -> None:
    pod = make_pod("p", [{"name": "main", "command": ["true"]}])
    pod["status"] = {"podIP": "192.0.2.9", "podIPs": [{"ip": "192.0.2.9"}]}
    record = PodRecord(
        pod=pod,
        start_time="2024-01-01T00:00:00Z",
        containers={"main": ContainerRecord(name="main")},
        init_done=True,
    )
    assert pod_status(record, "192.0.2.9")["podIP"] == "192.0.2.9"
    record.pod_ip = "198.19.0.5"
    status = pod_status(record, "192.0.2.9")
    assert (status["podIP"], status["podIPs"]) == ("198.19.0.5", [{"ip": "198.19.0.5"}])
    assert status["hostIP"] == "192.0.2.9"


# --- the real thing -----------------------------------------------------------------------------


def _need_netns() -> None:
    if os.geteuid() != 0 or missing_capabilities():
        pytest.skip("network namespaces need root")
    if ip_tool() is None:
        pytest.skip("the ip command (iproute2) is missing")


def _pod_config() -> dict[str, Any]:
    """A bridge and a /24 of 198.19.0.0/16 of this test's own (tests may run side by side)."""
    return {
        "network": "pod",
        "bridge": f"vkt{secrets.token_hex(3)}",
        "pod_cidr": f"198.19.{random.randint(100, 250)}.0/24",
        "mounts": "auto",
    }


def _netns_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def _link_exists(name: str) -> bool:
    return (SYS_NET / name).exists()


def _mount_table(pid: int) -> str:
    return Path(f"/proc/{pid}/mountinfo").read_text()


def _clean_host(config: dict[str, Any], uids: list[str]) -> None:
    for uid in uids:
        remove_pod_network(*names_for(uid))
    subprocess.run(["ip", "link", "del", config["bridge"]], capture_output=True, check=False)


class Stream:
    """A port-forward stream: sends `request`, keeps what comes back."""

    def __init__(self, request: bytes) -> None:
        self.input = QueueInput()
        self.input.feed(request)
        self.input.feed_eof()
        self.received = b""

    async def read(self, n: int = 65536) -> bytes:
        return await self.input.read(n)

    async def write(self, data: bytes) -> None:
        self.received += data

    async def close(self) -> None:
        pass


def _web(name: str, **extra: Any) -> Any:
    server = {
        "name": "main",
        "command": [
            "sh",
            "-c",
            f'echo "I am {name}" > index.html; exec {sys.executable} -m http.server 8080',
        ],
        "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 0.2},
    }
    return make_pod(name, [server], **extra)


async def _exec(h: Harness, pod: str, argv: list[str]) -> tuple[int, str]:
    out = Capture()
    code = await h.provider.run_in_container(
        "default", pod, "main", argv, ContainerIO(stdin=None, stdout=out, stderr=Capture())
    )
    return code, out.data.decode()


def test_pods_get_namespaces_of_their_own_on_the_same_port(tmp_path: Path) -> None:
    _need_netns()
    config = _pod_config()
    network = ipaddress.IPv4Network(config["pod_cidr"])
    pods = [_web("web-a"), _web("web-b")]
    host = make_pod("on-host", [{"name": "main", "command": ["sleep", "30"]}], hostNetwork=True)
    uids = [p["metadata"]["uid"] for p in [*pods, host]]

    async def body(h: Harness) -> None:
        bridge = config["bridge"]
        assert _link_exists(bridge)
        assert (Path("/proc/sys/net/ipv4/conf") / bridge / "forwarding").read_text().strip() == "0"
        # An address promised before creation (downward API status.podIP) is the one it gets.
        (promised,) = await h.provider.assign_pod_ips(pods[0]) or []
        assert await h.provider.assign_pod_ips(pods[0]) == [promised]
        pods[0]["status"] = {"podIP": promised, "podIPs": [{"ip": promised}]}
        for pod in pods:
            await h.provider.create_pod(pod)
        await h.provider.create_pod(host)
        ready = [await h.wait(p["metadata"]["name"], lambda p: status_of(p)["ready"]) for p in pods]
        ips = [p["status"]["podIP"] for p in ready]
        assert ips[0] == promised
        assert len(set(ips)) == 2
        assert all(ipaddress.IPv4Address(ip) in network for ip in ips)
        assert str(network.network_address + 1) not in ips  # the gateway is the bridge's
        assert all(p["status"]["hostIP"] == "127.0.0.1" for p in ready)
        on_host = await h.running("on-host")
        assert on_host["status"]["podIP"] == "127.0.0.1"
        assert not _netns_exists(names_for(host["metadata"]["uid"])[0])

        if h.provider.host.bind_mounts:
            # Private mount namespaces hold no copies of /var/run/netns/*: such a copy would keep
            # another pod's namespace alive after that pod is gone.
            pid = h.run_file(pods[1])["pid"]
            assert names_for(pods[0]["metadata"]["uid"])[0] not in _mount_table(pid)

        for pod, ip in zip(pods, ips, strict=True):
            name = pod["metadata"]["name"]
            netns, veth = names_for(pod["metadata"]["uid"])
            assert _netns_exists(netns)
            assert (SYS_NET / veth / "master").resolve().name == bridge
            # exec runs in the pod's namespace: its eth0 has the pod's address.
            code, output = await _exec(h, name, ["ip", "-o", "-4", "addr", "show"])
            assert code == 0
            assert f"inet {ip}/{network.prefixlen}" in output
            assert "eth0" in output
            assert "127.0.0.1" in output  # lo is up
            code, output = await _exec(h, name, ["ip", "route", "show"])
            assert f"default via {network.network_address + 1} dev eth0" in output
            # port-forward reaches this pod's server, not the other one on the same port.
            stream = Stream(b"GET /index.html HTTP/1.0\r\n\r\n")
            await h.provider.port_forward("default", name, 8080, stream)
            assert stream.received.startswith(b"HTTP/1.0 200")
            assert stream.received.endswith(f"I am {name}\n".encode())

        # Pods reach each other and the host's gateway address; nothing else is routed.
        fetch = (
            "import sys, urllib.request; "
            "print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())"
        )
        code, output = await _exec(
            h, "web-a", [sys.executable, "-c", fetch, f"http://{ips[1]}:8080/index.html"]
        )
        assert (code, output) == (0, "I am web-b\n\n")
        gateway = str(network.network_address + 1)

        async def greet(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"hello from the host\n")
            await writer.drain()
            writer.close()

        host_server = await asyncio.start_server(greet, gateway, 0)
        host_port = host_server.sockets[0].getsockname()[1]
        dial = (
            "import socket, sys\n"
            "try:\n"
            "    address = (sys.argv[1], int(sys.argv[2]))\n"
            "    s = socket.create_connection(address, timeout=float(sys.argv[3]))\n"
            "    print(s.recv(100).decode().strip())\n"
            "except OSError as e:\n"
            "    print('failed:', e)\n"
        )
        async with host_server:
            code, output = await _exec(
                h, "web-a", [sys.executable, "-c", dial, gateway, str(host_port), "5"]
            )
        assert output.strip() == "hello from the host"
        # Beyond this machine there is nothing: no NAT, and the bridge does not forward (the
        # packets are dropped: a timeout or an unreachable error).
        outside = [sys.executable, "-c", dial, "203.0.113.1", "80", "1"]
        code, output = await _exec(h, "web-a", outside)
        assert output.startswith("failed:"), output

        for pod in pods:
            await h.provider.delete_pod(pod)
        for pod in pods:
            netns, veth = names_for(pod["metadata"]["uid"])
            await until(lambda n=netns, v=veth: not _netns_exists(n) and not _link_exists(v))
        assert await h.provider.get_pod("default", "web-a") is None
        await h.provider.delete_pod(host)
        await until(lambda: not h.provider._pods)
        await h.provider.stop()
        assert not _link_exists(bridge), "the bridge outlived the last pod"

    try:
        run_test(tmp_path, body, config)
    finally:
        _clean_host(config, uids)


def test_restarted_agent_keeps_the_pods_address(tmp_path: Path) -> None:
    _need_netns()
    config = _pod_config()
    pod = _web("keeper")
    uid = pod["metadata"]["uid"]
    seen: dict[str, Any] = {}

    async def first_agent() -> None:
        harness = Harness(tmp_path, config)
        await harness.start()
        await harness.provider.create_pod(pod)
        ready = await harness.wait("keeper", lambda p: status_of(p)["ready"])
        seen["ip"] = ready["status"]["podIP"]
        seen["run"] = harness.run_file(pod)
        # No stop(), no delete: as if the agent was killed. A second agent on the same bridge
        # is refused meanwhile, and so is a bridge whose range overlaps this one's.
        for clash in ({}, {"bridge": f"vkt{secrets.token_hex(3)}"}):
            (tmp_path / f"other{len(clash)}").mkdir()
            other = Harness(tmp_path / f"other{len(clash)}", {**config, **clash})
            with pytest.raises(ProviderConfigError) as err:
                await other.provider.start()
            assert "network: pod is not possible" in str(err.value)
            assert ("in use by another" if not clash else "overlaps") in str(err.value)
        assert harness.provider.addresses.bridge is not None
        harness.provider.addresses.bridge.close()  # the lock of the "dead" agent goes with it

    async def second_agent() -> None:
        harness = Harness(tmp_path, config)
        await harness.start()
        adopted = await harness.wait("keeper", lambda p: status_of(p)["ready"])
        assert adopted["status"]["podIP"] == seen["ip"]
        assert harness.run_file(pod) == seen["run"]  # the same process, still serving
        stream = Stream(b"GET /index.html HTTP/1.0\r\n\r\n")
        await harness.provider.port_forward("default", "keeper", 8080, stream)
        assert stream.received.endswith(b"I am keeper\n")
        # A new pod does not get the adopted pod's address.
        other = _web("newcomer")
        await harness.provider.create_pod(other)
        fresh = await harness.wait("newcomer", lambda p: status_of(p)["ready"])
        assert fresh["status"]["podIP"] != seen["ip"]
        for p in (pod, other):
            await harness.provider.delete_pod(p)
        await until(lambda: not harness.provider._pods)
        await until(lambda: not _netns_exists(names_for(uid)[0]))
        await harness.close()

    try:
        asyncio.run(first_agent())
        asyncio.run(second_agent())
    finally:
        kill_everything(tmp_path / "state")
        _clean_host(config, [uid])


def test_start_up_without_the_rights_is_one_clear_error(tmp_path: Path) -> None:
    _need_netns()
    if not Path("/usr/bin/setpriv").exists():
        pytest.skip("setpriv (util-linux) is missing")
    config = tmp_path / "config.json"
    config.write_text(json.dumps(_pod_config()))
    script = textwrap.dedent(
        f"""
        import asyncio
        from pathlib import Path
        from virtual_kubelet.providers.base import ProviderContext
        from virtual_kubelet.providers.process import ProcessProvider
        from virtual_kubelet.providers.process.config import ProviderConfigError
        context = ProviderContext(
            node_name="n", operating_system="linux", internal_ip="127.0.0.1",
            daemon_port=10250, config_path=Path({str(config)!r}),
            state_dir=Path({str(tmp_path / "state")!r}), volumes_dir=Path({str(tmp_path)!r}),
        )
        try:
            asyncio.run(ProcessProvider(context).start())
        except ProviderConfigError as exc:
            print(exc)
        """
    )
    dropped = "-net_admin,-sys_admin"
    setpriv = ["setpriv", f"--bounding-set={dropped}", f"--inh-caps={dropped}"]
    result = subprocess.run(
        [*setpriv, sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.stdout.strip() == (
        "network: pod is not possible on this host: it needs root "
        "(CAP_NET_ADMIN and CAP_SYS_ADMIN missing) to create network namespaces"
    ), result.stderr


def test_a_new_pod_s_uid_is_not_a_uuid(tmp_path: Path) -> None:
    """Names derived from a UID of another shape still work end to end (and clean up); also
    without bind mounts (exec enters the network namespace alone)."""
    _need_netns()
    config = {**_pod_config(), "mounts": "env"}
    pod = make_pod("odd", [{"name": "main", "command": ["sleep", "30"]}])
    pod["metadata"]["uid"] = f"odd-{uuid.uuid4().hex[:6]}"

    async def body(h: Harness) -> None:
        await h.provider.create_pod(pod)
        running = await h.running("odd")
        netns, veth = names_for(pod["metadata"]["uid"])
        assert _netns_exists(netns)
        assert _link_exists(veth)
        code, output = await _exec(h, "odd", ["ip", "-o", "-4", "addr", "show", "eth0"])
        assert code == 0
        assert running["status"]["podIP"] in output
        await h.provider.delete_pod(pod)
        await until(lambda: not _netns_exists(netns) and not _link_exists(veth))

    try:
        run_test(tmp_path, body, config)
    finally:
        _clean_host(config, [pod["metadata"]["uid"]])


def test_a_finished_pod_gives_its_namespace_back(tmp_path: Path) -> None:
    _need_netns()
    config = {**_pod_config(), "mounts": "env"}
    job = make_pod("job", [{"name": "main", "command": ["true"]}], restart="Never")
    netns, veth = names_for(job["metadata"]["uid"])

    async def body(h: Harness) -> None:
        await h.provider.create_pod(job)
        done = await h.wait("job", lambda p: p["status"]["phase"] == "Succeeded")
        await until(lambda: not _netns_exists(netns) and not _link_exists(veth))
        # Its status keeps the address it had, as a finished pod's does.
        assert ipaddress.IPv4Address(done["status"]["podIP"]) in ipaddress.IPv4Network(
            config["pod_cidr"]
        )
        await h.provider.delete_pod(job)
        await until(lambda: not h.provider._pods)

    try:
        run_test(tmp_path, body, config)
    finally:
        _clean_host(config, [job["metadata"]["uid"]])
