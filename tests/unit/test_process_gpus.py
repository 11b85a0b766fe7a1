"""GPUs in the process provider: exclusive devices from a configured list, a clear wait when too
few are free, freed when a container ends, kept across an agent restart; `nvidia.com/gpu` on the
node; the holders' `accelerators` in /stats/summary. The real NVML path runs only where
`nvidia-smi` works (test marked `gpu`; no control plane, no network). From the checkout, with
nvidia-ml-py, pytest, pyyaml, aiohttp, orjson and pydantic installed:

    PYTHONPATH=$PWD/src python -m pytest tests/unit/test_process_gpus.py -m gpu

(an absolute path: the containers' shims are Python processes started in other directories; with
the package pip-installed instead, its pytest plugins need the dev dependencies, or add
`-p no:virtual_kubelet_devcluster -p no:virtual_kubelet_conformance`).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
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


def _accelerators(summary: dict[str, Any], pod: Pod) -> dict[str, Any]:
    """container name -> its `accelerators` (None without) in a stats summary, for one pod."""
    uid = pod["metadata"]["uid"]
    entry = next(p for p in summary["pods"] if p["podRef"]["uid"] == uid)
    return {c["name"]: c.get("accelerators") for c in entry["containers"]}


#: Configured devices NVML cannot know (UUIDs of no real GPU), so the test means the same on a
#: machine with GPUs: what a configured list reports without NVML.
CONFIGURED = [
    "GPU-00000000-0000-0000-0000-00000000000a",
    "GPU-00000000-0000-0000-0000-00000000000b",
]


def test_the_stats_summary_names_the_configured_devices_a_container_holds(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        holder = make_pod(
            "holder",
            [
                sh("exec sleep 60", resources={"limits": {"nvidia.com/gpu": "2"}}),
                sh("exec sleep 60", name="side"),
            ],
            restart="Never",
        )
        await h.provider.create_pod(holder)
        await h.running("holder")
        await h.running("holder", "side")
        held = _accelerators(await h.provider.get_stats_summary(), holder)
        # Make, id and the configured model; no memory or duty cycle, which nothing measured.
        assert held == {
            "main": [
                {"make": "nvidia", "id": CONFIGURED[0], "model": "Test GPU 80GB"},
                {"make": "nvidia", "id": CONFIGURED[1], "model": "Test GPU 80GB"},
            ],
            "side": None,
        }

        # Once the holder is gone, nobody reports the devices.
        gone = dict(holder)
        gone["metadata"] = {**gone["metadata"], "deletionGracePeriodSeconds": 0}
        await h.provider.delete_pod(gone)
        later = _gpu_pod("later", "exec sleep 60")
        await h.provider.create_pod(later)
        await h.running("later")
        summary = await h.provider.get_stats_summary()
        assert holder["metadata"]["uid"] not in {p["podRef"]["uid"] for p in summary["pods"]}
        assert _accelerators(summary, later) == {
            "main": [{"make": "nvidia", "id": CONFIGURED[0], "model": "Test GPU 80GB"}]
        }

    run_test(tmp_path, body, {"gpus": CONFIGURED, "gpu_model": "Test GPU 80GB"})


# --- the real NVML path (a machine where nvidia-smi works) ---------------------------------------


def _nvidia_smi_works() -> bool:
    if shutil.which("nvidia-smi") is None:
        return False
    try:
        return subprocess.run(["nvidia-smi", "-L"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


#: Run inside a container: the UUIDs of the devices CUDA shows it, through the driver API
#: (libcuda, which honours CUDA_VISIBLE_DEVICES; nvidia-smi and NVML list every device whatever
#: the variables say). No CUDA toolkit or Python package needed.
CUDA_PROBE = """
import ctypes, ctypes.util, sys
try:
    cuda = ctypes.CDLL("libcuda.so.1")
except OSError:
    cuda = ctypes.CDLL(ctypes.util.find_library("cuda") or "libcuda.so")
def check(rc, what):
    if rc != 0:
        print(f"probe-failed {what} {rc}", flush=True)
        sys.exit(1)
check(cuda.cuInit(0), "cuInit")
count = ctypes.c_int()
check(cuda.cuDeviceGetCount(ctypes.byref(count)), "cuDeviceGetCount")
get_uuid = getattr(cuda, "cuDeviceGetUuid_v2", None) or cuda.cuDeviceGetUuid
for index in range(count.value):
    device = ctypes.c_int()
    check(cuda.cuDeviceGet(ctypes.byref(device), index), "cuDeviceGet")
    raw = (ctypes.c_ubyte * 16)()
    check(get_uuid(raw, device), "cuDeviceGetUuid")
    h = bytes(raw).hex()
    print(f"uuid={h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}", flush=True)
print("probe-done", flush=True)
"""


def _nvml_devices() -> list[tuple[str, str, set[str]]]:
    """(UUID, name, UUIDs of its MIG instances) of each GPU, by NVML index, in the test's own
    process (independent of the provider's reader)."""
    import pynvml  # type: ignore[import-not-found]

    def text(value: Any) -> str:
        return value.decode() if isinstance(value, bytes) else str(value)

    pynvml.nvmlInit()
    try:
        found = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            migs: set[str] = set()
            try:
                if pynvml.nvmlDeviceGetMigMode(handle)[0]:
                    for slot in range(pynvml.nvmlDeviceGetMaxMigDeviceCount(handle)):
                        try:
                            mig = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
                        except pynvml.NVMLError:
                            continue
                        migs.add(text(pynvml.nvmlDeviceGetUUID(mig)))
            except pynvml.NVMLError:
                pass  # no MIG on this GPU
            found.append(
                (
                    text(pynvml.nvmlDeviceGetUUID(handle)),
                    text(pynvml.nvmlDeviceGetName(handle)),
                    migs,
                )
            )
        return found
    finally:
        pynvml.nvmlShutdown()


def _bare_uuid(uuid: str) -> str:
    """A UUID without its GPU-/MIG- prefix (the driver API gives the 16 bytes only)."""
    return uuid.split("-", 1)[1] if uuid[:4] in ("GPU-", "MIG-") else uuid


@pytest.mark.gpu
@pytest.mark.skipif(not _nvidia_smi_works(), reason="no NVIDIA GPU here (nvidia-smi does not work)")
def test_nvml_devices_are_found_and_a_container_sees_and_reports_exactly_its_own(
    tmp_path: Path,
) -> None:
    assert discover_nvml(), "nvidia-smi works but NVML found no device: is nvidia-ml-py installed?"
    listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=True)
    gpu_lines = [line for line in listed.stdout.splitlines() if line.startswith("GPU ")]
    nvml = _nvml_devices()
    probe = tmp_path / "cuda_probe.py"
    probe.write_text(CUDA_PROBE)
    # The container is a plain process: the driver's library path, if the machine needs one.
    env = [{"name": n, "value": os.environ[n]} for n in ("LD_LIBRARY_PATH",) if n in os.environ]
    script = f"{sys.executable} {probe}; exec sleep 120"

    def uuids_seen(h: Harness, pod: Pod) -> list[str]:
        return [line[5:] for line in _shown(h, pod).splitlines() if line.startswith("uuid=")]

    def probed(h: Harness, pod: Pod) -> bool:
        return "probe-" in h.log_text(pod)

    async def body(h: Harness) -> None:
        node: dict[str, Any] = {}
        await h.provider.configure_node(node)
        # Discovery advertises every GPU nvidia-smi lists.
        assert node["status"]["capacity"]["nvidia.com/gpu"] == str(len(gpu_lines)) != "0"
        assert node["status"]["allocatable"]["nvidia.com/gpu"] == str(len(gpu_lines))

        first = _gpu_pod("cuda-0", script, env=env)
        await h.provider.create_pod(first)
        await h.running("cuda-0")
        await h.wait("cuda-0", lambda p: probed(h, first), timeout=120)
        shown = _shown(h, first)
        assert shown.splitlines()[0] == "cuda=0 nvidia=0", shown
        assert "probe-done" in shown, shown
        # CUDA in the container sees its device (or that GPU's MIG instances) and no other.
        uuid, name, migs = nvml[0]
        seen = uuids_seen(h, first)
        allowed = {_bare_uuid(u) for u in {uuid} | migs}
        assert seen, shown
        assert set(seen) <= allowed, (seen, uuid, migs)
        if not migs:
            assert seen == [_bare_uuid(uuid)]

        # /stats/summary names that GPU with its real figures.
        held = _accelerators(await h.provider.get_stats_summary(), first)["main"]
        assert held is not None
        assert len(held) == 1, held
        entry = held[0]
        assert (entry["make"], entry["id"], entry["model"]) == ("nvidia", uuid, name)
        assert entry["memoryTotal"] > 0
        assert 0 <= entry["memoryUsed"] <= entry["memoryTotal"]
        assert 0 <= entry.get("dutyCycle", 0) <= 100

        # A second 1-GPU pod gets the next device, or waits when there is none.
        second = _gpu_pod("cuda-1", script, env=env)
        await h.provider.create_pod(second)
        if len(nvml) == 1:
            waiting = await h.wait("cuda-1", _waits_for_gpu)
            assert status_of(waiting)["state"]["waiting"]["message"] == (
                "needs 1 nvidia.com/gpu, 0 of 1 free"
            )
            return
        await h.running("cuda-1")
        await h.wait("cuda-1", lambda p: probed(h, second), timeout=120)
        assert _shown(h, second).splitlines()[0] == "cuda=1 nvidia=1"
        other, _, other_migs = nvml[1]
        seen = uuids_seen(h, second)
        assert seen, _shown(h, second)
        assert set(seen) <= {_bare_uuid(u) for u in {other} | other_migs}, seen
        held = _accelerators(await h.provider.get_stats_summary(), second)["main"]
        assert held is not None
        assert [e["id"] for e in held] == [other]

    started = time.monotonic()
    run_test(tmp_path, body)
    assert time.monotonic() - started < 300
