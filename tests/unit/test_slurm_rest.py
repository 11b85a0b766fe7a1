"""The slurm provider's slurmrestd backend without a Slurm: sbatch options as job properties,
nodes and partitions as sinfo would show them, the config's rules, and the client against a
small aiohttp server on a unix socket that answers as slurmrestd v0.0.38 does (headers, errors,
the token kept out of every error). The real slurmrestd is tests/integration/test_slurm_rest.py."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from pydantic import ValidationError

from virtual_kubelet.providers.slurm import script
from virtual_kubelet.providers.slurm.cli import SlurmCallFailed
from virtual_kubelet.providers.slurm.config import SlurmConfig
from virtual_kubelet.providers.slurm.node import capacity_of, unavailable
from virtual_kubelet.providers.slurm.rest import SlurmRest, job_properties, nodes_of

DOCS = Path(__file__).resolve().parents[2] / "docs" / "providers" / "slurm.md"


def test_every_config_key_is_documented() -> None:
    text = DOCS.read_text()
    missing = [key for key in SlurmConfig.model_fields if f"`{key}`" not in text]
    assert missing == []


def test_the_sbatch_options_become_job_properties() -> None:
    pod = {
        "metadata": {
            "name": "p",
            "namespace": "ns",
            "uid": "u-1",
            "annotations": {"slurm.virtual-kubelet.io/qos": "high"},
        },
        "spec": {
            "activeDeadlineSeconds": 120,
            "containers": [
                {
                    "name": "main",
                    "command": ["true"],
                    "resources": {
                        "limits": {"cpu": "1500m", "memory": "1Gi", "nvidia.com/gpu": "2"}
                    },
                }
            ],
        },
    }
    files = script.build(pod, SlurmConfig(partition="debug"), "node-1", "/jobs/u-1", {})
    job = job_properties(files.sbatch_args, {"PATH": "/usr/bin"})
    assert job == {
        "environment": {"PATH": "/usr/bin"},
        "name": "vk-ns-p",
        "comment": "vk:node-1:u-1",
        "current_working_directory": "/jobs/u-1",
        "standard_output": "/jobs/u-1/slurm-job.out",
        "nodes": [1, 1],
        "tasks": 1,
        "cpus_per_task": 2,
        "memory_per_node": 1024,
        "gres": "gpu:2",
        "time_limit": 2,
        "partition": "debug",
        "qos": "high",
    }
    with pytest.raises(ValueError, match="--exclusive has no slurmrestd equivalent"):
        job_properties(["--exclusive"], {})


def test_nodes_and_partitions_read_as_sinfo_would_show_them() -> None:
    nodes = {
        "nodes": [
            {
                "name": "a",
                "cpus": 4,
                "real_memory": 8000,
                "gres": "gpu:tesla:2(S:0)",
                "state": "mixed",
                "state_flags": [],
                "partitions": ["gpu", "closed"],
                "reason": "",
            },
            {
                "name": "b",
                "cpus": 8,
                "real_memory": 16000,
                "gres": "",
                "state": "idle",
                "state_flags": ["DRAIN"],
                "partitions": ["gpu"],
                "reason": "maintenance",
            },
        ]
    }
    partitions = {
        "partitions": [
            {"name": "gpu", "state": "UP", "flags": ["default"]},
            {"name": "closed", "state": "DOWN", "flags": []},
        ]
    }
    found = nodes_of(nodes, partitions)
    assert [(n.name, n.partition, n.state, n.available, n.default) for n in found] == [
        ("a", "gpu", "mix", "up", True),
        ("a", "closed", "mix", "down", False),
        ("b", "gpu", "drain", "up", True),
    ]
    assert capacity_of(found, "gpu") == {"cpu": "4", "memory": "8000Mi", "nvidia.com/gpu": "2"}
    assert unavailable(found, None) is None
    assert unavailable(found, "closed") == (
        "SlurmPartitionDown",
        "Slurm partition closed is DOWN: no new job starts there (running ones go on)",
    )


def test_the_rest_backend_needs_a_url_and_one_token_source(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="backend rest needs rest_url"):
        SlurmConfig(backend="rest")
    with pytest.raises(ValidationError, match="backend rest needs rest_url"):
        SlurmConfig(backend="rest", rest_url="localhost:6820")
    with pytest.raises(ValidationError, match="not both"):
        SlurmConfig(
            backend="rest",
            rest_url="http://h:1",
            rest_token_file=tmp_path / "t",
            rest_token_env="SLURM_JWT",
        )
    with pytest.raises(ValidationError, match="rest_api_version"):
        SlurmConfig(rest_api_version="0.0.38")


SECRET = "eyJsecret.token.value"


def _serve(
    answers: dict[str, tuple[int, dict[str, Any]]],
) -> tuple[web.Application, list[dict[str, Any]]]:
    """A slurmrestd look-alike on a unix socket: `answers` by `METHOD path`; it records each
    request's method, path, query, headers and body."""
    seen: list[dict[str, Any]] = []

    async def handle(request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else None
        seen.append(
            {
                "what": f"{request.method} {request.path}",
                "query": dict(request.query),
                "headers": dict(request.headers),
                "body": body,
            }
        )
        status, answer = answers.get(f"{request.method} {request.path}", (404, {}))
        return web.json_response({"meta": {}, "errors": [], **answer}, status=status)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app, seen


def test_the_client_sends_the_token_and_reports_slurms_words_never_the_token(
    tmp_path: Path,
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(f"SLURM_JWT={SECRET}\n")
    socket_path = tmp_path / "rest.sock"
    app, seen = _serve(
        {
            "POST /slurm/v0.0.38/job/submit": (200, {"job_id": 42}),
            "GET /slurm/v0.0.38/jobs": (200, {"jobs": [{"job_id": 42}]}),
            "DELETE /slurm/v0.0.38/job/7": (
                500,
                {"errors": [{"error": "Invalid job id specified", "error_number": 2017}]},
            ),
        },
    )
    config = SlurmConfig(
        backend="rest",
        rest_url=f"unix:{socket_path}",
        rest_user_name="alice",
        rest_token_file=token_file,
    )

    async def body() -> None:
        runner = web.AppRunner(app)
        await runner.setup()
        await web.UnixSite(runner, str(socket_path)).start()
        client = SlurmRest(config)
        try:
            assert await client.submit("#!/bin/sh\n", ["--job-name=x"], {"PATH": "/bin"}) == "42"
            assert '"job_id":42' in await client.jobs_json()
            with pytest.raises(SlurmCallFailed, match="Invalid job id specified") as failed:
                await client.signal("7", "TERM")
            assert SECRET not in str(failed.value)
            token_file.unlink()
            with pytest.raises(SlurmCallFailed, match="cannot read rest_token_file"):
                await client.jobs_json()
        finally:
            await client.close()
            await runner.cleanup()

    asyncio.run(body())
    submit, listing, cancel = seen
    assert submit["headers"]["X-SLURM-USER-TOKEN"] == SECRET
    assert submit["headers"]["X-SLURM-USER-NAME"] == "alice"
    assert submit["body"] == {
        "script": "#!/bin/sh\n",
        "job": {"environment": {"PATH": "/bin"}, "name": "x"},
    }
    assert listing["what"] == "GET /slurm/v0.0.38/jobs"
    assert (cancel["what"], cancel["query"]) == ("DELETE /slurm/v0.0.38/job/7", {"signal": "TERM"})


def test_an_unreachable_slurmrestd_is_a_clear_error(tmp_path: Path) -> None:
    config = SlurmConfig(backend="rest", rest_url=f"unix:{tmp_path / 'nothing.sock'}")

    async def body() -> None:
        client = SlurmRest(config)
        try:
            with pytest.raises(SlurmCallFailed, match=re.escape("cannot reach slurmrestd")):
                await client.jobs_json()
        finally:
            await client.close()

    asyncio.run(body())
