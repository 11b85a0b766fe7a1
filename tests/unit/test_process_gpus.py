"""GPUs in the process provider: exclusive devices from a configured list, a clear wait when too
few are free, freed when a container ends, kept across an agent restart; `nvidia.com/gpu` on the
node. The real NVML path runs only where `nvidia-smi` works (test marked `gpu`)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from virtual_kubelet.providers.process.gpus import GpuPool, discover_nvml, requested_gpus
from virtual_kubelet.sdk import Pod

from .test_process_provider import Harness, kill_everything, make_pod, run_test, sh, status_of

ONE_GPU = {"limits": {"nvidia.com/gpu": "1"}}
SHOW = 'echo "cuda=$CUDA_VISIBLE_DEVICES nvidia=$NVIDIA_VISIBLE_DEVICES"; '


def _gpu_pod(name: str, script: str, **extra: Any) -> Pod:
    return make_pod(name, [sh(SHOW + script, resources=ONE_GPU, **extra)], restart="Never")


def _waits_for_gpu(pod: Pod) -> bool:
    return bool(status_of(pod)["state"].get("waiting", {}).get("reason") == "WaitingForGPU")


def _shown(h: Harness, pod: Pod) -> str:
    """The container's output: its CRI log records without their time, stream and tag."""
    return "\n".join(line.split(" ", 3)[3] for line in h.log_text(pod).splitlines())


def test_the_pool_gives_devices_exclusively_and_says_why_it_cannot() -> None:
    pool = GpuPool(["0", "1"])
    assert pool.acquire("a/main", 1) == ["0"]
    assert pool.acquire("a/main", 1) == ["0"]  # asking again is not taking more
    assert pool.acquire("b/main", 2) is None
    assert pool.shortage(2) == "needs 2 nvidia.com/gpu, 1 of 2 free"
    assert pool.shortage(3) == "needs 3 nvidia.com/gpu, the node has 2"
    assert pool.restore("c/main", ["0", "7"]) == []  # held by a, and unknown
    pool.release("a/main")
    assert pool.acquire("b/main", 2) == ["0", "1"]
    assert requested_gpus({"resources": {"requests": {"nvidia.com/gpu": "2"}}}) == 2
    assert requested_gpus({"resources": {"limits": {"cpu": "1"}}}) == 0


def test_two_of_three_one_gpu_pods_run_on_distinct_devices_and_the_third_waits(
    tmp_path: Path,
) -> None:
    async def body(h: Harness) -> None:
        node: dict[str, Any] = {}
        await h.provider.configure_node(node)
        assert node["status"]["capacity"]["nvidia.com/gpu"] == "2"
        assert node["status"]["allocatable"]["nvidia.com/gpu"] == "2"

        first = _gpu_pod("first", "sleep 1.5")
        second = _gpu_pod("second", "exec sleep 60")
        third = _gpu_pod("third", "exec sleep 60")
        for pod in (first, second):
            await h.provider.create_pod(pod)
            await h.running(pod["metadata"]["name"])
        await h.provider.create_pod(third)
        waiting = await h.wait("third", _waits_for_gpu)
        await h.wait("first", lambda p: h.log_text(first) != "")
        assert status_of(waiting)["state"]["waiting"] == {
            "reason": "WaitingForGPU",
            "message": "needs 1 nvidia.com/gpu, 0 of 2 free",
        }
        shown = {_shown(h, first), _shown(h, second)}
        assert shown == {"cuda=0 nvidia=0", "cuda=1 nvidia=1"}

        # The first ends: the third gets its device.
        await h.wait("first", lambda p: "terminated" in status_of(p)["state"])
        await h.running(
            "third",
        )
        await h.wait("third", lambda p: h.log_text(third) != "")
        assert _shown(h, third) == _shown(h, first)

    run_test(tmp_path, body, {"gpus": ["0", "1"]})


def test_a_restarted_agent_keeps_the_devices_of_the_containers_it_adopts(tmp_path: Path) -> None:
    config = {"gpus": ["0", "1"]}
    holders = [_gpu_pod(f"holder-{i}", "exec sleep 60") for i in range(2)]

    async def first_agent() -> None:
        harness = Harness(tmp_path, config)
        await harness.start()
        for pod in holders:
            await harness.provider.create_pod(pod)
            await harness.running(pod["metadata"]["name"])
        # No stop(), no delete: the loop just ends, as if the agent was killed.

    async def second_agent() -> None:
        harness = Harness(tmp_path, config)
        await harness.start()
        late = _gpu_pod("late", "exec sleep 60")
        await harness.provider.create_pod(late)
        waiting = await harness.wait("late", _waits_for_gpu)
        assert status_of(waiting)["state"]["waiting"]["reason"] == "WaitingForGPU"
        # Deleting a holder frees its device for the waiting pod.
        await harness.wait("holder-0", lambda p: harness.log_text(holders[0]) != "")
        freed = _shown(harness, holders[0])
        gone = dict(holders[0])
        gone["metadata"] = {**gone["metadata"], "deletionGracePeriodSeconds": 0}
        await harness.provider.delete_pod(gone)
        await harness.running("late")
        await harness.wait("late", lambda p: harness.log_text(late) != "")
        assert _shown(harness, late) == freed
        await harness.close()

    try:
        asyncio.run(first_agent())
        asyncio.run(second_agent())
    finally:
        kill_everything(tmp_path / "state")


def _nvidia_smi_works() -> bool:
    if shutil.which("nvidia-smi") is None:
        return False
    try:
        return subprocess.run(["nvidia-smi", "-L"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.gpu
@pytest.mark.skipif(not _nvidia_smi_works(), reason="no NVIDIA GPU here (nvidia-smi does not work)")
def test_nvml_devices_are_found_and_a_container_sees_exactly_its_own(tmp_path: Path) -> None:
    devices = discover_nvml()
    assert devices, "nvidia-smi works but NVML found no device: is nvidia-ml-py installed?"

    async def body(h: Harness) -> None:
        node: dict[str, Any] = {}
        await h.provider.configure_node(node)
        assert node["status"]["capacity"]["nvidia.com/gpu"] == str(len(devices))
        pod = _gpu_pod(
            "cuda", "nvidia-smi -L | wc -l; nvidia-smi --query-gpu=index --format=csv,noheader"
        )
        await h.provider.create_pod(pod)
        await h.wait("cuda", lambda p: "terminated" in status_of(p)["state"], timeout=60)
        shown, count, *_ = _shown(h, pod).splitlines()
        assert shown == "cuda=0 nvidia=0"
        assert count.strip() == str(len(devices))  # nvidia-smi itself lists every device

    started = time.monotonic()
    run_test(tmp_path, body)
    assert time.monotonic() - started < 120
