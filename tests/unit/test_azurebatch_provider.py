"""The azurebatch provider's pure parts: ids, a pod as tasks, tasks as a pod status, the config's
errors, error descriptions, and the example config and docs staying true to the config model."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from azure.batch import models
from pydantic import ValidationError

from virtual_kubelet.providers.azurebatch import tasks
from virtual_kubelet.providers.azurebatch.config import AzureBatchConfig
from virtual_kubelet.providers.azurebatch.status import pod_status
from virtual_kubelet.sdk import InvalidInput

ROOT = Path(__file__).resolve().parents[2]
UID = "0b5c3a34-8f0e-4f43-a6a5-3c1a1c2f0d9e"


def _config(**extra: Any) -> AzureBatchConfig:
    return AzureBatchConfig(
        account_url="https://acct.westeurope.batch.azure.com/",
        account_name="acct",
        pool_id="pool",
        **extra,
    )


def _pod(*containers: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "namespace": "ns", "uid": UID},
        "spec": {"containers": list(containers), **spec},
    }


def _main(**fields: Any) -> dict[str, Any]:
    return {"name": "main", "image": "busybox:1.36", "command": ["sh", "-c", "echo 'hi there'"]} | (
        fields
    )


def test_job_ids_are_valid_batch_ids_and_keep_names_apart() -> None:
    config = _config()
    assert tasks.job_id(config, "vk-node-1") == "vk-vk-node-1"
    odd = tasks.job_id(config, "node.example.com")
    assert odd.startswith("vk-node-example-com-")
    assert odd != tasks.job_id(config, "node-example-com")
    long_a, long_b = (tasks.job_id(config, "n" * 80 + c) for c in "ab")
    assert len(long_a) <= 64
    assert long_a != long_b
    for job in (odd, long_a):
        assert all(c.isalnum() or c in "-_" for c in job)


def test_tasks_are_named_by_pod_uid_and_container_index() -> None:
    pod = _pod(_main(), _main(name="side"))
    assert tasks.task_ids(pod) == [f"pod-{UID}-0", f"pod-{UID}-1"]
    assert all(len(t) <= 64 for t in tasks.task_ids(pod))


def test_a_container_task_carries_image_command_env_and_slots() -> None:
    config = _config(cpu_per_slot=1, container_run_options="--rm")
    container = _main(
        env=[{"name": "A", "value": "1"}, {"name": "EMPTY"}],
        resources={"requests": {"cpu": "1500m"}},
    )
    [task] = tasks.build(_pod(container, activeDeadlineSeconds=90), config, use_containers=True)
    assert task.id == f"pod-{UID}-0"
    assert task.display_name == "ns/p/main"
    assert task.command_line == "sh -c 'echo '\"'\"'hi there'\"'\"''"
    assert task.container_settings is not None
    assert task.container_settings.image_name == "busybox:1.36"
    assert task.container_settings.container_run_options == "--rm"
    assert [(e.name, e.value) for e in task.environment_settings or []] == [
        ("A", "1"),
        ("EMPTY", ""),
    ]
    assert task.required_slots == 2
    assert task.constraints is not None
    assert task.constraints.max_wall_clock_time == datetime.timedelta(seconds=90)
    assert task.constraints.max_task_retry_count == 0


def test_without_containers_the_command_line_is_all_and_is_required() -> None:
    [task] = tasks.build(_pod(_main()), _config(), use_containers=False)
    assert task.container_settings is None
    assert task.required_slots is None  # no cpu_per_slot: Batch's default of one slot
    bare = _main(command=None)
    with pytest.raises(InvalidInput, match="needs a command"):
        tasks.build(_pod(bare), _config(), use_containers=False)
    [entrypoint] = tasks.build(_pod(bare), _config(), use_containers=True)
    assert entrypoint.command_line == ""


def test_init_containers_and_bad_cpu_are_refused() -> None:
    with pytest.raises(InvalidInput, match="init containers"):
        tasks.build(_pod(_main(), initContainers=[_main()]), _config(), use_containers=True)
    bad = _main(resources={"requests": {"cpu": "lots"}})
    with pytest.raises(InvalidInput, match="cpu request"):
        tasks.build(_pod(bad), _config(cpu_per_slot=1), use_containers=True)


def _task(state: str, **info: Any) -> models.BatchTask:
    body: dict[str, Any] = {
        "id": f"pod-{UID}-0",
        "state": state,
        "stateTransitionTime": "2026-11-26T10:00:05Z",
    }
    if info:
        body["executionInfo"] = {"retryCount": 0, "requeueCount": 0, **info}
    return models.BatchTask(body)


def _status(*found: models.BatchTask | None) -> dict[str, Any]:
    pod = _pod(*[_main(name=f"c{i}") for i in range(len(found))])
    pod["status"] = {"startTime": "2026-11-26T10:00:00Z"}
    refs = [f"job/t{i}" for i in range(len(found))]
    return dict(pod_status(pod, list(found), refs, "10.0.0.5"))


def test_task_states_become_pod_phases() -> None:
    assert _status(None)["phase"] == "Pending"
    queued = _status(_task("active"))
    assert queued["containerStatuses"][0]["state"]["waiting"]["reason"] == "TaskQueued"
    preparing = _status(_task("preparing"))["containerStatuses"][0]["state"]["waiting"]
    assert preparing["reason"] == "TaskPreparing"
    running = _status(_task("running", startTime="2026-11-26T10:00:03Z"))
    assert running["phase"] == "Running"
    container = running["containerStatuses"][0]
    assert container["ready"] is True
    assert container["containerID"] == "azurebatch://job/t0"
    assert container["state"]["running"]["startedAt"].startswith("2026-11-26T10:00:03")
    assert {c["type"]: c["status"] for c in running["conditions"]}["Ready"] == "True"


def test_completed_tasks_decide_by_exit_code_and_failure_info() -> None:
    ok = _status(_task("completed", startTime="2026-11-26T10:00:03Z", exitCode=0))
    assert ok["phase"] == "Succeeded"
    assert ok["containerStatuses"][0]["state"]["terminated"]["reason"] == "Completed"
    failure = {"category": "usererror", "code": "FailureExitCode", "message": "exit code 3"}
    bad = _status(_task("completed", exitCode=3, failureInfo=failure))
    assert bad["phase"] == "Failed"
    terminated = bad["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (3, "FailureExitCode")
    assert bad["message"] == "c0: exit code 3"
    ended = {"category": "usererror", "code": "TaskEnded", "message": "ended by user"}
    stopped = _status(_task("completed", failureInfo=ended))
    assert stopped["phase"] == "Failed"
    assert stopped["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 1


def test_a_task_gone_after_it_was_listed_ends_the_pod_failed() -> None:
    pod = _pod(_main())
    pod["status"] = {"startTime": "2026-11-26T10:00:00Z"}
    status = pod_status(pod, [None], ["job/t0"], "10.0.0.5", "", "2026-11-26T10:05:00Z")
    assert status["phase"] == "Failed"
    terminated = status["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (137, "TaskLost")
    assert terminated["finishedAt"] == "2026-11-26T10:05:00Z"  # stable: no status churn
    assert pod_status(pod, [None], ["job/t0"], "10.0.0.5")["phase"] == "Pending"


def test_a_pod_of_several_tasks_runs_when_all_started_and_ends_when_all_ended() -> None:
    running, queued = _task("running"), _task("active")
    done, failed = _task("completed", exitCode=0), _task("completed", exitCode=2)
    assert _status(running, queued)["phase"] == "Pending"
    assert _status(running, done)["phase"] == "Running"
    assert {c["type"]: c["status"] for c in _status(running, done)["conditions"]}["Ready"] == (
        "False"
    )
    assert _status(done, done)["phase"] == "Succeeded"
    assert _status(done, failed)["phase"] == "Failed"


def test_config_errors_are_clear_and_never_show_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValidationError, match="is not an http"):
        AzureBatchConfig(account_url="acct.batch.azure.com", account_name="a", pool_id="p")
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        AzureBatchConfig.model_validate(
            {"account_url": "https://a", "account_name": "a", "pool_id": "p", "account_key": "k"}
        )
    with pytest.raises(ValidationError, match="job_prefix"):
        _config(job_prefix="has space")
    monkeypatch.delenv("AZURE_BATCH_ACCOUNT_KEY", raising=False)
    with pytest.raises(ValueError, match=r"no account key.*AZURE_BATCH_ACCOUNT_KEY"):
        _config().account_key()
    monkeypatch.setenv("AZURE_BATCH_ACCOUNT_KEY", " c2VjcmV0 \n")
    assert _config().account_key() == "c2VjcmV0"
    key_file = tmp_path / "key"
    key_file.write_text("")
    with pytest.raises(ValueError, match="is empty"):
        _config(account_key_file=key_file).account_key()
    key_file.write_text("ZmlsZWtleQ==\n")
    assert _config(account_key_file=key_file).account_key() == "ZmlsZWtleQ=="
    with pytest.raises(ValueError, match="No such file") as missing:
        _config(account_key_file=tmp_path / "absent").account_key()
    assert "ZmlsZWtleQ" not in str(missing.value)


def test_the_example_config_loads_and_every_key_is_documented() -> None:
    example = yaml.safe_load((ROOT / "examples/azurebatch/azurebatch-provider.yaml").read_text())
    config = AzureBatchConfig.model_validate(example)
    assert config.pool_id == "vk-pool"
    fields = set(AzureBatchConfig.model_fields)
    assert set(example) == fields  # the example shows every key
    docs = (ROOT / "docs/providers/azurebatch.md").read_text()
    assert all(f"`{name}`" in docs for name in fields), fields
    chart = yaml.safe_load((ROOT / "charts/virtual-kubelet/ci/azurebatch-values.yaml").read_text())
    AzureBatchConfig.model_validate(chart["providers"]["azurebatch"])


def test_errors_are_described_by_status_code_and_message_only() -> None:
    from azure.core.exceptions import HttpResponseError

    from virtual_kubelet.providers.azurebatch import client

    error = HttpResponseError(message="throttled")
    error.status_code = 429
    error.error = models.BatchError({"code": "TooManyRequests", "message": {"value": "slow\nx"}})  # type: ignore[assignment]
    assert client.describe(error) == "Azure Batch answered 429 TooManyRequests: slow"
    assert client.is_throttled(error)
    assert not client.is_auth_failure(error)
    error.status_code = 403
    assert client.is_auth_failure(error)


def test_entra_id_needs_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from virtual_kubelet.providers.azurebatch import client

    monkeypatch.delenv("AZURE_BATCH_ACCOUNT_KEY", raising=False)
    batch = client.make_client(_config(auth="entra-id"))
    asyncio.run(batch.close())
    with pytest.raises(ValueError, match="no account key"):
        client.make_client(_config())
