"""C1 and L11 of the security review: TLS client certificates through the edge's real TLS
listener (``python -m edge`` with EDGE_TLS_CA), sessions resumed with Python's ``ssl``.

A resumed TLS session skips OpenSSL's chain verification but still presents the certificate
it was made with; the edge must verify that certificate itself on every connection, so a
self-signed certificate with a victim's CN never logs the victim in, resumed or not.
"""

from __future__ import annotations

import datetime
import socket
import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from edge.mqtt.codec import Decoder, encode
from edge.mqtt.packets import MQTT_3_1_1, ConnAck, Connect
from tests.edge.edge_process import Edge, running_edge
from tests.edge.redis_server import free_port
from tests.edge.test_transports_tls import SECRET_KEY, put_device
from tests.edge.tls_material import Authority, Issued, self_signed

pytestmark = pytest.mark.e2e

VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}


class Material:
    def __init__(self, directory: Path) -> None:
        self.ca = Authority(directory)
        self.server = self.ca.issue("localhost", server=True, stem="server")
        # What anyone can make: a self-signed certificate with the victim's CN.
        self.forged = self_signed(directory, "victim", "forged")
        # Issued by the device CA for device "issued" (no cert_fp: its CN identifies it).
        self.issued = self.ca.issue("issued", stem="issued")
        # Issued by the device CA, then revoked in the CRL.
        self.revoked = self.ca.issue("revoked", stem="revoked")
        self.crl = directory / "devices.crl"
        self.crl.write_bytes(self._crl([self.revoked]))

    def _crl(self, revoked: list[Issued]) -> bytes:
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.ca.cert.subject)
            .last_update(now - datetime.timedelta(minutes=1))
            .next_update(now + datetime.timedelta(days=1))
        )
        for issued in revoked:
            serial = x509.load_pem_x509_certificate(issued.cert.read_bytes()).serial_number
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(serial)
                .revocation_date(now - datetime.timedelta(minutes=1))
                .build()
            )
        crl = builder.sign(self.ca.key, hashes.SHA256())
        return crl.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> Material:
    return Material(tmp_path_factory.mktemp("tls-c1"))


def _edge(redis_url: str, material: Material, **extra: str) -> Iterator[Edge]:
    prefix = f"sec{uuid.uuid4().hex[:8]}:"
    r = redis.Redis.from_url(redis_url)
    r.hset(f"{prefix}prod:thermo", mapping={"model": "{}", "type": "common"})
    # Password-only devices: no registered certificate fingerprint.
    for identifier in ("victim", "issued", "revoked", "localhost"):
        put_device(r, prefix, identifier, f"{identifier}-secret")
    r.close()
    env = {
        "DJANGO_SECRET_KEY": SECRET_KEY,
        "EDGE_TLS_PORT": str(free_port()),
        "EDGE_TLS_CERT": str(material.server.cert),
        "EDGE_TLS_KEY": str(material.server.key),
        "EDGE_TLS_CA": str(material.ca.path),
        "EDGE_WSS_PORT": "0",
        **extra,
    }
    with running_edge(redis_url, prefix, env) as running:
        running.tls_port = int(env["EDGE_TLS_PORT"])  # type: ignore[attr-defined]
        yield running


@pytest.fixture(scope="module")
def edge(redis_url: str, material: Material) -> Iterator[Edge]:
    yield from _edge(redis_url, material)


@pytest.fixture(scope="module")
def edge_with_crl(redis_url: str, material: Material) -> Iterator[Edge]:
    yield from _edge(redis_url, material, EDGE_TLS_CRL=str(material.crl))


def client_context(material: Material, cert: Issued | None, version: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(str(material.ca.path))
    if cert is not None:
        context.load_cert_chain(str(cert.cert), str(cert.key))
    context.minimum_version = context.maximum_version = VERSIONS[version]
    return context


def tls_connack(
    port: int,
    context: ssl.SSLContext,
    source: str,
    session: ssl.SSLSession | None = None,
    username: str | None = None,
) -> tuple[int, ssl.SSLSession | None, bool]:
    """An MQTT 3.1.1 CONNECT without password over a new TLS connection from ``source``
    (a loopback address of the test's own, so that no other test's failures count against
    it); returns the CONNACK code, the TLS session to resume and whether this one was."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
    with context.wrap_socket(raw, server_hostname="localhost", session=session) as sock:
        sock.sendall(encode(Connect(f"c1-{uuid.uuid4().hex[:6]}", username=username), MQTT_3_1_1))
        decoder = Decoder(MQTT_3_1_1)
        while True:
            data = sock.recv(64)
            assert data, "connection closed without CONNACK"
            packets = list(decoder.feed(data))
            if packets:
                answer = packets[0]
                break
        assert isinstance(answer, ConnAck)
        return answer.reason_code, sock.session, sock.session_reused


@pytest.mark.parametrize("version", sorted(VERSIONS))
def test_resumed_session_does_not_make_a_forged_certificate_verified(
    edge: Edge, material: Material, version: str
):
    """A self-signed certificate with CN=victim: refused on the full handshake, and still
    refused when the same TLS session is resumed (the review's exploit: empty user name, no
    password, the CN names the device)."""
    source = "127.0.0.21" if version == "TLSv1.2" else "127.0.0.22"
    context = client_context(material, material.forged, version)
    first, session, _ = tls_connack(edge.tls_port, context, source)  # type: ignore[attr-defined]
    assert first != 0
    assert session is not None
    resumed, _, reused = tls_connack(edge.tls_port, context, source, session)  # type: ignore[attr-defined]
    assert reused, "the edge did not resume the session: the test proves nothing"
    assert resumed != 0, "a resumed TLS session logged in a device with a forged certificate"
    # With the user name given, the certificate does not log it in either.
    named, _, _ = tls_connack(edge.tls_port, context, source, session, "victim")  # type: ignore[attr-defined]
    assert named != 0


@pytest.mark.parametrize("version", sorted(VERSIONS))
def test_ca_issued_certificate_logs_in_on_full_and_resumed_handshakes(
    edge: Edge, material: Material, version: str
):
    """The device CA's certificate with CN=issued logs device "issued" in, also over a
    resumed session (the edge verifies the certificate kept in the session)."""
    source = "127.0.0.23" if version == "TLSv1.2" else "127.0.0.24"
    context = client_context(material, material.issued, version)
    first, session, _ = tls_connack(edge.tls_port, context, source)  # type: ignore[attr-defined]
    assert first == 0
    resumed, _, reused = tls_connack(edge.tls_port, context, source, session)  # type: ignore[attr-defined]
    assert reused and resumed == 0


def test_a_server_certificate_of_the_device_ca_identifies_no_device(
    edge: Edge, material: Material
):
    """A certificate of the CA that is not a client certificate (the server's own:
    extendedKeyUsage serverAuth, CN=localhost) does not log in device "localhost"."""
    context = client_context(material, material.server, "TLSv1.3")
    code, _, _ = tls_connack(edge.tls_port, context, "127.0.0.25")  # type: ignore[attr-defined]
    assert code != 0


def test_certificate_connects_from_an_address_over_its_failure_budget(
    edge: Edge, material: Material
):
    """Security review M2: an address that failed too often is refused (0x9F, 3.1.1: 0x03)
    whatever it sends, except a certificate that identifies its device (no guess makes one)."""
    port = edge.tls_port  # type: ignore[attr-defined]
    bare = client_context(material, None, "TLSv1.3")
    codes = [tls_connack(port, bare, "127.0.0.28", username="issued")[0] for _ in range(11)]
    assert codes[-1] == 0x03 and 0 not in codes
    certified = client_context(material, material.issued, "TLSv1.3")
    assert tls_connack(port, certified, "127.0.0.28")[0] == 0


def test_revoked_certificate_is_refused_with_edge_tls_crl(
    edge_with_crl: Edge, material: Material
):
    """With EDGE_TLS_CRL, a CA-issued certificate listed as revoked no longer logs its
    device in (on a resumed session neither); one that is not listed still does."""
    port = edge_with_crl.tls_port  # type: ignore[attr-defined]
    context = client_context(material, material.revoked, "TLSv1.3")
    code, session, _ = tls_connack(port, context, "127.0.0.26")
    assert code != 0
    resumed, _, _ = tls_connack(port, context, "127.0.0.26", session)
    assert resumed != 0
    good = client_context(material, material.issued, "TLSv1.3")
    assert tls_connack(port, good, "127.0.0.27")[0] == 0
