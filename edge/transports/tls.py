"""MQTT over TLS, with optional client certificates that identify devices.

The server certificate and key come from ``EDGE_TLS_CERT`` / ``EDGE_TLS_KEY`` (PEM; the
certificate file may hold the chain). With ``EDGE_TLS_CA`` the server asks clients for a
certificate (optional: a client without one authenticates with its password). Any presented
certificate completes the handshake, so that a self-signed certificate registered by its
fingerprint works; whether its chain verifies against the CA decides whether its common name
alone may identify a device (see ``edge.thinglinks.auth`` and docs/bus.md ``cert_fp``).

That check is made by the edge itself (:class:`ChainVerifier`) each time a connection
authenticates, never taken from the handshake: a resumed TLS session (1.2 session id or
ticket, 1.3 PSK) skips OpenSSL's verification but still presents the certificate it was
made with, whatever that certificate is (security review C1). ``EDGE_TLS_CRL`` adds
revocation lists to the check.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import SSL, crypto
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from edge.mqtt.broker import Broker
from edge.mqtt.connection import MqttConnection
from edge.mqtt.policy import Client

from .tcp import CountedMqttProtocol, MqttTransportFactory, TransportCounter

# Attribute set on the TLS protocol (the OpenSSL connection's app data) when the client's
# certificate chain did not verify against the configured CA during a full handshake.
CHAIN_ERROR = "edge_certificate_chain_error"
# Attribute set on the TLS protocol: the ChainVerifier of the listener that accepted it.
VERIFIER = "edge_certificate_verifier"
# How often (seconds) the EDGE_TLS_CRL file is looked at for a newer version.
CRL_RELOAD_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class ClientCertificate:
    """What the edge knows of a client's TLS certificate."""

    common_name: str | None
    fingerprint: str  # SHA-256 of the DER certificate, lowercase hex without separators
    # The edge verified the chain against EDGE_TLS_CA (and EDGE_TLS_CRL) for this very
    # connection, and the certificate is a client certificate (not a CA, no EKU without
    # clientAuth).
    verified: bool


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


def _client_certificate(certificate: x509.Certificate) -> bool:
    """Whether ``certificate`` may identify a client: not a CA certificate, and if it names
    extended key usages, TLS client authentication is one of them (a server certificate
    issued by the same CA does not log in a device)."""
    try:
        extensions = certificate.extensions
        try:
            if extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
                return False
        except x509.ExtensionNotFound:
            pass
        try:
            usages = extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            return True
    except ValueError:  # a malformed or duplicated extension
        return False
    return (
        ExtendedKeyUsageOID.CLIENT_AUTH in usages
        or ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in usages
    )


def _record_verification(
    connection: SSL.Connection, _cert: Any, errno: int, _depth: int, ok: int
) -> bool:
    if not ok:
        setattr(connection.get_app_data(), CHAIN_ERROR, errno)
    return True


def _load_crls(path: str) -> list[x509.CertificateRevocationList]:
    """The revocation lists of a file: PEM (one or more ``X509 CRL`` blocks) or one DER."""
    with open(path, "rb") as f:
        data = f.read()
    marker = b"-----BEGIN X509 CRL-----"
    if marker not in data:
        return [x509.load_der_x509_crl(data)]
    blocks = [marker + part for part in data.split(marker)[1:]]
    return [x509.load_pem_x509_crl(block) for block in blocks]


class ChainVerifier:
    """Verifies a client's certificate chain against the CA file, and the revocation lists
    of the CRL file when there is one, with OpenSSL at the current time.

    A CRL file is read again when it changes (looked at every ``CRL_RELOAD_SECONDS``); one
    that cannot be read keeps the lists loaded before. With a CRL file, every certificate
    authority that issues device certificates needs its list in it, and a list past its
    ``nextUpdate`` fails the check: a certificate then logs in only by a registered
    fingerprint (``cert_fp``), never by its CN alone.
    """

    def __init__(self, ca_path: str, crl_path: str | None = None) -> None:
        self.ca_path = ca_path
        self.crl_path = crl_path
        self._crls: list[x509.CertificateRevocationList] = []
        self._crl_mtime: float | None = None
        self._crl_checked = 0.0
        if crl_path is not None:
            self._crl_mtime = os.stat(crl_path).st_mtime
            self._crls = _load_crls(crl_path)
        self._store = self._build()

    def _build(self) -> crypto.X509Store:
        store = crypto.X509Store()
        store.load_locations(self.ca_path)
        if self.crl_path is not None:
            for crl in self._crls:
                store.add_crl(crl)
            store.set_flags(crypto.X509StoreFlags.CRL_CHECK)
        return store

    def _reload_crls(self) -> None:
        now = time.monotonic()
        if self.crl_path is None or now - self._crl_checked < CRL_RELOAD_SECONDS:
            return
        self._crl_checked = now
        try:
            mtime = os.stat(self.crl_path).st_mtime
            if mtime == self._crl_mtime:
                return
            crls = _load_crls(self.crl_path)
        except (OSError, ValueError):
            return  # keep the lists already loaded; the next look may find a complete file
        self._crls, self._crl_mtime = crls, mtime
        self._store = self._build()

    def verify(self, leaf: crypto.X509, chain: Sequence[crypto.X509] = ()) -> bool:
        """Whether ``leaf`` chains to the CA (``chain``: the intermediates the client sent)."""
        self._reload_crls()
        try:
            crypto.X509StoreContext(self._store, leaf, list(chain)).verify_certificate()
        except crypto.X509StoreContextError:
            return False
        return True


@implementer(IOpenSSLServerConnectionCreator)
class ServerTLS:
    """The OpenSSL server context built once from files, and a connection per client."""

    def __init__(
        self,
        cert_path: str,
        key_path: str,
        ca_path: str | None = None,
        crl_path: str | None = None,
    ) -> None:
        context = SSL.Context(SSL.TLS_SERVER_METHOD)
        context.set_min_proto_version(SSL.TLS1_2_VERSION)
        context.set_options(
            SSL.OP_NO_COMPRESSION | SSL.OP_CIPHER_SERVER_PREFERENCE | SSL.OP_NO_RENEGOTIATION
        )
        # Idle connections give their read/write buffers back (tens of KB each).
        context.set_mode(SSL.MODE_RELEASE_BUFFERS)
        context.use_certificate_chain_file(cert_path)
        context.use_privatekey_file(key_path)
        context.check_privatekey()
        self.requests_client_certificates = ca_path is not None
        self.verifier: ChainVerifier | None = None
        if ca_path is not None:
            context.load_verify_locations(ca_path)
            context.set_client_ca_list(_subjects(ca_path))
            context.set_verify(SSL.VERIFY_PEER, _record_verification)
            # Sessions may be resumed (cheaper reconnects): what the handshake verified is
            # never trusted, the verifier checks the certificate on every connection.
            context.set_session_id(b"thinglinks-edge")
            self.verifier = ChainVerifier(ca_path, crl_path)
        elif crl_path is not None:
            raise ValueError("EDGE_TLS_CRL needs EDGE_TLS_CA")
        self.context = context

    def serverConnectionForTLS(self, protocol: Any) -> SSL.Connection:
        if self.verifier is not None:
            setattr(protocol, VERIFIER, self.verifier)
        return SSL.Connection(self.context, None)


def _subjects(ca_path: str) -> list[crypto.X509Name]:
    with open(ca_path, "rb") as f:
        certificates = x509.load_pem_x509_certificates(f.read())
    return [crypto.X509.from_cryptography(c).get_subject() for c in certificates]


class CertificateLookup:
    """The client certificate behind an MQTT connection, for authentication."""

    def __init__(self) -> None:
        self._transports: dict[Client, Any] = {}

    def attach(self, connection: MqttConnection, tls_transport: Any) -> None:
        self._transports[connection] = tls_transport

    def detach(self, connection: MqttConnection) -> None:
        self._transports.pop(connection, None)

    def __call__(self, connection: Client) -> ClientCertificate | None:
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
            verified=_verified(transport, peer, certificate),
        )


def _verified(transport: Any, peer: crypto.X509, certificate: x509.Certificate) -> bool:
    """The edge's own verification of the client's certificate on this connection. The
    handshake's record only ever counts against it: a resumed session has none."""
    verifier: ChainVerifier | None = getattr(transport, VERIFIER, None)
    if verifier is None or getattr(transport, CHAIN_ERROR, None) is not None:
        return False
    if not _client_certificate(certificate):
        return False
    chain = transport.getHandle().get_peer_cert_chain() or []
    return verifier.verify(peer, chain)


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
