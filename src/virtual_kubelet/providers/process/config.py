"""`--provider-config` of the process provider: a JSON or YAML mapping, validated with pydantic.

Unknown keys and bad values are refused with a `ProviderConfigError` that names the key, so a typo
never silently falls back to a default. This module only reads and validates; it starts nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..mock import ProviderConfigError

__all__ = ["ImageConfig", "ProcessConfig", "ProviderConfigError", "load_config"]

#: Resource names accepted under `rlimits` (lower-case, without the RLIMIT_ prefix).
RLIMITS = ("as", "core", "cpu", "data", "fsize", "memlock", "nofile", "nproc", "stack")


class ImageConfig(BaseModel):
    """What a container image "is" on this host: images are never pulled, so a container that
    does not say what to run borrows the command (its ENTRYPOINT) and args (its CMD) from here."""

    model_config = ConfigDict(extra="forbid")

    command: list[str] = Field(default_factory=list)
    args: list[str] = Field(default_factory=list)
    #: A directory standing in for the image's file system: the default workingDir, and its
    #: `bin` and `usr/bin` go in front of PATH when the pod does not set PATH itself.
    root: str | None = None

    @field_validator("root")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        if value is not None and not Path(value).is_absolute():
            raise ValueError(f"root must be an absolute path, got {value!r}")
        return value


class ProcessConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: The node's pod capacity.
    pods: int = Field(110, ge=1)
    #: Image name (exact, or without its tag/digest) -> what it runs; see ImageConfig.
    images: dict[str, ImageConfig] = Field(default_factory=dict)
    #: A container's log file is rotated when it reaches this size (one rotated file is kept).
    log_max_bytes: int = Field(10 * 1024 * 1024, ge=4096)
    #: Back-off before the first restart of a crashed container; doubles on each further crash.
    restart_backoff_seconds: float = Field(10.0, gt=0)
    max_restart_backoff_seconds: float = Field(300.0, gt=0)
    #: A container that ran at least this long before exiting starts again from the base back-off.
    backoff_reset_seconds: float = Field(600.0, gt=0)
    #: How volumeMounts reach processes: bind mounts in a private mount namespace ("bind", needs
    #: root), VK_VOLUME_* environment variables ("env"), or bind when possible ("auto").
    mounts: Literal["auto", "bind", "env"] = "auto"
    #: Apply memory and CPU limits through cgroup v1 when its hierarchies are writable.
    cgroups: bool = True
    #: Where container cgroups go, relative to the agent's own cgroup in each hierarchy.
    cgroup_parent: str = "virtual-kubelet"
    #: Resource limits for every container process, e.g. {"nofile": 4096}; only ever lowered
    #: (the agent lacks CAP_SYS_RESOURCE, and raising them is not ours to decide).
    rlimits: dict[str, int] = Field(default_factory=dict)

    @field_validator("rlimits")
    @classmethod
    def _rlimits(cls, value: dict[str, int]) -> dict[str, int]:
        for name, limit in value.items():
            if name.lower() not in RLIMITS:
                raise ValueError(f"unknown rlimit {name!r} (known: {', '.join(RLIMITS)})")
            if limit < 0:
                raise ValueError(f"rlimit {name} must not be negative")
        return {name.lower(): limit for name, limit in value.items()}

    @field_validator("cgroup_parent")
    @classmethod
    def _relative(cls, value: str) -> str:
        parts = [p for p in value.split("/") if p]
        if not parts or any(p in (".", "..") for p in parts):
            raise ValueError(f"cgroup_parent must be a relative path without '..', got {value!r}")
        return "/".join(parts)

    def image(self, name: str) -> ImageConfig | None:
        """The entry for image `name`: an exact match, else the name without tag or digest."""
        if name in self.images:
            return self.images[name]
        return self.images.get(image_repository(name))


def image_repository(image: str) -> str:
    """`registry:5000/app:1.2@sha256:..` -> `registry:5000/app` (a colon before the last slash
    is a registry port, not a tag)."""
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name


def load_config(path: Path | None) -> ProcessConfig:
    """Read and validate the config file; no file means defaults."""
    if path is None:
        return ProcessConfig()
    try:
        raw = path.read_text()
    except OSError as exc:
        raise ProviderConfigError(f"cannot read provider config {path}: {exc.strerror}") from None
    try:
        doc = yaml.safe_load(raw) if raw.strip() else {}
    except yaml.YAMLError as exc:
        raise ProviderConfigError(
            f"provider config {path} is neither JSON nor YAML: {exc}"
        ) from None
    if not isinstance(doc, dict):
        raise ProviderConfigError(f"provider config {path} must be a mapping")
    try:
        return ProcessConfig.model_validate(doc)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'config'}: "
            f"{e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        raise ProviderConfigError(f"provider config {path} is invalid: {problems}") from None
