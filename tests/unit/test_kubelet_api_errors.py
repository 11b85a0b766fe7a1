"""What a kubelet API client is told when the provider fails or lacks a hook: one mapping
(NotFound 404, InvalidInput 400, missing hook or NotImplementedError 501, anything else 500),
seen over real HTTP on a loopback port."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from virtual_kubelet.kubelet_api.api import KubeletApi
from virtual_kubelet.kubelet_api.auth import Authenticator, Authorizer
from virtual_kubelet.kubelet_api.certs import ServingIdentity, self_signed, server_context
from virtual_kubelet.kubelet_api.http import KubeletHttpServer, Request, Responder, Router
from virtual_kubelet.kubelet_api.provider_errors import provider_failure
from virtual_kubelet.sdk import (
    ContainerIO,
    InvalidInput,
    LogOptions,
    NotFound,
    Pod,
    Provider,
    ProviderContext,
)


class _NoHooks(Provider):
    """Only the required methods: every optional kubelet API route answers 501."""

    async def create_pod(self, pod: Pod) -> None: ...
    async def update_pod(self, pod: Pod) -> None: ...
    async def delete_pod(self, pod: Pod) -> None: ...
    async def get_pod(self, namespace: str, name: str) -> Pod | None:
        return {"metadata": {"namespace": namespace, "name": name}}

    async def list_pods(self) -> list[Pod]:
        return []


class _Failing(_NoHooks):
    """Has logs and stats; the container name says how the logs fail."""

    def get_container_logs(
        self, namespace: str, pod: str, container: str, options: LogOptions
    ) -> AsyncIterator[bytes]:
        return self._logs(container)

    async def _logs(self, container: str) -> AsyncIterator[bytes]:
        if container == "gone":
            raise NotFound(f"container {container} not found")
        if container == "bad":
            raise InvalidInput("logs of this container cannot be read")
        if container == "refused":
            raise NotImplementedError("logs are off in this provider's config")
        if container == "broken":
            raise RuntimeError("secret-value-that-must-not-leak")
        yield b"hello\n"

    async def get_stats_summary(self) -> dict[str, Any]:
        raise RuntimeError("secret-value-that-must-not-leak")

    async def run_in_container(
        self, namespace: str, pod: str, container: str, command: list[str], io: ContainerIO
    ) -> int:
        if container == "gone":
            raise NotFound(f"container {container} not found")
        raise RuntimeError("secret-value-that-must-not-leak")


def _serve(
    provider: Provider, requests: list[str], *, websocket: bool = False
) -> list[tuple[int, str]]:
    """GET each path from the kubelet port serving `provider` (anonymous, always allowed); with
    `websocket`, open a v4 exec session instead and answer what its error channel said."""
    workdir = provider.context.state_dir / "tls"
    cert, key = self_signed(ServingIdentity("n1", ("127.0.0.1",)))

    async def main() -> list[tuple[int, str]]:
        api = KubeletApi(provider, "n1", list)
        server = KubeletHttpServer(
            api.router,
            Authenticator(None, anonymous=True),
            Authorizer(None, "n1", always_allow=True),
            server_context(cert, key, None, workdir),
        )
        listener = socket.create_server(("127.0.0.1", 0))
        port = await server.start(listener)
        answers = []
        try:
            async with aiohttp.ClientSession() as session:
                for path in requests:
                    url = f"https://127.0.0.1:{port}{path}"
                    if websocket:
                        answers.append(await _error_channel(session, url))
                        continue
                    async with session.get(url, ssl=False) as response:
                        answers.append((response.status, await response.text()))
        finally:
            await server.stop()
            listener.close()
        return answers

    return asyncio.run(main())


async def _error_channel(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    """The Status a v4 exec client reads from channel 3 (the code, and the message)."""
    async with session.ws_connect(url, ssl=False, protocols=["v4.channel.k8s.io"]) as ws:
        async for message in ws:
            if message.type is aiohttp.WSMsgType.BINARY and message.data[:1] == b"\x03":
                status = orjson.loads(message.data[1:])
                return status["code"], status["message"]
    raise AssertionError("the session ended without a Status on the error channel")


def _context(tmp_path: Path) -> ProviderContext:
    return ProviderContext("n1", "linux", "198.18.0.9", 10250, state_dir=tmp_path)


def test_routes_whose_hook_the_provider_lacks_answer_501_naming_it(tmp_path: Path) -> None:
    answers = _serve(
        _NoHooks(_context(tmp_path)),
        [
            "/containerLogs/ns/p/c",
            "/stats/summary",
            "/metrics/resource",
            "/exec/ns/p/c?command=ls&output=1",
            "/attach/ns/p/c?output=1",
            "/portForward/ns/p",
        ],
    )
    hooks = ["get_container_logs", "get_stats_summary", "get_stats_summary"]
    hooks += ["run_in_container", "attach_to_container", "port_forward"]
    for (status, text), hook in zip(answers, hooks, strict=True):
        assert status == 501
        assert f"{hook} is not implemented by the _NoHooks provider" in text


def test_provider_errors_become_one_status_each(tmp_path: Path) -> None:
    answers = _serve(
        _Failing(_context(tmp_path)),
        [
            "/containerLogs/ns/p/ok",
            "/containerLogs/ns/p/gone",
            "/containerLogs/ns/p/bad",
            "/containerLogs/ns/p/refused",
            "/containerLogs/ns/p/broken",
            "/stats/summary",
        ],
    )
    assert answers[0] == (200, "hello\n")
    assert answers[1] == (404, "container gone not found\n")
    assert answers[2] == (400, "logs of this container cannot be read\n")
    assert answers[3] == (501, "logs are off in this provider's config\n")
    for status, text in answers[4:]:
        assert status == 500
        assert "RuntimeError" in text
        assert "secret-value" not in text  # the details stay in the agent's log


def test_a_failing_stats_provider_still_gives_prometheus_an_answer(tmp_path: Path) -> None:
    [(status, text)] = _serve(_Failing(_context(tmp_path)), ["/metrics/resource"])
    assert status == 200
    assert "scrape_error 1" in text


def test_exec_failures_reach_the_client_as_the_same_message(tmp_path: Path) -> None:
    gone, broken = _serve(
        _Failing(_context(tmp_path)),
        ["/exec/ns/p/gone?command=ls&output=1", "/exec/ns/p/broken?command=ls&output=1"],
        websocket=True,
    )
    # Once the session is upgraded the kubelet reports every failure as an InternalError Status.
    assert gone == (500, "Internal error occurred: container gone not found")
    assert broken[0] == 500
    assert "RuntimeError" in broken[1]
    assert "secret-value" not in broken[1]


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (NotFound("x"), 404),
        (InvalidInput("x"), 400),
        (NotImplementedError("x"), 501),
        (RuntimeError("x"), 500),
        (KeyError("x"), 500),
    ],
)
def test_the_mapping(error: Exception, status: int) -> None:
    assert provider_failure(error).status == status


def test_stopping_the_server_under_an_open_stream_logs_no_error(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """`kubectl logs -f` open while the agent shuts down: the stream ends, and no ERROR traceback
    ("Exception in callback ...") lands in the agent's log."""
    streaming = asyncio.Event()
    cert, key = self_signed(ServingIdentity("n1", ("127.0.0.1",)))

    async def forever(request: Request, responder: Responder) -> None:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"first line\n"
            streaming.set()
            await asyncio.Event().wait()
            yield b""  # never reached

        await responder.stream(200, chunks())

    async def main() -> None:
        router = Router()
        router.add("/follow", ("GET",), forever)
        server = KubeletHttpServer(
            router,
            Authenticator(None, anonymous=True),
            Authorizer(None, "n1", always_allow=True),
            server_context(cert, key, None, tmp_path),
        )
        listener = socket.create_server(("127.0.0.1", 0))
        port = await server.start(listener)
        try:
            client = ssl.create_default_context()
            client.check_hostname, client.verify_mode = False, ssl.CERT_NONE
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client)
            writer.write(b"GET /follow HTTP/1.1\r\nHost: x\r\n\r\n")
            await writer.drain()
            await asyncio.wait_for(streaming.wait(), 10)
            await server.stop()
            # The client sees its stream end rather than hang.
            rest = await asyncio.wait_for(reader.read(), 10)
            assert b"first line" in rest
            writer.close()
            await asyncio.sleep(0)  # let asyncio run the connection task's done-callbacks
        finally:
            listener.close()

    with caplog.at_level("ERROR", logger="asyncio"):
        asyncio.run(main())
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text
