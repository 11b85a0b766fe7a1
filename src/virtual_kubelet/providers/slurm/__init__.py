"""The `slurm` provider: pods as Slurm batch jobs on the local Slurm CLI (docs/providers/slurm.md).

- config.py: the `--provider-config` keys; cli.py: the Slurm commands as asyncio subprocesses
- script.py: a pod as a batch script, env files and sbatch options
- jobs.py: every job of this node in one squeue (or scontrol) call
- status.py: a job and its directory as a pod status; node.py: capacity from sinfo
- provider.py: the Provider
"""

from .provider import SlurmProvider

__all__ = ["SlurmProvider"]
