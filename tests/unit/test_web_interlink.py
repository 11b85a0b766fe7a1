"""`mode: interlink`: the plugin API's shapes (what a plugin is sent and how its answers are read),
the pod phase derived from container states, and the journal that lets a restart adopt by JID."""

from __future__ import annotations

import base64
import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from virtual_kubelet.providers import registry
from virtual_kubelet.providers.web.interlink import InterlinkProvider
from virtual_kubelet.providers.web.interlink_state import ENV_AT_REST, Journal
from virtual_kubelet.providers.web.interlink_wire import (
    log_request,
    parse_create_answer,
    parse_ping,
    pod_status,
    retrieved_pod_data,
    sensitive_values,
)
from virtual_kubelet.sdk import SPEC_HASH_ANNOTATION, LogOptions, ProviderContext

from .test_web_transport import Server, free_port, run

START = "2026-01-01T00:00:00Z"


def make_pod(**spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ns", "name": "p", "uid": "u-1"},
        "spec": {"containers": [{"name": "main", "image": "img"}], **spec},
    }


def running(name: str) -> dict[str, Any]:
    return {"name": name, "state": {"running": {"startedAt": START}}}


def exited(name: str, code: int) -> dict[str, Any]:
    return {"name": name, "state": {"terminated": {"exitCode": code}}}


# --- create --------------------------------------------------------------------------------------


def test_retrieved_pod_data_carries_each_mounts_contents_per_container() -> None:
    pod = make_pod(
        initContainers=[
            {"name": "setup", "image": "i", "volumeMounts": [{"name": "cfg", "mountPath": "/c"}]}
        ],
        containers=[
            {
                "name": "main",
                "image": "img",
                "volumeMounts": [
                    {"name": "cfg", "mountPath": "/c"},
                    {"name": "creds", "mountPath": "/s"},
                    {"name": "token", "mountPath": "/var/run/secrets/sa"},
                    {"name": "scratch", "mountPath": "/tmp"},
                ],
            }
        ],
        volumes=[
            {
                "name": "cfg",
                "configMap": {"name": "app", "items": [{"key": "k", "path": "p/k.txt"}]},
            },
            {"name": "creds", "secret": {"secretName": "db"}},
            {"name": "token", "projected": {"sources": [{"serviceAccountToken": {"path": "t"}}]}},
            {"name": "scratch", "emptyDir": {}},
        ],
    )
    files = {
        "cfg": {"p/k.txt": b"value"},
        "creds": {"password": b"hunter2!", "blob": b"\xff\x00"},
        "token": {"t": b"eyJhbGciOi.token"},
        "scratch": {},
    }
    data = retrieved_pod_data(pod, files.get)
    assert data["pod"] is pod
    setup, main = data["container"]
    assert setup["name"] == "setup"
    assert [c["data"] for c in setup["configMaps"]] == [{"k": "value"}]  # back to its key
    assert main["configMaps"][0]["metadata"] == {"name": "app", "namespace": "ns"}
    (secret,) = main["secrets"]
    assert secret["metadata"]["name"] == "db"
    assert base64.b64decode(secret["data"]["password"]) == b"hunter2!"
    assert base64.b64decode(secret["data"]["blob"]) == b"\xff\x00"
    (projected,) = main["projectedvolumemaps"]
    assert projected["metadata"]["name"] == "token"
    assert projected["data"] == {"t": "eyJhbGciOi.token"}
    assert main["emptyDirs"] == []
    secrets = set(sensitive_values(data))
    assert {"hunter2!", "eyJhbGciOi.token"} <= secrets


@pytest.mark.parametrize(
    ("body", "jid", "said"),
    [
        (b'{"PodUID": "u-1", "PodJID": "4242"}', "4242", True),
        (b'[{"PodUID": "u-1", "PodJID": "slurm-7"}]', "slurm-7", True),  # interLink <= 0.4
        (b'"created"', "u-1", False),
        (b"Pod created", "u-1", False),
        (b"", "u-1", False),
    ],
)
def test_the_create_answer_in_every_form_plugins_give(body: bytes, jid: str, said: bool) -> None:
    assert parse_create_answer(body, "u-1") == (jid, said)


# --- status --------------------------------------------------------------------------------------


def test_phase_follows_container_states_init_first() -> None:
    init = make_pod(initContainers=[{"name": "setup", "image": "i"}])
    waiting = pod_status(init, {}, start_time=START)
    assert waiting["phase"] == "Pending"
    assert waiting["initContainerStatuses"][0]["state"] == {
        "waiting": {"reason": "PodInitializing"}
    }
    assert waiting["containerStatuses"][0]["state"] == {"waiting": {"reason": "ContainerCreating"}}

    initialising = pod_status(init, {"initContainers": [running("setup")]}, start_time=START)
    assert initialising["phase"] == "Pending"

    up = pod_status(
        init,
        {"initContainers": [exited("setup", 0)], "containers": [running("main")]},
        start_time=START,
    )
    assert up["phase"] == "Running"
    assert up["containerStatuses"][0]["ready"] is True
    assert {c["type"]: c["status"] for c in up["conditions"]}["Ready"] == "True"
    assert up["startTime"] == START

    # Older plugins put init containers among the containers: still read.
    mixed = pod_status(
        init, {"containers": [exited("setup", 0), running("main")]}, start_time=START
    )
    assert mixed["phase"] == "Running"

    init_failed = pod_status(init, {"initContainers": [exited("setup", 2)]}, start_time=START)
    assert init_failed["phase"] == "Failed"
    assert "setup exited with 2" in init_failed["message"]


def test_all_containers_finished_decide_succeeded_or_failed() -> None:
    pod = make_pod(containers=[{"name": "a", "image": "i"}, {"name": "b", "image": "i"}])
    done = pod_status(pod, {"containers": [exited("a", 0), exited("b", 0)]}, start_time=START)
    assert done["phase"] == "Succeeded"
    assert done["containerStatuses"][0]["state"]["terminated"]["reason"] == "Completed"
    failed = pod_status(pod, {"containers": [exited("a", 0), exited("b", 3)]}, start_time=START)
    assert failed["phase"] == "Failed"
    assert failed["message"] == "b exited with 3"
    half = pod_status(pod, {"containers": [exited("a", 0), running("b")]}, start_time=START)
    assert half["phase"] == "Running"
    assert {c["type"]: c["status"] for c in half["conditions"]}["Ready"] == "False"


def test_a_malformed_container_state_reads_as_waiting_not_a_crash() -> None:
    pod = make_pod()
    status = pod_status(
        pod,
        {"containers": [{"name": "main", "state": {"terminated": {"exitCode": "x"}}}]},
        start_time=START,
    )
    assert status["phase"] == "Pending"


# --- logs and ping -------------------------------------------------------------------------------


def test_log_request_uses_the_go_field_names() -> None:
    since = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    request = log_request(
        make_pod(),
        "main",
        LogOptions(follow=True, timestamps=True, since_time=since, limit_bytes=9),
    )
    assert request["Namespace"] == "ns"
    assert request["PodUID"] == "u-1"
    assert request["ContainerName"] == "main"
    opts = request["Opts"]
    assert opts["Follow"] is True
    assert opts["Timestamps"] is True
    assert opts["Tail"] == 0
    assert opts["Bytes"] == 9
    assert opts["SinceTime"] == "2026-01-02T03:04:05.000000Z"
    tailed = log_request(make_pod(), "main", LogOptions(tail_lines=5, limit_bytes=9))["Opts"]
    assert (tailed["Tail"], tailed["Bytes"]) == (5, 0)  # interLink refuses both at once
    assert tailed["SinceTime"] == "0001-01-01T00:00:00Z"


def test_ping_answers_old_and_new() -> None:
    assert parse_ping(b"pong").resources is None
    info = parse_ping(
        orjson.dumps(
            {
                "status": "ok",
                "resources": {
                    "cpu": "64",
                    "memory": "256Gi",
                    "pods": "1.5",
                    "accelerators": [{"resourceType": "nvidia.com/gpu", "available": "4"}],
                },
                "taints": [{"key": "site", "value": "hpc", "effect": "Sideways"}],
            }
        )
    )
    assert info.resources == {"cpu": "64", "memory": "256Gi", "nvidia.com/gpu": "4"}
    assert info.taints == [{"key": "site", "value": "hpc", "effect": "NoSchedule"}]
    assert any("pods" in p for p in info.problems)
    assert parse_ping(b'{"status": "ok"}').taints is None  # absent: leave taints alone


# --- the journal ---------------------------------------------------------------------------------


def test_the_journal_keeps_jids_but_never_env_values(tmp_path: Path) -> None:
    path = tmp_path / "interlink.jsonl"
    journal = Journal(path)
    assert journal.load() == {}
    secret_pod = make_pod(
        containers=[{"name": "main", "image": "i", "env": [{"name": "PW", "value": "s3cr3t!"}]}]
    )
    journal.put(secret_pod, "job-1")
    other = make_pod()
    other["metadata"].update(name="q", uid="u-2")
    journal.put(other, "job-2")
    journal.delete(other)
    journal.close()
    with path.open("ab") as f:
        f.write(b'{"op": "put", "pod": {"metad')  # a line cut short by a crash
    assert b"s3cr3t!" not in path.read_bytes()

    reloaded = Journal(path).load()
    assert list(reloaded) == ["ns/p"]
    pod, jid = reloaded["ns/p"]
    assert jid == "job-1"
    assert pod["spec"]["containers"][0]["env"] == [{"name": "PW", "value": ""}]
    # A stale spec hash makes the agent send the pod (with its env) again.
    assert pod["metadata"]["annotations"][SPEC_HASH_ANNOTATION] == ENV_AT_REST


# --- the provider against a plugin ---------------------------------------------------------------


def test_array_create_bodies_batched_status_and_answers_without_a_jid(tmp_path: Path) -> None:
    async def scenario() -> None:
        async def create(request: web.Request) -> web.Response:
            return web.Response(status=201, text="Pod created")  # no CreateStruct, not 200

        async def status(request: web.Request) -> web.Response:
            pods = await request.json()
            return web.json_response(
                [
                    {
                        "name": p["metadata"]["name"],
                        "UID": p["metadata"]["uid"],
                        "namespace": "ns",
                        "JID": "x",
                        "containers": [running("main")],
                    }
                    for p in pods
                ]
            )

        server = Server({("POST", "/create"): create, ("GET", "/status"): status})
        port = free_port()
        await server.start(port)
        config = tmp_path / "il.yaml"
        config.write_text(
            f"mode: interlink\nurl: http://127.0.0.1:{port}\n"
            "interlink: {create_body: array, status_batch_size: 2, status_interval: 3600}\n"
        )
        context = ProviderContext(
            "n", "linux", "198.18.0.9", 10250, config_path=config, state_dir=tmp_path
        )
        provider = registry.create("web", context)
        assert isinstance(provider, InterlinkProvider)
        pushed: list[dict[str, Any]] = []
        provider.notify_pods(pushed.append)
        await provider.start()
        try:
            for i in range(3):
                pod = make_pod()
                pod["metadata"].update(name=f"p{i}", uid=f"u-{i}")
                await provider.create_pod(pod)
            creates = [orjson.loads(b) for m, p, _, b in server.seen if p == "/create"]
            assert all(isinstance(body, list) and len(body) == 1 for body in creates)
            assert pushed[0]["status"]["phase"] == "Pending"
            assert pushed[0]["metadata"]["annotations"]["JobID"] == "u-0"  # the UID stands in

            # (A create also wakes the provider's own poller: polls may have run already.)
            await provider.poll_statuses()
            batches = [orjson.loads(b) for m, p, _, b in server.seen if p == "/status"]
            assert max(len(batch) for batch in batches) == 2
            phases = {p["metadata"]["name"]: p["status"]["phase"] for p in pushed}
            assert phases == {"p0": "Running", "p1": "Running", "p2": "Running"}
            count = len(pushed)
            await provider.poll_statuses()
            assert len(pushed) == count  # nothing changed, nothing pushed
        finally:
            await provider.stop()
            await server.stop()

    run(scenario())
