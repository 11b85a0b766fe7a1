"""An agent whose kubeconfig uses an exec credential plugin keeps its node alive while the plugin
is slow: the plugin runs off the event loop, ahead of the token's expiry."""

from __future__ import annotations

import itertools
import json
import secrets
import subprocess
import sys
import time
from pathlib import Path

from virtual_kubelet.devcluster import DevCluster, kubectl_path, wait_until
from virtual_kubelet.kube.timefmt import parse

from .conftest import AgentFactory

RBAC = Path(__file__).resolve().parents[2] / "deploy" / "rbac.yaml"

# Prints the token in STATE/token with a short expirationTimestamp (the token itself lives an
# hour: the API server accepts it throughout). While STATE/slow exists, each run first sleeps the
# number of seconds it holds. Runs are logged to STATE/runs.log with their wall-clock times.
PLUGIN = """
import datetime, json, os, sys, time

state, lifetime = sys.argv[1], float(sys.argv[2])


def note(what):
    with open(os.path.join(state, "runs.log"), "a") as log:
        log.write(f"{what} {os.getpid()} {time.time()}\\n")


slow = os.path.join(state, "slow")
delay = float(open(slow).read()) if os.path.exists(slow) else 0.0
note("slow-start" if delay else "start")
time.sleep(delay)
with open(os.path.join(state, "token")) as f:
    token = f.read().strip()
expires = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=lifetime)
status = {"token": token, "expirationTimestamp": expires.strftime("%Y-%m-%dT%H:%M:%SZ")}
print(json.dumps({"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
                  "status": status}))
sys.stdout.flush()
note("slow-end" if delay else "end")
"""

TOKEN_LIFETIME = 90.0  # what the plugin claims; refreshed in the background after 60 s
SLOW_REFRESH = 25.0  # how long a refresh takes once the test makes the plugin slow
RENEW_PERIOD = 10.0  # the agent's lease renewal period (40 s lease / 4)
ALLOWED_GAP = RENEW_PERIOD + 5.0


def _runs(state: Path) -> list[tuple[str, float]]:
    path = state / "runs.log"
    if not path.exists():
        return []
    return [
        (kind, float(at))
        for kind, _, at in (line.split() for line in path.read_text().splitlines())
    ]


def _service_account_token(cluster: DevCluster, namespace: str, account: str) -> str:
    cluster.kubectl("apply", "-f", str(RBAC))
    cluster.kubectl("create", "serviceaccount", account, "-n", namespace)
    cluster.kubectl(
        "create",
        "clusterrolebinding",
        f"virtual-kubelet-{account}",
        "--clusterrole=virtual-kubelet",
        f"--serviceaccount={namespace}:{account}",
    )
    return cluster.kubectl(
        "create", "token", account, "-n", namespace, "--duration=1h"
    ).stdout.strip()


def test_lease_keeps_renewing_while_the_credential_plugin_is_slow(
    devcluster: DevCluster, kube_namespace: str, start_agent: AgentFactory, tmp_path: Path
) -> None:
    account = f"vk-{secrets.token_hex(3)}"
    state = tmp_path / "plugin"
    state.mkdir()
    script = state / "plugin.py"
    script.write_text(PLUGIN)
    try:
        (state / "token").write_text(_service_account_token(devcluster, kube_namespace, account))
        config = json.loads(devcluster.kubeconfig.read_text())
        config["users"][0]["user"] = {
            "exec": {
                "apiVersion": "client.authentication.k8s.io/v1",
                "command": sys.executable,
                "args": [str(script), str(state), str(TOKEN_LIFETIME)],
                "interactiveMode": "Never",
            }
        }
        kubeconfig = tmp_path / "exec.kubeconfig"
        kubeconfig.write_text(json.dumps(config))

        agent = start_agent(args=["--kubeconfig", str(kubeconfig)])  # the last one wins
        assert any(kind == "start" for kind, _ in _runs(state)), "the plugin never ran"
        renewals_file = tmp_path / "renewals"
        with renewals_file.open("w") as out:
            # Every renewal the API server stores, none missed between polls.
            watch = subprocess.Popen(
                [
                    kubectl_path(),
                    "--kubeconfig",
                    str(devcluster.kubeconfig),
                    "get",
                    "lease",
                    agent.node_name,
                    "-n",
                    "kube-node-lease",
                    "--watch",
                    "-o",
                    'jsonpath={.spec.renewTime}{"\\n"}',
                ],
                stdout=out,
                stderr=subprocess.DEVNULL,
            )
            try:
                (state / "slow").write_text(str(SLOW_REFRESH))
                wait_until(
                    lambda: any(kind == "slow-start" for kind, _ in _runs(state)),
                    TOKEN_LIFETIME + 30,
                    "the agent to refresh its token through the now slow plugin",
                )

                def slow_runs_over() -> bool:
                    kinds = [kind for kind, _ in _runs(state)]
                    return kinds.count("slow-end") >= 1 and kinds.count("slow-end") == kinds.count(
                        "slow-start"
                    )

                wait_until(slow_runs_over, SLOW_REFRESH + 30, "the slow plugin runs to end")
                (state / "slow").unlink()
                window_end = max(at for kind, at in _runs(state) if kind == "slow-end")
                # The first renewal after the slow runs, if it is due: the gap up to it counts.
                wait_until(
                    lambda: (
                        _renewals(renewals_file)[-1:] > [window_end]
                        or time.time() > window_end + ALLOWED_GAP
                    ),
                    ALLOWED_GAP + 10,
                    "a renewal after the slow plugin runs",
                )
            finally:
                watch.terminate()
                watch.wait(10)

        window_start = min(at for kind, at in _runs(state) if kind == "slow-start")
        renewals = _renewals(renewals_file)
        before = [at for at in renewals if at <= window_start]
        during = [at for at in renewals if window_start < at < window_end]
        after = [at for at in renewals if at >= window_end]
        assert before, f"no renewal seen before the slow plugin ran: {renewals}"
        points = [before[-1], *during, after[0] if after else window_end]
        gaps = [round(later - earlier, 1) for earlier, later in itertools.pairwise(points)]
        assert max(gaps) <= ALLOWED_GAP, (
            f"the lease was not renewed for {max(gaps)} s while the credential plugin took "
            f"{SLOW_REFRESH:.0f} s (gaps {gaps}):\n{agent.log()[-3000:]}"
        )
        assert len(during) >= 2, f"renewals during the {SLOW_REFRESH:.0f} s slow run: {during}"
        errors = [line for line in agent.log().splitlines() if "CredentialError" in line]
        assert not errors, errors
    finally:
        devcluster.kubectl(
            "delete", "clusterrolebinding", f"virtual-kubelet-{account}", check=False
        )


def _renewals(path: Path) -> list[float]:
    """Distinct renewTimes the watch printed, as epoch seconds, in order."""
    seen = sorted({line.strip() for line in path.read_text().splitlines() if line.strip()})
    return sorted(parse(stamp).timestamp() for stamp in seen)
