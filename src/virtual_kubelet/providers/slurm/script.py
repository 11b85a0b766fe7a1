"""A pod as one Slurm batch job: the job directory's files (the batch script, one env file per
container) and the sbatch options (resources, placement, time limit, the pod's identity).

Containers are plain processes on the compute node, each one job step of its own (`srun
--overlap`, the step named after the container): the image is NOT pulled or used (its name is
only reported back). Init containers run one step after the other first; a failing one ends the
job. The main containers then run side by side, each with its own CRI-format log
(`logs/<name>.log`, lines time-stamped by a small perl filter) and its start time and exit code in
`status/`, which is how the provider reports per-container states. Env values (maybe secrets) go only into the
env files (mode 0600), never into the script or the sbatch command line, which Slurm keeps and
shows (`scontrol write batch_script`).
"""

from __future__ import annotations

import math
import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from ...sdk import InvalidInput, Pod, QuantityError, expand_command, parse_quantity, uid_of
from .config import ANNOTATION_PREFIX, PLACEMENT_KEYS, SlurmConfig

GPU_RESOURCE = "nvidia.com/gpu"
#: The variables a container keeps from the job's environment (Slurm's own, and the GPUs gres
#: gave it); everything else comes from the pod.
KEPT_FROM_JOB = ("SLURM_*", "CUDA_VISIBLE_DEVICES", "GPU_DEVICE_ORDINAL", "ROCR_VISIBLE_DEVICES")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_SAFE_VALUE = re.compile(r"^[A-Za-z0-9_.,:+=@%-]+$")

#: Turns a stream into CRI log records: `<RFC3339Nano> <stream> F|P <text>`. It ignores SIGTERM so
#: that the last lines of a container stopped by the grace period are still written.
STAMP_PL = r"""$SIG{TERM} = 'IGNORE';
use POSIX qw(strftime);
my $hires = eval { require Time::HiRes; 1 };
my ($stream, $file) = @ARGV;
open(my $out, '>>', $file) or die "cannot open $file: $!";
select((select($out), $| = 1)[0]);
while (my $line = <STDIN>) {
    my $t = $hires ? Time::HiRes::time() : time();
    my $tag = ($line =~ s/\n\z//) ? 'F' : 'P';
    printf $out "%s.%06dZ %s %s %s\n", strftime('%Y-%m-%dT%H:%M:%S', gmtime(int $t)),
        int(($t - int $t) * 1e6), $stream, $tag, $line;
}
"""


def volume_env_name(mount_path: str) -> str:
    """`VK_VOLUME_` + mountPath in UPPER_SNAKE, as the process provider names it."""
    name = re.sub(r"[^A-Za-z0-9]+", "_", mount_path.strip("/")).strip("_").upper()
    return f"VK_VOLUME_{name or 'ROOT'}"


@dataclass
class JobFiles:
    """What goes into a pod's job directory, and how to submit it."""

    script: str
    env_files: dict[str, bytes]
    sbatch_args: list[str] = field(default_factory=list)


def job_comment(node_name: str, uid: str) -> str:
    """The job's comment: how the provider finds its jobs again (and only its own)."""
    return f"vk:{node_name}:{uid}"


def _placement(pod: Pod, config: SlurmConfig) -> list[str]:
    annotations = pod["metadata"].get("annotations") or {}
    args = []
    for key in PLACEMENT_KEYS:
        value = annotations.get(ANNOTATION_PREFIX + key, getattr(config, key))
        if value is None or value == "":
            continue
        if not _SAFE_VALUE.match(str(value)):
            raise InvalidInput(f"{ANNOTATION_PREFIX}{key}: {value!r} is not a valid Slurm {key}")
        args.append(f"--{key}={value}")
    return args


def _amount(container: dict[str, Any], resource: str) -> float:
    resources = container.get("resources") or {}
    for kind in ("limits", "requests"):
        value = (resources.get(kind) or {}).get(resource)
        if value is not None:
            try:
                return float(parse_quantity(str(value)))
            except QuantityError as exc:
                name = container.get("name")
                raise InvalidInput(f"container {name}: {resource} {value!r}: {exc}") from None
    return 0.0


def _pod_amount(pod: Pod, resource: str) -> float:
    """What the pod needs of a resource, as the scheduler counts it: the sum over its containers,
    or the largest init container if that is more."""
    spec = pod["spec"]
    main = sum(_amount(c, resource) for c in spec.get("containers") or [])
    init = max((_amount(c, resource) for c in spec.get("initContainers") or []), default=0.0)
    return max(main, init)


def resource_args(pod: Pod) -> list[str]:
    args = []
    cpus = _pod_amount(pod, "cpu")
    if cpus > 0:
        args.append(f"--cpus-per-task={max(1, math.ceil(cpus - 1e-9))}")
    memory = _pod_amount(pod, "memory")
    if memory > 0:
        args.append(f"--mem={max(1, math.ceil(memory / 2**20))}M")
    gpus = _pod_amount(pod, GPU_RESOURCE)
    if gpus > 0:
        args.append(f"--gres=gpu:{math.ceil(gpus)}")
    deadline = pod["spec"].get("activeDeadlineSeconds")
    if deadline is not None:
        seconds = max(60, int(deadline))  # Slurm counts time limits in whole minutes
        minutes = math.ceil(seconds / 60)
        args.append(f"--time={minutes}")
    return args


def _argv(container: dict[str, Any]) -> list[str]:
    env = [
        {"name": e["name"], "value": str(e.get("value", ""))} for e in container.get("env") or []
    ]
    command, args = expand_command(container, env)
    argv = command + args
    if not argv:
        raise InvalidInput(
            f"container {container['name']} has no command: the slurm provider runs plain "
            "processes and cannot read an image's entrypoint; set command (and args)"
        )
    return argv


def _env_file(container: dict[str, Any], volume_env: dict[str, str], home: str) -> bytes:
    pairs = {"PATH": DEFAULT_PATH, "HOME": home}
    pairs.update(volume_env)
    for entry in container.get("env") or []:
        pairs[entry["name"]] = str(entry.get("value", ""))
    return b"".join(f"{k}={v}".encode() + b"\0" for k, v in pairs.items())


def _volume_env(
    pod: Pod, container: dict[str, Any], volume_paths: dict[str, str]
) -> dict[str, str]:
    found = {}
    for mount in container.get("volumeMounts") or []:
        path = volume_paths.get(mount.get("name", ""))
        if path is None:
            continue
        if mount.get("subPath"):
            path = f"{path}/{mount['subPath']}"
        found[volume_env_name(str(mount.get("mountPath", "")))] = path
    return found


def build(
    pod: Pod, config: SlurmConfig, node_name: str, job_dir: str, volume_paths: dict[str, str]
) -> JobFiles:
    """The job for `pod`; InvalidInput when it can never run here."""
    spec = pod["spec"]
    meta = pod["metadata"]
    uid = uid_of(pod)
    containers = list(spec.get("containers") or [])
    inits = list(spec.get("initContainers") or [])
    if not containers:
        raise InvalidInput("the pod has no containers")
    env_files = {}
    lines = [
        "#!/bin/bash",
        f"# virtual-kubelet: pod {meta.get('namespace')}/{meta.get('name')} ({uid})",
        f"export PATH={DEFAULT_PATH}",
        f"cd {shlex.quote(job_dir)} || exit 97",
        # Inside a container's step: the kept variables are the step's own (its SLURM_STEP_ID,
        # the GPUs it was given). The log filters run in the step too (so that srun's own
        # messages stay out of the container's log) and are waited for a little after the
        # container ended: the step's end kills what is left of it. The container is a child,
        # not exec'd, for that wait; a TERM reaches it directly (Slurm signals the whole step).
        "read -r -d '' STEP <<'VK_STEP_END'",
        "name=$1 dir=$2 workdir=$3; shift 3",
        "envs=()",
        "for v in $(compgen -e); do case $v in "
        + "|".join(KEPT_FROM_JOB)
        + ') envs+=("$v=${!v}");; esac; done',
        'while IFS= read -r -d \'\' kv; do envs+=("$kv"); done < "$dir/env/$name.env"',
        'exec > >(perl "$dir/stamp.pl" stdout "$dir/logs/$name.log")',
        "out=$!",
        'exec 2> >(perl "$dir/stamp.pl" stderr "$dir/logs/$name.log")',
        "err=$!",
        "trap true TERM",
        'cd "$workdir" || exit 97',
        'env -i "${envs[@]}" "$@" &',
        "pid=$!",
        # Started (and Running) only now: a TERM sent before the step exists would be lost.
        'date -u +%Y-%m-%dT%H:%M:%S.%NZ > "$dir/status/$name.started"',
        'while true; do wait "$pid"; code=$?; kill -0 "$pid" 2>/dev/null || break; done',
        "exec >&- 2>&-",
        "for _ in $(seq 50); do { kill -0 $out || kill -0 $err; } 2>/dev/null || break; sleep 0.1; done",
        'exit "$code"',
        "VK_STEP_END",
        "run_container() {",
        "  local name=$1 workdir=$2; shift 2",
        # A TERM (the grace period) must reach the process, not end this shell before the exit
        # code is written.
        "  trap true TERM",
        # One job step per container. --overlap: the containers share the job's CPUs, memory
        # and GPUs, as a pod's containers share the node; the CPU count is explicit, as srun
        # no longer takes it from the job (Slurm 22.05). --export=ALL: the job's own environment
        # (sbatch --export=NONE would otherwise leave the step without PATH); the container gets
        # only the kept variables. srun's own messages go to the job's output, not the log.
        '  srun --overlap --nodes=1 --ntasks=1 --cpus-per-task="${SLURM_CPUS_PER_TASK:-1}" \\',
        '    --job-name="$name" --quiet --export=ALL /bin/bash -c "$STEP" step "$name" "$PWD" "$workdir" "$@" \\',
        "    </dev/null",
        "  local code=$?",
        '  echo "$code $(date -u +%Y-%m-%dT%H:%M:%S.%NZ)" > "status/$name.exit.tmp"',
        '  mv "status/$name.exit.tmp" "status/$name.exit"',
        "  return $code",
        "}",
        "trap true TERM",
    ]
    for container in inits + containers:
        name = container["name"]
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name):
            raise InvalidInput(f"container name {name!r} is not a DNS label")
        volume_env = _volume_env(pod, container, volume_paths)
        env_files[name] = _env_file(container, volume_env, job_dir)
    for container in inits:
        argv = " ".join(shlex.quote(a) for a in _argv(container))
        workdir = shlex.quote(container.get("workingDir") or job_dir)
        lines.append(f"run_container {container['name']} {workdir} {argv} || exit $?")
    lines.append("pids=()")
    for container in containers:
        argv = " ".join(shlex.quote(a) for a in _argv(container))
        workdir = shlex.quote(container.get("workingDir") or job_dir)
        lines.append(f"run_container {container['name']} {workdir} {argv} &")
        lines.append('pids+=("$!")')
    lines += [
        "result=0",
        'for pid in "${pids[@]}"; do',
        # wait returns early when TERM arrives: wait again until that container has ended.
        '  while true; do wait "$pid"; code=$?; kill -0 "$pid" 2>/dev/null || break; done',
        '  [ "$result" -eq 0 ] && result=$code',
        "done",
        'exit "$result"',
    ]
    name = f"vk-{meta.get('namespace')}-{meta.get('name')}"[:120]
    sbatch_args = [
        "--parsable",
        f"--job-name={name}",
        f"--comment={job_comment(node_name, uid)}",
        f"--chdir={job_dir}",
        f"--output={job_dir}/slurm-job.out",
        "--export=NONE",  # the agent's own environment stays out of the job
        "--nodes=1",
        "--ntasks=1",
        *resource_args(pod),
        *_placement(pod, config),
    ]
    return JobFiles(script="\n".join(lines) + "\n", env_files=env_files, sbatch_args=sbatch_args)
