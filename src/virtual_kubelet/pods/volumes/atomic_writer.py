"""Show a set of files in a directory the way the kubelet's `atomic_writer.go` does, so a reader
never sees a half-updated volume.

The files live in a timestamped hidden directory; `..data` is a symlink to the current one and each
top-level name is a symlink through `..data`. An update writes a new hidden directory and swaps
`..data` with one `rename`. Payload paths must already be validated (`payloads.clean_payload`):
this module trusts them. It does plain blocking file I/O; callers decide whether that runs on the
event loop (cheap on tmpfs) or in a thread.
"""

from __future__ import annotations

import datetime
import os
import shutil
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["VOLUME_DIR_MODE", "File", "Payload", "atomic_write", "ensure_dir", "remove_tree"]

#: Volume directories and the hidden data dirs must be traversable by the workload's user.
VOLUME_DIR_MODE = 0o755

_DATA_DIR = "..data"
_DATA_TMP = "..data_tmp"


@dataclass(frozen=True)
class File:
    """One file of a volume: its content and permission bits."""

    data: bytes
    mode: int

    def __repr__(self) -> str:
        return f"File(<{len(self.data)} bytes>, mode={self.mode:o})"


#: A volume's files by relative path ("dir/file").
Payload = dict[str, File]


def ensure_dir(path: Path, mode: int, *, parents: bool = False) -> None:
    """Create `path` with exactly `mode` (whatever the umask) unless it exists; never empty it."""
    if path.is_dir():
        return
    if parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir(mode=mode)
    except FileExistsError:
        return
    os.chmod(path, mode)


def remove_tree(path: Path) -> None:
    """Delete `path` and everything below it; no error if it does not exist."""

    def retry_writable(function: Callable[..., Any], failed: str, exc_info: Any) -> None:
        if isinstance(exc_info[1], FileNotFoundError):
            return
        # A workload may have left read-only directories in an emptyDir.
        os.chmod(os.path.dirname(failed), 0o700)
        function(failed)

    shutil.rmtree(path, onerror=retry_writable)


def atomic_write(target: Path, payload: Payload) -> bool:
    """Show `payload` in `target` the atomic-writer way; False if it was already shown."""
    ensure_dir(target, VOLUME_DIR_MODE)
    if _is_current(target, payload):
        return False
    stamp = datetime.datetime.now(datetime.UTC).strftime("..%Y_%m_%d_%H_%M_%S.")
    new_dir = Path(tempfile.mkdtemp(prefix=stamp, dir=target))
    try:
        os.chmod(new_dir, VOLUME_DIR_MODE)
        for path, file in sorted(payload.items()):
            _write_file(new_dir / path, file)
        temporary = target / _DATA_TMP
        if temporary.is_symlink():
            temporary.unlink()
        os.symlink(new_dir.name, temporary)
        os.replace(temporary, target / _DATA_DIR)
    except BaseException:
        shutil.rmtree(new_dir, ignore_errors=True)
        raise
    wanted = {_top(path) for path in payload}
    for top in sorted(wanted):
        _symlink(f"{_DATA_DIR}/{top}", target / top)
    with os.scandir(target) as scan:
        entries = list(scan)
    for entry in entries:
        if entry.name.startswith(".."):
            # Old data dirs, including any a crash left behind, go once `..data` moved on.
            if entry.name not in (_DATA_DIR, new_dir.name) and not entry.is_symlink():
                shutil.rmtree(entry.path, ignore_errors=True)
            continue
        stale = entry.name not in wanted and entry.is_symlink()
        if stale and os.readlink(entry.path).startswith(f"{_DATA_DIR}/"):
            os.unlink(entry.path)
    return True


def _top(path: str) -> str:
    return path.split("/", 1)[0]


def _is_current(target: Path, payload: Payload) -> bool:
    """Whether the volume already shows exactly `payload` (contents, modes and links)."""
    try:
        data_dir = target / os.readlink(target / _DATA_DIR)
        found: set[str] = set()
        for root, _dirs, files in os.walk(data_dir):
            for name in files:
                found.add(os.path.relpath(os.path.join(root, name), data_dir).replace(os.sep, "/"))
        if found != set(payload):
            return False
        for path, file in payload.items():
            full = data_dir / path
            info = full.lstat()
            if not stat.S_ISREG(info.st_mode) or stat.S_IMODE(info.st_mode) != file.mode:
                return False
            if full.read_bytes() != file.data:
                return False
        return all(
            os.readlink(target / top) == f"{_DATA_DIR}/{top}" for top in {_top(p) for p in payload}
        )
    except OSError:
        return False


def _write_file(path: Path, file: File) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Created owner-only so secret data is never readable under a looser mode, even briefly.
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(file.data)
    os.chmod(path, file.mode)


def _symlink(target: str, link: Path) -> None:
    """Point `link` at `target`, replacing whatever non-directory is there atomically."""
    try:
        if os.readlink(link) == target:
            return
    except OSError:
        pass
    temporary = link.with_name(f"{_DATA_TMP}.{link.name}")
    if temporary.is_symlink():
        temporary.unlink()
    os.symlink(target, temporary)
    os.replace(temporary, link)
