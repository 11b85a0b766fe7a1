"""The slurm provider's `--provider-config`: where the Slurm CLI (or slurmrestd) is and which
cluster it talks to, the job defaults (partition, account, QoS, reservation), how often to poll
and how many Slurm calls may run at once. Validated with one clear error."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: Pod annotations that choose a job's placement, over the config's defaults.
ANNOTATION_PREFIX = "slurm.virtual-kubelet.io/"
PLACEMENT_KEYS = ("partition", "account", "qos", "reservation")


class SlurmConfig(BaseModel):
    """Every key of the slurm provider's config file (all optional)."""

    model_config = ConfigDict(extra="forbid")

    #: The cluster's slurm.conf, passed to the CLI as SLURM_CONF (the CLI's default otherwise).
    slurm_conf: Path | None = None
    #: A directory holding sbatch, squeue, scancel, sinfo, scontrol and srun (else PATH).
    bin_dir: Path | None = None
    #: Where each pod's job directory goes (scripts, env files, logs, exit codes); it must be on
    #: a file system the compute nodes share with the agent. Default `<state dir>/slurm`.
    work_root: Path | None = None
    #: Job defaults, each overridden by the pod annotation slurm.virtual-kubelet.io/<key>.
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    reservation: str | None = None
    #: Seconds between two status polls (one squeue call each, whatever the number of pods).
    poll_seconds: float = Field(2.0, gt=0)
    #: Seconds between two capacity reads (sinfo) for the node's capacity.
    capacity_refresh_seconds: float = Field(60.0, gt=0)
    #: Slurm CLI calls allowed at once (a burst of pods queues behind this).
    max_concurrent_calls: int = Field(4, gt=0)
    #: How long one CLI call may take before it counts as failed.
    call_timeout_seconds: float = Field(30.0, gt=0)
    #: Pods the node advertises.
    max_pods: int = Field(1000, gt=0)
    #: Run every Slurm command on this login node (`user@host`) through the system ssh, without
    #: a terminal. `work_root` must then be a directory the agent, the login node and the
    #: compute nodes share at the same path.
    ssh_host: str | None = None
    ssh_command: str = "ssh"
    ssh_options: list[str] = Field(default_factory=lambda: ["-o", "BatchMode=yes"])
    #: `system`: the ssh program (`ssh_command`, `ssh_options`); `asyncssh`: one connection kept
    #: open in the agent (`ssh_port`, `ssh_identity_file`, `ssh_known_hosts`).
    ssh_client: Literal["system", "asyncssh"] = "system"
    ssh_port: int = Field(22, gt=0, lt=65536)
    #: asyncssh: the private key (else the user's default keys and agent).
    ssh_identity_file: Path | None = None
    #: asyncssh: the known_hosts file the login node's host key must be in (else
    #: ~/.ssh/known_hosts). There is no "accept any host key".
    ssh_known_hosts: Path | None = None
    #: `cli`: sbatch, squeue, scancel, sinfo (here or over ssh). `rest`: slurmrestd for
    #: submit, status, cancel and nodes; exec still runs `srun --overlap` on the CLI.
    backend: Literal["cli", "rest"] = "cli"
    #: slurmrestd: `unix:/path/to/socket` (rest_auth/local) or `http://host:port`.
    rest_url: str | None = None
    #: The OpenAPI plugin's version in the URL (Slurm 22.05: v0.0.38; its data must match).
    rest_api_version: str = Field("v0.0.38", pattern=r"^v\d+\.\d+\.\d+$")
    #: rest_auth/jwt: the user the token belongs to (X-SLURM-USER-NAME), and where the token
    #: is (a file, re-read on every call, or an environment variable). Never logged.
    rest_user_name: str | None = None
    rest_token_file: Path | None = None
    rest_token_env: str | None = None

    @model_validator(mode="after")
    def _rest(self) -> SlurmConfig:
        if self.backend == "rest":
            url = self.rest_url or ""
            if not (url.startswith("unix:/") or url.startswith(("http://", "https://"))):
                raise ValueError(
                    "backend rest needs rest_url: unix:/path/to/slurmrestd.socket or "
                    "http://host:port"
                )
        if self.rest_token_file is not None and self.rest_token_env is not None:
            raise ValueError("set rest_token_file or rest_token_env, not both")
        return self

    @field_validator("ssh_host")
    @classmethod
    def _host(cls, value: str | None) -> str | None:
        if value is not None and (
            not value or value.startswith("-") or any(c.isspace() for c in value)
        ):
            raise ValueError(f"{value!r} is not a [user@]host")
        return value

    @field_validator(
        "slurm_conf",
        "bin_dir",
        "work_root",
        "rest_token_file",
        "ssh_identity_file",
        "ssh_known_hosts",
    )
    @classmethod
    def _home(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value is not None else None

    def command(self, name: str) -> str:
        return str(self.bin_dir / name) if self.bin_dir else name
