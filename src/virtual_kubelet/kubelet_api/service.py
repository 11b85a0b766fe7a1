"""Runs the kubelet API for the agent: obtains the serving certificate (files, CSR or self-signed),
listens on the kubelet port, and renews the certificate before it expires.

With the CSR source the port opens only once the certificate is issued; the rest of the agent
does not wait for it. Authentication and authorisation are on unless explicitly turned off.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..kube.client import KubeClient
from ..sdk import Provider
from .api import KubeletApi
from .auth import Authenticator, Authorizer
from .certs import (
    CertificateError,
    ServingIdentity,
    load_identity,
    mismatch,
    renew_at,
    request_certificate,
    self_signed,
    server_context,
)
from .http import KubeletHttpServer
from .listener import bind_listener

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KubeletApiSettings:
    #: None: the node's InternalIP (falling back to all addresses when that is not local).
    listen_address: str | None = None
    port: int = 10250
    #: "files", "csr" or "self-signed".
    serving_cert: str = "csr"
    cert_file: Path | None = None
    key_file: Path | None = None
    client_ca: bytes | None = None
    anonymous_auth: bool = False
    #: "Webhook" (TokenReview + SubjectAccessReview) or "AlwaysAllow" (development only).
    authorization_mode: str = "Webhook"
    stream_creation_timeout: float = 30.0
    stream_idle_timeout: float = 4 * 3600.0


class KubeletService:
    def __init__(
        self,
        settings: KubeletApiSettings,
        client: KubeClient,
        provider: Provider,
        identity: ServingIdentity,
        api_pods: Any,
        workdir: Path,
        listener: socket.socket,
    ) -> None:
        self.settings = settings
        self.listener = listener
        self._address: tuple[str, int] = listener.getsockname()[:2]
        self.client = client
        self.identity = identity
        self.workdir = workdir
        always_allow = settings.authorization_mode == "AlwaysAllow"
        if always_allow:
            log.warning(
                "kubelet API authorization is OFF (--authorization-mode=AlwaysAllow): anyone who can "
                "authenticate to port %d may exec into every pod. Use it for development only.",
                settings.port,
            )
        if settings.anonymous_auth:
            log.warning("kubelet API accepts anonymous requests (--anonymous-auth)")
        self.api = KubeletApi(
            provider,
            identity.node_name,
            api_pods,
            stream_creation_timeout=settings.stream_creation_timeout,
            stream_idle_timeout=settings.stream_idle_timeout,
        )
        self.authenticator = Authenticator(client, anonymous=settings.anonymous_auth)
        self.authorizer = Authorizer(client, identity.node_name, always_allow=always_allow)
        self.server: KubeletHttpServer | None = None
        self.ready = asyncio.Event()

    async def _certificate(self) -> tuple[bytes, bytes]:
        s = self.settings
        if s.serving_cert == "files":
            if s.cert_file is None or s.key_file is None:
                raise CertificateError("serving certificate files were not given")
            try:
                return s.cert_file.read_bytes(), s.key_file.read_bytes()
            except OSError as exc:
                raise CertificateError(f"cannot read serving certificate: {exc}") from None
        if s.serving_cert == "self-signed":
            log.warning("kubelet API uses a self-signed certificate (explicitly requested)")
            return self_signed(self.identity)
        cached = self._cached()
        if cached is not None:
            return cached
        cert, key, _ = await request_certificate(self.client, self.identity)
        self._store(cert, key)
        return cert, key

    def _cached(self) -> tuple[bytes, bytes] | None:
        cert_file, key_file = self.workdir / "csr-serving.crt", self.workdir / "csr-serving.key"
        try:
            cert, key = cert_file.read_bytes(), key_file.read_bytes()
        except OSError:
            return None
        try:
            if renew_at(cert) <= datetime.datetime.now(datetime.UTC):
                log.info("the serving certificate in %s is due for renewal", cert_file)
                return None
            wrong = mismatch(cert, self.identity)
        except ValueError:
            log.warning(
                "the serving certificate in %s cannot be read; requesting a new one", cert_file
            )
            return None
        if wrong:
            log.warning(
                "not reusing the serving certificate in %s: %s; requesting a new one",
                cert_file,
                wrong,
            )
            return None
        log.info("reusing the serving certificate from %s", cert_file)
        return cert, key

    def _store(self, cert: bytes, key: bytes) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        key_file = self.workdir / "csr-serving.key"
        key_file.touch(mode=0o600)
        key_file.write_bytes(key)
        (self.workdir / "csr-serving.crt").write_bytes(cert)

    async def run(self) -> None:
        if self.listener.fileno() == -1:  # a previous run stopped serving (and closed it)
            self.listener = bind_listener(*self._address)
        cert, key = await self._certificate()
        context = server_context(cert, key, self.settings.client_ca, self.workdir)
        if self.settings.client_ca is None:
            log.warning("no client CA: the kubelet API accepts only bearer tokens")
        self.server = KubeletHttpServer(
            self.api.router, self.authenticator, self.authorizer, context
        )
        port = await self.server.start(self.listener)
        host = self.listener.getsockname()[0]
        log.info("kubelet API serving on https://%s:%d", host, port)
        self.ready.set()
        try:
            await self._renew(context, cert)
        finally:
            await self.server.stop()

    async def _renew(self, context: ssl.SSLContext, cert: bytes) -> None:
        if self.settings.serving_cert != "csr":
            await asyncio.Event().wait()  # files and self-signed certificates are not renewed
        while True:
            wait = (renew_at(cert) - datetime.datetime.now(datetime.UTC)).total_seconds()
            await asyncio.sleep(max(wait, 60.0))
            log.info("renewing the kubelet serving certificate")
            try:
                cert, key, _ = await request_certificate(self.client, self.identity)
            except Exception as exc:  # keep serving the current one; try again later
                log.warning("renewing the serving certificate failed: %s; retrying", exc)
                continue
            self._store(cert, key)
            load_identity(context, cert, key, self.workdir)
