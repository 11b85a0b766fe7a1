"""The web provider's shared transport, against real HTTP servers on loopback and unix sockets:
404 by status code whatever the reason phrase, garbage and oversized JSON as clear errors,
transport errors retried with back-off (and a create never sent twice), the bearer token re-read
when its file changes, base URLs as the original resolved them."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from virtual_kubelet.providers.web.backoff import Backoff
from virtual_kubelet.providers.web.endpoint import Endpoint, EndpointError
from virtual_kubelet.providers.web.errors import (
    BackendHTTPError,
    BackendUnavailable,
    BadResponse,
    Redactor,
)
from virtual_kubelet.providers.web.token import TokenFile, TokenFileError
from virtual_kubelet.providers.web.transport import Transport, check
from virtual_kubelet.sdk import NotFound

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
FAST = Backoff(initial=0.05, multiplier=1.5, max_interval=0.2, max_elapsed=3.0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A real aiohttp server with the routes a test gives it; records what it was sent."""

    def __init__(self, routes: dict[tuple[str, str], Handler]) -> None:
        self.routes = routes
        self.seen: list[tuple[str, str, dict[str, str], bytes]] = []
        self.runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append((request.method, request.path_qs, dict(request.headers), body))
        handler = self.routes.get((request.method, request.path))
        if handler is None:
            return web.Response(status=404, reason="NOT FOUND", text="<h1>Not Found</h1>")
        return await handler(request)

    async def start(self, port: int | None = None, unix: str | None = None) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site: web.BaseSite
        if unix is not None:
            site = web.UnixSite(self.runner, unix)
        else:
            site = web.TCPSite(self.runner, "127.0.0.1", port)
        await site.start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))  # type: ignore[arg-type]


def json_answer(payload: bytes, status: int = 200) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=payload, status=status, content_type="application/json")

    return handler


# --- base URLs -----------------------------------------------------------------------------------


def test_web_mode_drops_the_path_of_the_base_url_as_the_original_did() -> None:
    endpoint = Endpoint.parse("http://backend:3000/api/", keep_path=False)
    assert endpoint.url("/createPod") == "http://backend:3000/createPod"
    assert endpoint.dropped_path == "/api"
    kept = Endpoint.parse("http://backend:3000/api/", keep_path=True)
    assert kept.url("/create") == "http://backend:3000/api/create"


def test_unix_socket_urls_in_both_spellings() -> None:
    plain = Endpoint.parse("unix:///run/plugin.sock", keep_path=True)
    assert plain.socket_path == "/run/plugin.sock"
    assert plain.url("/status") == "http://localhost/status"
    encoded = Endpoint.parse("http+unix://%2Frun%2Fplugin.sock/v1", keep_path=True)
    assert encoded.socket_path == "/run/plugin.sock"
    assert encoded.url("/status") == "http://localhost/v1/status"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("ftp://x", "must start with"),
        ("http://user:pw@x", "credentials"),
        ("unix://relative.sock", "absolute"),
        ("http://x:notaport", "not a URL"),
    ],
)
def test_bad_urls_are_refused_with_a_reason(url: str, says: str) -> None:
    with pytest.raises(EndpointError, match=says):
        Endpoint.parse(url, keep_path=False)


# --- answers -------------------------------------------------------------------------------------


def test_not_found_is_decided_by_status_code_whatever_the_reason_phrase() -> None:
    async def scenario() -> None:
        server = Server({})
        port = free_port()
        await server.start(port)
        transport = Transport(Endpoint.parse(f"http://127.0.0.1:{port}", keep_path=False))
        await transport.start()
        try:
            response = await transport.request("GET", "/getPod", query={"namespace": "a"})
            assert (response.status, response.reason) == (404, "NOT FOUND")  # Flask's phrase
            with pytest.raises(NotFound):
                check(response)
            # Every request says it is JSON, GETs included, as the original's did.
            assert server.seen[0][2]["Content-Type"] == "application/json"
        finally:
            await transport.close()
            await server.stop()

    run(scenario())


def test_garbage_empty_and_oversized_json_are_clear_errors() -> None:
    async def scenario() -> None:
        server = Server(
            {
                ("GET", "/garbage"): json_answer(b"<html>oops</html>"),
                ("GET", "/empty"): json_answer(b""),
                ("GET", "/huge"): json_answer(b"[" + b"1," * 5000 + b"1]"),
            }
        )
        port = free_port()
        await server.start(port)
        transport = Transport(
            Endpoint.parse(f"http://127.0.0.1:{port}", keep_path=False), max_json_bytes=4096
        )
        await transport.start()
        try:
            with pytest.raises(BadResponse, match=r"GET /garbage answered 200 .* not JSON"):
                await transport.get_json("/garbage")
            with pytest.raises(BadResponse, match="empty body"):
                await transport.get_json("/empty")
            with pytest.raises(BadResponse, match="over the limit of 4096"):
                await transport.get_json("/huge")
        finally:
            await transport.close()
            await server.stop()

    run(scenario())


def test_http_errors_are_not_retried_and_quote_a_redacted_excerpt() -> None:
    async def scenario() -> None:
        async def fail(request: web.Request) -> web.Response:
            return web.Response(status=500, text="could not start: PASSWORD=hunter22 rejected")

        server = Server({("POST", "/createPod"): fail})
        port = free_port()
        await server.start(port)
        transport = Transport(Endpoint.parse(f"http://127.0.0.1:{port}", keep_path=False))
        await transport.start()
        try:
            response = await transport.request("POST", "/createPod", body={"a": 1})
            with pytest.raises(BackendHTTPError) as caught:
                check(response, Redactor(["hunter22"]))
            message = str(caught.value)
            assert message.startswith("POST /createPod answered 500 Internal Server Error")
            assert "hunter22" not in message
            assert "[redacted]" in message
            assert len(server.seen) == 1
        finally:
            await transport.close()
            await server.stop()

    run(scenario())


def test_a_refused_connection_is_retried_until_the_backend_comes_up() -> None:
    async def scenario() -> None:
        port = free_port()
        server = Server({("POST", "/createPod"): json_answer(b"{}")})
        transport = Transport(
            Endpoint.parse(f"http://127.0.0.1:{port}", keep_path=False), retry=FAST
        )
        await transport.start()
        try:
            # The backend starts only after the first attempt was refused.
            request = asyncio.create_task(transport.request("POST", "/createPod", body={}))
            while not request.done() and not server.seen:
                await asyncio.sleep(0.05)
                if server.runner is None:
                    await server.start(port)
            response = await request
            assert response.status == 200
            assert len(server.seen) == 1  # sent once: the refused tries never reached anyone
        finally:
            await transport.close()
            await server.stop()

    run(scenario())


def test_a_backend_that_stays_down_gives_a_clear_error_after_the_retry_budget() -> None:
    async def scenario() -> None:
        port = free_port()
        transport = Transport(
            Endpoint.parse(f"http://127.0.0.1:{port}", keep_path=False),
            retry=Backoff(initial=0.05, max_interval=0.1, max_elapsed=0.5),
        )
        await transport.start()
        try:
            with pytest.raises(
                BackendUnavailable, match=r"GET /getPods: no answer .*\(tried \d+ times"
            ):
                await transport.get_json("/getPods")
        finally:
            await transport.close()

    run(scenario())


def test_a_hanging_backend_times_out_and_a_create_is_not_sent_twice() -> None:
    async def scenario() -> None:
        release = asyncio.Event()

        async def hang(request: web.Request) -> web.Response:
            await release.wait()
            return web.Response(text="{}")

        server = Server({("POST", "/createPod"): hang, ("GET", "/getPods"): hang})
        port = free_port()
        await server.start(port)
        transport = Transport(
            Endpoint.parse(f"http://127.0.0.1:{port}", keep_path=False),
            request_timeout=0.3,
            retry=Backoff(initial=0.05, max_interval=0.1, max_elapsed=1.0),
        )
        await transport.start()
        try:
            with pytest.raises(BackendUnavailable, match="timed out"):
                await transport.request("POST", "/createPod", body={})
            assert [s[0] for s in server.seen] == ["POST"]
            with pytest.raises(BackendUnavailable, match="timed out"):
                await transport.get_json("/getPods")
            assert sum(1 for s in server.seen if s[0] == "GET") > 1  # reads are retried
        finally:
            release.set()
            await transport.close()
            await server.stop()

    run(scenario())


# --- token and unix socket -----------------------------------------------------------------------


def test_the_bearer_token_is_re_read_when_its_file_changes(tmp_path: Path) -> None:
    token_path = tmp_path / "token"
    token_path.write_text("first-token\n")
    token = TokenFile(token_path)
    assert token.token() == "first-token"
    token_path.write_text("second-token-longer\n")
    token._checked_at = float("-inf")  # skip the once-a-second throttle, not the change check
    assert token.token() == "second-token-longer"
    token_path.write_text("   \n")
    os.utime(token_path, ns=(1, 1))
    token._checked_at = float("-inf")
    with pytest.raises(TokenFileError, match="is empty") as caught:
        token.token()
    assert "second-token" not in str(caught.value)


def test_requests_over_a_unix_socket_carry_the_token(tmp_path: Path) -> None:
    async def scenario() -> None:
        sock = str(tmp_path / "plugin.sock")
        server = Server({("GET", "/status"): json_answer(b"[]")})
        await server.start(unix=sock)
        token_path = tmp_path / "token"
        token_path.write_text("s3cr3t-token")
        transport = Transport(
            Endpoint.parse(f"unix://{sock}", keep_path=True), token=TokenFile(token_path)
        )
        await transport.start()
        try:
            assert await transport.get_json("/status", body=[]) == []
            method, path, headers, body = server.seen[0]
            assert (method, path, body) == ("GET", "/status", b"[]")
            assert headers["Authorization"] == "Bearer s3cr3t-token"
        finally:
            await transport.close()
            await server.stop()

    run(scenario())


def test_streamed_answers_arrive_in_chunks_and_errors_still_map() -> None:
    async def scenario() -> None:
        async def logs(request: web.Request) -> web.StreamResponse:
            response = web.StreamResponse()
            await response.prepare(request)
            for line in (b"one\n", b"two\n"):
                await response.write(line)
            await response.write_eof()
            return response

        server = Server({("GET", "/getLogs"): logs})
        port = free_port()
        await server.start(port)
        transport = Transport(Endpoint.parse(f"http://127.0.0.1:{port}", keep_path=True))
        await transport.start()
        try:
            async with transport.stream("GET", "/getLogs", body={}) as chunks:
                assert b"".join([c async for c in chunks]) == b"one\ntwo\n"
            with pytest.raises(NotFound):
                async with transport.stream("GET", "/nothing") as chunks:
                    pass
        finally:
            await transport.close()
            await server.stop()

    run(scenario())


def test_backoff_grows_by_half_with_jitter_up_to_its_cap() -> None:
    delays = Backoff(initial=0.5, multiplier=1.5, max_interval=1.0, jitter=0.5).delays(lambda: 0.5)
    assert [round(next(delays), 3) for _ in range(4)] == [0.5, 0.75, 1.0, 1.0]
    low = Backoff(jitter=0.5).delays(lambda: 0.0)
    assert next(low) == 0.25
    assert Backoff(max_elapsed=1.0).allows(0.5, 0.4)
    assert not Backoff(max_elapsed=1.0).allows(0.8, 0.4)
