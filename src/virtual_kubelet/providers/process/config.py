"""`--provider-config` of the process provider: a JSON or YAML mapping, validated with pydantic.

Unknown keys and bad values are refused with a `ProviderConfigError` that names the key, so a typo
never silently falls back to a default. This module only reads and validates; it starts nothing.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ...sdk import ProviderConfigError, read_mapping, validate

__all__ = ["ImageConfig", "ProcessConfig", "ProviderConfigError", "load_config"]

#: The default `pod_cidr`: RFC 2544's benchmarking range (never routed on the Internet), the half
#: of 198.18.0.0/15 that the dev cluster's node addresses (198.18.0.0/16) do not use.
DEFAULT_POD_CIDR = "198.19.0.0/16"
#: Interface names: at most 15 bytes (IFNAMSIZ - 1), no slashes, colons or white space.
_INTERFACE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")

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
    #: "host": pods share the host's network (pod IP = the node's address). "pod": each pod gets
    #: a network namespace of its own with an address from `pod_cidr` on the bridge `bridge`
    #: (needs root and iproute2; see network.py). Pods with hostNetwork: true always use "host".
    network: Literal["host", "pod"] = "host"
    #: Pod addresses with `network: pod`; the first address is the bridge's (the gateway).
    pod_cidr: str = DEFAULT_POD_CIDR
    #: The bridge `network: pod` creates for the pods' veth interfaces.
    bridge: str = "vkpods0"
    #: The GPUs containers may be given (CUDA device indices or UUIDs), exclusively, when they
    #: ask for nvidia.com/gpu. None: those NVML finds (with nvidia-ml-py installed), if any.
    gpus: list[str] | None = None
    #: The model `/stats/summary` names for GPUs NVML does not describe (a configured list on a
    #: machine without nvidia-ml-py or a driver), e.g. "NVIDIA H100 80GB HBM3". None: no model.
    gpu_model: str | None = None

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

    @field_validator("pod_cidr")
    @classmethod
    def _pod_cidr(cls, value: str) -> str:
        try:
            network = ipaddress.ip_network(value, strict=True)
        except ValueError as exc:
            raise ValueError(
                f"pod_cidr must be an IPv4 network such as 198.19.0.0/16 ({exc})"
            ) from None
        if not isinstance(network, ipaddress.IPv4Network):
            raise ValueError(f"pod_cidr must be an IPv4 network, got {value!r}")
        if network.prefixlen > 30:
            raise ValueError(
                f"pod_cidr {value} is too small: the prefix must be /30 or shorter "
                "(a gateway and at least one pod address)"
            )
        for flag, what in (
            ("is_loopback", "loopback"),
            ("is_link_local", "link-local"),
            ("is_multicast", "multicast"),
            ("is_reserved", "reserved"),
            ("is_unspecified", "unspecified"),
        ):
            if getattr(network, flag) or getattr(network.network_address, flag):
                raise ValueError(f"pod_cidr {value} lies in the {what} address range")
        if network.is_global or network.subnet_of(ipaddress.IPv4Network("0.0.0.0/8")):
            raise ValueError(
                f"pod_cidr {value} is not a private range: its addresses belong to other machines "
                f"(use e.g. {DEFAULT_POD_CIDR} or a part of 10.0.0.0/8)"
            )
        return str(network)

    @field_validator("bridge")
    @classmethod
    def _bridge(cls, value: str) -> str:
        if not _INTERFACE_NAME.fullmatch(value) or value in (".", ".."):
            raise ValueError(
                f"bridge must be an interface name of 1 to 15 letters, digits, '_', '.' or '-', "
                f"got {value!r}"
            )
        return value

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
    return validate(ProcessConfig, read_mapping(path), path)
