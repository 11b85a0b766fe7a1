"""Print a provider's capabilities table as JSON: `python -m virtual_kubelet.testing.capabilities_probe
PROVIDER [CONFIG]`.

The suite runs this in a child process with the agent's environment, so it sees the provider
exactly as the agent will (a provider installed on a PYTHONPATH the test process lacks included).
It constructs the provider, as the agent does, but never starts it: nothing reaches the backend.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
from pathlib import Path

from ..providers import registry
from ..sdk import Capabilities, ProviderContext


def capabilities(provider: str, config_path: Path | None, state_dir: Path) -> Capabilities:
    """`Capabilities.of` a freshly constructed, unstarted `provider`."""
    context = ProviderContext(
        node_name="conformance-capabilities",
        operating_system="linux",
        internal_ip="127.0.0.1",
        daemon_port=0,
        config_path=config_path,
        state_dir=state_dir,
    )
    return Capabilities.of(registry.create(provider, context))


def main(argv: list[str]) -> int:
    if len(argv) not in (1, 2):
        print(__doc__, file=sys.stderr)
        return 2
    config = Path(argv[1]) if len(argv) == 2 else None
    with tempfile.TemporaryDirectory(prefix="vk-capabilities-") as state:
        table = capabilities(argv[0], config, Path(state))
    print(json.dumps(dataclasses.asdict(table)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
