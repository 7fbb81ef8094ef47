"""Who a client is: a device (its secret, a signed password or its TLS client certificate),
an application client (``app:{key id}`` and an API key), a device registering itself
(``{product}&{device}`` and the product secret), or, in development, anonymous.

:meth:`Authenticator.check` decides from the credentials alone, whatever the transport;
failed attempts are counted per address and user name (edge.throttle) and each signed
password is accepted once (remembered in Redis). README "Device authentication" and
docs/bus.md describe the formats.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from edge.auth import password_matches, refusal, signed_password_lifetime, signed_timestamp
from edge.bus.client import Commands
from edge.bus.keys import Keys
from edge.bus.registry import AppRecord, DeviceRecord, ProductRecord
from edge.clock import now_ms
from edge.codecs import thinglinks as tl
from edge.crypto import constant_time_equal
from edge.deferreds import gather, then
from edge.mqtt.errors import Reason
from edge.mqtt.policy import AUTH_FAILURES, Acl, AuthResult, Client, DenyListAcl
from edge.throttle import AuthThrottle, client_address
from edge.transports.tls import ClientCertificate, normalize_fingerprints

from .acl import ANONYMOUS_ACL, AppAcl, DeviceAcl, RegistrationAcl, device_of
from .interfaces import Clock, Directory

log = Logger(namespace="edge")

# The detail of an AuthResult admitting a device by its TLS client certificate.
CERTIFICATE_LOGIN = "certificate"
TOO_MANY_FAILURES = "too many failed attempts; try later"
# The username prefix of application clients, and the separator of dynamic registration.
APP_PREFIX = "app:"
REGISTER_SEPARATOR = "&"

# The TLS client certificate behind a connection, when it has one.
CertificateOf = Callable[[Client], ClientCertificate | None]


class Authenticator:
    """Checks credentials against the registry and gives each admitted client its ACL."""

    def __init__(
        self,
        *,
        clock: Clock,
        redis: Commands,
        keys: Keys,
        directory: Directory,
        throttle: AuthThrottle,
        allow_anonymous: bool = False,
        acl_deny: Iterable[str] = (),
        certificates: CertificateOf | None = None,
    ) -> None:
        self.clock = clock
        self.redis = redis
        self.keys = keys
        self.directory = directory
        self.throttle = throttle
        self.allow_anonymous = allow_anonymous
        self.acl_deny = tuple(acl_deny)
        self.certificates = certificates

    def acl(self, acl: Acl) -> Acl:
        """``acl`` behind the broker-wide deny list (EDGE_ACL_DENY), if any."""
        return DenyListAcl(acl, self.acl_deny) if self.acl_deny else acl

    def device_acl(self, record: DeviceRecord, product: ProductRecord | None) -> Acl:
        return self.acl(DeviceAcl(record, self.directory, product))

    def certificate(self, connection: Client) -> ClientCertificate | None:
        return self.certificates(connection) if self.certificates is not None else None

    def authenticate(self, connection: Client) -> AuthResult | Deferred[AuthResult]:
        """An MQTT CONNECT: its user name and password, or its TLS client certificate."""
        connect = connection.connect
        assert connect is not None
        username = connect.username
        certificate = self.certificate(connection)
        if not username and certificate is not None:
            # A TLS client certificate without a user name names its device by its CN.
            username = certificate.common_name
        return self.check(username, connect.password, connection.peer, certificate)

    def check(
        self,
        username: str | None,
        password: bytes | None,
        peer: str,
        certificate: ClientCertificate | None = None,
        transport: str = "mqtt",
    ) -> AuthResult | Deferred[AuthResult]:
        """Credentials from ``peer`` (``host:port``): admitted with an identity and an ACL,
        or refused with an MQTT 5 CONNACK reason and a detail saying why.

        ``transport`` is how the client came (``mqtt``, or a device transport: ``http``,
        ``coap``, ``tcp``, ``udp``): a device transport admits only a device of a product
        whose protocol it is, with its own credentials (no anonymous, application or
        registration logins, which are MQTT's)."""
        # Failures are counted per address and per user name (edge.throttle): an address
        # over its budget is refused whatever it sends, except a certificate that identifies
        # its device; a user name over its budget only makes failed attempts 0x9F, so a
        # device's correct credentials still connect while strangers fail its password.
        address = client_address(peer)
        blocked = self.throttle.address_blocked(address)
        if blocked and certificate is None:
            return AuthResult(Reason.CONNECTION_RATE_EXCEEDED, detail=TOO_MANY_FAILURES)

        def failed(result: AuthResult) -> AuthResult | Deferred[AuthResult]:
            if result.reason not in AUTH_FAILURES:
                return result
            throttled = AuthResult(
                Reason.CONNECTION_RATE_EXCEEDED, detail=f"{result.detail}; {TOO_MANY_FAILURES}"
            )
            over = self.throttle.failed(address, username)
            return then(over, lambda over: throttled if over else result)

        def settle(result: AuthResult) -> AuthResult | Deferred[AuthResult]:
            if not result.ok:
                return failed(result)
            if result.detail == CERTIFICATE_LOGIN:
                return result
            if blocked:
                return AuthResult(Reason.CONNECTION_RATE_EXCEEDED, detail=TOO_MANY_FAILURES)
            ts_ms = signed_timestamp(password)
            if ts_ms is None or not username:
                return result
            replayed = AuthResult(
                Reason.BAD_USER_NAME_OR_PASSWORD,
                detail=f"signed password of {username} already used",
            )
            unchecked = AuthResult(
                Reason.SERVER_UNAVAILABLE, detail="signed password not checked: Redis unavailable"
            )
            return self._first_use(username, ts_ms).addCallback(
                lambda first: unchecked if first is None else result if first else failed(replayed)
            )

        checked: Any = self._credentials(username, password, certificate, transport)
        outcome: Any = then(checked, settle)
        return outcome  # type: ignore[no-any-return]

    def _first_use(self, username: str, ts_ms: int) -> Deferred[bool | None]:
        """Marks the signed password of ``username`` at ``ts_ms`` as used in Redis, shared by
        every worker, for as long as it would be accepted; False when it was already used (a
        replay: security review M8), None when Redis did not answer."""
        lifetime = signed_password_lifetime(ts_ms, self.clock.seconds())
        d = self.redis.execute(
            "SET", self.keys.signed_password(username, ts_ms), b"1", "NX",
            "PX", int(lifetime * 1000) + 1000,
        )  # fmt: skip

        def unavailable(failure: Any) -> None:
            log.warn("signed password check failed: {e}", e=failure.getErrorMessage())

        return d.addCallbacks(lambda reply: reply is not None, unavailable)

    def _credentials(
        self,
        username: str | None,
        password: bytes | None,
        certificate: ClientCertificate | None = None,
        transport: str = "mqtt",
    ) -> AuthResult | Deferred[AuthResult]:
        if transport != "mqtt" and (
            not username or username.startswith(APP_PREFIX) or REGISTER_SEPARATOR in username
        ):
            return AuthResult(
                Reason.BAD_USER_NAME_OR_PASSWORD,
                detail=f"{transport} takes a device identifier and its secret",
            )
        if not username:
            if self.allow_anonymous:
                return AuthResult(acl=self.acl(ANONYMOUS_ACL), detail="anonymous")
            return AuthResult(
                Reason.BAD_USER_NAME_OR_PASSWORD, detail="no user name (device identifier)"
            )
        if username.startswith(APP_PREFIX):
            key_id = username[len(APP_PREFIX) :]
            return then(self.directory.app(key_id), lambda app: self._check_app(app, password))
        if REGISTER_SEPARATOR in username:
            product, _, device = username.partition(REGISTER_SEPARATOR)
            found = gather([self.directory.product(product), self.directory.device(device)])
            return then(
                found,
                lambda records: self._check_registration(
                    product, device, records[0], records[1], password
                ),
            )

        def with_product(record: DeviceRecord | None) -> Any:
            if record is None or not record.product:
                return self._check_device(record, None, username, password, certificate, transport)
            return then(
                self.directory.product(record.product),
                lambda product: self._check_device(
                    record, product, username, password, certificate, transport
                ),
            )

        return then(self.directory.device(username), with_product)

    def _check_device(
        self,
        record: DeviceRecord | None,
        product: ProductRecord | None,
        username: str,
        password: bytes | None,
        certificate: ClientCertificate | None = None,
        transport: str = "mqtt",
    ) -> AuthResult:
        if record is None:
            if self.allow_anonymous and transport == "mqtt":
                return AuthResult(acl=self.acl(ANONYMOUS_ACL), detail="anonymous")
            return AuthResult(Reason.BAD_USER_NAME_OR_PASSWORD, detail=f"unknown device {username}")
        refused = refusal(record, product, transport)
        if refused is not None:
            return AuthResult(refused[0], detail=refused[2])
        if certificate is not None and certificate_matches(record, certificate):
            return AuthResult(
                identity=record.identifier,
                acl=self.device_acl(record, product),
                detail=CERTIFICATE_LOGIN,
            )
        if record.secret is None:
            return AuthResult(
                Reason.NOT_AUTHORIZED, detail=f"device {username} has no usable secret"
            )
        if password is None or not password_matches(
            username, record.secret, password, self.clock.seconds()
        ):
            return AuthResult(
                Reason.BAD_USER_NAME_OR_PASSWORD, detail=f"wrong secret for device {username}"
            )
        return AuthResult(identity=record.identifier, acl=self.device_acl(record, product))

    def _check_app(self, app: AppRecord | None, password: bytes | None) -> AuthResult:
        """``app:{key id}`` with the API key as password: checked against the SHA-256 of the
        key that webapp publishes in ``tl:app:{key id}``."""
        if app is None or password is None:
            return AuthResult(Reason.BAD_USER_NAME_OR_PASSWORD, detail="unknown API key")
        if app.expires_ms is not None and app.expires_ms <= now_ms(self.clock.seconds):
            return AuthResult(Reason.NOT_AUTHORIZED, detail=f"API key {app.key_id} expired")
        if not constant_time_equal(hashlib.sha256(password).hexdigest(), app.key_hash):
            return AuthResult(
                Reason.BAD_USER_NAME_OR_PASSWORD, detail=f"wrong API key for {app.key_id}"
            )
        return AuthResult(
            acl=self.acl(AppAcl(app, self.directory)),
            detail=f"app {app.user}",
            owner=f"{APP_PREFIX}{app.key_id}",  # its sessions and budgets (H1, H9, L8)
        )

    def _check_registration(
        self,
        product_id: str,
        device_id: str,
        product: ProductRecord | None,
        device: DeviceRecord | None,
        password: bytes | None,
    ) -> AuthResult:
        """``{product}&{device}`` with the product secret (plain or signed): a device that
        registers itself. A device that exists may do it again only while it is unactivated
        (its answer may have been lost), and only for the same product."""
        if product is None or product.secret is None:
            return AuthResult(
                Reason.BAD_USER_NAME_OR_PASSWORD,
                detail=f"product {product_id} does not allow dynamic registration",
            )
        if product.disabled:
            return AuthResult(Reason.NOT_AUTHORIZED, detail=f"product {product_id} is disabled")
        if not tl.valid_identifier(device_id):
            detail = f"invalid device identifier {device_id!r}"
            return AuthResult(Reason.CLIENT_IDENTIFIER_NOT_VALID, detail=detail)
        if password is None or not password_matches(
            f"{product_id}{REGISTER_SEPARATOR}{device_id}",
            product.secret,
            password,
            self.clock.seconds(),
        ):
            return AuthResult(
                Reason.BAD_USER_NAME_OR_PASSWORD, detail=f"wrong secret for product {product_id}"
            )
        if device is not None and (device.product != product_id or device.status != "unactivated"):
            return AuthResult(
                Reason.NOT_AUTHORIZED, detail=f"device {device_id} is already registered"
            )
        return AuthResult(
            acl=self.acl(RegistrationAcl(product_id, device_id)),
            detail="registration",
            owner=f"{product_id}{REGISTER_SEPARATOR}{device_id}",  # as for an app key
        )

    def credentials_hold(self, connection: Client, record: DeviceRecord) -> bool:
        """Whether what admitted the connection still admits it: a rotated secret ends the
        connections made with the old one; a changed certificate fingerprint those whose
        certificate no longer matches. (The connection's own record is the one it was
        admitted with, or a later one that passed this check.)"""
        acl = device_of(connection)
        if acl is None:
            return True
        before = acl.device
        if before.secret != record.secret:
            return False
        if before.cert_fp != record.cert_fp and self.certificates is not None:
            certificate = self.certificates(connection)
            if certificate is not None and not certificate_matches(record, certificate):
                return False
        return True


def certificate_matches(record: DeviceRecord, certificate: ClientCertificate) -> bool:
    """A registered fingerprint (``cert_fp``) must match when the device has one; otherwise a
    certificate whose chain verified against EDGE_TLS_CA and whose CN is the device's
    identifier identifies it."""
    pinned = normalize_fingerprints(record.cert_fp)
    if pinned:
        return certificate.fingerprint in pinned
    return certificate.verified and certificate.common_name == record.identifier
