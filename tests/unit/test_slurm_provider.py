"""The slurm provider's pure parts: a pod as sbatch options and a script, Slurm's job listings
read back (only this node's and this user's jobs), job states as pod statuses, sinfo capacity."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from virtual_kubelet.providers.slurm import jobs, script
from virtual_kubelet.providers.slurm.config import SlurmConfig
from virtual_kubelet.providers.slurm.node import (
    capacity_of,
    parse_sinfo,
    unavailable,
    unusable_reason,
)
from virtual_kubelet.providers.slurm.status import pod_status
from virtual_kubelet.sdk import InvalidInput


def _pod(**spec: Any) -> dict[str, Any]:
    annotations = spec.pop("annotations", {})
    container = {
        "name": "main",
        "image": "busybox",
        "command": ["sh", "-c"],
        "args": ["echo $(GREETING)"],
        "env": [{"name": "GREETING", "value": "s3cret-value"}],
        **spec.pop("container", {}),
    }
    return {
        "metadata": {
            "name": "p",
            "namespace": "ns",
            "uid": "u-1",
            "annotations": annotations,
        },
        "spec": {"containers": [container], **spec},
    }


def test_resources_placement_and_identity_become_sbatch_options() -> None:
    pod = _pod(
        activeDeadlineSeconds=90,
        annotations={"slurm.virtual-kubelet.io/qos": "short"},
        container={
            "resources": {"limits": {"cpu": "1500m", "memory": "1Gi", "nvidia.com/gpu": "2"}}
        },
    )
    files = script.build(pod, SlurmConfig(partition="gpu", account="lab"), "vk1", "/w/u-1", {})
    assert "--cpus-per-task=2" in files.sbatch_args
    assert "--mem=1024M" in files.sbatch_args
    assert "--gres=gpu:2" in files.sbatch_args
    assert "--time=2" in files.sbatch_args  # 90 s -> whole minutes, rounded up
    assert {"--partition=gpu", "--account=lab", "--qos=short"} <= set(files.sbatch_args)
    assert "--comment=vk:vk1:u-1" in files.sbatch_args
    assert "--export=NONE" in files.sbatch_args


def test_env_values_stay_out_of_the_script_and_the_command_line() -> None:
    files = script.build(_pod(), SlurmConfig(), "vk1", "/w/u-1", {})
    assert "s3cret-value" in files.env_files["main"].decode()
    # $(GREETING) expands as a kubelet would, so the value is in the argv: only there.
    assert "s3cret-value" not in " ".join(files.sbatch_args)
    stripped = script.build(
        _pod(container={"args": ["echo hi"]}), SlurmConfig(), "vk1", "/w/u-1", {}
    )
    assert "s3cret-value" not in stripped.script


def test_a_pod_that_can_never_run_is_invalid_input_with_the_reason() -> None:
    with pytest.raises(InvalidInput, match="no command"):
        script.build(_pod(container={"command": [], "args": []}), SlurmConfig(), "n", "/w", {})
    with pytest.raises(InvalidInput, match="partition"):
        script.build(
            _pod(annotations={"slurm.virtual-kubelet.io/partition": "a; rm -rf /"}),
            SlurmConfig(),
            "n",
            "/w",
            {},
        )


def _squeue(*entries: dict[str, Any]) -> str:
    return json.dumps({"jobs": list(entries)})


def test_only_this_nodes_jobs_of_this_user_are_read_and_the_newest_wins() -> None:
    text = _squeue(
        {"job_id": 5, "comment": "vk:n1:u-1", "user_name": "me", "job_state": "RUNNING"},
        {"job_id": 7, "comment": "vk:n1:u-1", "user_name": "me", "job_state": "PENDING",
         "state_reason": "Priority"},
        {"job_id": 8, "comment": "vk:n1:u-2", "user_name": "someone", "job_state": "RUNNING"},
        {"job_id": 9, "comment": "vk:n2:u-3", "user_name": "me", "job_state": "RUNNING"},
        {"job_id": 10, "comment": "", "user_name": "me", "job_state": "RUNNING"},
        {"job_id": 11, "comment": "vk:n1:u-4", "user_name": "me", "job_state": "FAILED",
         "exit_code": 3 << 8},
    )  # fmt: skip
    found = jobs.parse_squeue_json(text, "n1", "me")
    assert set(found) == {"u-1", "u-4"}
    assert (found["u-1"].job_id, found["u-1"].reason) == ("7", "Priority")
    assert found["u-4"].exit_code == 3


def test_scontrol_listing_is_the_fallback_without_json() -> None:
    text = (
        "JobId=4 JobName=x UserId=me(0) JobState=FAILED Reason=NonZeroExitCode "
        "ExitCode=0:9 Comment=vk:n1:u-1\n"
        "JobId=5 UserId=other(1) JobState=RUNNING Comment=vk:n1:u-2\n"
    )
    found = jobs.parse_scontrol(text, "n1", "me")
    assert list(found) == ["u-1"]
    assert (found["u-1"].state, found["u-1"].exit_code) == ("FAILED", 137)


def _job(state: str, reason: str = "None", code: int = 0) -> jobs.JobInfo:
    return jobs.JobInfo("12", "u-1", state, reason, code, 0, 0)


def test_job_states_become_pod_phases_with_reasons(tmp_path: Path) -> None:
    pod = _pod()
    pending = pod_status(pod, _job("PENDING", "Resources"), "12", tmp_path, "10.0.0.1")
    assert pending["phase"] == "Pending"
    assert pending["message"] == "Slurm job 12 is pending: Resources"
    waiting = pending["containerStatuses"][0]["state"]["waiting"]
    assert waiting["reason"] == "SlurmJobPending"

    (tmp_path / "status").mkdir()
    (tmp_path / "status" / "main.started").write_text("2026-01-01T00:00:00.123Z\n")
    running = pod_status(pod, _job("RUNNING"), "12", tmp_path, "10.0.0.1")
    assert running["phase"] == "Running"
    assert running["containerStatuses"][0]["ready"] is True

    (tmp_path / "status" / "main.exit").write_text("3 2026-01-01T00:00:05.1Z\n")
    failed = pod_status(pod, _job("FAILED", "NonZeroExitCode", 3), "12", tmp_path, "10.0.0.1")
    assert failed["phase"] == "Failed"
    assert failed["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 3

    timeout = pod_status(_pod(), _job("TIMEOUT", code=143), "12", tmp_path / "x", "10.0.0.1")
    assert (timeout["phase"], timeout["reason"]) == ("Failed", "DeadlineExceeded")

    oom_dir = tmp_path / "oom"
    oom_dir.mkdir()
    (oom_dir / "slurm-job.out").write_text("slurmstepd: error: Exceeded job memory limit\n")
    oom = pod_status(_pod(), _job("FAILED", "JobLaunchFailure", 137), "12", oom_dir, "10.0.0.1")
    assert oom["reason"] == "OOMKilled"
    assert oom["containerStatuses"][0]["state"]["terminated"]["reason"] == "OOMKilled"


def test_capacity_sums_usable_nodes_with_their_gpus() -> None:
    text = "a|8|16000|gpu:tesla:2|idle|batch*\nb|4|8000|(null)|down*|batch\nc|2|1000|(null)|mix|debug\n"
    assert capacity_of(parse_sinfo(text), "batch") == {
        "cpu": "8",
        "memory": "16000Mi",
        "nvidia.com/gpu": "2",
    }
    assert capacity_of(parse_sinfo(text), None)["cpu"] == "10"


def _fake_slurm(bin_dir: Path, sinfo: str, squeue: str = '{"jobs": []}') -> None:
    bin_dir.mkdir()
    for name, output in (("sinfo", sinfo), ("squeue", squeue)):
        (bin_dir / name).write_text(f"#!/bin/sh\ncat <<'EOF'\n{output}\nEOF\n")
        (bin_dir / name).chmod(0o755)


def _provider(tmp_path: Path, config: dict[str, Any]) -> Any:
    from virtual_kubelet.providers.slurm import SlurmProvider
    from virtual_kubelet.sdk import ProviderContext

    config_path = tmp_path / "slurm.json"
    config_path.write_text(json.dumps(config))
    context = ProviderContext(
        node_name="n1",
        operating_system="linux",
        internal_ip="127.0.0.1",
        daemon_port=10250,
        config_path=config_path,
        state_dir=tmp_path / "state",
    )
    return SlurmProvider(context)


def test_the_node_is_not_ready_while_no_node_of_the_partition_can_run_jobs(tmp_path: Path) -> None:
    _fake_slurm(tmp_path / "bin", "a|4|8000|gpu:1|down*|batch\nb|2|1000|(null)|idle|debug*")
    provider = _provider(tmp_path, {"bin_dir": str(tmp_path / "bin"), "partition": "batch"})

    async def body() -> None:
        await provider.start()
        try:
            node: dict[str, Any] = {}
            await provider.configure_node(node)
            assert node["status"]["capacity"]["cpu"] == "0"
            with pytest.raises(
                RuntimeError, match=r"no usable Slurm node in partition batch \(a down\*\)"
            ):
                await provider.ping()
        finally:
            await provider.stop()

    asyncio.run(body())


def test_partition_and_node_state_say_whether_new_jobs_start_with_slurms_reason() -> None:
    up = "a|4|8000|(null)|idle|batch*|up|none\nb|2|1000|(null)|mix|debug|up|none"
    assert unavailable(parse_sinfo(up), "batch") is None
    assert unavailable(parse_sinfo(up), None) is None

    # A partition DOWN, DRAIN or INACTIVE takes no new job; the default one counts when none is
    # configured, another partition's state does not.
    closed = "a|4|8000|(null)|idle|batch*|down|none\nb|2|1000|(null)|idle|debug|inactive|none"
    assert unavailable(parse_sinfo(closed), "batch") == (
        "SlurmPartitionDown",
        "Slurm partition batch is DOWN: no new job starts there (running ones go on)",
    )
    assert unavailable(parse_sinfo(closed), None) == (
        "SlurmPartitionDown",
        "Slurm partition batch is DOWN: no new job starts there (running ones go on)",
    )
    assert unavailable(parse_sinfo(closed), "debug") == (
        "SlurmPartitionInactive",
        "Slurm partition debug is INACTIVE: no new job starts there (running ones go on)",
    )

    # Drained nodes, with the admin's reason (which may hold the separator): not available, but
    # not dead either (their jobs go on), so the node stays Ready.
    drained = (
        "a|4|8000|(null)|drain|batch|up|disk swap | rack 4\nb|4|8000|(null)|drng|batch|up|none"
    )
    nodes = parse_sinfo(drained)
    assert nodes[0].reason == "disk swap | rack 4"
    assert unavailable(nodes, "batch") == (
        "SlurmNodesUnavailable",
        "no Slurm node in partition batch takes new jobs (a drain (disk swap | rack 4), b drng)",
    )
    assert unusable_reason(nodes, "batch") is None

    # Every node down: nothing runs, NotReady with the reason.
    down = "a|4|8000|(null)|down*|batch|up|Not responding\nb|4|8000|(null)|fail|batch|up|psu"
    assert unusable_reason(parse_sinfo(down), "batch") == (
        "no usable Slurm node in partition batch (a down* (Not responding), b fail (psu))"
    )


def test_the_node_carries_a_slurm_available_condition(tmp_path: Path) -> None:
    _fake_slurm(tmp_path / "bin", "a|4|8000|(null)|drain|batch|up|maintenance")
    provider = _provider(tmp_path, {"bin_dir": str(tmp_path / "bin"), "partition": "batch"})

    async def body() -> None:
        await provider.start()
        try:
            node: dict[str, Any] = {"status": {"conditions": [{"type": "Ready"}]}}
            await provider.configure_node(node)
            await provider.ping()  # drained: still Ready
            assert node["status"]["conditions"] == [
                {"type": "Ready"},
                {
                    "type": "SlurmAvailable",
                    "status": "False",
                    "reason": "SlurmNodesUnavailable",
                    "message": "no Slurm node in partition batch takes new jobs "
                    "(a drain (maintenance))",
                },
            ]
        finally:
            await provider.stop()

    asyncio.run(body())


def test_a_bad_config_is_one_clear_error(tmp_path: Path) -> None:
    from virtual_kubelet.sdk import ProviderConfigError

    with pytest.raises(ProviderConfigError, match="poll_secs"):
        _provider(tmp_path, {"poll_secs": 1})


def test_the_example_config_is_valid_and_shows_the_defaults() -> None:
    example = Path(__file__).parents[2] / "examples" / "slurm" / "slurm-provider.yaml"
    config = SlurmConfig.model_validate(yaml.safe_load(example.read_text()))
    defaults = SlurmConfig()
    assert config.slurm_conf is not None
    assert not str(config.slurm_conf).startswith("~")
    for key in SlurmConfig.model_fields:
        if key != "slurm_conf":
            assert getattr(config, key) == getattr(defaults, key), key


def test_while_slurm_does_not_answer_adopted_pods_are_never_reported_lost(tmp_path: Path) -> None:
    _fake_slurm(tmp_path / "bin", "a|4|8000|(null)|idle|batch")
    (tmp_path / "bin" / "squeue").write_text(
        "#!/bin/sh\necho 'slurm_load_jobs error' >&2\nexit 1\n"
    )
    provider = _provider(tmp_path, {"bin_dir": str(tmp_path / "bin")})
    job_dir = tmp_path / "state" / "slurm" / "pods" / "u-1"
    (job_dir / "status").mkdir(parents=True)
    (job_dir / "pod.json").write_text(json.dumps(_pod()))
    (job_dir / "job-id").write_text("12")
    (job_dir / "status" / "main.started").write_text("2026-01-01T00:00:00.1Z\n")

    async def body() -> None:
        await provider.start()
        try:
            (adopted,) = await provider.list_pods()
            assert adopted["status"]["phase"] == "Running"
            with pytest.raises(
                RuntimeError, match="Slurm does not answer: squeue: slurm_load_jobs"
            ):
                await provider.ping()
        finally:
            await provider.stop()

    asyncio.run(body())


def test_through_ssh_each_command_is_one_quoted_remote_command_line() -> None:
    from virtual_kubelet.providers.slurm.cli import SlurmCli

    config = SlurmConfig(ssh_host="me@login1", slurm_conf=Path("/etc/slurm/slurm.conf"))
    argv = SlurmCli(config).argv("sbatch", "--comment=vk:n:u", "/shared/a b/job.sh")
    assert argv == [
        "ssh",
        "-o",
        "BatchMode=yes",
        "me@login1",
        "--",
        "env SLURM_CONF=/etc/slurm/slurm.conf sbatch --comment=vk:n:u '/shared/a b/job.sh'",
    ]
    with pytest.raises(ValueError, match="is not a"):
        SlurmConfig(ssh_host="-oProxyCommand=x")
