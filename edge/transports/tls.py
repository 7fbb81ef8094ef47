"""MQTT over TLS, with optional client certificates that identify devices.

The server certificate and key come from ``EDGE_TLS_CERT`` / ``EDGE_TLS_KEY`` (PEM; the
certificate file may hold the chain). With ``EDGE_TLS_CA`` the server asks clients for a
certificate (optional: a client without one authenticates with its password). Any presented
certificate completes the handshake, so that a self-signed certificate registered by its
fingerprint works; whether its chain verified against the CA is recorded and decides whether
its common name alone may identify a device (see ``edge.hooks`` and docs/bus.md ``cert_fp``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID
from OpenSSL import SSL, crypto
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from edge.mqtt.broker import Broker
from edge.mqtt.connection import MqttConnection

from .tcp import CountedMqttProtocol, MqttTransportFactory, TransportCounter

# Attribute set on the TLS protocol (the OpenSSL connection's app data) when the client's
# certificate chain did not verify against the configured CA.
CHAIN_ERROR = "edge_certificate_chain_error"


@dataclass(frozen=True, slots=True)
class ClientCertificate:
    """What the edge knows of a client's TLS certificate."""

    common_name: str | None
    fingerprint: str  # SHA-256 of the DER certificate, lowercase hex without separators
    verified: bool  # the chain verified against EDGE_TLS_CA


def fingerprint(certificate: x509.Certificate) -> str:
    return certificate.fingerprint(hashes.SHA256()).hex()


def normalize_fingerprints(value: str) -> frozenset[str]:
    """The fingerprints of a registry ``cert_fp`` field: comma-separated SHA-256 digests in
    hex, with or without ``:`` separators and an optional ``sha256:`` prefix."""
    found = set()
    for item in value.split(","):
        text = item.strip().lower()
        text = text.removeprefix("sha256:").replace(":", "")
        if len(text) == 64 and all(c in "0123456789abcdef" for c in text):
            found.add(text)
    return frozenset(found)


def _common_name(certificate: x509.Certificate) -> str | None:
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        return None
    value = names[0].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def _record_verification(
    connection: SSL.Connection, _cert: Any, errno: int, _depth: int, ok: int
) -> bool:
    if not ok:
        setattr(connection.get_app_data(), CHAIN_ERROR, errno)
    return True


@implementer(IOpenSSLServerConnectionCreator)
class ServerTLS:
    """The OpenSSL server context built once from files, and a connection per client."""

    def __init__(self, cert_path: str, key_path: str, ca_path: str | None = None) -> None:
        context = SSL.Context(SSL.TLS_SERVER_METHOD)
        context.set_min_proto_version(SSL.TLS1_2_VERSION)
        context.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_CIPHER_SERVER_PREFERENCE)
        # Idle connections give their read/write buffers back (tens of KB each).
        context.set_mode(SSL.MODE_RELEASE_BUFFERS)
        context.use_certificate_chain_file(cert_path)
        context.use_privatekey_file(key_path)
        context.check_privatekey()
        self.requests_client_certificates = ca_path is not None
        if ca_path is not None:
            context.load_verify_locations(ca_path)
            context.set_client_ca_list(_subjects(ca_path))
            context.set_verify(SSL.VERIFY_PEER, _record_verification)
            context.set_session_id(b"thinglinks-edge")
        self.context = context

    def serverConnectionForTLS(self, protocol: Any) -> SSL.Connection:
        return SSL.Connection(self.context, None)


def _subjects(ca_path: str) -> list[crypto.X509Name]:
    with open(ca_path, "rb") as f:
        certificates = x509.load_pem_x509_certificates(f.read())
    return [crypto.X509.from_cryptography(c).get_subject() for c in certificates]


class CertificateLookup:
    """The client certificate behind an MQTT connection, for authentication."""

    def __init__(self) -> None:
        self._transports: dict[MqttConnection, Any] = {}

    def attach(self, connection: MqttConnection, tls_transport: Any) -> None:
        self._transports[connection] = tls_transport

    def detach(self, connection: MqttConnection) -> None:
        self._transports.pop(connection, None)

    def __call__(self, connection: MqttConnection) -> ClientCertificate | None:
        transport = self._transports.get(connection)
        if transport is None:
            return None
        peer = transport.getPeerCertificate()
        if peer is None:
            return None
        certificate = peer.to_cryptography()
        return ClientCertificate(
            common_name=_common_name(certificate),
            fingerprint=fingerprint(certificate),
            verified=getattr(transport, CHAIN_ERROR, None) is None,
        )


class TlsMqttProtocol(CountedMqttProtocol):
    factory: TlsMqttFactory

    def connectionMade(self) -> None:
        super().connectionMade()
        assert self.connection is not None
        self.factory.certificates.attach(self.connection, self.transport)

    def connectionLost(self, reason: Failure | None = None) -> None:
        if self.connection is not None:
            self.factory.certificates.detach(self.connection)
        super().connectionLost(reason)


class TlsMqttFactory(MqttTransportFactory):
    protocol_class = TlsMqttProtocol

    def __init__(
        self, broker: Broker, counter: TransportCounter, certificates: CertificateLookup
    ) -> None:
        super().__init__(broker, counter)
        self.certificates = certificates


class QuietTLSFactory(TLSMemoryBIOFactory):
    noisy = False


def tls_factory(
    broker: Broker, counter: TransportCounter, server: ServerTLS, certificates: CertificateLookup
) -> TLSMemoryBIOFactory:
    """The listening factory for MQTT over TLS."""
    wrapped: Any = TlsMqttFactory(broker, counter, certificates)
    return QuietTLSFactory(server, False, wrapped)  # type: ignore[arg-type]
