"""A real local Kubernetes control plane: etcd, kube-apiserver, kube-controller-manager, scheduler,
and optionally metrics-server (`kubectl top`).

`DevCluster` generates certificates and a kubeconfig, starts the components on free loopback
ports in dependency order with readiness checks, records what it started in `state.json`, and stops
exactly those processes again. A cluster keeps its ports and node addresses until it is purged, and
starting it again starts only the components that are not running, so agents and kubeconfigs find
it where they left it. It is the test suite's, the benchmarks' and the demo's cluster; it is not a
production installer.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from . import claims, metrics_server
from . import ports as portlib
from .access import http_get, https_get, kubectl_path
from .build import Binaries, Progress, ensure_binaries
from .components import (
    ALL_COMPONENTS,
    ALL_PORT_NAMES,
    APISERVER,
    COMPONENTS,
    CONTROLLER_MANAGER,
    ETCD,
    FRONT_PROXY_CLIENT,
    METRICS_SERVER,
    PORT_NAMES,
    SCHEDULER,
    apiserver_argv,
    controller_manager_argv,
    etcd_argv,
    metrics_server_argv,
    scheduler_argv,
)
from .errors import AlreadyRunningError, DevClusterError, StartError
from .kubeconfig import write_kubeconfig
from .nodeaddr import COMPONENT as NODE_ADDRESS
from .nodeaddr import NodeAddress, allocation_lock
from .pki import CertificateAuthority, KeyPair, create_service_account_keys
from .process import Component, ProcessRecord
from .tools import ensure_metrics_server
from .versions import Versions


def _silent(_: str) -> None:
    pass


@dataclass(frozen=True)
class DevClusterConfig:
    """How to run a dev cluster. The defaults suit a person's demo; tests shorten the periods."""

    versions: Versions = field(default_factory=Versions.from_env)
    #: How often the node-lifecycle controller looks at nodes, and how long it waits for a heartbeat.
    node_monitor_period: str = "2s"
    node_monitor_grace_period: str = "40s"
    node_startup_grace_period: str = "60s"
    #: Fixed ports by name (see PORT_NAMES); the rest are chosen free.
    ports: Mapping[str, int] = field(default_factory=dict)
    #: Extra command-line flags per component, appended after ours (so they win).
    extra_args: Mapping[str, Sequence[str]] = field(default_factory=dict)
    #: Seconds each component may take to become ready (2-core machines need generous values).
    start_timeout: float = 120.0
    #: Leave the components running after this Python process exits (the CLI's `up`).
    detached: bool = False
    #: Give virtual nodes a non-loopback local address (see nodeaddr.py); needs root. The API
    #: server's `nodes/<name>/proxy` refuses loopback node addresses, logs and exec do not.
    node_address: bool = False
    #: Also run metrics-server (built from its Go module) and register it as metrics.k8s.io, so
    #: `kubectl top` works; `metrics_resolution` is how often it scrapes each kubelet.
    metrics_server: bool = False
    metrics_resolution: str = "15s"

    def __post_init__(self) -> None:
        unknown = set(self.ports) - set(ALL_PORT_NAMES)
        if unknown:
            raise ValueError(f"unknown port names {sorted(unknown)}; known: {list(ALL_PORT_NAMES)}")
        unknown = set(self.extra_args) - set(ALL_COMPONENTS)
        if unknown:
            raise ValueError(f"unknown components {sorted(unknown)}; known: {list(ALL_COMPONENTS)}")

    @property
    def components(self) -> tuple[str, ...]:
        """The components this configuration runs, in start order."""
        return (*COMPONENTS, METRICS_SERVER) if self.metrics_server else COMPONENTS


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
            self._save_state()
            self._write_pki()
            self._write_aggregation_pki()
            self._ensure_node_address()
            if ETCD in missing:
                self._start_etcd(binaries)
            if APISERVER in missing:
                self._start_apiserver(binaries)
            self._start_controllers(binaries, [n for n in missing if n in COMPONENTS[2:]])
            if CONTROLLER_MANAGER in missing:
                self._wait_for_default_service_account()
            if metrics_binary is not None:
                self._start_metrics_server(metrics_binary)
        except BaseException:
            if running:
                for name in reversed(missing):
                    component = self.components.get(name)
                    if component is not None and component is not before.get(name):
                        component.stop()
                self._save_state()
            else:
                self.stop()
            raise
        self.progress(f"control plane ready at {self.server} (kubeconfig: {self.kubeconfig})")
        return missing

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the components this cluster started, last-started first; keep data and logs."""
        if not self.components:
            self._load_state()
        for name in reversed(ALL_COMPONENTS):
            component = self.components.get(name)
            if component is not None:
                component.stop(timeout)
        if self.node_address is not None:
            # The address itself stays recorded (and claimed): the next start restores it.
            self.node_address.remove()
        self.components = {}
        self._save_state()

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
            self.node_addresses.update(self._read_state().get("node_addresses", {}))
            address = self.node_addresses.get(node)
            if address is None:
                address = self.node_address.add(self.workdir)
                self.node_addresses[node] = address
                self._save_state()
        return address

    def running_components(self) -> list[str]:
        """Names of this workdir's components that are alive now (per `state.json`)."""
        if not self.components:
            self._load_state()
        return [n for n, c in self.components.items() if c.running()]

    @classmethod
    def attach(cls, workdir: Path, progress: Progress = _silent) -> DevCluster:
        """The cluster recorded in `workdir/state.json`, for status and `down` from another process."""
        cluster = cls(workdir, progress=progress)
        cluster._load_state()
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
        self._save_state()

    def _write_pki(self) -> None:
        if self.kubeconfig.exists() and self.ca.key.exists():
            # Restarting in the same workdir: keep identities. The kubeconfig is rewritten only if
            # its server is not this cluster's (a workdir from before ports were kept), because
            # people and agents may be reading it right now.
            if f'"{self.server}"' not in self.kubeconfig.read_text():
                self._write_admin_kubeconfig()
            return
        self.pki_dir.mkdir(parents=True, exist_ok=True)
        ca = CertificateAuthority.create(self.pki_dir)
        ca.issue(
            self.pki_dir,
            "apiserver",
            common_name="kube-apiserver",
            server_names=[
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
                "127.0.0.1",
                "10.0.0.1",
            ],
        )
        ca.issue(
            self.pki_dir,
            "admin",
            common_name="kubernetes-admin",
            organizations=["system:masters"],
            client=True,
        )
        ca.issue(
            self.pki_dir,
            "apiserver-kubelet-client",
            common_name="kube-apiserver-kubelet-client",
            organizations=["system:masters"],
            client=True,
        )
        create_service_account_keys(self.pki_dir)
        self._write_admin_kubeconfig()

    def _write_aggregation_pki(self) -> None:
        # Separate from _write_pki so that clusters created before the aggregation layer was
        # configured get these files too (their other identities are kept).
        if not self.front_proxy_ca.key.exists():
            front = CertificateAuthority.create(
                self.pki_dir, "virtual-kubelet-devcluster-front-proxy-ca", stem="front-proxy-ca"
            )
            front.issue(
                self.pki_dir, FRONT_PROXY_CLIENT, common_name=FRONT_PROXY_CLIENT, client=True
            )
        if not self.metrics_server_client.key.exists():
            ca = CertificateAuthority.load(self.ca)
            ca.issue(
                self.pki_dir,
                "metrics-server-serving",
                common_name="metrics-server",
                server_names=list(metrics_server.SERVING_NAMES),
            )
            ca.issue(self.pki_dir, "metrics-server", common_name=metrics_server.USER, client=True)

    def _write_admin_kubeconfig(self) -> None:
        write_kubeconfig(
            self.kubeconfig,
            server=self.server,
            ca=self.ca.cert,
            client=self.admin,
            cluster="virtual-kubelet-devcluster",
            user="admin",
        )

    def _spawn(self, name: str, argv: list[str]) -> Component:
        argv = [*argv, *self.config.extra_args.get(name, ())]
        log = self.log(name)
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a") as f:
            f.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} starting: {' '.join(argv)}\n")
        component = Component.spawn(name, argv, log, detached=self.config.detached)
        self.components[name] = component
        self._save_state()
        return component

    def _start_etcd(self, binaries: Binaries) -> None:
        self.progress("starting etcd")
        etcd = self._spawn(ETCD, etcd_argv(binaries.etcd, self.workdir, self.ports))

        def healthy() -> bool:
            code, body = http_get("127.0.0.1", self.ports[ETCD], "/health")
            return code == 200 and json.loads(body).get("health") == "true"

        etcd.wait_ready(healthy, self.config.start_timeout, "healthy")

    def _start_apiserver(self, binaries: Binaries) -> None:
        self.progress("starting kube-apiserver")
        pki = self.pki_dir
        cert_dir = self.workdir / APISERVER
        cert_dir.mkdir(exist_ok=True)
        apiserver = self._spawn(
            APISERVER,
            apiserver_argv(
                binaries.kube_apiserver,
                cert_dir,
                self.ports,
                pki,
                self.ca,
                self.kubelet_client,
                self.front_proxy_ca,
                self.front_proxy_client,
            ),
        )

        def ready() -> bool:
            code, _ = self.api_get("/readyz", timeout=5)
            return code == 200

        apiserver.wait_ready(ready, self.config.start_timeout, "ready (/readyz)")

    def _start_controllers(self, binaries: Binaries, names: Sequence[str]) -> None:
        if not names:
            return
        self.progress(f"starting {' and '.join(names)}")
        for name in (CONTROLLER_MANAGER, SCHEDULER):
            (self.workdir / name).mkdir(exist_ok=True)
        argv = {
            CONTROLLER_MANAGER: controller_manager_argv(
                binaries.kube_controller_manager,
                self.workdir,
                self.kubeconfig,
                self.ports,
                self.pki_dir,
                self.ca,
                self.config,
            ),
            SCHEDULER: scheduler_argv(
                binaries.kube_scheduler, self.workdir, self.kubeconfig, self.ports
            ),
        }
        # Both start before either is waited for: they need nothing from each other.
        started = [self._spawn(name, argv[name]) for name in names]
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE  # self-signed serving certs made by the components

        def healthy(name: str) -> Callable[[], bool]:
            def check() -> bool:
                code, _ = https_get("127.0.0.1", self.ports[name], "/healthz", insecure, 5)
                return code == 200

            return check

        for component in started:
            component.wait_ready(healthy(component.name), self.config.start_timeout, "healthy")

    def _start_metrics_server(self, binary: Path) -> None:
        self.progress("starting metrics-server")
        write_kubeconfig(
            self.metrics_server_kubeconfig,
            server=self.server,
            ca=self.ca.cert,
            client=self.metrics_server_client,
            cluster="virtual-kubelet-devcluster",
            user=metrics_server.USER,
        )
        port = self.ports[METRICS_SERVER]
        # Registered first: metrics-server reads its RBAC-guarded configuration as it starts.
        metrics_server.register(self, self.ca.cert, port)
        component = self._spawn(
            METRICS_SERVER,
            metrics_server_argv(
                binary,
                self.metrics_server_kubeconfig,
                self.ports,
                self.ca,
                self.metrics_server_serving,
                self.config.metrics_resolution,
            ),
        )
        trusting_ca = ssl.create_default_context(cafile=str(self.ca.cert))

        def live() -> bool:
            code, _ = https_get("127.0.0.1", port, "/livez", trusting_ca, 5)
            return code == 200

        component.wait_ready(live, self.config.start_timeout, "live (/livez)")

        # The aggregator reached it: `kubectl top` and discovery of metrics.k8s.io work.
        def registered() -> bool:
            code, body = self.api_get(
                f"/apis/apiregistration.k8s.io/v1/apiservices/{metrics_server.APISERVICE}"
            )
            return code == 200 and metrics_server.available(json.loads(body))

        component.wait_ready(
            registered, self.config.start_timeout, f"{metrics_server.APISERVICE} Available"
        )

    def _wait_for_default_service_account(self) -> None:
        # The service-account controller creating `default` proves the controllers really run.
        def exists() -> bool:
            code, _ = self.api_get("/api/v1/namespaces/default/serviceaccounts/default")
            return code == 200

        self.components[CONTROLLER_MANAGER].wait_ready(
            exists, self.config.start_timeout, "creating the default ServiceAccount"
        )

    def _save_state(self) -> None:
        state = {
            "versions": {
                "kubernetes": self.config.versions.kubernetes,
                "etcd": self.config.versions.etcd,
            },
            "ports": self.ports,
            "metrics_server": self.with_metrics_server,
            "node_address": self.node_address.__dict__ if self.node_address else None,
            # Merged with what is on disk: `node-address` may have added one from another process.
            "node_addresses": {
                **self._read_state().get("node_addresses", {}),
                **self.node_addresses,
            },
            "processes": [c.record.to_json() for c in self.components.values()],
        }
        # Per process: `up` and `node-address` may save at the same moment.
        tmp = self.state_file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        tmp.replace(self.state_file)

    def _read_state(self) -> dict[str, Any]:
        try:
            state: dict[str, Any] = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return {}
        return state

    def _load_state(self) -> None:
        state = self._read_state()
        if not state:
            return
        self.ports = {str(k): int(v) for k, v in state.get("ports", {}).items()}
        self.components = {
            rec["name"]: Component(ProcessRecord.from_json(rec))
            for rec in state.get("processes", [])
        }
        address = state.get("node_address")
        self.node_address = NodeAddress(**address) if address else None
        self.node_addresses = {str(k): str(v) for k, v in state.get("node_addresses", {}).items()}
        self.with_metrics_server = bool(state.get("metrics_server", False))
