"""The `virtual-kubelet` command line: entry point, version, and the dev-cluster tools.

It parses and wires; the work happens in the packages it calls.
"""

from __future__ import annotations

import platform

import click

from . import __version__
from .devcluster.cli import devcluster


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """A Kubernetes kubelet that runs pods through pluggable Python providers."""


@main.command()
def version() -> None:
    """Print the version of virtual-kubelet and of Python."""
    click.echo(f"virtual-kubelet {__version__} (Python {platform.python_version()})")


main.add_command(devcluster)
