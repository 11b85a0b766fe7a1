"""The Linux calls the process provider's shim needs that Python's `os` module lacks, through
ctypes over the interpreter's own libc: private mount namespaces and bind mounts, entering a
network or mount namespace, and the parent-death signal.

Standard library only (see shim.py). Errors are OSError with the call named; `bind_mounts` raises
StartError, whose message goes to the user.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import re
import sys

from .shim_protocol import BindMount, StartError

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
MNT_DETACH = 0x2
MS_RDONLY = 0x1
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
PR_SET_PDEATHSIG = 1


@functools.cache
def libc() -> ctypes.CDLL:
    """The C library, with the prototypes of the calls used here."""
    # The interpreter is linked against libc: no library search (which may run ldconfig).
    lib = ctypes.CDLL(None, use_errno=True)
    lib.mount.argtypes = [
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_ulong,
        ctypes.c_void_p,
    ]
    lib.unshare.argtypes = [ctypes.c_int]
    lib.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
    lib.setns.argtypes = [ctypes.c_int, ctypes.c_int]
    lib.prctl.argtypes = [
        ctypes.c_int,
        ctypes.c_ulong,
        ctypes.c_ulong,
        ctypes.c_ulong,
        ctypes.c_ulong,
    ]
    return lib


def check(result: int, what: str) -> None:
    """OSError naming `what` if a libc call returned an error."""
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


def mount(libc: ctypes.CDLL, source: str | None, target: str, flags: int) -> None:
    """mount(2) without a file system type or data (binds and remounts)."""
    check(
        libc.mount(source.encode() if source else None, target.encode(), None, flags, None),
        f"mount {source or ''} on {target}",
    )


def enter_private_mount_namespace(libc: ctypes.CDLL) -> None:
    """A mount namespace of our own whose mounts never propagate back to the host."""
    check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    mount(libc, None, "/", MS_REC | MS_PRIVATE)


def enter_network_namespace(path: str) -> None:
    """Move the calling thread into the network namespace bound at `path` (the pod's
    /var/run/netns/<name>); what it creates or execs from then on lives there."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        check(libc().setns(fd, CLONE_NEWNET), "setns(CLONE_NEWNET)")
    finally:
        os.close(fd)


def _mount_points() -> list[str]:
    points = []
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            fields = line.split()
            if len(fields) > 4:
                points.append(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), fields[4]))
    return points


def hide_network_namespaces(libc: ctypes.CDLL) -> None:
    """Detach the copies of /var/run/netns/* in our private mount namespace: they would keep
    the network namespaces of other pods alive after those pods were deleted."""
    with contextlib.suppress(OSError):
        for point in sorted(_mount_points(), key=len, reverse=True):
            if point.startswith(("/run/netns/", "/var/run/netns/")):
                libc.umount2(point.encode(), MNT_DETACH)


def bind_mounts(libc: ctypes.CDLL, mounts: list[BindMount]) -> None:
    """Bind each source at its target (missing targets are created: a directory, or an empty file
    for a file source) and remount read-only where asked. Parents come before children."""
    for entry in sorted(mounts, key=lambda m: m.target.count("/")):
        source, target = entry.source, entry.target
        shown = entry.shown or source  # a subPathExpr as written, not expanded
        try:
            if entry.file:
                os.makedirs(os.path.dirname(target) or "/", exist_ok=True)
                if not os.path.lexists(target):
                    os.close(os.open(target, os.O_WRONLY | os.O_CREAT, 0o644))
            else:
                os.makedirs(target, exist_ok=True)
            mount(libc, source, target, MS_BIND | MS_REC)
            if entry.read_only:
                mount(libc, None, target, MS_BIND | MS_REMOUNT | MS_RDONLY)
        except OSError as exc:
            message = f"error mounting {shown!r} to rootfs at {target!r}: {exc.strerror or exc}"
            if entry.optional:
                print(f"shim: {message} (skipped)", file=sys.stderr)
                continue
            raise StartError(message) from None


def enter_mount_namespace(fd: int) -> None:
    """Move the calling thread into the mount namespace `fd` refers to (a container's)."""
    check(libc().setns(fd, CLONE_NEWNS), "setns")


def set_parent_death_signal(number: int) -> None:
    """Have the kernel send `number` to this process when its parent thread ends."""
    libc().prctl(PR_SET_PDEATHSIG, number, 0, 0, 0)
