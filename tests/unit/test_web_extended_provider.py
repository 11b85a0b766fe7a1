"""The extended web provider against small backends written here (real HTTP on loopback): which
hooks it switches on from /capabilities, the status stream's resync after a drop and after
silence, node events, credentials refused, and streams that end badly."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from virtual_kubelet.providers.web.config import WebConfig, load_config
from virtual_kubelet.providers.web.errors import BackendError, BackendUnavailable, BadResponse
from virtual_kubelet.providers.web.extended import ExtendedConfig, ExtendedWebProvider
from virtual_kubelet.providers.web.extended_wire import PROTOCOL, SUBPROTOCOL
from virtual_kubelet.sdk import (
    Capabilities,
    ContainerIO,
    InvalidInput,
    NotFound,
    Pod,
    ProviderConfigError,
    ProviderContext,
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def context(tmp_path: Path) -> ProviderContext:
    return ProviderContext(
        node_name="vk-test",
        operating_system="linux",
        internal_ip="10.0.0.1",
        daemon_port=10250,
        state_dir=tmp_path,
    )


async def serve(routes: dict[str, Handler]) -> tuple[web.AppRunner, str]:
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_route("*", path, handler)
    runner = web.AppRunner(app, shutdown_timeout=0.1)  # streams left open end at once
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


def capabilities(*features: str, heartbeat: float = 15) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "protocol": PROTOCOL,
                "version": 1,
                "features": list(features),
                "heartbeatSeconds": heartbeat,
            }
        )

    return handler


def sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def status_of(name: str, uid: str, phase: str) -> Pod:
    return {"metadata": {"namespace": "ns", "name": name, "uid": uid}, "status": {"phase": phase}}


Scenario = Callable[[ExtendedWebProvider], Awaitable[None]]


def run_with(tmp_path: Path, routes: dict[str, Handler], scenario: Scenario, **config: Any) -> None:
    """Start a backend with `routes` and a provider for it, run `scenario`, stop both."""

    async def main() -> None:
        runner, url = await serve(routes)
        provider = ExtendedWebProvider(
            context(tmp_path), WebConfig(mode="extended", url=url, **config)
        )
        try:
            await provider.start()
            await scenario(provider)
        finally:
            await provider.stop()
            await runner.cleanup()

    asyncio.run(asyncio.wait_for(main(), 30))


async def nothing(provider: ExtendedWebProvider) -> None:
    pass


def test_hooks_follow_what_the_backend_advertises(tmp_path: Path) -> None:
    async def check(provider: ExtendedWebProvider) -> None:
        table = Capabilities.of(provider)
        assert table.run_in_container
        assert table.get_stats_summary
        assert not table.attach_to_container
        assert not table.port_forward
        assert not table.notify_pods  # no watch: the agent polls
        assert table.get_container_logs  # the original protocol has logs

    run_with(tmp_path, {"/capabilities": capabilities("exec", "stats", "teleport")}, check)


def test_a_backend_without_capabilities_is_served_as_the_original_protocol(
    tmp_path: Path,
) -> None:
    async def check(provider: ExtendedWebProvider) -> None:
        table = Capabilities.of(provider)
        assert not table.notify_pods
        assert not table.run_in_container
        assert not table.port_forward

    run_with(tmp_path, {}, check)  # every path answers 404


def test_required_features_missing_stop_the_start(tmp_path: Path) -> None:
    with pytest.raises(ProviderConfigError, match="does not offer exec, portForward"):
        run_with(
            tmp_path,
            {"/capabilities": capabilities("watch")},
            nothing,
            extended={"require": ["exec", "portForward"]},
        )


def test_a_typo_in_the_extended_settings_is_a_clear_config_error(tmp_path: Path) -> None:
    with pytest.raises(ProviderConfigError, match=r"extended\.wacth"):
        ExtendedWebProvider(
            context(tmp_path),
            WebConfig(mode="extended", url="http://127.0.0.1:1", extended={"wacth": False}),
        )


def test_wrong_credentials_name_the_token_file_never_the_token(tmp_path: Path) -> None:
    secret = "s3cr3t-token-value-1234"
    token_file = tmp_path / "token"
    token_file.write_text(secret + "\n")

    async def refuse(request: web.Request) -> web.Response:
        assert request.headers["Authorization"] == f"Bearer {secret}"
        return web.Response(status=401, text=f"bad token {secret}")  # a backend that echoes it

    with pytest.raises(ProviderConfigError) as refused:
        run_with(tmp_path, {"/capabilities": refuse}, nothing, token_file=str(token_file))
    message = str(refused.value)
    assert "401 Unauthorized" in message
    assert str(token_file) in message
    assert secret not in message


def test_the_status_stream_resyncs_after_a_drop(tmp_path: Path) -> None:
    """First connection: pods a and b, then the stream drops. Second: only a (now Succeeded).
    The provider reports b gone and a's new status; nothing is polled."""
    connections: list[int] = []
    polled: list[str] = []
    second_may_start = asyncio.Event()

    async def watch(request: web.Request) -> web.StreamResponse:
        connections.append(1)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        if len(connections) == 1:
            await response.write(
                sse("pod", status_of("a", "ua", "Running"))
                + sse("pod", status_of("b", "ub", "Running"))
                + sse("node", {"capacity": {"cpu": "7", "pods": "9"}})
                + sse("synced", {})
            )
            await second_may_start.wait()
            return response  # the stream drops
        await response.write(sse("pod", status_of("a", "ua", "Succeeded")) + sse("synced", {}))
        await asyncio.sleep(3600)  # stays open until the provider stops
        return response

    async def poll(request: web.Request) -> web.Response:
        polled.append(request.path)
        return web.Response(status=500)

    async def check(provider: ExtendedWebProvider) -> None:
        assert Capabilities.of(provider).notify_pods
        node: dict[str, Any] = {"metadata": {"name": "vk-test"}, "status": {}}
        provider._node.attach(node)  # what configure_node does, without the node endpoints
        nodes: list[dict[str, Any]] = []
        provider.notify_node_status(nodes.append)
        pushed: asyncio.Queue[Pod] = asyncio.Queue()
        provider.notify_pods(pushed.put_nowait)

        async def next_push() -> tuple[str, str | None]:
            pod = await asyncio.wait_for(pushed.get(), 10)
            return pod["metadata"]["name"], pod.get("status", {}).get("phase")

        assert {await next_push(), await next_push()} == {("a", "Running"), ("b", "Running")}
        assert nodes[-1]["status"]["capacity"] == {"cpu": "7", "pods": "9"}
        second_may_start.set()
        assert await next_push() == ("a", "Succeeded")
        assert await next_push() == ("b", None)  # gone while the stream was down: look again
        assert len(connections) == 2
        assert polled == []

    run_with(
        tmp_path,
        {"/capabilities": capabilities("watch"), "/watch": watch, "/getPodStatus": poll},
        check,
    )


def test_a_status_pushed_before_the_create_is_answered_still_gets_a_lost_pod_back(
    tmp_path: Path,
) -> None:
    """The backend pushes the new pod Running on its stream before it answers POST /createPod
    (the stream and the create are two connections: either may arrive first). That status
    counts: when the backend later restarts without the pod, the provider creates it again."""
    creates: asyncio.Queue[str] = asyncio.Queue()
    running_seen = asyncio.Event()
    streams: list[asyncio.Queue[bytes | None]] = []

    async def watch(request: web.Request) -> web.StreamResponse:
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        streams.append(queue)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(sse("synced", {}))  # every connection: no pods (a fresh backend)
        while (frame := await queue.get()) is not None:
            await response.write(frame)
        return response  # the backend "restarts": the stream ends, its pods are gone

    async def create_pod(request: web.Request) -> web.Response:
        pod = await request.json()
        creates.put_nowait(pod["metadata"]["uid"])
        if len(streams) == 1:
            streams[0].put_nowait(sse("pod", status_of("p", "u1", "Running")))
            await running_seen.wait()  # the provider has the status before the answer
        return web.Response(status=201)

    async def check(provider: ExtendedWebProvider) -> None:
        def pushed(pod: Pod) -> None:
            if pod.get("status", {}).get("phase") == "Running":
                running_seen.set()

        provider.notify_pods(pushed)
        assert provider._stream is not None
        await asyncio.wait_for(provider._stream.synced.wait(), 10)
        await provider.create_pod(
            {"metadata": {"namespace": "ns", "name": "p", "uid": "u1"}, "spec": {}}
        )
        assert await asyncio.wait_for(creates.get(), 10) == "u1"
        streams[0].put_nowait(None)
        assert await asyncio.wait_for(creates.get(), 10) == "u1"  # given back

    run_with(
        tmp_path,
        {"/capabilities": capabilities("watch"), "/watch": watch, "/createPod": create_pod},
        check,
        extended={"reconnect_max_interval": 0.2},
    )


def test_a_silent_stream_is_reopened_and_the_node_turns_unready_when_it_stays_down(
    tmp_path: Path,
) -> None:
    opened: asyncio.Queue[int] = asyncio.Queue()

    async def silent(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        opened.put_nowait(1)
        await asyncio.sleep(3600)  # no events, no heartbeat
        return response

    async def check(provider: ExtendedWebProvider) -> None:
        started = asyncio.get_running_loop().time()
        for _ in range(3):  # silence for 3 heartbeats ends each connection; a new one opens
            await asyncio.wait_for(opened.get(), 10)
        while provider._stream is not None and provider._stream.down_since is not None:
            if asyncio.get_running_loop().time() - started > 0.5:  # past unhealthy_after
                break
            await asyncio.wait_for(opened.get(), 10)
        # Never synced: the ping fails, saying why.
        with pytest.raises(BackendError, match=r"GET /watch.*no event or heartbeat for 0\.3 s"):
            await provider.ping()

    run_with(
        tmp_path,
        {"/capabilities": capabilities("watch", heartbeat=0.1), "/watch": silent},
        check,
        extended={"unhealthy_after": 0.5, "reconnect_max_interval": 0.2},
    )


def test_exec_errors_reach_the_client_as_sdk_errors(tmp_path: Path) -> None:
    async def exec_(request: web.Request) -> web.StreamResponse:
        container = request.query["containerName"]
        if container == "missing":
            return web.Response(status=404)
        ws = web.WebSocketResponse(protocols=[SUBPROTOCOL])
        await ws.prepare(request)
        if container == "broken":
            await ws.close()  # no status at all
        elif container == "garbage":
            await ws.send_str("not binary")
        else:
            error = {"error": "bad", "reason": container}
            await ws.send_bytes(b"\x03" + json.dumps(error).encode())
        return ws

    async def check(provider: ExtendedWebProvider) -> None:
        io = ContainerIO(stdin=None, stdout=None, stderr=None)

        async def run(container: str) -> int:
            return await provider.run_in_container("ns", "p", container, ["true"], io)

        with pytest.raises(NotFound, match="GET /exec answered 404"):
            await run("missing")
        with pytest.raises(NotFound, match="exec in ns/p/NotFound: bad"):
            await run("NotFound")
        with pytest.raises(InvalidInput, match="bad"):
            await run("InvalidInput")
        with pytest.raises(BackendError, match="bad"):
            await run("Other")
        with pytest.raises(BackendUnavailable, match="closed the stream without a status"):
            await run("broken")
        with pytest.raises(BadResponse, match="TEXT message"):
            await run("garbage")

    run_with(tmp_path, {"/capabilities": capabilities("exec"), "/exec": exec_}, check)


def test_the_example_config_shows_the_extended_defaults() -> None:
    example = Path(__file__).parents[2] / "examples" / "web" / "web-provider.yaml"
    config = load_config(example, {})
    assert ExtendedConfig.model_validate(config.extended) == ExtendedConfig()
