"""Where and how to reach the API server: kubeconfig files, in-cluster service accounts, exec plugins.

Produces a `ClientConfig` (server URL, TLS material, where credentials come from) and an
`ssl.SSLContext` from it. Obtaining tokens at run time is `credentials.py`'s job. Credentials never
appear in error messages or reprs.
"""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

IN_CLUSTER_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class ConfigError(Exception):
    """The API server connection cannot be configured (missing, unreadable or invalid input)."""


@dataclass(frozen=True)
class ExecPlugin:
    """A `client.authentication.k8s.io` credential plugin (`users[].user.exec` in kubeconfig)."""

    command: str
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    api_version: str = "client.authentication.k8s.io/v1"


@dataclass(frozen=True)
class ClientConfig:
    """Everything needed to open a connection to one API server as one identity."""

    server: str
    source: str  # human-readable origin, e.g. "kubeconfig /root/.kube/config (context dev)"
    ca_data: bytes | None = None
    insecure_skip_tls_verify: bool = False
    tls_server_name: str | None = None
    client_cert_data: bytes | None = field(default=None, repr=False)
    client_key_data: bytes | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    token_file: Path | None = None
    exec_plugin: ExecPlugin | None = None

    def ssl_context(self) -> ssl.SSLContext | None:
        """TLS settings for the server, or None for plain-HTTP servers."""
        if not self.server.startswith("https://"):
            return None
        ctx = ssl.create_default_context()
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.insecure_skip_tls_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        elif self.ca_data:
            ctx.load_verify_locations(cadata=self.ca_data.decode())
        if self.client_cert_data and self.client_key_data:
            _load_client_certificate(ctx, self.client_cert_data, self.client_key_data)
        return ctx


def _load_client_certificate(ctx: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    # The ssl module only loads key material from files: write it to a private file and remove it.
    with tempfile.TemporaryDirectory(prefix="vk-tls-") as tmp:
        os.chmod(tmp, 0o700)
        cert_file, key_file = Path(tmp) / "c.pem", Path(tmp) / "k.pem"
        cert_file.write_bytes(cert)
        key_file.touch(mode=0o600)
        key_file.write_bytes(key)
        try:
            ctx.load_cert_chain(str(cert_file), str(key_file))
        except ssl.SSLError as exc:
            raise ConfigError(f"client certificate and key do not load: {exc.reason}") from None


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from None


def _material(
    entry: dict[str, Any], data_key: str, file_key: str, base: Path, what: str
) -> bytes | None:
    if entry.get(data_key):
        try:
            return base64.b64decode(entry[data_key], validate=True)
        except ValueError:
            raise ConfigError(f"{data_key} of {what} is not valid base64") from None
    if entry.get(file_key):
        path = Path(entry[file_key])
        return _read(path if path.is_absolute() else base / path, what)
    return None


def _named(items: Any, name: str, kind: str, source: Path) -> dict[str, Any]:
    for item in items or []:
        if isinstance(item, dict) and item.get("name") == name:
            body = item.get(kind)
            return body if isinstance(body, dict) else {}
    raise ConfigError(f"kubeconfig {source} has no {kind} named {name!r}")


def from_kubeconfig(path: Path, context: str | None = None) -> ClientConfig:
    """Read one kubeconfig file; `context` defaults to its current-context."""
    raw = _read(path, "kubeconfig")
    try:
        doc = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"kubeconfig {path} is not valid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"kubeconfig {path} is not a kubeconfig (expected a mapping)")
    context_name = context or doc.get("current-context")
    if not context_name:
        raise ConfigError(f"kubeconfig {path} has no current-context; pass a context")
    ctx = _named(doc.get("contexts"), context_name, "context", path)
    cluster = _named(doc.get("clusters"), ctx.get("cluster", ""), "cluster", path)
    user = _named(doc.get("users"), ctx.get("user", ""), "user", path) if ctx.get("user") else {}
    server = cluster.get("server")
    if not server:
        raise ConfigError(f"cluster {ctx.get('cluster')!r} in {path} has no server")
    base = path.parent
    exec_plugin = None
    if isinstance(user.get("exec"), dict):
        spec = user["exec"]
        exec_plugin = ExecPlugin(
            command=str(spec.get("command", "")),
            args=tuple(str(a) for a in spec.get("args") or ()),
            env=tuple((str(e["name"]), str(e["value"])) for e in spec.get("env") or ()),
            api_version=str(spec.get("apiVersion", ExecPlugin.api_version)),
        )
    token_file = Path(user["tokenFile"]) if user.get("tokenFile") else None
    return ClientConfig(
        server=server.rstrip("/"),
        source=f"kubeconfig {path} (context {context_name})",
        ca_data=_material(
            cluster,
            "certificate-authority-data",
            "certificate-authority",
            base,
            "certificate authority",
        ),
        insecure_skip_tls_verify=bool(cluster.get("insecure-skip-tls-verify")),
        tls_server_name=cluster.get("tls-server-name"),
        client_cert_data=_material(
            user, "client-certificate-data", "client-certificate", base, "client certificate"
        ),
        client_key_data=_material(user, "client-key-data", "client-key", base, "client key"),
        token=user.get("token"),
        token_file=token_file,
        exec_plugin=exec_plugin,
    )


def in_cluster() -> ClientConfig:
    """The pod's service account, as every in-cluster client uses it."""
    host, port = (
        os.environ.get("KUBERNETES_SERVICE_HOST"),
        os.environ.get("KUBERNETES_SERVICE_PORT"),
    )
    token = IN_CLUSTER_DIR / "token"
    if not host or not port or not token.exists():
        raise ConfigError(
            "not running in a cluster (no KUBERNETES_SERVICE_HOST or service-account token)"
        )
    if ":" in host:
        host = f"[{host}]"
    return ClientConfig(
        server=f"https://{host}:{port}",
        source="in-cluster service account",
        ca_data=_read(IN_CLUSTER_DIR / "ca.crt", "service-account CA"),
        token_file=token,  # re-read: bound tokens rotate
    )


def load(kubeconfig: str | None = None, context: str | None = None) -> ClientConfig:
    """`--kubeconfig`, else `$KUBECONFIG` (first existing entry), else `~/.kube/config`, else
    in-cluster. An explicitly named file that does not exist is an error, not a fallback."""
    if kubeconfig:
        return from_kubeconfig(Path(kubeconfig).expanduser(), context)
    for entry in os.environ.get("KUBECONFIG", "").split(os.pathsep):
        if entry and Path(entry).expanduser().exists():
            return from_kubeconfig(Path(entry).expanduser(), context)
    default = Path.home() / ".kube" / "config"
    if default.exists():
        return from_kubeconfig(default, context)
    try:
        return in_cluster()
    except ConfigError:
        raise ConfigError(
            "no kubeconfig found (tried --kubeconfig, $KUBECONFIG, ~/.kube/config) and not running "
            "in a cluster"
        ) from None
