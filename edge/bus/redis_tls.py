"""TLS for the edge's Redis connections (``rediss://``, ``rediss+sentinel://``): the Twisted
connection creator of a :class:`~edge.bus.redis_url.RedisTls` for one server.

The server's chain is verified against ``ssl_ca_certs`` (else the system's CA store) and its
certificate must name the host connected to (a DNS name or an IP address), unless the URL says
``ssl_check_hostname=false`` (the chain only) or ``ssl_cert_reqs=none`` (nothing: the
connection is encrypted, not authenticated). A client certificate (``ssl_certfile``, its key in
``ssl_keyfile`` or in the same file, then any intermediate certificates) is presented when
given. The files are read once per process (when the edge starts).

The name is checked here, not by Twisted's ``optionsForClientTLS`` alone: its check logs and
then *accepts* a certificate without any subjectAltName (service_identity raises
``CertificateError``, which Twisted 26.10 does not catch as a failed verification), so a
certificate of the right CA made out to another name in its CN only would have been taken.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from OpenSSL import SSL, crypto
from service_identity.exceptions import CertificateError, VerificationError
from service_identity.hazmat import DNS_ID, IPAddress_ID, verify_service_identity
from service_identity.pyopenssl import extract_patterns
from twisted.internet import ssl
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.endpoints import wrapClientTLS
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.python.failure import Failure
from zope.interface import implementer

from .redis_url import RedisTls

_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL
)


def _read(option: str, path: str) -> bytes:
    try:
        with open(path, "rb") as source:
            return source.read()
    except OSError as exc:
        raise ValueError(f"Redis URL: {option} {path}: {exc.strerror or exc}") from None


def _certificates(option: str, path: str, text: bytes) -> list[ssl.Certificate]:
    blocks = _PEM_CERTIFICATE.findall(text)
    if not blocks:
        raise ValueError(f"Redis URL: {option} {path}: no PEM certificate in the file")
    try:
        return [ssl.Certificate.loadPEM(block) for block in blocks]
    except crypto.Error:
        raise ValueError(f"Redis URL: {option} {path}: a certificate does not load") from None


@lru_cache(maxsize=8)
def material(
    tls: RedisTls,
) -> tuple[Any, ssl.PrivateCertificate | None, tuple[Any, ...]]:
    """(the trust root or None without verification, the client certificate, its
    intermediates); raises :class:`ValueError` naming the file that cannot be used."""
    trust: Any = None
    if tls.verify:
        if tls.ca_certs:
            cas = _certificates("ssl_ca_certs", tls.ca_certs, _read("ssl_ca_certs", tls.ca_certs))
            trust = ssl.trustRootFromCertificates(cas)
        else:
            trust = ssl.platformTrust()
    client = None
    chain: tuple[Any, ...] = ()
    if tls.certfile:
        certs = _certificates(
            "ssl_certfile", tls.certfile, _read("ssl_certfile", tls.certfile)
        )
        key_option, key_path = (
            ("ssl_keyfile", tls.keyfile) if tls.keyfile else ("ssl_certfile", tls.certfile)
        )
        key = _read(key_option, key_path)
        try:
            client = ssl.PrivateCertificate.fromCertificateAndKeyPair(
                certs[0], ssl.KeyPair.load(key, crypto.FILETYPE_PEM)
            )
        except crypto.Error:
            raise ValueError(
                f"Redis URL: {key_option} {key_path}: no usable (unencrypted PEM) private key"
            ) from None
        chain = tuple(cert.original for cert in certs[1:])
    return trust, client, chain


@implementer(IOpenSSLClientConnectionCreator)
class _NameChecked:
    """``optionsForClientTLS(host, ...)`` with a name check that refuses every certificate
    that does not name ``host`` (module docstring)."""

    def __init__(self, host: str, options: Any) -> None:
        self.options = options
        ip = isIPAddress(host) or isIPv6Address(host)
        self.service: Any = IPAddress_ID(host) if ip else DNS_ID(host)

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        connection: SSL.Connection = self.options.clientConnectionForTLS(tlsProtocol)
        service = self.service

        def verify(conn: Any, cert: Any, err: int, depth: int, ok: int) -> bool:
            if not ok or depth != 0:  # the chain (OpenSSL's verdict), then the leaf's name
                return bool(ok)
            try:
                verify_service_identity(extract_patterns(cert), [service], [])
            except (VerificationError, CertificateError) as exc:
                tlsProtocol.failVerification(Failure(exc))
                return False
            except Exception:  # nothing may escape an OpenSSL callback: refuse
                tlsProtocol.failVerification(Failure())
                return False
            return True

        connection.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, verify)
        return connection


def connection_creator(tls: RedisTls, host: str) -> Any:
    """What :func:`~twisted.internet.endpoints.wrapClientTLS` takes to connect to ``host``."""
    trust, client, chain = material(tls)
    if tls.checks_hostname:
        extra = {"extraCertChain": list(chain)} if chain else {}
        return _NameChecked(host, ssl.optionsForClientTLS(
            host, trustRoot=trust, clientCertificate=client, extraCertificateOptions=extra
        ))
    options: dict[str, Any] = {}
    if client is not None:
        options.update(
            privateKey=client.privateKey.original,
            certificate=client.original,
            extraCertChain=list(chain),
        )
    if trust is not None:
        return ssl.CertificateOptions(trustRoot=trust, **options)
    return ssl.CertificateOptions(verify=False, **options)


def over_tls(endpoint: Any, tls: RedisTls | None, host: str) -> Any:
    """``endpoint`` itself without TLS, else wrapped in TLS to ``host``."""
    if tls is None:
        return endpoint
    return wrapClientTLS(connection_creator(tls, host), endpoint)


def tls_failure(reason: Any) -> str | None:
    """A readable text for a failed TLS handshake (None for any other failure)."""
    from OpenSSL.SSL import Error as SSLError

    value = getattr(reason, "value", reason)
    if isinstance(value, SSLError):
        parts = []
        for entry in value.args[0] if value.args and isinstance(value.args[0], list) else []:
            if isinstance(entry, tuple) and entry:
                parts.append(str(entry[-1]))
        return "TLS handshake failed: " + ("; ".join(p for p in parts if p) or str(value))
    if isinstance(value, VerificationError | CertificateError):
        return f"TLS: the server's certificate does not name the host ({value})"
    return None
