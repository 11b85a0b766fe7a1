"""The dev cluster's certificates chain to its CA and work in a real TLS handshake."""

import socket
import ssl
import threading
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from virtual_kubelet.devcluster.pki import CertificateAuthority, create_service_account_keys


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_issued_certificates_chain_and_carry_names(tmp_path: Path) -> None:
    ca = CertificateAuthority.create(tmp_path)
    server = ca.issue(
        tmp_path, "srv", common_name="kube-apiserver", server_names=["localhost", "127.0.0.1"]
    )
    client = ca.issue(
        tmp_path, "cli", common_name="system:node:n1", organizations=["system:nodes"], client=True
    )
    for pair in (server, client):
        _load(pair.cert).verify_directly_issued_by(ca.cert)
        assert pair.key.stat().st_mode & 0o077 == 0, "private keys must not be world-readable"
    srv = _load(server.cert)
    san = srv.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    cli = _load(client.cert)
    assert cli.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:nodes"
    eku = cli.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert CertificateAuthority.load(ca.files).cert == ca.cert


def test_mutual_tls_handshake_with_issued_certificates(tmp_path: Path) -> None:
    ca = CertificateAuthority.create(tmp_path)
    server = ca.issue(tmp_path, "srv", common_name="srv", server_names=["localhost"])
    client = ca.issue(
        tmp_path, "cli", common_name="admin", organizations=["system:masters"], client=True
    )
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca.files.cert))
    server_ctx.load_cert_chain(str(server.cert), str(server.key))
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    client_ctx = ssl.create_default_context(cafile=str(ca.files.cert))
    client_ctx.load_cert_chain(str(client.cert), str(client.key))

    a, b = socket.socketpair()
    seen: dict[str, object] = {}

    def serve() -> None:
        with server_ctx.wrap_socket(a, server_side=True) as tls:
            seen["peer"] = tls.getpeercert()
            tls.sendall(b"hi")

    thread = threading.Thread(target=serve)
    thread.start()
    with client_ctx.wrap_socket(b, server_hostname="localhost") as tls:
        assert tls.recv(2) == b"hi"
    thread.join(10)
    subject = dict(x[0] for x in seen["peer"]["subject"])  # type: ignore[index]
    assert subject["commonName"] == "admin"


def test_service_account_key_pair(tmp_path: Path) -> None:
    pair = create_service_account_keys(tmp_path)
    assert pair.cert.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert pair.key.read_text().startswith("-----BEGIN PRIVATE KEY-----")


def test_a_second_ca_beside_the_first_keeps_both(tmp_path: Path) -> None:
    """The front-proxy CA of the aggregation layer lives beside the cluster CA, not over it."""
    cluster = CertificateAuthority.create(tmp_path)
    front = CertificateAuthority.create(tmp_path, "front-proxy", stem="front-proxy-ca")
    assert front.files.cert == tmp_path / "front-proxy-ca.crt"
    assert CertificateAuthority.load(cluster.files).cert == cluster.cert
    client = front.issue(
        tmp_path, "front-proxy-client", common_name="front-proxy-client", client=True
    )
    _load(client.cert).verify_directly_issued_by(front.cert)
    assert _load(client.cert).issuer != cluster.cert.subject
