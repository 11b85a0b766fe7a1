"""The kubelet port's serving certificate: from files, from the cluster through a
CertificateSigningRequest (signer kubernetes.io/kubelet-serving), or self-signed on request.

The CSR carries CN `system:node:<node>`, O `system:nodes` and the node's addresses as SANs, as
the signer requires. The cluster does not approve such CSRs by itself: until someone does
(`kubectl certificate approve`, or an approver), the kubelet port stays closed and the log says
how to approve. Certificates are kept in the state directory and renewed at 80% of their life.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import logging
import secrets
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ..kube.client import KubeClient, path
from ..kube.errors import ApiError

log = logging.getLogger(__name__)

SIGNER = "kubernetes.io/kubelet-serving"
RENEW_FRACTION = 0.8


class CertificateError(RuntimeError):
    """A serving certificate could not be loaded or obtained."""


@dataclass(frozen=True)
class ServingIdentity:
    node_name: str
    addresses: tuple[str, ...]  # IPs and DNS names clients use to reach the kubelet port


def _san(identity: ServingIdentity) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for value in dict.fromkeys((*identity.addresses, identity.node_name)):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(value)))
        except ValueError:
            names.append(x509.DNSName(value))
    return x509.SubjectAlternativeName(names)


def _subject(identity: ServingIdentity) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:nodes"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"system:node:{identity.node_name}"),
        ]
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def self_signed(identity: ServingIdentity, days: int = 365) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) signed by its own key."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_subject(identity))
        .issuer_name(_subject(identity))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(_san(identity), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def mismatch(cert_pem: bytes, identity: ServingIdentity) -> str | None:
    """Why the certificate does not serve `identity` (another node name, a node address or name
    missing from its SANs), or None when it does. Like the kubelet's certificate manager, a
    certificate that no longer covers the node is replaced, not reused."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    subject = str(names[0].value) if names else ""
    if subject != f"system:node:{identity.node_name}":
        return (
            f"it was issued to {subject or 'no common name'}, not system:node:{identity.node_name}"
        )
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return "it has no subject alternative names"
    covered = {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    covered |= set(san.get_values_for_type(x509.DNSName))
    missing = []
    for value in dict.fromkeys((*identity.addresses, identity.node_name)):
        if _canonical(value) not in covered:
            missing.append(value)
    if missing:
        return f"it is not valid for {', '.join(missing)} (valid for {', '.join(sorted(covered))})"
    return None


def _canonical(value: str) -> str:
    """An IP address as `str(ip_address)` prints it (the SAN side is parsed), or a DNS name."""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return value


def not_after(cert_pem: bytes) -> datetime.datetime:
    return x509.load_pem_x509_certificate(cert_pem).not_valid_after_utc


def renew_at(cert_pem: bytes) -> datetime.datetime:
    cert = x509.load_pem_x509_certificate(cert_pem)
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    return start + (end - start) * RENEW_FRACTION


async def request_certificate(
    client: KubeClient, identity: ServingIdentity, *, timeout: float | None = None
) -> tuple[bytes, bytes, str]:
    """Create a CSR and wait until it is approved and signed; (cert PEM, key PEM, CSR name)."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(_subject(identity))
        .add_extension(_san(identity), critical=False)
        .sign(key, hashes.SHA256())
    )
    name = f"vk-serving-{identity.node_name}-{secrets.token_hex(3)}"[:253]
    body = {
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"name": name, "labels": {"virtual-kubelet.io/node": identity.node_name[:63]}},
        "spec": {
            "request": base64.b64encode(csr.public_bytes(serialization.Encoding.PEM)).decode(),
            "signerName": SIGNER,
            "usages": ["digital signature", "server auth"],
        },
    }
    await client.create(path("certificates.k8s.io/v1", "certificatesigningrequests"), body)
    log.warning(
        "requested a serving certificate for the kubelet port: CertificateSigningRequest %s "
        "(signer %s) waits for approval: kubectl certificate approve %s",
        name,
        SIGNER,
        name,
    )
    url = path("certificates.k8s.io/v1", "certificatesigningrequests", None, name)
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    delay = 0.5
    while True:
        try:
            status = (await client.get(url)).get("status", {})
        except ApiError as exc:
            raise CertificateError(f"CertificateSigningRequest {name}: {exc}") from None
        for condition in status.get("conditions") or []:
            if condition.get("type") in ("Denied", "Failed") and condition.get("status") == "True":
                raise CertificateError(
                    f"CertificateSigningRequest {name} was {condition['type'].lower()}: "
                    f"{condition.get('message', '')}"
                )
        if status.get("certificate"):
            cert_pem = base64.b64decode(status["certificate"])
            log.info("serving certificate issued (valid until %s)", not_after(cert_pem).isoformat())
            return cert_pem, _key_pem(key), name
        if deadline is not None and loop.time() > deadline:
            raise CertificateError(f"CertificateSigningRequest {name} was not approved in time")
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, 10.0)


def server_context(
    cert_pem: bytes, key_pem: bytes, client_ca: bytes | None, workdir: Path
) -> ssl.SSLContext:
    """TLS >= 1.2, HTTP/1.1 only (ALPN), client certificates verified against `client_ca` when
    presented (token clients present none)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["http/1.1"])
    load_identity(ctx, cert_pem, key_pem, workdir)
    if client_ca:
        ctx.load_verify_locations(cadata=client_ca.decode())
        ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


def load_identity(ctx: ssl.SSLContext, cert_pem: bytes, key_pem: bytes, workdir: Path) -> None:
    """(Re)load the certificate; new connections use it, existing ones keep theirs."""
    workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    cert_file, key_file = workdir / "kubelet-serving.crt", workdir / "kubelet-serving.key"
    key_file.touch(mode=0o600)
    key_file.write_bytes(key_pem)
    cert_file.write_bytes(cert_pem)
    ctx.load_cert_chain(str(cert_file), str(key_file))
