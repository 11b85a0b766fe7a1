"""Container probes and handlers (startup, liveness, readiness; preStop/postStart hooks) with the
kubelet's semantics: initialDelaySeconds from the container's start, periodSeconds (10),
timeoutSeconds (1), successThreshold (1), failureThreshold (3).

Handlers: `exec` (through a callable the provider supplies, so the command runs in the
container's env, working directory and mounts), `httpGet` (2xx/3xx succeed, redirects are not
followed, HTTPS is not verified, host defaults to the pod IP, port may name a container port),
`tcpSocket`, and the lifecycle `sleep` action. gRPC probes are not supported: they count as
successes (and are logged once) so they never kill a container.

`Handlers.hook` runs a postStart hook the way the kubelet's handler runner does: without a
timeout (the caller cancels it when the container ends or the pod goes), an httpGet hook fails
only if the request fails (any HTTP response, whatever its status, is a success), and a failure
is described in the kubelet's words (`Exec lifecycle hook ([cmd]) for Container "c" in Pod
"name_ns(uid)" failed - error: ..., message: "..."`).

This module decides nothing about containers: it reports results through callbacks. Shared by
the process and cri providers (`from virtual_kubelet.sdk.probes import Handlers, probe_loop`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

log = logging.getLogger(__name__)

#: Runs a command in the container: (argv, timeout or None for none) -> (exit code, output).
ExecFn = Callable[[list[str], float | None], Awaitable[tuple[int, bytes]]]
Result = tuple[bool, str]

USER_AGENT = "kube-probe/1.36"
#: What the kubelet's lifecycle hooks send (`kube-lifecycle/<major>.<minor>`).
HOOK_USER_AGENT = "kube-lifecycle/1.36"
#: The kubelet reads at most this much of a probe's HTTP body or exec output.
MAX_OUTPUT = 10 * 1024


def _number(value: Any, default: float, minimum: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if number >= minimum else default


def settings(probe: dict[str, Any]) -> tuple[float, float, float, int, int]:
    """initialDelay, period, timeout, successThreshold, failureThreshold (with the defaults)."""
    return (
        _number(probe.get("initialDelaySeconds"), 0.0, 0.0),
        _number(probe.get("periodSeconds"), 10.0, 0.001),
        _number(probe.get("timeoutSeconds"), 1.0, 0.001),
        int(_number(probe.get("successThreshold"), 1, 1)),
        int(_number(probe.get("failureThreshold"), 3, 1)),
    )


def resolve_port(port: Any, container: dict[str, Any]) -> int:
    """A port number, or the number of the container port with that name."""
    if isinstance(port, int) or (isinstance(port, str) and port.isdigit()):
        return int(port)
    for entry in container.get("ports") or []:
        if entry.get("name") == port:
            return int(entry["containerPort"])
    raise ValueError(f"port {port!r} is neither a number nor a named port of the container")


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def go_quote(text: str) -> str:
    """`text` as Go's %q prints it, near enough (a double-quoted string with escapes)."""
    return json.dumps(text, ensure_ascii=False)


def pod_desc(pod: dict[str, Any]) -> str:
    """The kubelet's name for a pod in messages (format.Pod): `name_namespace(uid)`."""
    meta = pod.get("metadata") or {}
    return f"{meta.get('name')}_{meta.get('namespace')}({meta.get('uid')})"


def _http_request(
    action: dict[str, Any], container: dict[str, Any], pod_ip: str, user_agent: str
) -> tuple[str, dict[str, str]]:
    """The URL and headers of an httpGet handler (ValueError for an unknown named port)."""
    port = resolve_port(action.get("port"), container)
    scheme = str(action.get("scheme") or "HTTP").lower()
    path = str(action.get("path") or "/")
    if not path.startswith("/"):
        path = "/" + path
    url = f"{scheme}://{_host(str(action.get('host') or pod_ip))}:{port}{path}"
    headers = {"User-Agent": user_agent, "Accept": "*/*"}
    for header in action.get("httpHeaders") or []:
        if isinstance(header, dict) and header.get("name"):
            headers[str(header["name"])] = str(header.get("value") or "")
    return url, headers


class Handlers:
    """Runs one handler of a probe or lifecycle hook."""

    def __init__(self, pod_ip: str) -> None:
        #: The default target of httpGet and tcpSocket handlers; `run(pod_ip=...)` overrides it
        #: per pod (pods in network namespaces of their own each have their address).
        self.pod_ip = pod_ip
        self._session: aiohttp.ClientSession | None = None
        self._warned = False

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # No cookies between probes, no proxies from the environment, no keep-alive: a probe
            # sees the server the way a fresh kubelet connection does.
            self._session = aiohttp.ClientSession(
                cookie_jar=aiohttp.DummyCookieJar(),
                connector=aiohttp.TCPConnector(force_close=True, ssl=False),
            )
        return self._session

    async def run(
        self,
        handler: dict[str, Any],
        container: dict[str, Any],
        timeout: float,
        exec_fn: ExecFn,
        *,
        pod_ip: str | None = None,
    ) -> Result:
        host = pod_ip or self.pod_ip
        try:
            if isinstance(handler.get("exec"), dict):
                return await self._exec(handler["exec"], timeout, exec_fn)
            if isinstance(handler.get("httpGet"), dict):
                return await self._http(handler["httpGet"], container, timeout, host)
            if isinstance(handler.get("tcpSocket"), dict):
                return await self._tcp(handler["tcpSocket"], container, timeout, host)
            if isinstance(handler.get("sleep"), dict):
                await asyncio.sleep(_number(handler["sleep"].get("seconds"), 0.0, 0.0))
                return True, ""
        except ValueError as exc:
            return False, str(exc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # e.g. the container exited under an exec probe
            return False, f"probe error: {exc}"
        if not self._warned:
            self._warned = True
            log.warning("probe/hook handler %s is not supported", list(handler))
        return True, "unsupported handler"

    async def _exec(self, action: dict[str, Any], timeout: float, exec_fn: ExecFn) -> Result:
        command = [str(part) for part in action.get("command") or []]
        if not command:
            return False, "exec handler without a command"
        try:
            code, output = await exec_fn(command, timeout)
        except TimeoutError:
            return False, f"command {command!r} timed out"
        text = output[:MAX_OUTPUT].decode("utf-8", "replace")
        if code != 0:
            return False, text or f"command {command!r} exited with {code}"
        return True, text

    async def _http(
        self, action: dict[str, Any], container: dict[str, Any], timeout: float, pod_ip: str
    ) -> Result:
        url, headers = _http_request(action, container, pod_ip, USER_AGENT)
        try:
            async with self._client().get(
                url,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as response:
                await response.content.read(MAX_OUTPUT)
                if 200 <= response.status < 400:
                    return True, ""
                return False, f"HTTP probe failed with statuscode: {response.status}"
        except TimeoutError:
            return False, f'Get "{url}": context deadline exceeded'
        except (aiohttp.ClientError, OSError) as exc:
            return False, f'Get "{url}": {exc}'

    async def _tcp(
        self, action: dict[str, Any], container: dict[str, Any], timeout: float, pod_ip: str
    ) -> Result:
        port = resolve_port(action.get("port"), container)
        host = str(action.get("host") or pod_ip)
        try:
            async with asyncio.timeout(timeout):
                _, writer = await asyncio.open_connection(host, port)
        except TimeoutError:
            return False, f"dial tcp {_host(host)}:{port}: i/o timeout"
        except OSError as exc:
            return False, f"dial tcp {_host(host)}:{port}: {exc.strerror or exc}"
        writer.close()
        return True, ""

    async def hook(
        self,
        handler: dict[str, Any],
        container: dict[str, Any],
        exec_fn: ExecFn,
        *,
        pod: str,
        pod_ip: str | None = None,
    ) -> Result:
        """Run a lifecycle hook to its end (no timeout): (True, "") or (False, the kubelet's
        message). `pod` names the pod in messages (see `pod_desc`)."""
        host = pod_ip or self.pod_ip
        name = go_quote(str(container.get("name") or ""))
        where = f"for Container {name} in Pod {go_quote(pod)} failed - error:"
        if isinstance(handler.get("exec"), dict):
            command = [str(part) for part in handler["exec"].get("command") or []]
            output = b""
            try:
                if not command:
                    raise ValueError("exec handler without a command")
                code, output = await exec_fn(command, None)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # e.g. the container is not running any more
                error = str(exc) or type(exc).__name__
            else:
                if code == 0:
                    return True, ""
                error = f"command '{' '.join(command)}' exited with {code}"
            text = output[:MAX_OUTPUT].decode("utf-8", "replace")
            shown = f"[{' '.join(command)}]"
            return (
                False,
                f"Exec lifecycle hook ({shown}) {where} {error}, message: {go_quote(text)}",
            )
        if isinstance(handler.get("httpGet"), dict):
            action = handler["httpGet"]
            try:
                url, headers = _http_request(action, container, host, HOOK_USER_AGENT)
                async with self._client().get(
                    url,
                    headers=headers,
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(),
                ) as response:
                    await response.content.read(MAX_OUTPUT)
                return True, ""  # as the kubelet's: any response will do, whatever its status
            except asyncio.CancelledError:
                raise
            except ValueError as exc:
                error = str(exc)
            except (aiohttp.ClientError, OSError) as exc:
                error = f'Get "{url}": {exc}'
            return False, f"HTTP lifecycle hook ({action.get('path') or ''}) {where} {error}"
        if isinstance(handler.get("tcpSocket"), dict):
            action = handler["tcpSocket"]
            try:
                port = resolve_port(action.get("port"), container)
                target = str(action.get("host") or host)
                _, writer = await asyncio.open_connection(target, port)
                writer.close()
                return True, ""
            except asyncio.CancelledError:
                raise
            except ValueError as exc:
                error = str(exc)
            except OSError as exc:
                error = f"dial tcp {_host(target)}:{port}: {exc.strerror or exc}"
            return False, f"TCP lifecycle hook ({action.get('port')}) {where} {error}"
        if isinstance(handler.get("sleep"), dict):
            await asyncio.sleep(_number(handler["sleep"].get("seconds"), 0.0, 0.0))
            return True, ""
        return False, f"Cannot run handler: invalid handler: {sorted(handler)}"


async def probe_loop(
    probe: dict[str, Any],
    check: Callable[[float], Awaitable[Result]],
    started_at: float,
    report: Callable[[bool, str], None],
    *,
    until_success: bool = False,
) -> None:
    """Run `check(timeout)` every period; `report(result, message)` each time the result crosses
    a threshold (successThreshold successes or failureThreshold failures in a row). With
    `until_success` (startup probes) it ends after the first reported success."""
    initial, period, timeout, success_threshold, failure_threshold = settings(probe)
    delay = started_at + initial - time.time()
    if delay > 0:
        await asyncio.sleep(delay)
    successes = failures = 0
    while True:
        ok, message = await check(timeout)
        if ok:
            successes, failures = successes + 1, 0
            if successes >= success_threshold:
                report(True, message)
                if until_success:
                    return
        else:
            failures, successes = failures + 1, 0
            if failures >= failure_threshold:
                report(False, message)
                failures = 0
        await asyncio.sleep(period)
