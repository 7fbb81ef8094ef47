"""The ThingLinks side of the broker: authentication (devices, dynamic registration,
application clients) and ACLs from the registry, uplink events for device traffic,
``datasResponse`` for refused input, and status/route updates. README "Device authentication"
and docs/bus.md describe the formats."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from edge.codecs import thinglinks as tl

from .acl import bind, decide, ordered, parse_rules
from .auth import password_matches, refusal, signed_password_lifetime, signed_timestamp
from .bus.keys import Keys
from .bus.redis import RedisClient
from .bus.registry import AppRecord, DeviceRecord, ProductRecord, Registry
from .bus.uplink import Uplink
from .crypto import constant_time_equal
from .deferreds import gather, then
from .mqtt.broker import Broker
from .mqtt.connection import MqttConnection
from .mqtt.errors import Reason
from .mqtt.message import Message
from .mqtt.policy import AUTH_FAILURES, Acl, AuthResult, BrokerHooks, DenyListAcl
from .mqtt.topics import overlaps, split_shared
from .throttle import AuthThrottle, client_address
from .transports.tls import ClientCertificate, normalize_fingerprints

log = Logger(namespace="edge")

# Removes the route of a device only when it still points at this node.
DELETE_ROUTE_IF_OURS = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"""


# The detail of an AuthResult admitting a device by its TLS client certificate.
CERTIFICATE_LOGIN = "certificate"
TOO_MANY_FAILURES = "too many failed attempts; try later"
# The username prefix of application clients, and the separator of dynamic registration.
APP_PREFIX = "app:"
REGISTER_SEPARATOR = "&"
# What an application client whose user sees every device may do when webapp published no
# rules for its key. A client whose user is scoped subscribes to its devices' topics only.
DEFAULT_APP_RULES = parse_rules(b'[{"action":"sub","topic":"#","decision":"allow"}]')
# Every device's topics: ACL rules never open them (a device reaches its own namespace, a
# gateway its sub-devices', an application client the devices of its data scope).
DEVICE_NAMESPACES = tl.TOPIC_PREFIX + "#"


def _outside_devices(topic: str) -> bool:
    """Whether no device's ``/v1/devices/{id}/…`` topic matches ``topic`` (name or filter)."""
    return not overlaps(topic, DEVICE_NAMESPACES)


class AnonymousAcl(Acl):
    """EDGE_ALLOW_ANONYMOUS (development): anything, except publishing on devices' topics,
    which would be taken as their data or reach them as commands."""

    __slots__ = ()

    def may_publish(self, topic: str) -> bool:
        return _outside_devices(topic)

    def may_subscribe(self, topic_filter: str) -> bool:
        return True


ANONYMOUS_ACL = AnonymousAcl()


class ActionAcl(Acl):
    """An ACL that decides each action ("pub", "sub") on a topic in ``_allowed``; a shared
    subscription is decided by its filter."""

    __slots__ = ()

    def _allowed(self, action: str, topic: str) -> bool | Deferred[bool]:
        raise NotImplementedError

    def may_publish(self, topic: str) -> bool | Deferred[bool]:
        return self._allowed("pub", topic)

    def may_subscribe(self, topic_filter: str) -> bool | Deferred[bool]:
        try:
            shared = split_shared(topic_filter)
        except ValueError:
            return False
        return self._allowed("sub", topic_filter if shared is None else shared[1])


class DeviceAcl(ActionAcl):
    """A device may use its own ``/v1/devices/{id}/…`` namespace; a gateway also its
    sub-devices' namespaces (devices whose ``gateway`` field names it). Any other topic is
    decided by the device's and its product's ACL rules (edge.acl), default deny."""

    __slots__ = ("device", "registry", "rules")

    def __init__(
        self, device: DeviceRecord, registry: Registry, product: ProductRecord | None = None
    ) -> None:
        self.device = device
        self.registry = registry
        product_rules = product.acl if product is not None else ()
        self.rules = bind(ordered(device.acl, product_rules), device.identifier, device.product)

    def _namespace_allowed(self, topic: str) -> bool | Deferred[bool]:
        split = tl.split_topic(topic)
        if split is None:
            return False
        owner = split[0]
        if owner == self.device.identifier:
            return True
        if "+" in owner or "#" in owner:
            return False
        me = self.device.identifier
        return then(self.registry.device(owner), lambda rec: rec is not None and rec.gateway == me)

    def _allowed(self, action: str, topic: str) -> bool | Deferred[bool]:
        own: Any = self._namespace_allowed(topic)
        if own is True or not self.rules:
            return own  # type: ignore[no-any-return]
        return then(own, lambda ok: bool(ok) or self._by_rules(action, topic))

    def _by_rules(self, action: str, topic: str) -> bool:
        # Rules never open other devices' topics, whatever webapp published (a rule saved
        # before webapp checked this, or written to Redis by hand).
        return _outside_devices(topic) and decide(self.rules, action, topic)


class AppAcl(ActionAcl):
    """An application client (an API key): the data scope of the key's user decides which
    devices' topics it reaches, its rules (docs/bus.md) what it may do there and elsewhere.

    A user who sees every device keeps the broker-wide default (subscribe to anything). A
    scoped user's client names one device per filter (``/v1/devices/{id}/…``, no wildcard
    at the device level) and may subscribe to the topics of the devices of its scope only;
    ``devices`` remembers which ones it was allowed, so that a device leaving the scope can
    end the connection."""

    __slots__ = ("app", "devices", "registry", "rules")

    def __init__(self, app: AppRecord, registry: Registry) -> None:
        self.app = app
        self.registry = registry
        self.rules = app.acl or (DEFAULT_APP_RULES if app.everything else ())
        self.devices: set[str] = set()

    def _allowed(self, action: str, topic: str) -> bool | Deferred[bool]:
        if self.app.everything:
            return decide(self.rules, action, topic)
        split = tl.split_topic(topic)
        if split is None or "+" in split[0] or "#" in split[0]:
            return _outside_devices(topic) and decide(self.rules, action, topic)
        device = split[0]

        def in_scope(record: DeviceRecord | None) -> bool:
            if record is None or not self.app.reaches(record):
                return False
            allowed = decide(self.rules, action, topic) if self.rules else action == "sub"
            if allowed:
                self.devices.add(device)
            return allowed

        return then(self.registry.device(device), in_scope)


class RegistrationAcl(Acl):
    """A device registering itself (``{product}&{device}``): it may only send its request
    and hear the answer. The answer is sent to this connection alone (never published):
    ``token`` names the connection in the ``register`` event, and webapp's answer carries
    it back."""

    __slots__ = ("answer", "device", "product", "request", "token")

    def __init__(self, product: str, device: str) -> None:
        self.product = product
        self.device = device
        self.request = tl.response_topic(device, tl.REGISTER)
        self.answer = tl.response_topic(device, tl.REGISTER_RESPONSE)
        self.token = secrets.token_hex(8)

    def may_publish(self, topic: str) -> bool:
        return topic == self.request

    def may_subscribe(self, topic_filter: str) -> bool:
        return topic_filter == self.answer


def _inner(acl: Acl) -> Acl:
    return acl.inner if isinstance(acl, DenyListAcl) else acl


def registration_of(connection: MqttConnection) -> RegistrationAcl | None:
    acl = _inner(connection.acl)
    return acl if isinstance(acl, RegistrationAcl) else None


def app_of(connection: MqttConnection) -> AppAcl | None:
    acl = _inner(connection.acl)
    return acl if isinstance(acl, AppAcl) else None


def now_ms(clock: Any) -> int:
    return int(clock.seconds() * 1000)


class EdgeHooks(BrokerHooks):
    def __init__(
        self,
        *,
        clock: Any,
        redis: RedisClient,
        keys: Keys,
        registry: Registry,
        uplink: Uplink,
        node: str,
        allow_anonymous: bool = False,
        acl_deny: Iterable[str] = (),
        throttle: AuthThrottle | None = None,
        certificates: Callable[[MqttConnection], ClientCertificate | None] | None = None,
    ) -> None:
        self.clock = clock
        self.redis = redis
        self.keys = keys
        self.registry = registry
        self.uplink = uplink
        self.node = node
        self.allow_anonymous = allow_anonymous
        self.acl_deny = tuple(acl_deny)
        self.throttle = throttle or AuthThrottle(clock, redis, keys)
        self.certificates = certificates
        self.broker: Broker | None = None
        # The registration connection of each identifier (one: a newer one takes over).
        self.registrations: dict[str, MqttConnection] = {}
        # Connected application clients → the call that ends them when their key expires.
        self.apps: dict[MqttConnection, Any] = {}

    def _acl(self, acl: Acl) -> Acl:
        return DenyListAcl(acl, self.acl_deny) if self.acl_deny else acl

    # -- authentication -----------------------------------------------------------------------

    def authenticate(self, connection: MqttConnection) -> AuthResult | Deferred[AuthResult]:
        connect = connection.connect
        assert connect is not None
        username = connect.username
        certificate = self.certificates(connection) if self.certificates is not None else None
        if not username and certificate is not None:
            # A TLS client certificate without a user name names its device by its CN.
            username = certificate.common_name
        password = connect.password
        # Failures are counted per address and per user name (edge.throttle): an address
        # over its budget is refused whatever it sends, except a certificate that identifies
        # its device; a user name over its budget only makes failed attempts 0x9F, so a
        # device's correct credentials still connect while strangers fail its password.
        address = client_address(connection.peer)
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

        checked: Any = self._authenticate(username, password, certificate)
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

    def _authenticate(
        self,
        username: str | None,
        password: bytes | None,
        certificate: ClientCertificate | None = None,
    ) -> AuthResult | Deferred[AuthResult]:
        if not username:
            if self.allow_anonymous:
                return AuthResult(acl=self._acl(ANONYMOUS_ACL), detail="anonymous")
            return AuthResult(
                Reason.BAD_USER_NAME_OR_PASSWORD, detail="no user name (device identifier)"
            )
        if username.startswith(APP_PREFIX):
            key_id = username[len(APP_PREFIX) :]
            return then(self.registry.app(key_id), lambda app: self._check_app(app, password))
        if REGISTER_SEPARATOR in username:
            product, _, device = username.partition(REGISTER_SEPARATOR)
            found = gather([self.registry.product(product), self.registry.device(device)])
            return then(
                found,
                lambda records: self._check_registration(
                    product, device, records[0], records[1], password
                ),
            )

        def with_product(record: DeviceRecord | None) -> Any:
            if record is None or not record.product:
                return self._check(record, None, username, password, certificate)
            return then(
                self.registry.product(record.product),
                lambda product: self._check(record, product, username, password, certificate),
            )

        return then(self.registry.device(username), with_product)

    def _check(
        self,
        record: DeviceRecord | None,
        product: ProductRecord | None,
        username: str,
        password: bytes | None,
        certificate: ClientCertificate | None = None,
    ) -> AuthResult:
        if record is None:
            if self.allow_anonymous:
                return AuthResult(acl=self._acl(ANONYMOUS_ACL), detail="anonymous")
            return AuthResult(Reason.BAD_USER_NAME_OR_PASSWORD, detail=f"unknown device {username}")
        refused = refusal(record, product)
        if refused is not None:
            return AuthResult(refused[0], detail=refused[2])
        if certificate is not None and _certificate_matches(record, certificate):
            return AuthResult(
                identity=record.identifier,
                acl=self._acl(DeviceAcl(record, self.registry, product)),
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
        return AuthResult(
            identity=record.identifier,
            acl=self._acl(DeviceAcl(record, self.registry, product)),
        )

    def _check_app(self, app: AppRecord | None, password: bytes | None) -> AuthResult:
        """``app:{key id}`` with the API key as password: checked against the SHA-256 of the
        key that webapp publishes in ``tl:app:{key id}``."""
        if app is None or password is None:
            return AuthResult(Reason.BAD_USER_NAME_OR_PASSWORD, detail="unknown API key")
        if app.expires_ms is not None and app.expires_ms <= now_ms(self.clock):
            return AuthResult(Reason.NOT_AUTHORIZED, detail=f"API key {app.key_id} expired")
        if not constant_time_equal(hashlib.sha256(password).hexdigest(), app.key_hash):
            return AuthResult(
                Reason.BAD_USER_NAME_OR_PASSWORD, detail=f"wrong API key for {app.key_id}"
            )
        return AuthResult(
            acl=self._acl(AppAcl(app, self.registry)),
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
            acl=self._acl(RegistrationAcl(product_id, device_id)),
            detail="registration",
            owner=f"{product_id}{REGISTER_SEPARATOR}{device_id}",  # as for an app key
        )

    # -- registry changes ---------------------------------------------------------------------

    def registry_changed(self, kind: str, identifier: str) -> None:
        """A device, product or API key changed in webapp: connected devices it concerns get
        their new ACL; a device that was locked or deleted, whose product was disabled or
        whose credentials changed, is disconnected (0x98); so is an application client whose
        key was revoked or changed, or that follows a device which left its user's scope."""
        broker = self.broker
        if broker is None:
            return
        if kind == "dev":
            connection = broker.by_identity.get(identifier)
            if connection is not None:
                self._refresh(connection)
            for app_connection in list(self.apps):
                app = app_of(app_connection)
                if app is not None and identifier in app.devices:
                    self._recheck_app_device(app_connection, app, identifier)
        elif kind == "prod":
            for connection in list(broker.by_identity.values()):
                acl = _inner(connection.acl)
                if isinstance(acl, DeviceAcl) and acl.device.product == identifier:
                    self._refresh(connection)
        elif kind == "app":
            for app_connection in list(self.apps):
                app = app_of(app_connection)
                if app is not None and app.app.key_id == identifier:
                    self._recheck_app(app_connection, app)

    def _end_app(self, connection: MqttConnection, text: str) -> None:
        log.info(
            "application client {client} disconnected: {text}",
            client=connection.client_id,
            text=text,
        )
        connection.close(Reason.ADMINISTRATIVE_ACTION, "revoked", text)
        if self.broker is not None:
            self.broker.flush()

    def _recheck_app(self, connection: MqttConnection, acl: AppAcl) -> None:
        """The key was republished or deleted: its client goes unless nothing changed."""
        key_id = acl.app.key_id

        def settle(record: AppRecord | None) -> None:
            if record is None:
                self._end_app(connection, f"API key {key_id} was revoked")
            elif record != acl.app:
                self._end_app(connection, f"API key {key_id} changed")

        d = then(self.registry.app(key_id), settle)
        if isinstance(d, Deferred):
            d.addErrback(lambda f: log.warn("registry refresh failed: {e}", e=f.getErrorMessage()))

    def _recheck_app_device(self, connection: MqttConnection, acl: AppAcl, device: str) -> None:
        def settle(record: DeviceRecord | None) -> None:
            if record is None or not acl.app.reaches(record):
                self._end_app(connection, f"device {device} left the scope of {acl.app.user}")

        d = then(self.registry.device(device), settle)
        if isinstance(d, Deferred):
            d.addErrback(lambda f: log.warn("registry refresh failed: {e}", e=f.getErrorMessage()))

    def _app_expired(self, connection: MqttConnection) -> None:
        self.apps.pop(connection, None)
        acl = app_of(connection)
        if acl is not None:
            self._end_app(connection, f"API key {acl.app.key_id} expired")

    def _refresh(self, connection: MqttConnection) -> None:
        identity = connection.identity
        assert identity is not None

        def kick(why: str, text: str) -> None:
            log.info("{device} disconnected: {text}", device=identity, text=text)
            connection.close(Reason.ADMINISTRATIVE_ACTION, why, text)
            if self.broker is not None:
                self.broker.flush()

        def settle(record: DeviceRecord, product: ProductRecord | None) -> None:
            refused = refusal(record, product)
            if refused is not None:
                kick(refused[1], refused[2])
            elif not self._credentials_hold(connection, record):
                kick("credentials_changed", f"the credentials of device {identity} changed")
            else:
                self._set_acl(connection, record, product)

        def with_product(record: DeviceRecord | None) -> Any:
            if record is None:
                kick("deleted", f"device {identity} is deleted")
                return None
            product = self.registry.product(record.product) if record.product else None
            return then(product, lambda prod: settle(record, prod))

        d = then(self.registry.device(identity), with_product)
        if isinstance(d, Deferred):
            d.addErrback(lambda f: log.warn("registry refresh failed: {e}", e=f.getErrorMessage()))

    def _credentials_hold(self, connection: MqttConnection, record: DeviceRecord) -> bool:
        """Whether what admitted the connection still admits it: a rotated secret ends the
        connections made with the old one; a changed certificate fingerprint those whose
        certificate no longer matches. (The connection's own record is the one it was
        admitted with, or a later one that passed this check.)"""
        acl = _inner(connection.acl)
        if not isinstance(acl, DeviceAcl):
            return True
        before = acl.device
        if before.secret != record.secret:
            return False
        if before.cert_fp != record.cert_fp and self.certificates is not None:
            certificate = self.certificates(connection)
            if certificate is not None and not _certificate_matches(record, certificate):
                return False
        return True

    def _set_acl(
        self, connection: MqttConnection, record: DeviceRecord, product: ProductRecord | None
    ) -> None:
        if connection.identity == record.identifier:
            connection.acl = self._acl(DeviceAcl(record, self.registry, product))

    # -- status and routes --------------------------------------------------------------------

    def client_connected(self, connection: MqttConnection) -> None:
        device = connection.identity
        if device is None:
            self._identityless_connected(connection)
            return
        self.uplink.emit(
            tl.status_event(device, True, now_ms(self.clock), self.node, connection.peer, None)
        )
        self.redis.execute("HSET", self.keys.route, device, self.node).addErrback(self._redis_error)

    def client_disconnected(self, connection: MqttConnection, reason: str) -> None:
        device = connection.identity
        if device is None:
            self._identityless_disconnected(connection)
            return
        self.uplink.emit(
            tl.status_event(device, False, now_ms(self.clock), self.node, connection.peer, reason)
        )
        # A takeover by a newer connection on this node keeps the route.
        if self.broker is not None and device in self.broker.by_identity:
            return
        self.redis.execute(
            "EVAL", DELETE_ROUTE_IF_OURS, 1, self.keys.route, device, self.node
        ).addErrback(self._redis_error)

    def _identityless_connected(self, connection: MqttConnection) -> None:
        """A registration takes over an older one of the same identifier; an application
        client is followed until its key expires."""
        registration = registration_of(connection)
        if registration is not None:
            older = self.registrations.get(registration.device)
            self.registrations[registration.device] = connection
            if older is not None and older is not connection:
                older.close(Reason.SESSION_TAKEN_OVER, "takeover")
            return
        app = app_of(connection)
        if app is None:
            return
        expires_ms = app.app.expires_ms
        call = None
        if expires_ms is not None:
            delay = max(expires_ms - now_ms(self.clock), 0) / 1000
            call = self.clock.callLater(delay, self._app_expired, connection)
        self.apps[connection] = call

    def _identityless_disconnected(self, connection: MqttConnection) -> None:
        registration = registration_of(connection)
        if registration is not None:
            if self.registrations.get(registration.device) is connection:
                del self.registrations[registration.device]
            return
        call = self.apps.pop(connection, None)
        if call is not None and call.active():
            call.cancel()

    def _redis_error(self, failure: Any) -> None:
        log.warn("Redis route update failed: {error}", error=failure.getErrorMessage())

    # -- device messages ----------------------------------------------------------------------

    def message_published(
        self, connection: MqttConnection, message: Message
    ) -> int | Deferred[int]:
        registration = registration_of(connection)
        if registration is not None:
            return self._register(registration, connection, message)
        return self._device_message(connection.identity, message)

    def will_published(self, identity: str | None, will: Message) -> None:
        """A will on a device topic is handled like any message of its device."""
        result = self._device_message(identity, will)
        if isinstance(result, Deferred):
            result.addErrback(lambda f: log.warn("will not stored: {e}", e=f.getErrorMessage()))

    def _device_message(self, sender: str | None, message: Message) -> int | Deferred[int]:
        split = tl.split_topic(message.topic)
        if split is None:
            return Reason.SUCCESS
        result: Any = then(
            self.registry.device(split[0]),
            lambda record: self._parse_device_message(record, sender, message),
        )
        return result  # type: ignore[no-any-return]

    def _parse_device_message(
        self, record: DeviceRecord | None, sender: str | None, message: Message
    ) -> int | Deferred[int]:
        # The topic device's record carries its envelope keys (no object per message).
        parsed = tl.parse(message.topic, message.payload, record)
        if parsed is None:
            return Reason.SUCCESS
        contexts = gather(
            [self._context(dev, parsed.device, sender) for dev in sorted(parsed.devices)]
        )

        def finish(found: list[Any]) -> Any:
            return self._finish(parsed, dict(found), message)

        return then(contexts, finish)

    def _context(self, device: str, topic_device: str, sender: str | None) -> Any:
        def from_record(record: DeviceRecord | None) -> Any:
            if record is None:
                return device, tl.DataError(
                    "unknown_device", f"device {device} does not exist", device
                )
            if device != topic_device and record.gateway not in (
                topic_device,
                sender or topic_device,
            ):
                reason = f"device {device} is not {topic_device} or one of its sub-devices"
                return device, tl.DataError("not_allowed", reason, device)
            if not record.product:
                return device, tl.DeviceContext(device, "", None, "the device has no product")

            def with_product(prod: ProductRecord | None) -> Any:
                # A locked device, or one of a disabled product, is refused here too: a
                # gateway must not report for a sub-device that could not connect itself.
                refused = refusal(record, prod)
                if refused is not None:
                    return device, tl.DataError(refused[1], refused[2], device)
                return device, _context(record, prod)

            return then(self.registry.product(record.product), with_product)

        return then(self.registry.device(device), from_record)

    def _finish(
        self, parsed: tl.Parsed, contexts: dict[str, Any], message: Message
    ) -> int | Deferred[int]:
        ts = now_ms(self.clock)
        outcome = tl.evaluate(parsed, contexts, ts)
        reason = tl.summarize(outcome.errors) if outcome.errors else None
        events = [
            *outcome.events,
            tl.log_event(
                parsed.device, "up", message.topic, message.payload, not outcome.errors, reason, ts
            ),
        ]
        if outcome.errors:
            log.info(
                "{device} {topic}: {reason}",
                device=parsed.device,
                topic=parsed.suffix,
                reason=reason,
            )
        if outcome.response is not None and self.broker is not None:
            self.broker.publish(Message(tl.response_topic(parsed.device), outcome.response))
        code = Reason.PAYLOAD_FORMAT_INVALID if outcome.rejected_entirely else Reason.SUCCESS
        if not message.qos:
            self.uplink.emit(*events)
            return code
        return self.uplink.emit_confirmed(events).addCallback(lambda _: code)

    def _register(
        self, registration: RegistrationAcl, connection: MqttConnection, message: Message
    ) -> int | Deferred[int]:
        """A registering device's request (its only allowed topic): a ``register`` event that
        webapp answers on ``…/registerResponse`` through this node's downlink."""
        ts = now_ms(self.clock)
        reason: str | None = None
        body: Any = {}
        mid = None
        try:
            if message.payload.strip():
                body, mid = tl.unwrap(message.payload)
        except tl.PayloadError as exc:
            reason = exc.reason
        else:
            if not isinstance(body, dict):
                reason = "the body must be a JSON object"
        if reason is not None:
            answer = tl.register_response(registration.device, 1, reason, None, mid)
            self._answer_registration(connection, Message(registration.answer, answer))
            return Reason.PAYLOAD_FORMAT_INVALID
        event = tl.register_event(
            registration.device,
            registration.product,
            body,
            mid,
            ts,
            self.node,
            connection.peer,
            registration.token,
        )
        log.info(
            "{device} asks to be registered in product {product}",
            device=registration.device,
            product=registration.product,
        )
        if not message.qos:
            self.uplink.emit(event)
            return Reason.SUCCESS
        return self.uplink.emit_confirmed([event]).addCallback(lambda _: Reason.SUCCESS)

    def _answer_registration(self, connection: MqttConnection, message: Message) -> bool:
        """Give a registration answer to the registering connection alone (when it
        subscribed to it), never through the broker's routing: nobody else hears a secret."""
        registration = registration_of(connection)
        session = connection.session
        if self.broker is None or registration is None or session is None:
            return False
        entry = session.subscriptions.get(registration.answer)
        if entry is None or session.connection is not connection:
            return False
        ids = (entry.identifier,) if entry.identifier is not None else ()
        self.broker.deliver(session, message, min(entry.options.qos, message.qos), False, ids)
        return True

    # -- downlink -----------------------------------------------------------------------------

    def deliver_downlink(self, fields: dict[bytes, bytes]) -> None:
        """Publish one ``tl:down:{node}`` entry through the broker and log it."""
        assert self.broker is not None
        topic = fields.get(b"topic", b"").decode("utf-8", "replace")
        payload = fields.get(b"payload", b"")
        try:
            qos = min(max(int(fields.get(b"qos", b"0")), 0), 2)
        except ValueError:
            qos = 0
        split = tl.split_topic(topic)
        device = fields.get(b"dev", b"").decode("utf-8", "replace") or (split[0] if split else "")
        ts = now_ms(self.clock)
        if not topic or "+" in topic or "#" in topic:
            self.uplink.emit(
                tl.log_event(device, "down", topic, payload, False, "invalid topic", ts)
            )
            return
        if split is not None and split[1] == tl.REGISTER_RESPONSE:
            reached, reason = self._registration_downlink(
                split[0], fields, Message(topic, payload, qos)
            )
        else:
            reached = self.broker.publish(Message(topic, payload, qos)) > 0
            reason = None if reached else "no subscriber"
        logged = tl.redacted(topic, payload)
        self.uplink.emit(tl.log_event(device, "down", topic, logged, bool(reached), reason, ts))

    def _registration_downlink(
        self, device: str, fields: dict[bytes, bytes], message: Message
    ) -> tuple[bool, str | None]:
        """A registration answer goes to the connection that asked (``conn``: its token),
        if it is still here; otherwise to nobody."""
        connection = self.registrations.get(device)
        registration = registration_of(connection) if connection is not None else None
        token = fields.get(b"conn", b"").decode("ascii", "replace")
        if connection is None or registration is None or registration.token != token:
            return False, "the registering connection is gone"
        if not self._answer_registration(connection, message):
            return False, "no subscriber"
        return True, None


def _certificate_matches(record: DeviceRecord, certificate: ClientCertificate) -> bool:
    """A registered fingerprint (``cert_fp``) must match when the device has one; otherwise a
    certificate whose chain verified against EDGE_TLS_CA and whose CN is the device's
    identifier identifies it."""
    pinned = normalize_fingerprints(record.cert_fp)
    if pinned:
        return certificate.fingerprint in pinned
    return certificate.verified and certificate.common_name == record.identifier


def _context(record: DeviceRecord, product: ProductRecord | None) -> tl.DeviceContext:
    if product is None:
        return tl.DeviceContext(
            record.identifier, record.product, None, f"unknown product {record.product}"
        )
    return tl.DeviceContext(record.identifier, record.product, product.model, product.model_error)
