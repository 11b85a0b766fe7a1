"""A backend for the web provider's original protocol, written only from the table in issue 12
section 1 and deliberately unlike the reference backend: the standard library's http.server, one
thread per request, pods in a dict (lost on restart), no `/getPod`, `/updatePod` taken as POST only,
and Flask's reason phrase on every 404 (`404 NOT FOUND`).

Pods may steer it with annotations: `table.test/exit-code` (its containers have exited with that
code) and `table.test/log-line` (its log is that one line). Run: `python web_table_backend.py PORT`. Test-only controls (never called by the agent):
`POST /_test/fault` with `{"route": "/createPod", "mode": "500"|"garbage"|"hang"|"missing"|"ok",
"times": N}` (N = how many requests it affects, 0 = until changed) and `GET /_test/pods`.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

PODS: dict[str, dict[str, Any]] = {}
FAULTS: dict[str, dict[str, Any]] = {}
LOCK = threading.Lock()
LOG_LINES = [f"line {i} of the backend's log" for i in range(1, 11)]


def status_for(pod: dict[str, Any]) -> dict[str, Any]:
    """Containers run at once; with annotation `table.test/exit-code` they have already exited
    with that code (the pod Succeeded or Failed)."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    exit_code = (pod["metadata"].get("annotations") or {}).get("table.test/exit-code")
    if exit_code is None:
        state: dict[str, Any] = {"running": {"startedAt": now}}
        phase, ready = "Running", True
    else:
        code = int(exit_code)
        state = {"terminated": {"exitCode": code, "startedAt": now, "finishedAt": now}}
        phase, ready = ("Succeeded" if code == 0 else "Failed"), False
    with LOCK:
        ip = f"10.77.{len(PODS) // 250}.{len(PODS) % 250 + 2}"
    flag = "True" if ready else "False"
    return {
        "phase": phase,
        "startTime": now,
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "conditions": [
            {"type": "Ready", "status": flag},
            {"type": "ContainersReady", "status": flag},
            {"type": "Initialized", "status": "True"},
            {"type": "PodScheduled", "status": "True"},
        ],
        "containerStatuses": [
            {
                "name": c["name"],
                "image": c["image"],
                "imageID": "table://" + c["image"],
                "containerID": f"table://{pod['metadata']['uid']}/{c['name']}",
                "ready": ready,
                "restartCount": 0,
                "state": state,
            }
            for c in pod["spec"]["containers"]
        ],
    }


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write(
            f"backend: {self.command} {self.path} {args[1] if len(args) > 1 else ''}\n"
        )

    # --- plumbing ---------------------------------------------------------------------------

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length)) if length else None

    def _send(self, code: int, payload: Any = None, reason: str | None = None) -> None:
        data = (
            b""
            if payload is None
            else payload
            if isinstance(payload, bytes)
            else json.dumps(payload).encode()
        )
        self.send_response(code, reason)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _not_found(self) -> None:
        self._send(404, b"<h1>Not Found</h1>", reason="NOT FOUND")

    def _fault(self, route: str) -> bool:
        """Apply an injected fault to `route`; True if the request was answered by it."""
        with LOCK:
            fault = FAULTS.get(route)
            if fault is None:
                return False
            if fault["times"]:
                fault["times"] -= 1
                if fault["times"] == 0:
                    del FAULTS[route]
        mode = fault["mode"]
        if mode == "500":
            self._send(500, b"internal error: the backend is having a bad day")
        elif mode == "garbage":
            self._send(200, b"{this is not json")
        elif mode == "hang":
            time.sleep(30)
            self._send(200, b"{}")
        elif mode == "missing":
            self._not_found()
        else:
            return False
        return True

    @staticmethod
    def _key(pod: dict[str, Any]) -> str:
        return f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"

    # --- routes -----------------------------------------------------------------------------

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        body = self._body()
        if path == "/_test/fault":
            with LOCK:
                if body["mode"] == "ok":
                    FAULTS.pop(body["route"], None)
                else:
                    FAULTS[body["route"]] = {"mode": body["mode"], "times": body.get("times", 0)}
            self._send(200, {})
        elif self._fault(path):
            pass
        elif path == "/createPod":
            body["status"] = status_for(body)
            with LOCK:
                PODS[self._key(body)] = body
            self._send(200)  # body ignored by the agent
        elif path == "/updatePod":  # POST, as some backends took it
            with LOCK:
                if self._key(body) not in PODS:
                    self._not_found()
                    return
                PODS[self._key(body)].update(metadata=body["metadata"], spec=body["spec"])
            self._send(200)
        else:
            self._not_found()

    def do_PUT(self) -> None:
        self._body()
        self._not_found()  # no PUT /updatePod here: the agent must retry as POST

    def do_DELETE(self) -> None:
        path = urlsplit(self.path).path
        body = self._body()
        if self._fault(path):
            return
        if path != "/deletePod":
            self._not_found()
            return
        with LOCK:
            found = PODS.pop(self._key(body), None)
        if found is None:
            self._not_found()
        else:
            self._send(200)

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        if self.headers.get("Content-Length"):
            self._body()
        if parts.path == "/_test/pods":
            with LOCK:
                self._send(200, PODS)
        elif self._fault(parts.path):
            pass
        elif parts.path == "/getPodStatus":
            with LOCK:
                pod = PODS.get(f"{query.get('namespace')}/{query.get('name')}")
            if pod is None:
                self._not_found()
            else:
                self._send(200, pod["status"])
        elif parts.path == "/getPods":
            with LOCK:
                self._send(200, list(PODS.values()))
        elif parts.path == "/getContainerLogs":
            with LOCK:
                known = f"{query.get('namespace')}/{query.get('podName')}" in PODS
            if not known:
                self._not_found()
                return
            tail = int(query.get("tail", "0"))
            with LOCK:
                annotations = (
                    PODS[f"{query['namespace']}/{query['podName']}"]["metadata"].get("annotations")
                    or {}
                )
            own = annotations.get("table.test/log-line")
            lines = [own] if own else LOG_LINES[-tail:] if tail else LOG_LINES
            data = "".join(f"{query['containerName']}: {line}\n" for line in lines).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        elif parts.path == "/capacity":
            self._send(200, {"cpu": "20", "memory": "100Gi", "pods": "20"})
        elif parts.path == "/nodeConditions":
            self._send(
                200,
                [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "BackendReady",
                        "message": "the table backend is ready",
                    },
                    {"type": "TableBackend", "status": "True", "reason": "Serving"},
                ],
            )
        elif parts.path == "/nodeAddresses":
            self._send(200, [{"type": "ExternalIP", "address": "203.0.113.7"}])
        else:
            self._not_found()  # /getPod among others


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    server.daemon_threads = True
    print("listening", flush=True)
    server.serve_forever()
