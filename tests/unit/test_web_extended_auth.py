"""Authentication of the bridge, between the extended web provider and the reference backend
(examples/web-bridge, as a child process): mutual TLS plus a bearer token, a token rotated on both
sides without a restart, and a client without its certificate refused."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from virtual_kubelet.devcluster.pki import CertificateAuthority
from virtual_kubelet.providers.web.config import WebConfig
from virtual_kubelet.providers.web.errors import BackendHTTPError
from virtual_kubelet.providers.web.extended import ExtendedWebProvider
from virtual_kubelet.sdk import Capabilities, ProviderConfigError, ProviderContext

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "web-bridge"


class Pki:
    def __init__(self, directory: Path) -> None:
        self.ca = CertificateAuthority.create(directory)
        self.server = self.ca.issue(
            directory, "backend", common_name="backend", server_names=["127.0.0.1"]
        )
        self.client = self.ca.issue(directory, "agent", common_name="agent", client=True)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


@pytest.fixture
def backend(tmp_path: Path, pki: Pki) -> Iterator[tuple[str, Path]]:
    """The reference backend over mutual TLS with a token; yields its URL and token file."""
    token_file = tmp_path / "backend-token"
    token_file.write_text("first-token-abcdef\n")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "web_bridge_backend",
            "--listen",
            "127.0.0.1:0",
            "--token-file",
            str(token_file),
            "--tls-cert",
            str(pki.server.cert),
            "--tls-key",
            str(pki.server.key),
            "--client-ca",
            str(pki.ca.files.cert),
        ],
        cwd=EXAMPLE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("listening on https://"), line
        yield line.split()[-1], token_file
    finally:
        process.terminate()
        process.wait(15)


def provider(tmp_path: Path, url: str, **config: Any) -> ExtendedWebProvider:
    context = ProviderContext(
        node_name="vk-auth",
        operating_system="linux",
        internal_ip="10.0.0.1",
        daemon_port=10250,
        state_dir=tmp_path,
    )
    return ExtendedWebProvider(context, WebConfig(mode="extended", url=url, **config))


def test_mutual_tls_and_a_token_rotated_on_both_sides(
    tmp_path: Path, pki: Pki, backend: tuple[str, Path]
) -> None:
    url, backend_token = backend
    agent_token = tmp_path / "agent-token"
    agent_token.write_text("first-token-abcdef")
    tls = {"ca_file": pki.ca.files.cert, "cert_file": pki.client.cert, "key_file": pki.client.key}

    async def scenario() -> None:
        bridge = provider(tmp_path, url, token_file=agent_token, tls=tls)
        try:
            await bridge.start()
            assert Capabilities.of(bridge).run_in_container
            assert await bridge.list_pods() == []
            backend_token.write_text("second-token-123456\n")  # rotated at the backend first
            with pytest.raises(BackendHTTPError, match="401") as refused:
                await bridge.list_pods()
            assert "token-" not in str(refused.value)  # neither token appears
            agent_token.write_text("second-token-123456")  # then given to the agent
            deadline = asyncio.get_running_loop().time() + 10
            while True:  # the agent re-reads its token file (checked at most once a second)
                try:
                    assert await bridge.list_pods() == []
                    break
                except BackendHTTPError:
                    if asyncio.get_running_loop().time() > deadline:
                        raise
                    await asyncio.sleep(0.2)
        finally:
            await bridge.stop()

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_an_agent_without_its_client_certificate_is_refused(
    tmp_path: Path, pki: Pki, backend: tuple[str, Path]
) -> None:
    url, _ = backend
    agent_token = tmp_path / "agent-token"
    agent_token.write_text("first-token-abcdef")

    async def scenario() -> None:
        bridge = provider(
            tmp_path,
            url,
            token_file=agent_token,
            tls={"ca_file": pki.ca.files.cert},  # verifies the backend, presents nothing
            retry_max_elapsed=0.5,
            extended={"capabilities_timeout": 1},
        )
        try:
            # With TLS 1.3 the refusal comes after the handshake: the server hangs up.
            with pytest.raises(ProviderConfigError, match="did not answer GET /capabilities"):
                await bridge.start()
        finally:
            await bridge.stop()

    asyncio.run(asyncio.wait_for(scenario(), 60))
