"""A real local Kubernetes control plane: etcd, kube-apiserver, kube-controller-manager, scheduler,
and optionally metrics-server (`kubectl top`).

`DevCluster` generates certificates and a kubeconfig, starts the components on free loopback
ports in dependency order with readiness checks, records what it started in `state.json`, and stops
exactly those processes again. A cluster keeps its ports and node addresses until it is purged, and
starting it again starts only the components that are not running, so agents and kubeconfigs find
it where they left it. It is the test suite's, the benchmarks' and the demo's cluster; it is not a
production installer.

Its parts: `config.py` (how it runs), `identities.py` (certificates, kubeconfig), `startup.py`
(starting each component and waiting for it), `statefile.py` (`state.json`); this module decides
what to start and in which order, keeps ports and node addresses, and talks to the running cluster.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from . import claims
from . import ports as portlib
from .access import https_get, kubectl_path
from .build import Progress, ensure_binaries
from .components import (
    ALL_COMPONENTS,
    APISERVER,
    COMPONENTS,
    CONTROLLER_MANAGER,
    ETCD,
    FRONT_PROXY_CLIENT,
    METRICS_SERVER,
    PORT_NAMES,
)
from .config import DevClusterConfig
from .errors import AlreadyRunningError, DevClusterError, StartError
from .identities import write_aggregation_pki, write_pki
from .nodeaddr import COMPONENT as NODE_ADDRESS
from .nodeaddr import NodeAddress, allocation_lock
from .pki import KeyPair
from .process import Component
from .startup import (
    start_apiserver,
    start_controllers,
    start_etcd,
    start_metrics_server,
    wait_for_default_service_account,
)
from .statefile import load_state, read_state, save_state
from .tools import ensure_metrics_server


def _silent(_: str) -> None:
    pass


class DevCluster:
    """One control plane living in `workdir` (certificates, etcd data, logs, kubeconfig, state)."""

    def __init__(
        self,
        workdir: Path,
        config: DevClusterConfig | None = None,
        *,
        progress: Progress = _silent,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.config = config or DevClusterConfig()
        self.progress = progress
        self.ports: dict[str, int] = {}
        self.components: dict[str, Component] = {}
        self.node_address: NodeAddress | None = None
        #: Addresses handed out per node name (`node_address_for`), kept until purge.
        self.node_addresses: dict[str, str] = {}
        #: Whether the cluster was last started with metrics-server (kept in state.json, so that
        #: `up` after `down` from another process starts it again).
        self.with_metrics_server = self.config.metrics_server

    # --- paths ------------------------------------------------------------------------------

    @property
    def pki_dir(self) -> Path:
        return self.workdir / "pki"

    @property
    def logs_dir(self) -> Path:
        return self.workdir / "logs"

    @property
    def kubeconfig(self) -> Path:
        """An admin (system:masters) kubeconfig for this cluster."""
        return self.workdir / "admin.kubeconfig"

    @property
    def state_file(self) -> Path:
        return self.workdir / "state.json"

    @property
    def ca(self) -> KeyPair:
        return KeyPair(self.pki_dir / "ca.crt", self.pki_dir / "ca.key")

    @property
    def admin(self) -> KeyPair:
        return KeyPair(self.pki_dir / "admin.crt", self.pki_dir / "admin.key")

    @property
    def kubelet_client(self) -> KeyPair:
        """The client certificate the API server presents to kubelets (and to virtual kubelets)."""
        return KeyPair(
            self.pki_dir / "apiserver-kubelet-client.crt",
            self.pki_dir / "apiserver-kubelet-client.key",
        )

    @property
    def front_proxy_ca(self) -> KeyPair:
        """The CA of the aggregation layer's client certificate (not the cluster CA: extension
        API servers trust identity headers from anyone this CA signed)."""
        return KeyPair(self.pki_dir / "front-proxy-ca.crt", self.pki_dir / "front-proxy-ca.key")

    @property
    def front_proxy_client(self) -> KeyPair:
        return KeyPair(
            self.pki_dir / f"{FRONT_PROXY_CLIENT}.crt", self.pki_dir / f"{FRONT_PROXY_CLIENT}.key"
        )

    @property
    def metrics_server_serving(self) -> KeyPair:
        return KeyPair(
            self.pki_dir / "metrics-server-serving.crt", self.pki_dir / "metrics-server-serving.key"
        )

    @property
    def metrics_server_client(self) -> KeyPair:
        return KeyPair(self.pki_dir / "metrics-server.crt", self.pki_dir / "metrics-server.key")

    @property
    def metrics_server_kubeconfig(self) -> Path:
        return self.workdir / "metrics-server.kubeconfig"

    @property
    def node_ip(self) -> str:
        """The address virtual nodes of this cluster should listen on and advertise."""
        return self.node_address.address if self.node_address else "127.0.0.1"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports[APISERVER]}"

    def log(self, component: str) -> Path:
        return self.logs_dir / f"{component}.log"

    # --- lifecycle ----------------------------------------------------------------------------

    def __enter__(self) -> DevCluster:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> list[str]:
        """Start the components that are not running, in dependency order, each waited for until
        ready, and return their names; components still running are left alone. Ports and the node
        address are the ones recorded in `state.json`, if any: a cluster keeps them until purged.

        Raises AlreadyRunningError if everything runs. On any failure, what this call started is
        stopped again (everything, if nothing was running before).
        """
        running = self.running_components()
        wanted = self.config.components
        missing = [name for name in wanted if name not in running]
        if not missing:
            raise AlreadyRunningError(
                "devcluster", f"the cluster in {self.workdir} is already running"
            )
        binaries = ensure_binaries(self.config.versions, progress=self.progress)
        metrics_binary = ensure_metrics_server(self.progress) if METRICS_SERVER in missing else None
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.with_metrics_server = self.config.metrics_server
        before = dict(self.components)
        if running:
            self.progress(f"{', '.join(running)} running; starting {', '.join(missing)}")
        try:
            self._choose_ports(running)
            save_state(self)
            write_pki(self)
            write_aggregation_pki(self)
            self._ensure_node_address()
            if ETCD in missing:
                start_etcd(self, binaries)
            if APISERVER in missing:
                start_apiserver(self, binaries)
            start_controllers(self, binaries, [n for n in missing if n in COMPONENTS[2:]])
            if CONTROLLER_MANAGER in missing:
                wait_for_default_service_account(self)
            if metrics_binary is not None:
                start_metrics_server(self, metrics_binary)
        except BaseException:
            if running:
                for name in reversed(missing):
                    component = self.components.get(name)
                    if component is not None and component is not before.get(name):
                        component.stop()
                save_state(self)
            else:
                self.stop()
            raise
        self.progress(f"control plane ready at {self.server} (kubeconfig: {self.kubeconfig})")
        return missing

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the components this cluster started, last-started first; keep data and logs."""
        if not self.components:
            load_state(self)
        for name in reversed(ALL_COMPONENTS):
            component = self.components.get(name)
            if component is not None:
                component.stop(timeout)
        if self.node_address is not None:
            # The address itself stays recorded (and claimed): the next start restores it.
            self.node_address.remove()
        self.components = {}
        save_state(self)

    def purge(self) -> None:
        """Stop the cluster, give up its ports and node addresses, and delete its directory."""
        self.stop()
        for port in self.ports.values():
            portlib.release(port, self.workdir)
        addresses = [self.node_address.address] if self.node_address else []
        for address in [*addresses, *self.node_addresses.values()]:
            claims.release(claims.ADDRESSES, address, self.workdir)
        shutil.rmtree(self.workdir)

    def node_address_for(self, node: str | None = None) -> str:
        """A non-loopback address for a virtual node of this running cluster (`VKUBELET_POD_IP`):
        the cluster's own without `node`; else one per node name, configured on the cluster's
        interface the first time it is asked for and the same every time after, until purge."""
        if not self.running_components():
            raise DevClusterError(
                "devcluster",
                f"the cluster in {self.workdir} is not running; start it with "
                "`virtual-kubelet devcluster up`",
            )
        if self.node_address is None:
            raise DevClusterError(
                NODE_ADDRESS,
                f"the cluster in {self.workdir} has no node address (creating one needs root); "
                "as root, `devcluster down` and `devcluster up --node-address` add one",
            )
        if not self.node_address.present():
            raise DevClusterError(
                NODE_ADDRESS,
                f"interface {self.node_address.interface} is gone; "
                "`virtual-kubelet devcluster up` restores it",
            )
        if node is None:
            return self.node_address.address
        with allocation_lock():
            # Another process may have handed out this node's address since we read the state.
            self.node_addresses.update(read_state(self).get("node_addresses", {}))
            address = self.node_addresses.get(node)
            if address is None:
                address = self.node_address.add(self.workdir)
                self.node_addresses[node] = address
                save_state(self)
        return address

    def running_components(self) -> list[str]:
        """Names of this workdir's components that are alive now (per `state.json`)."""
        if not self.components:
            load_state(self)
        return [n for n, c in self.components.items() if c.running()]

    @classmethod
    def attach(cls, workdir: Path, progress: Progress = _silent) -> DevCluster:
        """The cluster recorded in `workdir/state.json`, for status and `down` from another process."""
        cluster = cls(workdir, progress=progress)
        load_state(cluster)
        return cluster

    def status(self) -> dict[str, Any]:
        """What runs, where, and whether the API server answers `/readyz`."""
        running = set(self.running_components())
        components = {
            name: {
                "running": name in running,
                "pid": c.record.pid,
                "port": self.ports.get(name),
                "log": c.record.log,
            }
            for name, c in self.components.items()
        }
        ready: str | None = None
        if APISERVER in running:
            try:
                code, body = self.api_get("/readyz")
                ready = body.decode().strip() if code == 200 else f"HTTP {code}"
            except OSError as exc:
                ready = f"unreachable: {exc}"
        return {
            "workdir": str(self.workdir),
            "server": self.server if APISERVER in self.ports else None,
            "kubeconfig": str(self.kubeconfig),
            "node_ip": self.node_ip,
            "node_addresses": dict(self.node_addresses),
            "readyz": ready,
            "components": components,
        }

    # --- talking to it ------------------------------------------------------------------------

    def ssl_context(self) -> ssl.SSLContext:
        """TLS context trusting the cluster CA and presenting the admin client certificate."""
        ctx = ssl.create_default_context(cafile=str(self.ca.cert))
        ctx.load_cert_chain(str(self.admin.cert), str(self.admin.key))
        return ctx

    def api_get(self, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
        """GET `path` from the API server as admin; returns (status, body)."""
        return https_get("127.0.0.1", self.ports[APISERVER], path, self.ssl_context(), timeout)

    def kubectl(
        self,
        *args: str,
        input: str | bytes | None = None,
        check: bool = True,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run the dev kubectl against this cluster and return its output as text."""
        env = dict(os.environ, KUBECONFIG=str(self.kubeconfig))
        data = input.decode() if isinstance(input, bytes) else input
        result = subprocess.run(
            [kubectl_path(), *args],
            input=data,
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise subprocess.CalledProcessError(
                result.returncode, result.args, result.stdout, result.stderr
            )
        return result

    def get_json(self, *args: str) -> Any:
        """`kubectl get ARGS -o json`, parsed."""
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    # --- internals ----------------------------------------------------------------------------

    def _choose_ports(self, running: Sequence[str]) -> None:
        recorded = dict(self.ports)
        names = (*PORT_NAMES, METRICS_SERVER) if self.config.metrics_server else PORT_NAMES
        for name in names:
            component = ETCD if name == "etcd-peer" else name
            fixed = self.config.ports.get(name)
            port = recorded.get(name)
            if port is not None and fixed is not None and fixed != port:
                raise StartError(
                    component,
                    f"this cluster's port is {port}, kept for its lifetime; "
                    "`virtual-kubelet devcluster down --purge` to start afresh on another",
                )
            if port is None and fixed is None:
                port = portlib.free_port(owner=self.workdir)
            else:
                port = port if port is not None else fixed
                assert port is not None
                if component not in running and portlib.port_in_use(port):
                    raise StartError(component, self._port_taken(port, kept=name in recorded))
                portlib.claim(port, self.workdir)
            self.ports[name] = port

    def _port_taken(self, port: int, *, kept: bool) -> str:
        holder = portlib.holder(port)
        message = f"port {port} on 127.0.0.1 is already in use" + (
            f" by {holder}" if holder else ""
        )
        if kept:
            message += (
                "; this cluster keeps its ports for its lifetime (agents and kubeconfigs know "
                "them), so stop that process, or run `virtual-kubelet devcluster down --purge` "
                "to delete the cluster and start afresh on new ports"
            )
        return message

    def _ensure_node_address(self) -> None:
        if self.node_address is not None:
            extra = list(self.node_addresses.values())
            if not self.node_address.present(extra):
                self.node_address = NodeAddress.create(
                    self.workdir, self.node_address.address, extra
                )
        elif self.config.node_address:
            self.node_address = NodeAddress.create(self.workdir)
        save_state(self)
