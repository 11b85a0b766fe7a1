"""The few workloads the conformance suite needs, expressed for one kind of backend.

The suite asks for behaviours ("a container that keeps running", "one that exits with 3", "one
that echoes TCP on port P"); a `Workloads` object says how to get each from its provider: fields
for the container spec and annotations for the pod. The base class uses shell commands, right for
providers that run processes; `MockWorkloads` steers the mock with its annotations. A method
returning None means "this backend cannot express that", and the checks that need it are skipped
with that reason.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["IdleWorkloads", "MockWorkloads", "ProcessWorkloads", "Workload", "Workloads"]

#: The mock provider's annotation prefix (see providers/mock/config.py).
MOCK = "mock.virtual-kubelet.io/"

# A TCP echo server on the port in argv[1], every address; one thread per connection.
_ECHO_SERVER = """\
import socket, sys, threading
server = socket.create_server(("", int(sys.argv[1])))
def echo(conn):
    with conn:
        while data := conn.recv(65536):
            conn.sendall(data)
while True:
    threading.Thread(target=echo, args=(server.accept()[0],), daemon=True).start()
"""

#: Long enough to outlive the suite, short enough that a leaked process ends on its own.
_RUN_SECONDS = 3600


@dataclass(frozen=True)
class Workload:
    """One container's behaviour for a backend: `container` is merged into the container's spec
    (command, args, image, stdin, probes, ...), `annotations` into the pod's metadata."""

    container: Mapping[str, Any] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    #: For `Workloads.rejected` only: text the pod's status message must contain.
    message: str = ""


class Workloads:
    """Workloads as shell commands, for providers that run processes (any POSIX `sh`, plus
    `python3` for the echo server). Subclass and override what your backend expresses otherwise;
    return None from a method your backend cannot express, and the checks needing it are skipped.
    """

    #: The image every container names (recorded by process-like providers, never pulled).
    image = "busybox"

    # --- containers ---------------------------------------------------------------------------

    def runs(self) -> Workload:
        """Keeps running until it is stopped, and stops at once on SIGTERM."""
        return self._shell(f"exec sleep {_RUN_SECONDS}")

    def exits(self, code: int) -> Workload | None:
        """Ends by itself, soon, with exit code `code`."""
        return self._shell(f"exit {code}")

    def prints(self, text: str) -> Workload | None:
        """Writes `text` (letters, digits and dashes) to its log, then keeps running."""
        return self._shell(f"echo {shlex.quote(text)}; exec sleep {_RUN_SECONDS}")

    def reports(self, mount_path: str, file_name: str) -> Workload | None:
        """Writes its environment (`NAME=value` lines) and the content of `file_name` in the volume
        mounted at `mount_path` to its log, then keeps running."""
        path = self.file(mount_path, file_name)
        return self._shell(f"env; cat {path}; echo; exec sleep {_RUN_SECONDS}")

    def echoes_stdin(self) -> Workload | None:
        """Writes back to its output whatever arrives on its stdin (for `kubectl attach`)."""
        return Workload(container={"command": ["cat"], "stdin": True})

    def serves(self, port: int) -> Workload | None:
        """Echoes back every byte received on TCP `port` (for `kubectl port-forward`), and is
        Ready only once it listens."""
        return Workload(
            container={
                "command": ["python3", "-c", _ECHO_SERVER, str(port)],
                "ports": [{"containerPort": port, "protocol": "TCP"}],
                "readinessProbe": {"tcpSocket": {"port": port}, "periodSeconds": 1},
            }
        )

    def rejected(self) -> Workload | None:
        """A pod the provider refuses with `InvalidInput` (None: nothing it could refuse)."""
        return None

    # --- commands for `kubectl exec` ------------------------------------------------------------

    def echo_command(self, text: str) -> list[str]:
        """Prints `text` and a newline."""
        return ["echo", text]

    def exit_command(self, code: int) -> list[str]:
        """Exits with `code`."""
        return ["sh", "-c", f"exit {code}"]

    def stdin_command(self) -> list[str]:
        """Copies stdin to stdout until it ends."""
        return ["cat"]

    def env_command(self) -> list[str]:
        """Prints the container's environment as `NAME=value` lines."""
        return ["env"]

    def read_command(self, mount_path: str, file_name: str) -> list[str] | None:
        """Prints `file_name` of the volume mounted at `mount_path` (None: containers of this
        backend do not see volume files)."""
        return ["sh", "-c", f"cat {self.file(mount_path, file_name)}"]

    # --- helpers ------------------------------------------------------------------------------

    def file(self, mount_path: str, file_name: str) -> str:
        """A shell word naming the file `file_name` of the volume mounted at `mount_path`, as the
        container sees it."""
        return shlex.quote(f"{mount_path.rstrip('/')}/{file_name}")

    def _shell(self, script: str) -> Workload:
        # `$(` would be Kubernetes' own $(VAR) expansion: scripts here never contain it.
        return Workload(container={"command": ["sh", "-c", script]})


class ProcessWorkloads(Workloads):
    """The `process` provider: shell commands, and volume files found where it puts them (at the
    mount path with bind mounts; in `VK_VOLUME_<MOUNTPATH>` when it cannot bind-mount)."""

    def file(self, mount_path: str, file_name: str) -> str:
        # Imported here: the kit must not load a provider's code unless that provider is tested.
        from ..providers.process.launch import volume_env_name

        variable = volume_env_name(mount_path)
        return f'"${{{variable}:-{mount_path.rstrip("/")}}}"/{shlex.quote(file_name)}'


class MockWorkloads(Workloads):
    """The `mock` provider, steered by its `mock.virtual-kubelet.io/...` annotations. Its pretend
    runtime has a tiny shell for exec (echo, cat, env, sh -c "exit N"), echoes typed input back on
    attach and bytes on every port, and never sees volume files."""

    image = "registry.invalid/conformance:1"

    def runs(self) -> Workload:
        return Workload()  # the mock's pods run until deleted

    def exits(self, code: int) -> Workload | None:
        return Workload(annotations={MOCK + "exit-code": str(code)})

    def prints(self, text: str) -> Workload | None:
        # The mock's only log line names the container's image.
        return Workload(container={"image": f"registry.invalid/{text}:1"})

    def reports(self, mount_path: str, file_name: str) -> Workload | None:
        return None

    def echoes_stdin(self) -> Workload | None:
        return Workload(container={"stdin": True})

    def serves(self, port: int) -> Workload | None:
        return Workload()

    def rejected(self) -> Workload | None:
        return Workload(
            annotations={MOCK + "startup-seconds": "whenever"}, message="is not a number"
        )

    def read_command(self, mount_path: str, file_name: str) -> list[str] | None:
        return None


class IdleWorkloads(Workloads):
    """A backend whose pods run until deleted and cannot be told to do anything else (the
    tutorial provider): only `runs` is expressible, the checks needing more are skipped."""

    def runs(self) -> Workload:
        return Workload()

    def exits(self, code: int) -> Workload | None:
        return None

    def prints(self, text: str) -> Workload | None:
        return None

    def reports(self, mount_path: str, file_name: str) -> Workload | None:
        return None

    def echoes_stdin(self) -> Workload | None:
        return None

    def serves(self, port: int) -> Workload | None:
        return None

    def read_command(self, mount_path: str, file_name: str) -> list[str] | None:
        return None
