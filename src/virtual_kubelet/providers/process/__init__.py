"""The `process` provider: every container of a pod is a real local process tree.

Select it with `virtual-kubelet --provider process [--provider-config FILE]`. Each container run
is started through a small shim (`python -m virtual_kubelet.providers.process.shim`, like conmon)
in its own session: the shim forks/execs the command in a new process group, writes its
stdout/stderr to a CRI-format log file, feeds attach input from a FIFO, and records the
container's pid/pgid at start and its exit code at the end. Nothing ties a shim to the agent, so
after an agent restart (even kill -9) the containers keep running and logging, and the new agent
adopts them from the records under `<state dir>/process/<pod uid>/` (same pids, no duplicates).
Resolved env values, and what derives from them, are never written there: they are kept in
memory-backed storage next to the pod's volumes. See `state.py` for the layout.

What a container sees:
- argv: `command` + `args` (with `$(VAR)` expansion). Without `command`, the provider config's
  `images[<image>]` (exact name, or without tag/digest) supplies `command` and default `args`;
  with neither, `args` alone are run; with nothing at all the container waits with
  RunContainerError. An unknown executable is RunContainerError too
  (`exec: "x": executable file not found in $PATH`), retried with back-off like a crash.
- env: its resolved env; if the pod sets no PATH, the agent's PATH (behind the image root's `bin`
  and `usr/bin`), and the agent's HOME if the pod sets none; HOSTNAME = the pod's hostname or
  name unless set; TERM=xterm with `tty: true`; plus:
  - `VK_TERMINATION_MESSAGE_PATH`: the host file to write the termination message to. If
    `terminationMessagePath` lies under a volumeMount it is that file inside the volume;
    otherwise it is `<state>/process/<uid>/<container>/termination-log`, which in bind mode is
    also bind-mounted at `terminationMessagePath` (default /dev/termination-log; an empty file is
    created there on the host if missing). Up to 4096 bytes are reported; with
    `FallbackToLogsOnError`, an empty file and a non-zero exit, the last 80 lines / 2048 bytes
    of the log are.
  - `VK_VOLUME_<NAME>` for each volumeMount: NAME is the mountPath without leading/trailing
    slashes, every run of characters other than letters and digits replaced by `_`, upper-cased
    (`/etc/my-config` -> `VK_VOLUME_ETC_MY_CONFIG`, `/` -> `VK_VOLUME_ROOT`). In bind mode its
    value is the mountPath itself, in env mode the host directory (or file, with subPath).
- working directory: `workingDir`, else the image's `root`, else
  `<state>/process/<uid>/<container>/work`. It is created if missing.
- mounts (config `mounts: auto|bind|env`): in bind mode (root, and a private mount namespace
  with a test bind mount works: checked once at start, the reason logged if not) the shim
  unshares a private mount namespace and bind-mounts every volume (subPath resolved as the
  kubelet does, hostPath bound directly, readOnly remounted read-only) at its mountPath.
  Mount points that do not exist are created on the host file system (empty directories, or
  empty files for file subPaths) and left there. `kubectl exec`, exec probes and hooks enter the
  container's mount namespace. In env mode only the VK_VOLUME_* variables exist.
- limits: memory and CPU limits via cgroup v1 when writable (see `limits.py`), `rlimits` from the
  config (only ever lowered); never a reason to fail the pod.
- network (config `network`): `host` (default): the host's; pod IP = host IP = the node's
  InternalIP; port-forward connects to 127.0.0.1:<port>, then the pod IP. `pod`: a network
  namespace per pod (not for hostNetwork pods) with its own address from `pod_cidr` on a bridge
  the agent creates, reachable from this machine only (no NAT, no forwarding); the shim enters it
  before exec, probes and port-forward connect to the pod's address. See `network.py`.

Lifecycle hooks: `preStop` runs before every kill (deletion, failed probes, a failed postStart
hook), within the grace period. `postStart` runs right after an app container's process started:
exec inside its env, working directory and namespaces, httpGet or tcpSocket against the pod IP (any
HTTP response will do, as for the kubelet), or sleep. Until it returns the container shows
`waiting` (ContainerCreating), neither started nor ready, and no probe runs. If it fails the
container is killed as the kubelet's FailedPostStartHook kill does (preStop, SIGTERM, SIGKILL after
terminationGracePeriodSeconds) and its restartPolicy applies; the terminated state's message is
`PostStartHookError: <the kubelet's message>`, and before an immediate restart the waiting reason
is PostStartHookError. A container that exits while its hook runs is accounted for as any exit. A
hook has no timeout (as in the kubelet) but never blocks anything else: it ends with its container,
and deleting the pod abandons it. Containers adopted by a restarted agent do not run it again.

User and groups: the effective runAsUser / runAsGroup / runAsNonRoot (container securityContext
over the pod's) and the pod's supplementalGroups + fsGroup; the shim calls setgroups, setresgid,
setresuid right before exec, for the container and for exec sessions, probes and hooks (the shim
stays root). No runAsGroup: the uid's primary group in the host's /etc/passwd, else 0 (as runc
with the image's); /etc/group memberships of that user are added, as runc does. The scratch
workdir and termination file are chowned to the user; emptyDirs get group fsGroup, g+rwx, setgid.
runAsNonRoot with uid 0 (or no runAsUser and a root agent) is CreateContainerConfigError with the
kubelet's message; a non-root agent asked for another uid/groups gives RunContainerError. Nothing
set: the agent's user, as before.

Not done: pid namespaces, image pulling,
readiness gates, native sidecars (init containers with restartPolicy Always are treated as
ordinary init containers), gRPC probes (they count as successes), and resizing the terminal of
`kubectl attach` to a `tty: true` container.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .provider import ProcessProvider

__all__ = ["ProcessProvider"]


def __getattr__(name: str) -> Any:
    # Imported lazily: every shim runs `python -m ...process.shim`, which imports this package,
    # and must start fast without the provider's dependencies (pydantic, aiohttp, ...).
    if name == "ProcessProvider":
        from .provider import ProcessProvider

        return ProcessProvider
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
