"""The process provider's shim: one small program per container run, like CRI-O's conmon.

    python -m virtual_kubelet.providers.process.shim run SPEC.json
    python -m virtual_kubelet.providers.process.shim exec SPEC.json [--ns-fd N] [--tty] -- ARGV...
    python -m virtual_kubelet.providers.process.shim probe-mounts DIR

`run` daemonises (the first process exits as soon as the container has been started, or has failed
to start), enters the pod's network namespace if it has one (`network: pod`), optionally enters a
private mount namespace with the container's bind mounts, forks and
execs the container's command in a new session (so its process group id is its pid), and then:
reads the command's stdout/stderr (or its pty) and writes them to the log file in the CRI format
`<RFC3339Nano> stdout|stderr F|P <text>` with size rotation, feeds a stdin FIFO into it when asked,
waits for it, kills what is left of its process group once it exited (as a container runtime does
when a container's first process dies), and writes an exit record. The state file it writes at
start names the shim and the container (pid, process group, /proc start times), so a restarted
agent can find and adopt both. The command dies with its shim (PR_SET_PDEATHSIG): without the
shim nobody would record its exit or read its output, so it must not linger as an orphan.

`exec` turns itself into a command run "inside" a container (`kubectl exec`, exec probes and
hooks): same env, working directory, network namespace (from the spec), mount namespace (entered through
an fd passed by the agent), cgroups and limits; with `--tty` its stdin must be a pty, which becomes its controlling terminal.

`probe-mounts` checks once whether this host lets us create mount namespaces and bind mounts.

SPEC.json lies in the state directory; the parts that carry or derive from env values (argv, env,
mounts) are in the file its `launch_path` names, in memory-backed storage (see state.py), and are
read when the shim starts: nothing secret on a disk, nothing secret on a command line. The files
the shim reads and writes are the records of `shim_protocol.py`; its log and stdin plumbing is in
`shim_stdio.py`, its namespace and mount calls in `syscalls.py`.

This program must not depend on the agent while it runs: no pipes or sockets to it, no imports
beyond the standard library and those three modules (it starts quickly and keeps working whatever
happens to the agent), and it never reads or logs the container's environment except to pass it to
the command.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import resource
import selectors
import signal
import sys
import termios
import time
from pathlib import Path
from typing import Any, NoReturn

from . import syscalls
from .shim_protocol import (
    START_ERROR_CODE,
    ExitRecord,
    LaunchSpec,
    LaunchUnavailable,
    RunState,
    ShimSpec,
    StartError,
    alive,
    start_ticks,
    write_record,
)
from .shim_stdio import LogWriter, StdinFeeder

__all__ = ["START_ERROR_CODE", "StartError", "alive", "main", "start_ticks"]

#: After the command exited, how long output from processes that escaped its group may drain.
DRAIN_SECONDS = 2.0


def load(spec_path: Path) -> tuple[ShimSpec, LaunchSpec]:
    """The run's spec (state directory) and the launch it names (argv, env and mounts, kept in
    memory-backed storage because env values may be secrets). Raises StartError if the launch
    file is gone (a reboot emptied the memory-backed storage)."""
    spec = ShimSpec.load(spec_path)
    try:
        return spec, spec.load_launch()
    except LaunchUnavailable as exc:
        raise StartError(str(exc)) from None


def _reset_signals() -> None:
    # Python ignores SIGPIPE and SIGXFSZ; ignored dispositions survive exec, handled ones do not.
    for number in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(number, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def _join_cgroups(paths: list[str]) -> None:
    for path in paths:
        try:
            with open(os.path.join(path, "cgroup.procs"), "w") as handle:
                handle.write(str(os.getpid()))
        except OSError as exc:
            # A limit that cannot be applied never stops the container (the agent logged why).
            print(f"shim: cannot join cgroup {path}: {exc.strerror}", file=sys.stderr)


def _lower_rlimits(limits: dict[str, int]) -> None:
    for name, value in limits.items():
        which = getattr(resource, f"RLIMIT_{name.upper()}", None)
        if which is None:
            continue
        try:
            _, hard = resource.getrlimit(which)
            new = value if hard == resource.RLIM_INFINITY else min(value, hard)
            resource.setrlimit(which, (new, new))
        except (OSError, ValueError) as exc:
            print(f"shim: cannot set RLIMIT_{name.upper()}: {exc}", file=sys.stderr)


def exec_error(argv0: str, exc: OSError, shown: str | None = None) -> tuple[int, str]:
    """The exit code and message for a command that could not be executed (shell-like codes);
    the message names `shown` (argv0 as written, before expansion) if given."""
    name = argv0 if shown is None else shown
    if isinstance(exc, FileNotFoundError):
        if "/" in argv0:
            return 127, f'exec: "{name}": stat {name}: no such file or directory'
        return 127, f'exec: "{name}": executable file not found in $PATH'
    if isinstance(exc, PermissionError):
        return 126, f'exec: "{name}": permission denied'
    return 126, f'exec: "{name}": {exc.strerror or exc}'


def switch_user(user: dict[str, Any] | None) -> None:
    """Become the container's user (groups first, then gid, then uid: as runc), if it has one."""
    if not user:
        return
    uid, gid = int(user["uid"]), int(user["gid"])
    try:
        os.setgroups([int(g) for g in user.get("groups") or []])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    except OSError as exc:
        raise StartError(
            f"cannot switch to user {uid} (group {gid}): {exc.strerror or exc}"
        ) from None


def _chdir(cwd: str) -> None:
    try:
        os.makedirs(cwd, exist_ok=True)
        os.chdir(cwd)
    except OSError as exc:
        raise StartError(
            f'chdir to cwd ("{cwd}") set in config failed: {exc.strerror or exc}'
        ) from None


# --- run ------------------------------------------------------------------------------------------


def _spawn(spec: ShimSpec, launch: LaunchSpec, stdio: tuple[int, int, int]) -> int:
    """Fork and exec the container's command; raise StartError if it could not be started."""
    argv, env = list(launch.argv), dict(launch.env)
    error_read, error_write = os.pipe()  # close-on-exec: EOF without data means exec succeeded
    shim = os.getpid()
    syscalls.libc()  # loaded before the fork: the child only calls into it
    pid = os.fork()
    if pid == 0:  # the child: never returns
        try:
            os.close(error_read)
            # Without its shim nobody records the container's exit or reads its output: it dies
            # with the shim rather than linger as an orphan.
            syscalls.set_parent_death_signal(signal.SIGKILL)
            if os.getppid() != shim:
                os._exit(START_ERROR_CODE)
            os.setsid()
            _join_cgroups(spec.cgroups)
            _lower_rlimits(spec.rlimits)
            for target, source in enumerate(stdio):
                os.dup2(source, target)
            if spec.tty:
                fcntl.ioctl(0, termios.TIOCSCTTY, 0)
            _chdir(spec.cwd)
            if spec.user:
                switch_user(spec.user)
                # Changing credentials cleared the parent-death signal: set it again.
                syscalls.set_parent_death_signal(signal.SIGKILL)
                if os.getppid() != shim:
                    os._exit(START_ERROR_CODE)
            _reset_signals()
            if not argv:
                raise StartError("no command specified")
            try:
                os.execvpe(argv[0], argv, env)
            except OSError as exc:
                # As written in the pod, not expanded: $(VAR) may be a secret.
                shown = spec.shown_argv0 or argv[0]
                raise StartError(exec_error(argv[0], exc, shown)[1]) from None
        except BaseException as exc:
            message = str(exc) if isinstance(exc, StartError) else f"{type(exc).__name__}: {exc}"
            with contextlib.suppress(OSError):
                os.write(error_write, message.encode()[:4096])
            os._exit(START_ERROR_CODE)
    os.close(error_write)
    chunks = []
    while chunk := os.read(error_read, 4096):
        chunks.append(chunk)
    os.close(error_read)
    if chunks:
        os.waitpid(pid, 0)
        raise StartError(b"".join(chunks).decode(errors="replace"))
    return pid


def _oom_kills(cgroups: list[str]) -> int:
    total = 0
    for path in cgroups:
        try:
            with open(os.path.join(path, "memory.oom_control")) as handle:
                for line in handle:
                    if line.startswith("oom_kill "):
                        total += int(line.split()[1])
        except (OSError, ValueError):
            continue
    return total


def run(spec_path: Path) -> NoReturn:
    spec = ShimSpec.load(spec_path)
    launch: LaunchSpec | None = None
    launch_error: StartError | None = None
    try:
        launch = spec.load_launch()
    except LaunchUnavailable as exc:
        launch_error = StartError(str(exc))  # reported through the exit record, as any failure
    ready_read, ready_write = os.pipe()
    if os.fork() != 0:
        # First stage: the agent waits for us; we exit once the daemon started the command.
        os.close(ready_write)
        ok = os.read(ready_read, 1) == b"1"
        os._exit(0 if ok else 1)
    os.close(ready_read)
    # The daemon stays in the first stage's session and process group (the agent started that
    # one as a new session): no ties to the agent's, and an agent whose wait for the start timed
    # out kills both stages with one killpg, before this daemon can start the container late.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    started = time.time()
    try:
        if launch_error is not None:
            raise launch_error
        assert launch is not None
        if spec.netns:
            try:
                syscalls.enter_network_namespace(spec.netns)
            except OSError as exc:
                raise StartError(
                    f"cannot enter the pod's network namespace {spec.netns}: {exc.strerror or exc}"
                ) from None
        if launch.mounts is not None:
            libc = syscalls.libc()
            try:
                syscalls.enter_private_mount_namespace(libc)
            except OSError as exc:
                raise StartError(f"cannot create a mount namespace: {exc.strerror}") from None
            if spec.hide_netns:
                syscalls.hide_network_namespaces(libc)
            syscalls.bind_mounts(libc, launch.mounts)
        log = LogWriter(Path(spec.log_path), spec.log_max_bytes)
        fifo = spec.stdin_fifo
        if fifo and not os.path.exists(fifo):
            os.mkfifo(fifo, 0o600)
        stdin_target = -1
        if spec.tty:
            master, slave = os.openpty()
            stdio = (slave, slave, slave)
            outputs = {master: "stdout"}
            if fifo:
                stdin_target = os.dup(master)  # registered apart from the output side
        else:
            out_read, out_write = os.pipe()
            err_read, err_write = os.pipe()
            if fifo:
                stdin_read, stdin_target = os.pipe()
            else:
                stdin_read = os.open(os.devnull, os.O_RDONLY)
            stdio = (stdin_read, out_write, err_write)
            outputs = {out_read: "stdout", err_read: "stderr"}
        oom_before = _oom_kills(spec.cgroups)
        started = time.time()
        pid = _spawn(spec, launch, stdio)
        for fd in set(stdio):
            os.close(fd)
    except (StartError, OSError) as exc:
        message = str(exc) if isinstance(exc, StartError) else f"shim: {exc}"
        failed = ExitRecord(
            run=spec.run,
            exit_code=START_ERROR_CODE,
            started_at=started,
            finished_at=time.time(),
            error=message,
        )
        write_record(Path(spec.exit_path), failed)
        os.write(ready_write, b"1")
        os._exit(0)
    state = RunState(
        run=spec.run,
        shim_pid=os.getpid(),
        shim_start=start_ticks(os.getpid()),
        pid=pid,
        pgid=pid,
        pid_start=start_ticks(pid),
        started_at=started,
    )
    write_record(Path(spec.state_path), state)
    os.write(ready_write, b"1")
    os.close(ready_write)
    status = _supervise(spec, pid, log, outputs, stdin_target)
    finished = time.time()
    code = os.waitstatus_to_exitcode(status)
    signum = -code if code < 0 else None
    ended = ExitRecord(
        run=spec.run,
        exit_code=128 + signum if signum is not None else code,
        signal=signum,
        started_at=started,
        finished_at=finished,
        oom_killed=_oom_kills(spec.cgroups) > oom_before,
    )
    write_record(Path(spec.exit_path), ended)
    os._exit(0)


def _supervise(
    spec: ShimSpec,
    pid: int,
    log: LogWriter,
    outputs: dict[int, str],
    stdin_target: int,
) -> int:
    """Copy output to the log until the command exited and its output drained; its wait status."""
    selector = selectors.DefaultSelector()
    for fd, stream in outputs.items():
        os.set_blocking(fd, False)
        selector.register(fd, selectors.EVENT_READ, stream)
    feeder: StdinFeeder | None = None
    if spec.stdin_fifo and stdin_target >= 0:
        feeder = StdinFeeder(spec.stdin_fifo, stdin_target, spec.stdin_once)
        feeder.open(selector)
    pidfd: int | None = None
    try:
        pidfd = os.pidfd_open(pid)
        selector.register(pidfd, selectors.EVENT_READ, "child")
    except (AttributeError, OSError):
        pidfd = None  # old kernel: poll with waitpid
    status: int | None = None
    deadline: float | None = None
    while True:
        if status is None:
            done, wait_status = os.waitpid(pid, os.WNOHANG)
            if done:
                status = wait_status
                deadline = time.monotonic() + DRAIN_SECONDS
                # As when a container's first process dies: the rest of its group goes too.
                with contextlib.suppress(OSError):
                    os.killpg(pid, signal.SIGKILL)
                if pidfd is not None:
                    selector.unregister(pidfd)
                    os.close(pidfd)
                    pidfd = None
                if feeder is not None:
                    feeder.stop(selector)
                    feeder = None
        if status is not None and (
            not outputs or (deadline is not None and time.monotonic() > deadline)
        ):
            break
        timeout = 0.2 if pidfd is None or status is not None else None
        for key, _ in selector.select(timeout):
            tag = key.data
            if tag == "child":
                continue  # reaped at the top of the loop
            if tag == "stdin" and feeder is not None:
                feeder.readable(selector)
            elif tag == "stdin-target" and feeder is not None:
                feeder.flush(selector)
            elif isinstance(key.fd, int) and key.fd in outputs:
                try:
                    data = os.read(key.fd, 65536)
                except BlockingIOError:
                    continue
                except OSError as exc:  # EIO: the pty's last slave is closed
                    if exc.errno != errno.EIO:
                        raise
                    data = b""
                if data:
                    log.feed(str(tag), data)
                else:
                    selector.unregister(key.fd)
                    os.close(key.fd)
                    del outputs[key.fd]
    log.flush()
    assert status is not None
    return status


# --- exec -----------------------------------------------------------------------------------------


def exec_in_container(spec_path: Path, ns_fd: int | None, tty: bool, argv: list[str]) -> NoReturn:
    try:
        spec, launch = load(spec_path)
    except (StartError, OSError, ValueError, TypeError) as exc:
        sys.stderr.write(f"{exc}\n")
        os._exit(126)
    if spec.netns:
        try:
            syscalls.enter_network_namespace(spec.netns)
        except OSError as exc:
            sys.stderr.write(f"cannot enter the pod's network namespace: {exc.strerror or exc}\n")
            os._exit(126)
    if ns_fd is not None:
        try:
            syscalls.enter_mount_namespace(ns_fd)
        except OSError as exc:
            sys.stderr.write(f"cannot enter the container's mount namespace: {exc.strerror}\n")
            os._exit(126)
        os.close(ns_fd)
    _join_cgroups(spec.cgroups)
    _lower_rlimits(spec.rlimits)
    if tty:
        with contextlib.suppress(OSError):
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    try:
        os.chdir(spec.cwd)
    except OSError:
        os.chdir("/")
    try:
        switch_user(spec.user)
    except StartError as exc:
        sys.stderr.write(f"{exc}\n")
        os._exit(126)
    _reset_signals()
    if not argv:
        sys.stderr.write("exec: no command\n")
        os._exit(126)
    try:
        os.execvpe(argv[0], argv, dict(launch.env))
    except OSError as exc:
        code, message = exec_error(argv[0], exc)
        sys.stderr.write(message + "\n")
        sys.stderr.flush()
        os._exit(code)


# --- probe-mounts ---------------------------------------------------------------------------------


def probe_mounts(directory: Path) -> NoReturn:
    """Exit 0 if a private mount namespace with a bind mount works here, else say why and exit 1."""
    try:
        source, target = directory / "source", directory / "target"
        source.mkdir(exist_ok=True)
        target.mkdir(exist_ok=True)
        libc = syscalls.libc()
        syscalls.enter_private_mount_namespace(libc)
        syscalls.mount(libc, str(source), str(target), syscalls.MS_BIND)
        remount = syscalls.MS_BIND | syscalls.MS_REMOUNT | syscalls.MS_RDONLY
        syscalls.mount(libc, None, str(target), remount)
    except OSError as exc:
        sys.stderr.write(f"{exc.strerror or exc}\n")
        os._exit(1)
    os._exit(0)


def main(args: list[str]) -> NoReturn:
    if len(args) >= 2 and args[0] == "run":
        run(Path(args[1]))
    if len(args) >= 2 and args[0] == "probe-mounts":
        probe_mounts(Path(args[1]))
    if len(args) >= 2 and args[0] == "exec" and "--" in args:
        split = args.index("--")
        options, argv = args[2:split], args[split + 1 :]
        ns_fd = int(options[options.index("--ns-fd") + 1]) if "--ns-fd" in options else None
        exec_in_container(Path(args[1]), ns_fd, "--tty" in options, argv)
    sys.stderr.write(__doc__.split("\n\n")[1] + "\n")
    os._exit(2)


if __name__ == "__main__":
    main(sys.argv[1:])
