"""Bearer tokens from exec plugins and token files: off the event loop, shared, cached, refreshed
ahead of expiry, and failing as the client's own error type without leaking the token."""

from __future__ import annotations

import asyncio
import datetime
import json
import os
from pathlib import Path

import pytest

from virtual_kubelet.devcluster import wait_until
from virtual_kubelet.kube import credentials as credentials_module
from virtual_kubelet.kube.client import KubeClient
from virtual_kubelet.kube.config import ClientConfig, ExecPlugin
from virtual_kubelet.kube.credentials import Credentials
from virtual_kubelet.kube.errors import ApiError, CredentialError


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _stamp(seconds: float) -> str:
    when = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=seconds)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _plugin(tmp_path: Path, body: str) -> ClientConfig:
    """A plugin script; `$RUNS` counts its runs (one line each), `$TOKEN` is what it prints."""
    script = tmp_path / "plugin.sh"
    script.write_text(f"#!/bin/sh\nset -e\necho run >> {tmp_path / 'runs'}\n{body}\n")
    script.chmod(0o755)
    return ClientConfig(
        server="https://127.0.0.1:1",
        source="test",
        exec_plugin=ExecPlugin(command=str(script)),
    )


def _credential(token: str, expires_in: float | None = None) -> str:
    status: dict[str, str] = {"token": token}
    if expires_in is not None:
        status["expirationTimestamp"] = _stamp(expires_in)
    doc = {"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential"}
    return json.dumps({**doc, "status": status})


def _runs(tmp_path: Path) -> int:
    path = tmp_path / "runs"
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_plugin_runs_off_the_event_loop(tmp_path: Path) -> None:
    """Once running, the plugin waits for a file that only the event loop creates: a plugin run
    that blocked the loop would give up after 10 s and fail."""
    release = tmp_path / "release"
    config = _plugin(
        tmp_path,
        f"for i in $(seq 500); do [ -e {release} ] && break; sleep 0.02; done\n"
        f"[ -e {release} ]\necho '{_credential('tok')}'",
    )

    async def scenario() -> str | None:
        creds = Credentials(config)
        pending = asyncio.create_task(creds.bearer_token())
        async with asyncio.timeout(20):
            await asyncio.to_thread(wait_until, lambda: _runs(tmp_path), 10, "the plugin to run")
            release.touch()
            return await pending

    assert asyncio.run(scenario()) == "tok"


def test_concurrent_requests_share_one_run_and_the_token_is_cached(tmp_path: Path) -> None:
    config = _plugin(tmp_path, f"echo '{_credential('tok', expires_in=3600)}'")

    async def scenario() -> list[str | None]:
        creds = Credentials(config)
        first = await asyncio.gather(*(creds.bearer_token() for _ in range(20)))
        return [*first, await creds.bearer_token()]

    assert set(asyncio.run(scenario())) == {"tok"}
    assert _runs(tmp_path) == 1


def test_refreshed_in_the_background_before_expiry(tmp_path: Path) -> None:
    """Past two thirds of its lifetime the old token is still handed out at once while a new one
    is fetched; requests then get the new one."""
    counter = tmp_path / "runs"
    config = _plugin(
        tmp_path,
        f'n=$(wc -l < {counter})\necho "{{\\"status\\": {{\\"token\\": \\"tok$n\\", '
        f'\\"expirationTimestamp\\": \\"{_stamp(90)}\\"}}}}"',
    )
    clock = FakeClock()

    async def scenario() -> tuple[str | None, str | None, str | None]:
        creds = Credentials(config, clock=clock)
        first = await creds.bearer_token()
        clock.now += 65  # past 2/3 of 90 s, before expiry
        during = await creds.bearer_token()
        refresh = creds._refresh
        assert refresh is not None
        await refresh
        after = await creds.bearer_token()
        await creds.close()
        return first, during, after

    assert asyncio.run(scenario()) == ("tok1", "tok1", "tok2")


def test_expired_token_waits_for_a_new_one(tmp_path: Path) -> None:
    counter = tmp_path / "runs"
    config = _plugin(
        tmp_path,
        f'n=$(wc -l < {counter})\necho "{{\\"status\\": {{\\"token\\": \\"tok$n\\", '
        f'\\"expirationTimestamp\\": \\"{_stamp(30)}\\"}}}}"',
    )
    clock = FakeClock()

    async def scenario() -> tuple[str | None, str | None]:
        creds = Credentials(config, clock=clock)
        first = await creds.bearer_token()
        clock.now += 31
        return first, await creds.bearer_token()

    assert asyncio.run(scenario()) == ("tok1", "tok2")


def test_unauthorized_forgets_the_plugin_token(tmp_path: Path) -> None:
    config = _plugin(tmp_path, f"echo '{_credential('tok')}'")

    async def scenario() -> None:
        creds = Credentials(config)
        await creds.bearer_token()
        creds.invalidate()
        await creds.bearer_token()

    asyncio.run(scenario())
    assert _runs(tmp_path) == 2


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("echo 'no such cluster' >&2\nexit 3", "exited with 3: no such cluster"),
        ("echo 'not json'", "printed no ExecCredential status"),
        ("echo '{\"status\": {}}'", "returned no token"),
        (
            'echo \'{"status": {"token": "sekrit", "expirationTimestamp": "soon"}}\'',
            "invalid expirationTimestamp",
        ),
    ],
)
def test_plugin_failures_are_api_errors_without_the_token(
    tmp_path: Path, body: str, message: str
) -> None:
    """`KubeClient.request()` raises only ApiError: a failing plugin is one, and nothing is sent."""
    config = _plugin(tmp_path, body)

    async def scenario() -> None:
        async with KubeClient(config) as client:
            await client.get("/api")

    with pytest.raises(ApiError) as caught:
        asyncio.run(scenario())
    assert isinstance(caught.value, CredentialError)
    assert message in str(caught.value)
    assert "plugin.sh" in str(caught.value)
    assert "sekrit" not in str(caught.value)


def test_missing_plugin_is_a_credential_error(tmp_path: Path) -> None:
    config = ClientConfig(
        server="https://127.0.0.1:1",
        source="test",
        exec_plugin=ExecPlugin(command=str(tmp_path / "absent")),
    )
    with pytest.raises(CredentialError, match="did not run"):
        asyncio.run(Credentials(config).bearer_token())


def test_hung_plugin_is_killed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(credentials_module, "PLUGIN_TIMEOUT", 0.5)
    pid_file = tmp_path / "pid"
    config = _plugin(tmp_path, f"echo $$ > {pid_file}\nexec sleep 60")
    with pytest.raises(CredentialError, match="did not finish within"):
        asyncio.run(Credentials(config).bearer_token())
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)


def test_token_file_is_cached_and_reread_about_once_a_minute(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("first\n")
    clock = FakeClock()
    config = ClientConfig(server="https://127.0.0.1:1", source="test", token_file=token_file)

    async def scenario() -> list[str | None]:
        creds = Credentials(config, clock=clock)
        seen = [await creds.bearer_token()]
        token_file.write_text("rotated\n")
        clock.now += 30
        seen.append(await creds.bearer_token())  # cached: not re-read yet
        clock.now += 31
        seen.append(await creds.bearer_token())  # a minute on: re-read
        token_file.unlink()
        clock.now += 61
        seen.append(await creds.bearer_token())  # unreadable: the last token stays
        return seen

    assert asyncio.run(scenario()) == ["first", "first", "rotated", "rotated"]


def test_unreadable_token_file_is_a_credential_error(tmp_path: Path) -> None:
    config = ClientConfig(
        server="https://127.0.0.1:1", source="test", token_file=tmp_path / "absent"
    )
    with pytest.raises(CredentialError, match="cannot read token file"):
        asyncio.run(Credentials(config).bearer_token())
