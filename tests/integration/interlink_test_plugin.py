"""An interLink plugin ("sidecar") written for the tests from the interLink contract (the Go types
of interLink 0.6.2, `pkg/interlink/types.go`): aiohttp on a unix socket, behind a bearer token
(as oauth2-proxy would put it in front of interLink's API).

- `POST /create`: one RetrievedPodData -> `{"PodUID", "PodJID"}`; init containers finish at once
  (exit 0), containers then run.
- `GET /status` with a JSON body: the pods -> `[PodStatus]` (container states only); with `[]`,
  the ping: a PingResponse with resources and a taint.
- `GET /getLogs` with a LogStruct body: the container's lines, `Tail` honoured, streamed.
- `POST /delete`: the pod -> gone.
- `GET /_test/state` (test only): what the plugin was sent.

Pods may steer it with annotations: `plugin.test/exit-code` (its containers have exited with
that code), `plugin.test/log-line` (its log is that one line) and `plugin.test/report`
(`MOUNT|KEY`: its log is its env and the key of the ConfigMap mounted at MOUNT, as received).

Run: `python interlink_test_plugin.py SOCKET TOKEN_FILE`.
"""

from __future__ import annotations

import base64
import itertools
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

PODS: dict[str, dict[str, Any]] = {}  # uid -> what we keep
STATE: dict[str, Any] = {"creates": [], "deletes": [], "status_bodies": [], "pings": 0}
JOBS = itertools.count(4000)
LINES = [f"plugin log line {i}" for i in range(1, 8)]
RUN_STARTED = "2026-01-01T00:00:00Z"


def authorised(request: web.Request) -> bool:
    expected = Path(sys.argv[2]).read_text().strip()
    return request.headers.get("Authorization") == f"Bearer {expected}"


@web.middleware
async def require_token(request: web.Request, handler: Any) -> web.StreamResponse:
    if request.path.startswith("/_test/") or authorised(request):
        return await handler(request)
    return web.Response(status=401, text="missing or wrong bearer token")


async def create(request: web.Request) -> web.Response:
    data = await request.json()
    if isinstance(data, list):  # a plugin for interLink <= 0.4 would take [obj]
        return web.Response(status=422, text="expected one RetrievedPodData")
    pod = data["pod"]
    uid = pod["metadata"]["uid"]
    jid = f"job-{next(JOBS)}"
    received: dict[str, Any] = {"configMaps": {}, "secrets": {}, "projected": {}}
    for container in data["container"]:
        for cm in container.get("configMaps") or []:
            received["configMaps"][cm["metadata"]["name"]] = cm["data"]
        for secret in container.get("secrets") or []:
            received["secrets"][secret["metadata"]["name"]] = {
                k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()
            }
        for projected in container.get("projectedvolumemaps") or []:
            received["projected"][projected["metadata"]["name"]] = sorted(projected["data"])
    env = {e["name"]: e.get("value") for c in pod["spec"]["containers"] for e in c.get("env") or []}
    PODS[uid] = {"pod": pod, "jid": jid, "received": received, "env": env}
    STATE["creates"].append(uid)
    return web.json_response({"PodUID": uid, "PodJID": jid})


def status_of(pod: dict[str, Any], jid: str) -> dict[str, Any]:
    spec = pod["spec"]
    exit_code = (pod["metadata"].get("annotations") or {}).get("plugin.test/exit-code")
    if exit_code is None:
        state: dict[str, Any] = {"running": {"startedAt": RUN_STARTED}}
    else:
        state = {"terminated": {"exitCode": int(exit_code), "startedAt": RUN_STARTED}}
    return {
        "name": pod["metadata"]["name"],
        "UID": pod["metadata"]["uid"],
        "namespace": pod["metadata"]["namespace"],
        "JID": jid,
        "initContainers": [
            {"name": c["name"], "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
            for c in spec.get("initContainers") or []
        ],
        "containers": [
            {"name": c["name"], "state": state, "ready": exit_code is None}
            for c in spec["containers"]
        ],
    }


async def status(request: web.Request) -> web.Response:
    pods = await request.json()
    if pods == []:
        STATE["pings"] += 1
        return web.json_response(
            {
                "status": "ok",
                "resources": {
                    "cpu": "48",
                    "memory": "192Gi",
                    "pods": "30",
                    "accelerators": [{"resourceType": "example.com/fpga", "available": "2"}],
                },
                "taints": [
                    {"key": "interlink.test/site", "value": "hpc", "effect": "PreferNoSchedule"}
                ],
            }
        )
    STATE["status_bodies"].append(
        [
            {
                "uid": p["metadata"]["uid"],
                "JobID": (p["metadata"].get("annotations") or {}).get("JobID"),
            }
            for p in pods
        ]
    )
    answer = [
        status_of(PODS[p["metadata"]["uid"]]["pod"], PODS[p["metadata"]["uid"]]["jid"])
        for p in pods
        if p["metadata"]["uid"] in PODS
    ]
    return web.json_response(answer)


async def get_logs(request: web.Request) -> web.StreamResponse:
    query = await request.json()
    if query["PodUID"] not in PODS:
        return web.Response(status=404, text="no such pod")
    tail = query["Opts"]["Tail"]
    own = (PODS[query["PodUID"]]["pod"]["metadata"].get("annotations") or {}).get(
        "plugin.test/log-line"
    )
    report = (PODS[query["PodUID"]]["pod"]["metadata"].get("annotations") or {}).get(
        "plugin.test/report"
    )
    if report:
        lines = reported_lines(PODS[query["PodUID"]], query["ContainerName"], *report.split("|"))
    else:
        lines = [own] if own else LINES[-tail:] if tail else LINES
    response = web.StreamResponse(headers={"Content-Type": "text/plain"})
    await response.prepare(request)
    for line in lines:
        await response.write(f"{query['ContainerName']}: {line}\n".encode())
    await response.write_eof()
    return response


def reported_lines(kept: dict[str, Any], container: str, mount_path: str, key: str) -> list[str]:
    """The container's env (`NAME=value`) and the key of the ConfigMap mounted at `mount_path`,
    as the plugin received them."""
    spec = kept["pod"]["spec"]
    (found,) = [c for c in spec["containers"] if c["name"] == container]
    lines = [f"{e['name']}={e.get('value', '')}" for e in found.get("env") or []]
    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    for mount in found.get("volumeMounts") or []:
        config_map = volumes.get(mount["name"], {}).get("configMap")
        if mount["mountPath"] == mount_path and config_map:
            lines.append(kept["received"]["configMaps"][config_map["name"]][key])
    return lines


async def delete(request: web.Request) -> web.Response:
    pod = await request.json()
    uid = pod["metadata"]["uid"]
    if PODS.pop(uid, None) is None:
        return web.Response(status=404, text="no such pod")
    STATE["deletes"].append(uid)
    return web.Response(text="Pod deleted")  # a string, as the plugin SDK answers


async def test_state(request: web.Request) -> web.Response:
    return web.json_response(
        {
            **STATE,
            "pods": {uid: {k: v for k, v in p.items() if k != "pod"} for uid, p in PODS.items()},
        }
    )


def main() -> None:
    app = web.Application(middlewares=[require_token])
    app.router.add_post("/create", create)
    app.router.add_route("GET", "/status", status)
    app.router.add_route("GET", "/getLogs", get_logs)
    app.router.add_post("/delete", delete)
    app.router.add_get("/_test/state", test_state)
    web.run_app(app, path=sys.argv[1], print=lambda *_: print("listening", flush=True))


if __name__ == "__main__":
    main()
