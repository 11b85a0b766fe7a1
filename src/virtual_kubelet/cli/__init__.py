"""The `virtual-kubelet` command line: run the agent, list providers, print the version, dev tools.

Flags and environment variables follow the upstream Go virtual-kubelet so existing deployments keep
working; it parses and wires, the work happens in `agent.py`. `options.py` declares the agent
command and its flags, `settings.py` reads flag values, `run.py` turns them into `AgentSettings`
and runs the agent, `commands.py` holds the other commands (`version`, `remove-node`, `providers`).
"""

from __future__ import annotations

from . import commands as _commands  # noqa: F401  (registers the subcommands on `main`)
from .options import main

__all__ = ["main"]
