"""Slurm's REST API (`slurmrestd`, OpenAPI plugin `v0.0.38` of Slurm 22.05) for the calls the
CLI backend makes with sbatch, squeue, scancel and sinfo: submit, all jobs in one GET, signal or
cancel, nodes and partitions. There is no official Python client for slurmrestd, so this is a
small aiohttp client of the documented endpoints, over a unix socket (`unix:/path`, slurmrestd's
`rest_auth/local`) or HTTP (`http://host:port`, `rest_auth/jwt` with a token read from a file or
an environment variable on every call, so that a rotated token is picked up). The token is a
secret: it goes into the request header only, never into a log line or an error."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import aiohttp
import orjson

from .cli import SlurmCallFailed
from .config import SlurmConfig
from .node import GPU_GRES, SlurmNode

#: sbatch options the provider uses -> slurmrestd job properties (v0.0.38).
_STRING_OPTIONS = {
    "job-name": "name",
    "comment": "comment",
    "chdir": "current_working_directory",
    "output": "standard_output",
    "partition": "partition",
    "account": "account",
    "qos": "qos",
    "reservation": "reservation",
    "gres": "gres",
}
_INT_OPTIONS = {"ntasks": "tasks", "cpus-per-task": "cpus_per_task", "time": "time_limit"}


def job_properties(sbatch_args: list[str], environment: dict[str, str]) -> dict[str, Any]:
    """The `job` object of POST job/submit for what `sbatch <sbatch_args>` would submit.
    slurmrestd wants the batch script's environment spelt out (the CLI's `--export=NONE`)."""
    job: dict[str, Any] = {"environment": dict(environment)}
    for arg in sbatch_args:
        if not arg.startswith("--"):
            raise ValueError(f"unexpected sbatch argument {arg!r}")
        key, _, value = arg[2:].partition("=")
        if key in ("parsable", "export"):
            continue  # the answer is JSON; the environment is given above
        if key in _STRING_OPTIONS:
            job[_STRING_OPTIONS[key]] = value
        elif key in _INT_OPTIONS:
            job[_INT_OPTIONS[key]] = int(value)
        elif key == "nodes":
            job["nodes"] = [int(value), int(value)]
        elif key == "mem":
            if not value.endswith("M"):
                raise ValueError(f"--mem={value}: expected MiB")
            job["memory_per_node"] = int(value[:-1])
        else:
            raise ValueError(f"sbatch option --{key} has no slurmrestd equivalent here")
    return job


def _errors(body: dict[str, Any]) -> str:
    """Slurm's own words from an answer's `errors` list ("" when there are none)."""
    words = []
    for error in body.get("errors") or []:
        if isinstance(error, dict):
            words.append(str(error.get("description") or error.get("error") or error))
    return "; ".join(words)


#: slurmrestd's node states -> sinfo's short form (what node.py reads).
_SHORT_STATES = {
    "mixed": "mix",
    "allocated": "alloc",
    "unknown": "unk",
    "future": "futr",
    "error": "err",
    "completing": "comp",
}


def _short_state(node: dict[str, Any]) -> str:
    state = str(node.get("state") or "unknown").lower()
    flags = {str(f).lower() for f in node.get("state_flags") or []}
    if "maintenance" in flags:
        return "maint"
    if "drain" in flags:
        return "drain" if state in ("idle", "down") else "drng"
    return _SHORT_STATES.get(state, state) + ("*" if "not_responding" in flags else "")


def nodes_of(nodes_body: dict[str, Any], partitions_body: dict[str, Any]) -> list[SlurmNode]:
    """What `parse_sinfo` gives, from GET nodes and GET partitions: one entry per node and
    partition, the partition's state as sinfo's availability (up, down, drain, inact)."""
    partitions = {
        str(p.get("name")): p for p in partitions_body.get("partitions") or [] if p.get("name")
    }
    found = []
    for node in nodes_body.get("nodes") or []:
        gpus = sum(int(n) for n in GPU_GRES.findall(str(node.get("gres") or "")))
        state = _short_state(node)
        for name in node.get("partitions") or []:
            partition = partitions.get(str(name), {})
            available = str(partition.get("state") or "UP").lower()
            found.append(
                SlurmNode(
                    name=str(node.get("name")),
                    cpus=int(node.get("cpus") or 0),
                    memory_mb=int(node.get("real_memory") or 0),
                    gpus=gpus,
                    state=state,
                    partition=str(name),
                    available="inact" if available == "inactive" else available,
                    reason=str(node.get("reason") or ""),
                    default="default" in [str(f) for f in partition.get("flags") or []],
                )
            )
    return found


class SlurmRest:
    """One slurmrestd: its base URL and credentials, at most `max_concurrent_calls` calls at
    once, each with `call_timeout_seconds`."""

    def __init__(self, config: SlurmConfig) -> None:
        self.config = config
        url = config.rest_url or ""
        self.socket = url[len("unix:") :] if url.startswith("unix:") else None
        self.base = "http://slurmrestd" if self.socket else url.rstrip("/")
        self.prefix = f"/slurm/{config.rest_api_version}"
        self._slots = asyncio.Semaphore(config.max_concurrent_calls)
        self._session: aiohttp.ClientSession | None = None

    def _headers(self) -> dict[str, str]:
        config = self.config
        headers = {"Accept": "application/json"}
        token = None
        if config.rest_token_file is not None:
            try:
                token = config.rest_token_file.read_text().strip()
            except OSError as exc:
                raise SlurmCallFailed(
                    "slurmrestd", f"cannot read rest_token_file: {exc.strerror}"
                ) from None
        elif config.rest_token_env is not None:
            token = os.environ.get(config.rest_token_env)
            if not token:
                raise SlurmCallFailed("slurmrestd", f"${config.rest_token_env} is not set")
        if token is not None:
            # `scontrol token` prints SLURM_JWT=<token>; either form is fine in the file.
            headers["X-SLURM-USER-TOKEN"] = token.removeprefix("SLURM_JWT=")
        if config.rest_user_name is not None:
            headers["X-SLURM-USER-NAME"] = config.rest_user_name
        return headers

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = (
                aiohttp.UnixConnector(path=self.socket) if self.socket else aiohttp.TCPConnector()
            )
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def call(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """The JSON answer of `method prefix/path`; SlurmCallFailed with Slurm's own words when
        it lists errors, answers an HTTP error, cannot be reached or takes too long."""
        what = f"slurmrestd {method} {path}"
        headers = self._headers()
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = orjson.dumps(body)
        async with self._slots:
            try:
                async with self._client().request(
                    method,
                    f"{self.base}{self.prefix}/{path}",
                    headers=headers,
                    data=data,
                    params=params,
                    timeout=aiohttp.ClientTimeout(total=self.config.call_timeout_seconds),
                ) as answer:
                    raw = await answer.read()
                    status = answer.status
            except TimeoutError:
                raise SlurmCallFailed(
                    what, f"no answer within {self.config.call_timeout_seconds:g} s"
                ) from None
            except aiohttp.ClientError as exc:
                raise SlurmCallFailed(what, f"cannot reach slurmrestd: {exc}") from None
        try:
            parsed = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            parsed = None
        if not isinstance(parsed, dict):
            text = raw.decode(errors="replace").strip()[:200]
            raise SlurmCallFailed(what, f"HTTP {status}: {text or 'no JSON answer'}")
        errors = _errors(parsed)
        if errors or status >= 400:
            raise SlurmCallFailed(what, errors or f"HTTP {status}", errors)
        return parsed

    async def submit(self, script: str, sbatch_args: list[str], environment: dict[str, str]) -> str:
        """The new job's id."""
        body = {"script": script, "job": job_properties(sbatch_args, environment)}
        answer = await self.call("POST", "job/submit", body=body)
        job_id = answer.get("job_id")
        if job_id is None:
            raise SlurmCallFailed("slurmrestd POST job/submit", "the answer has no job_id")
        return str(job_id)

    async def jobs_json(self) -> str:
        """Every job, as `squeue --json` prints them (the same v0.0.38 data parser)."""
        return orjson.dumps(await self.call("GET", "jobs")).decode()

    async def signal(self, job_id: str, signal: str) -> None:
        """DELETE job/{id}: the signal goes to every process of the job, the batch script
        included (slurmrestd has no `scancel --full`/batch-only choice); KILL cancels it."""
        await self.call("DELETE", f"job/{job_id}", params={"signal": signal})

    async def nodes(self) -> list[SlurmNode]:
        nodes, partitions = await asyncio.gather(
            self.call("GET", "nodes"), self.call("GET", "partitions")
        )
        return nodes_of(nodes, partitions)
