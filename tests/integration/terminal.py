"""A real terminal for `kubectl exec -it` tests: a detached tmux session of a given size whose
screen can be read and whose window can be resized, as a person's terminal would be.

tmux is installed from Debian when missing (as root); where it cannot be, the test is skipped,
and under CI=true that is a failure instead."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import pytest


def _tmux() -> str:
    found = shutil.which("tmux")
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(
            ["apt-get", "install", "-y", "--no-install-recommends", "tmux"],
            capture_output=True,
            check=False,
        )
        found = shutil.which("tmux")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("tmux is needed for the terminal tests and could not be installed")
        pytest.skip("tmux is not installed")
    return found


class Terminal:
    def __init__(self, tmux: str, session: str) -> None:
        self._tmux, self.session = tmux, session

    def screen(self) -> str:
        """What the terminal shows now."""
        return subprocess.run(
            [self._tmux, "capture-pane", "-p", "-t", self.session],
            capture_output=True,
            text=True,
            check=False,
        ).stdout

    def resize(self, width: int, height: int) -> None:
        subprocess.run(
            [self._tmux, "resize-window", "-t", self.session, "-x", str(width), "-y", str(height)],
            check=True,
        )

    def type(self, text: str) -> None:
        """Type `text` and Enter."""
        subprocess.run([self._tmux, "send-keys", "-t", self.session, text, "Enter"], check=True)


@contextmanager
def terminal(command: str, width: int = 80, height: int = 24) -> Iterator[Terminal]:
    """Run the shell `command` in a `width`x`height` terminal; the session ends with the block."""
    tmux = _tmux()
    session = f"vk-{secrets.token_hex(4)}"
    subprocess.run(
        [tmux, "new-session", "-d", "-s", session, "-x", str(width), "-y", str(height), command],
        check=True,
    )
    try:
        yield Terminal(tmux, session)
    finally:
        subprocess.run([tmux, "kill-session", "-t", session], check=False)
