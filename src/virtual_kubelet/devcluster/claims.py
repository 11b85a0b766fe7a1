"""Claims on ports and node addresses that last as long as the dev cluster that made them.

A dev cluster keeps its ports and node addresses until `down --purge`, so that a restarted API server
is found where every kubeconfig and agent already looks. A claim is a file
`<cache>/claims/<kind>/<key>` holding its owner's workdir; a dev cluster choosing a free port or
address skips keys another live owner holds. A claim is live while its owner's `state.json` exists,
and for two minutes after it was made whatever the owner (a cluster writes `state.json` only after
choosing its ports; a caller without a cluster, such as a test picking a kubelet port, claims for
those two minutes only). Claims keep other dev clusters away, not other programs: a cluster still
checks that a claimed port is free before it listens there.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from .versions import cache_root

PORTS = "ports"
ADDRESSES = "node-addresses"
_FRESH_S = 120.0


def _path(kind: str, key: str) -> Path:
    directory = cache_root() / "claims" / kind
    directory.mkdir(parents=True, exist_ok=True)
    return directory / key


def holder(kind: str, key: str) -> str | None:
    """Who holds a live claim on `key`: an owner's workdir, "" for an anonymous claim, None if no
    one does."""
    path = _path(kind, key)
    try:
        owner = path.read_text()
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return None
    if age < _FRESH_S or (owner and (Path(owner) / "state.json").exists()):
        return owner
    return None


def claim(kind: str, key: str, owner: Path | None, *, force: bool = False) -> bool:
    """Claim `key` for `owner` (None: anonymously, for two minutes). Returns False when someone
    else holds it, unless `force` (the owner's own record says the key is its)."""
    path = _path(kind, key)
    mine = "" if owner is None else str(owner)
    current = holder(kind, key)
    if current is not None and (current != mine or not mine) and not force:
        return False  # another owner's, or an anonymous claim (never shared)
    if current == mine and mine:
        path.touch()
        return True
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    try:
        # O_EXCL: of two callers racing for a free key, one wins.
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(mine)
    return True


def release(kind: str, key: str, owner: Path | None) -> None:
    """Drop `owner`'s claim on `key`; a claim someone else holds is left alone."""
    if holder(kind, key) == ("" if owner is None else str(owner)):
        _path(kind, key).unlink(missing_ok=True)
