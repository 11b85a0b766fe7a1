"""`mode: web` against backends as they really are (a real aiohttp server per test): no `/getPod`,
`/updatePod` only as POST, no `/deletePod`, a backend that forgets its pods, node endpoints that
fail or answer garbage; and the configuration, including WEB_ENDPOINT_URL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from virtual_kubelet.providers import registry
from virtual_kubelet.providers.web import load_config
from virtual_kubelet.providers.web.errors import BadResponse
from virtual_kubelet.providers.web.node_status import FAILED_REASON
from virtual_kubelet.providers.web.original import WebProvider
from virtual_kubelet.sdk import (
    Capabilities,
    InvalidInput,
    LogOptions,
    NotFound,
    ProviderConfigError,
    ProviderContext,
)

from .test_web_transport import Server, free_port, run


def make_pod(name: str = "p1", secret: str = "") -> dict[str, Any]:
    env = [{"name": "PASSWORD", "value": secret}] if secret else []
    return {
        "metadata": {"namespace": "ns", "name": name, "uid": f"uid-{name}"},
        "spec": {"containers": [{"name": "main", "image": "img", "env": env}]},
    }


class Backend:
    """A backend in the style of the smallest ones written for the original: pods in a dict,
    Flask-like 404s, and only the routes a test switches on."""

    def __init__(self, *, get_pod: bool = False, update: str | None = "POST", delete: bool = True):
        self.pods: dict[str, dict[str, Any]] = {}
        self.creates = 0
        self.node_answers: dict[str, tuple[int, bytes]] = {
            "/capacity": (200, b'{"cpu": "20", "memory": "100Gi", "pods": "20"}'),
            "/nodeConditions": (200, b'[{"type": "Ready", "status": "True", "reason": "Ok"}]'),
            "/nodeAddresses": (200, b'[{"type": "ExternalIP", "address": "203.0.113.9"}]'),
        }
        routes = {
            ("POST", "/createPod"): self.create,
            ("GET", "/getPodStatus"): self.status,
            ("GET", "/getPods"): self.list,
            ("GET", "/getContainerLogs"): self.logs,
        }
        if get_pod:
            routes["GET", "/getPod"] = self.get
        if update:
            routes[update, "/updatePod"] = self.update
        if delete:
            routes["DELETE", "/deletePod"] = self.delete
        for path in self.node_answers:
            routes["GET", path] = self.node
        self.server = Server(routes)

    @staticmethod
    def _key(pod: dict[str, Any]) -> str:
        return f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"

    async def create(self, request: web.Request) -> web.Response:
        pod = await request.json()
        pod["status"] = {"phase": "Running"}
        self.pods[self._key(pod)] = pod
        self.creates += 1
        return web.Response(status=201)

    async def update(self, request: web.Request) -> web.Response:
        pod = await request.json()
        if self._key(pod) not in self.pods:
            return web.Response(status=404, reason="NOT FOUND")
        self.pods[self._key(pod)].update(metadata=pod["metadata"])
        return web.Response()

    async def delete(self, request: web.Request) -> web.Response:
        pod = await request.json()
        if self.pods.pop(self._key(pod), None) is None:
            return web.Response(status=404, reason="NOT FOUND")
        return web.Response()

    def _find(self, request: web.Request) -> dict[str, Any] | None:
        return self.pods.get(f"{request.query['namespace']}/{request.query['name']}")

    async def get(self, request: web.Request) -> web.Response:
        pod = self._find(request)
        if pod is None:
            return web.Response(status=404, reason="NOT FOUND")
        return web.json_response(pod)

    async def status(self, request: web.Request) -> web.Response:
        pod = self._find(request)
        if pod is None:
            return web.Response(status=404, reason="NOT FOUND")
        return web.json_response(pod["status"])

    async def list(self, request: web.Request) -> web.Response:
        return web.json_response(list(self.pods.values()))

    async def logs(self, request: web.Request) -> web.Response:
        lines = [f"line {i}\n" for i in range(5)]
        tail = int(request.query["tail"])
        return web.Response(text="".join(lines[-tail:] if tail else lines))

    async def node(self, request: web.Request) -> web.Response:
        status, body = self.node_answers[request.path]
        return web.Response(status=status, body=body, content_type="application/json")


def context(tmp_path: Path, config: dict[str, Any]) -> ProviderContext:
    path = tmp_path / "web.json"
    path.write_text(json.dumps(config))
    return ProviderContext("vk-web", "linux", "198.18.0.9", 10250, config_path=path)


async def started(backend: Backend, tmp_path: Path, **config: Any) -> WebProvider:
    port = free_port()
    await backend.server.start(port)
    provider = registry.create(
        "web",
        context(
            tmp_path, {"url": f"http://127.0.0.1:{port}/api/", "retry_max_elapsed": 1, **config}
        ),
    )
    assert isinstance(provider, WebProvider)
    await provider.start()
    return provider


def test_without_get_pod_the_agents_record_and_get_pod_status_stand_in(tmp_path: Path) -> None:
    async def scenario() -> None:
        backend = Backend(get_pod=False)
        provider = await started(backend, tmp_path)
        try:
            await provider.create_pod(make_pod())
            pod = await provider.get_pod("ns", "p1")
            assert pod is not None
            assert pod["metadata"]["uid"] == "uid-p1"
            assert pod["status"] == {"phase": "Running"}
            assert await provider.get_pod("ns", "other") is None
            # The path of the base URL was dropped, as the original did.
            assert all(not path.startswith("/api") for _, path, _, _ in backend.server.seen)
        finally:
            await provider.stop()
            await backend.server.stop()

    run(scenario())


def test_update_falls_back_to_post_and_remembers_it(tmp_path: Path) -> None:
    async def scenario() -> None:
        backend = Backend(update="POST")
        provider = await started(backend, tmp_path)
        try:
            await provider.create_pod(make_pod())
            changed = make_pod()
            changed["metadata"]["labels"] = {"v": "2"}
            await provider.update_pod(changed)
            await provider.update_pod(changed)
            updates = [m for m, path, _, _ in backend.server.seen if path == "/updatePod"]
            assert updates == ["PUT", "POST", "POST"]
            assert backend.pods["ns/p1"]["metadata"]["labels"] == {"v": "2"}
            with pytest.raises(NotFound):
                await provider.update_pod(make_pod("unknown"))
        finally:
            await provider.stop()
            await backend.server.stop()

    run(scenario())


def test_without_update_pod_changes_stay_local(tmp_path: Path) -> None:
    async def scenario() -> None:
        backend = Backend(update=None)
        provider = await started(backend, tmp_path)
        try:
            await provider.create_pod(make_pod())
            await provider.update_pod(make_pod())  # no error: the backend is not told
            with pytest.raises(NotFound):
                await provider.update_pod(make_pod("unknown"))
        finally:
            await provider.stop()
            await backend.server.stop()

    run(scenario())


def test_without_delete_pod_deletion_is_refused_for_good_not_retried(tmp_path: Path) -> None:
    async def scenario() -> None:
        backend = Backend(delete=False)
        provider = await started(backend, tmp_path)
        try:
            await provider.create_pod(make_pod())
            with pytest.raises(InvalidInput, match="could not be told to delete"):
                await provider.delete_pod(make_pod())
            with pytest.raises(NotFound):  # a pod it does not know is simply gone
                await provider.delete_pod(make_pod("unknown"))
        finally:
            await provider.stop()
            await backend.server.stop()

    run(scenario())


def test_a_backend_that_lost_a_running_pod_gets_it_again(tmp_path: Path) -> None:
    async def scenario() -> None:
        backend = Backend()
        provider = await started(backend, tmp_path)
        try:
            await provider.create_pod(make_pod())
            assert await provider.get_pod_status("ns", "p1") == {"phase": "Running"}
            backend.pods.clear()  # restarted, state in memory
            assert await provider.get_pod_status("ns", "p1") == {"phase": "Running"}
            assert backend.creates == 2
            # A deleted pod is not brought back.
            await provider.delete_pod(make_pod())
            assert await provider.get_pod_status("ns", "p1") is None
            assert backend.creates == 2
        finally:
            await provider.stop()
            await backend.server.stop()

    run(scenario())


def test_secrets_sent_to_the_backend_never_come_back_in_errors(tmp_path: Path) -> None:
    async def scenario() -> None:
        async def echo(request: web.Request) -> web.Response:
            return web.Response(status=500, text=f"cannot run {await request.text()}")

        backend = Backend()
        backend.server.routes["POST", "/createPod"] = echo
        provider = await started(backend, tmp_path)
        try:
            with pytest.raises(Exception, match="POST /createPod answered 500") as caught:
                await provider.create_pod(make_pod(secret="correct-horse-battery"))
            assert "correct-horse-battery" not in str(caught.value)
        finally:
            await provider.stop()
            await backend.server.stop()

    run(scenario())


def test_garbage_status_and_listing_are_errors_not_crashes(tmp_path: Path) -> None:
    async def scenario() -> None:
        async def garbage(request: web.Request) -> web.Response:
            return web.Response(text="{not json")

        async def mixed(request: web.Request) -> web.Response:
            return web.json_response([{"metadata": {"namespace": "ns", "name": "ok"}}, 7, {}])

        backend = Backend()
        backend.server.routes["GET", "/getPodStatus"] = garbage
        backend.server.routes["GET", "/getPods"] = mixed
        provider = await started(backend, tmp_path)
        try:
            with pytest.raises(BadResponse, match=r"GET /getPodStatus answered 200 .* not JSON"):
                await provider.get_pod_status("ns", "p1")
            listed = await provider.list_pods()
            assert [p["metadata"]["name"] for p in listed] == ["ok"]
        finally:
            await provider.stop()
            await backend.server.stop()

    run(scenario())


def test_logs_send_tail_and_tail_zero_asks_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        backend = Backend()
        provider = await started(backend, tmp_path)
        try:

            async def logs(options: LogOptions) -> bytes:
                chunks = provider.get_container_logs("ns", "p1", "main", options)
                return b"".join([c async for c in chunks])

            assert await logs(LogOptions(tail_lines=2)) == b"line 3\nline 4\n"
            assert (await logs(LogOptions())).count(b"\n") == 5
            before = len(backend.server.seen)
            assert await logs(LogOptions(tail_lines=0)) == b""
            assert len(backend.server.seen) == before
            query = backend.server.seen[0][1]
            assert query.startswith("/getContainerLogs?namespace=ns&podName=p1&containerName=main")
        finally:
            await provider.stop()
            await backend.server.stop()

    run(scenario())


def test_node_comes_from_the_backend_and_survives_its_failures(tmp_path: Path) -> None:
    async def scenario() -> None:
        backend = Backend()
        provider = await started(
            backend, tmp_path, node_failure_threshold=2, node_refresh_interval=3600
        )
        pushed: list[dict[str, Any]] = []
        try:
            node = {
                "metadata": {"name": "vk-web"},
                "status": {
                    "capacity": {"cpu": "0"},
                    "addresses": [{"type": "InternalIP", "address": "198.18.0.9"}],
                    "conditions": [
                        {"type": "Ready", "status": "True", "reason": "KubeletReady"},
                        {"type": "DiskPressure", "status": "False"},
                    ],
                },
            }
            await provider.configure_node(node)
            provider.notify_node_status(pushed.append)
            assert node["status"]["capacity"] == {"cpu": "20", "memory": "100Gi", "pods": "20"}
            assert node["status"]["allocatable"] == node["status"]["capacity"]
            assert node["status"]["addresses"] == [
                {"type": "InternalIP", "address": "198.18.0.9"},
                {"type": "ExternalIP", "address": "203.0.113.9"},
                {"type": "Hostname", "address": "vk-web"},
            ]
            kinds = {c["type"]: c.get("reason") for c in node["status"]["conditions"]}
            assert kinds == {"Ready": "Ok", "DiskPressure": None}

            backend.node_answers["/capacity"] = (500, b"boom")
            backend.node_answers["/nodeConditions"] = (200, b'{"not": "a list"}')
            await provider._refresh_node()
            provider._node.publish()
            assert pushed == []  # one failure: last good values, still Ready
            await provider._refresh_node()
            provider._node.publish()
            ready = next(c for c in pushed[-1]["status"]["conditions"] if c["type"] == "Ready")
            assert ready["status"] == "False"
            assert ready["reason"] == FAILED_REASON
            assert "GET /capacity failed 2 times" in ready["message"]
            assert "not a list of conditions" in ready["message"]
            assert pushed[-1]["status"]["capacity"]["cpu"] == "20"  # last good value kept

            backend.node_answers["/capacity"] = (200, b'{"cpu": "8", "pods": "5"}')
            backend.node_answers["/nodeConditions"] = (404, b"")  # not offered: defaults stand
            await provider._refresh_node()
            provider._node.publish()
            ready = next(c for c in pushed[-1]["status"]["conditions"] if c["type"] == "Ready")
            assert ready["status"] == "True"
            assert pushed[-1]["status"]["capacity"] == {"cpu": "8", "pods": "5"}
        finally:
            await provider.stop()
            await backend.server.stop()

    run(scenario())


def test_exec_attach_and_port_forward_are_not_offered() -> None:
    capabilities = Capabilities.of(
        WebProvider(
            ProviderContext("n", "linux", "198.18.0.9", 10250),
            load_config(None, {"WEB_ENDPOINT_URL": "http://127.0.0.1:1"}),
        )
    )
    assert capabilities.get_container_logs
    assert not capabilities.run_in_container
    assert not capabilities.attach_to_container
    assert not capabilities.port_forward
    assert not capabilities.notify_pods  # the agent polls /getPodStatus


def test_configuration_errors_are_clear(tmp_path: Path) -> None:
    config = load_config(None, {"WEB_ENDPOINT_URL": "http://backend:3000/api"})
    assert config.endpoint().url("/getPods") == "http://backend:3000/getPods"
    with pytest.raises(ProviderConfigError, match=r"needs the backend's URL.*WEB_ENDPOINT_URL"):
        load_config(None, {})
    with pytest.raises(ProviderConfigError, match=r"url: .*must start with http://"):
        load_config(None, {"WEB_ENDPOINT_URL": "backend:3000"})
    path = tmp_path / "c.yaml"
    path.write_text("mode: interlink\n")
    with pytest.raises(ProviderConfigError, match="needs the backend's URL: `url`"):
        load_config(path, {"WEB_ENDPOINT_URL": "http://x"})  # the env var is for web mode only
    path.write_text("mode: soap\nurl: http://x\n")
    with pytest.raises(ProviderConfigError, match="mode: Input should be"):
        load_config(path, {})


def test_the_example_config_file_is_valid() -> None:
    example = Path(__file__).parents[2] / "examples" / "web" / "web-provider.yaml"
    config = load_config(example, {})
    assert config.mode == "web"
    assert config.endpoint().url("/capacity") == "http://127.0.0.1:3000/capacity"
