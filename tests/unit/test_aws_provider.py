"""The aws provider's pure parts: Fargate sizes, task definition naming and contents, the config's
errors, and how a described ECS task becomes a pod status."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pytest

from virtual_kubelet.providers.aws.config import AwsConfig
from virtual_kubelet.providers.aws.sizing import SIZES, round_up
from virtual_kubelet.providers.aws.status import pod_status
from virtual_kubelet.providers.aws.taskdef import family, plan, started_by
from virtual_kubelet.sdk import InvalidInput, ProviderConfigError, read_mapping, validate
from virtual_kubelet.sdk.secret_env import SECRET_ENV_ANNOTATION, encode_secret_env

ARN = "arn:aws:ssm:eu-west-1:123456789012:parameter/app/token"


def _config(**extra: Any) -> AwsConfig:
    return AwsConfig.model_validate({"subnets": ["subnet-1"], **extra})


def _pod(**container: Any) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ns", "name": "p", "uid": "u-1", "annotations": {}},
        "spec": {"containers": [{"name": "c", "image": "busybox", **container}]},
    }


@pytest.mark.parametrize(
    ("cpu", "memory", "expected"),
    [
        (0, 0, (256, 512)),
        (256, 2048, (256, 2048)),
        (256, 2049, (512, 3072)),
        (1025, 1, (2048, 4096)),
        (4096, 30721, (8192, 32768)),
        (8192, 61441, (16384, 65536)),
        (16384, 122880, (16384, 122880)),
    ],
)
def test_sizes_round_up_to_the_smallest_valid_fargate_size(
    cpu: int, memory: int, expected: tuple[int, int]
) -> None:
    size = round_up(cpu, memory)
    assert (size.cpu, size.memory) == expected


def test_the_size_table_matches_aws_and_nothing_bigger_fits() -> None:
    assert len([s for s in SIZES if s.cpu == 256]) == 3
    assert [s.memory for s in SIZES if s.cpu == 16384][:2] == [32768, 40960]
    with pytest.raises(ValueError, match="16 vCPU and 120 GiB"):
        round_up(16385, 1)
    with pytest.raises(ValueError, match="16 vCPU and 120 GiB"):
        round_up(256, 122881)


def test_family_and_started_by_are_stable_and_within_ecs_limits() -> None:
    assert family("vk", "default", "web") == "vk_vk_default_web"
    dotted = family("vk", "default", "web.v1")
    assert dotted.startswith("vk_vk_default_web-v1_")
    assert dotted == family("vk", "default", "web.v1")
    assert dotted != family("vk", "default", "web-v1")
    assert len(family("vk", "n" * 63, "p" * 253)) <= 255
    arn = "arn:aws:ecs:us-east-1:123456789012:cluster/prod"
    assert family(arn, "a", "b") == "vk_prod_a_b"
    assert started_by("node-1") == "vk-node-1"
    long = started_by("a.very.long.node.name.example.com")
    assert len(long) <= 36
    assert long == started_by("a.very.long.node.name.example.com")


def test_the_plan_sums_containers_maps_command_env_secrets_and_init_order() -> None:
    pod = _pod(
        command=["sh", "-c"],
        args=["echo $(GREETING)"],
        env=[{"name": "GREETING", "value": "hi"}, {"name": "TOKEN", "value": "s3cret-value"}],
        resources={"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
        volumeMounts=[
            {"name": "scratch", "mountPath": "/scratch"},
            {"name": "kube-api-access-x", "mountPath": "/var/run/secrets"},
        ],
    )
    pod["metadata"]["annotations"]["aws.virtual-kubelet.io/secrets"] = f'{{"TOKEN": "{ARN}"}}'
    pod["spec"]["initContainers"] = [{"name": "init", "image": "busybox"}]
    pod["spec"]["volumes"] = [
        {"name": "scratch", "emptyDir": {}},
        {"name": "kube-api-access-x", "projected": {"sources": []}},
    ]
    planned = plan(pod, _config(), "node-1", "eu-west-1")
    register = planned.register
    assert (register["cpu"], register["memory"]) == ("1024", "2048")
    init, main = register["containerDefinitions"]
    assert init["essential"] is False
    assert main["essential"] is True
    assert main["dependsOn"] == [{"containerName": "init", "condition": "SUCCESS"}]
    assert main["entryPoint"] == ["sh", "-c"]
    assert main["command"] == ["echo hi"]
    assert main["environment"] == [{"name": "GREETING", "value": "hi"}]
    assert main["secrets"] == [{"name": "TOKEN", "valueFrom": ARN}]
    assert main["memory"] == 2048
    assert main["memoryReservation"] == 1024
    assert main["cpu"] == 1024
    assert main["mountPoints"] == [
        {"sourceVolume": "scratch", "containerPath": "/scratch", "readOnly": False}
    ]
    assert register["volumes"] == [{"name": "scratch"}]
    assert "s3cret-value" not in str(register)
    assert "s3cret-value" not in str(planned.run)
    run = planned.run
    assert run["launchType"] == "FARGATE"
    assert run["startedBy"] == "vk-node-1"
    assert run["networkConfiguration"]["awsvpcConfiguration"]["assignPublicIp"] == "DISABLED"
    plain = plan(pod, _config(secret_env_mode="plain"), "node-1", "eu-west-1").register
    assert {"name": "TOKEN", "value": "s3cret-value"} in plain["containerDefinitions"][1][
        "environment"
    ]


def test_a_secret_referenced_by_arn_is_not_expanded_into_the_command() -> None:
    pod = _pod(
        command=["echo", "$(TOKEN)"],
        env=[{"name": "TOKEN", "value": "s3cret-value"}],
    )
    planned = plan(pod, _config(secret_env={"TOKEN": ARN}), "n", "eu-west-1")
    assert planned.register["containerDefinitions"][0]["entryPoint"] == ["echo", "$(TOKEN)"]


def test_a_secret_sourced_var_without_an_arn_is_refused_naming_it_never_its_value() -> None:
    pod = _pod(
        env=[
            {"name": "MODE", "value": "fast"},
            {"name": "TOKEN", "value": "s3cret-value"},
            {"name": "DB_PASSWORD", "value": "hunter2"},
        ]
    )
    # What the agent marks when TOKEN and DB_PASSWORD came from Secrets.
    pod["metadata"]["annotations"][SECRET_ENV_ANNOTATION] = encode_secret_env(
        {"c": ["TOKEN", "DB_PASSWORD"]}
    )
    with pytest.raises(InvalidInput) as refused:
        plan(pod, _config(secret_env={"TOKEN": ARN}), "n", "eu-west-1")
    message = str(refused.value)
    assert 'container "c": env DB_PASSWORD take their values from Kubernetes Secrets' in message
    assert "secret_env_mode: plain" in message
    assert "TOKEN" not in message
    assert "MODE" not in message
    assert "hunter2" not in message
    assert "s3cret-value" not in message
    # Mapped: the ARN goes, never the value.
    mapped = plan(
        pod, _config(secret_env={"TOKEN": ARN, "DB_PASSWORD": ARN}), "n", "eu-west-1"
    ).register
    (container,) = mapped["containerDefinitions"]
    assert container["environment"] == [{"name": "MODE", "value": "fast"}]
    assert "hunter2" not in str(mapped)
    # The operator's explicit choice: plain env.
    plain = plan(pod, _config(secret_env_mode="plain"), "n", "eu-west-1").register
    assert {"name": "DB_PASSWORD", "value": "hunter2"} in plain["containerDefinitions"][0][
        "environment"
    ]


def test_bad_config_and_annotations_are_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(ProviderConfigError, match="subnets"):
        validate(AwsConfig, {}, tmp_path / "c.yaml")
    with pytest.raises(ProviderConfigError, match="not a Secrets Manager or SSM"):
        validate(AwsConfig, {"subnets": ["s"], "secret_env": {"X": "plain"}}, tmp_path / "c")
    with pytest.raises(ProviderConfigError, match="max_attempts"):
        validate(AwsConfig, {"subnets": ["s"], "max_attempts": 0}, tmp_path / "c")
    pod = _pod()
    pod["metadata"]["annotations"]["aws.virtual-kubelet.io/secrets"] = "[1]"
    with pytest.raises(InvalidInput, match="JSON object"):
        plan(pod, _config(), "n", "r")
    with pytest.raises(InvalidInput, match="cpu request"):
        plan(_pod(resources={"requests": {"cpu": "lots"}}), _config(), "n", "r")


def _task(last: str, *containers: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "taskArn": "arn:aws:ecs:r:1:task/c/abc",
        "lastStatus": last,
        "containers": list(containers),
        "createdAt": datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
        **extra,
    }


def _two() -> dict[str, Any]:
    pod = _pod()
    pod["spec"]["containers"].append({"name": "side", "image": "busybox"})
    return pod


def test_task_states_map_to_pod_phases() -> None:
    pod = _two()
    pending = pod_status(pod, _task("PROVISIONING"), "10.0.0.1")
    assert pending["phase"] == "Pending"
    assert pending["containerStatuses"][0]["state"]["waiting"]["reason"] == "ContainerCreating"
    running = pod_status(
        pod,
        _task(
            "RUNNING",
            {"name": "c", "lastStatus": "RUNNING", "runtimeId": "r1"},
            {"name": "side", "lastStatus": "RUNNING"},
            attachments=[
                {
                    "type": "ElasticNetworkInterface",
                    "details": [{"name": "privateIPv4Address", "value": "10.1.2.3"}],
                }
            ],
        ),
        "10.0.0.1",
    )
    assert running["phase"] == "Running"
    assert running["podIP"] == "10.1.2.3"
    assert running["containerStatuses"][0]["containerID"] == "ecs://r1"
    assert running["startTime"] == "2026-01-02T03:04:05Z"
    assert {c["type"]: c["status"] for c in running["conditions"]}["Ready"] == "True"


def test_stopped_is_succeeded_only_when_every_container_exited_zero() -> None:
    pod = _two()
    ok = _task(
        "STOPPED",
        {"name": "c", "lastStatus": "STOPPED", "exitCode": 0},
        {"name": "side", "lastStatus": "STOPPED", "exitCode": 0},
    )
    assert pod_status(pod, ok, "h")["phase"] == "Succeeded"
    bad = _task(
        "STOPPED",
        {"name": "c", "lastStatus": "STOPPED", "exitCode": 0},
        {"name": "side", "lastStatus": "STOPPED", "exitCode": 137, "reason": "OutOfMemoryError"},
        stopCode="EssentialContainerExited",
        stoppedReason="Essential container in task exited",
    )
    failed = pod_status(pod, bad, "h")
    assert failed["phase"] == "Failed"
    assert failed["reason"] == "EssentialContainerExited"
    assert failed["message"] == "Essential container in task exited (exit codes: side=137)"
    side = failed["containerStatuses"][1]["state"]["terminated"]
    assert (side["exitCode"], side["reason"], side["message"]) == (137, "Error", "OutOfMemoryError")
    never = _task(
        "STOPPED",
        {"name": "c", "lastStatus": "STOPPED", "reason": "CannotPullContainerError: no such image"},
        stopCode="TaskFailedToStart",
        stoppedReason="CannotPullContainerError",
    )
    status = pod_status(_pod(), never, "h")
    assert status["phase"] == "Failed"
    assert status["reason"] == "TaskFailedToStart"
    terminated = status["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 128
    assert terminated["reason"] == "StartError"
    lost = pod_status(_pod(), None, "h")
    assert (lost["phase"], lost["reason"]) == ("Failed", "TaskLost")


def test_the_example_config_is_valid() -> None:
    example = Path(__file__).parents[2] / "examples" / "aws" / "aws-provider.yaml"
    config = validate(AwsConfig, read_mapping(example), example)
    assert config.subnets
    assert config.secret_env_mode == "references"
