"""TLS for the edge's Redis connections (``rediss://``, ``rediss+sentinel://``): the Twisted
connection creator of a :class:`~edge.bus.redis_url.RedisTls` for one server.

The server's chain is verified against ``ssl_ca_certs`` (else the system's CA store) and its
certificate must name the host connected to (a DNS name or an IP address), unless the URL says
``ssl_check_hostname=false`` (the chain only) or ``ssl_cert_reqs=none`` (nothing: the
connection is encrypted, not authenticated). A client certificate (``ssl_certfile``, its key in
``ssl_keyfile`` or in the same file, then any intermediate certificates) is presented when
given. The files are read once per process (at the first connection's setup).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from OpenSSL import crypto
from twisted.internet import ssl
from twisted.internet.endpoints import wrapClientTLS

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


def connection_creator(tls: RedisTls, host: str) -> Any:
    """What :func:`~twisted.internet.endpoints.wrapClientTLS` takes to connect to ``host``."""
    trust, client, chain = material(tls)
    if tls.checks_hostname:
        extra = {"extraCertChain": list(chain)} if chain else {}
        return ssl.optionsForClientTLS(
            host, trustRoot=trust, clientCertificate=client, extraCertificateOptions=extra
        )
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
    name = type(value).__name__
    if name == "VerificationError":  # service_identity: the certificate names another host
        return f"TLS: the server's certificate does not name the host ({value})"
    return None
