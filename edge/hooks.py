"""The ThingLinks side of the broker: device authentication and ACL from the registry, uplink
events for device traffic, ``datasResponse`` for refused input, and status/route updates."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from edge.codecs import thinglinks as tl

from .auth import password_matches
from .bus.keys import Keys
from .bus.redis import RedisClient
from .bus.registry import DeviceRecord, ProductRecord, Registry
from .bus.uplink import Uplink
from .deferreds import gather, then
from .mqtt.broker import OPEN_ACL, Acl, AuthResult, Broker, BrokerHooks, DenyListAcl, Message
from .mqtt.connection import AUTH_FAILURES, MqttConnection
from .mqtt.errors import Reason
from .throttle import FailureThrottle
from .transports.tls import ClientCertificate, normalize_fingerprints

log = Logger(namespace="edge")

# Removes the route of a device only when it still points at this node.
DELETE_ROUTE_IF_OURS = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"""


class DeviceAcl(Acl):
    """A device may use its own ``/v1/devices/{id}/…`` namespace; a gateway also its
    sub-devices' namespaces (devices whose ``gateway`` field names it)."""

    def __init__(self, device: DeviceRecord, registry: Registry) -> None:
        self.device = device
        self.registry = registry

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

    def may_publish(self, topic: str) -> bool | Deferred[bool]:
        return self._namespace_allowed(topic)

    def may_subscribe(self, topic_filter: str) -> bool | Deferred[bool]:
        return self._namespace_allowed(topic_filter)


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
        throttle: FailureThrottle | None = None,
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
        self.throttle = throttle or FailureThrottle(clock)
        self.certificates = certificates
        self.broker: Broker | None = None

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
        address = connection.peer.rpartition(":")[0] or connection.peer
        keys = [f"addr:{address}"] + ([f"dev:{username}"] if username else [])
        if any(self.throttle.blocked(key) for key in keys):
            return AuthResult(
                Reason.CONNECTION_RATE_EXCEEDED, detail="too many failed attempts; try later"
            )

        def record(result: AuthResult) -> AuthResult:
            if result.reason in AUTH_FAILURES:
                for key in keys:
                    self.throttle.failed(key)
            return result

        return then(self._authenticate(username, connect.password, certificate), record)

    def _authenticate(
        self,
        username: str | None,
        password: bytes | None,
        certificate: ClientCertificate | None = None,
    ) -> AuthResult | Deferred[AuthResult]:
        if not username:
            if self.allow_anonymous:
                return AuthResult(acl=self._acl(OPEN_ACL), detail="anonymous")
            return AuthResult(
                Reason.BAD_USER_NAME_OR_PASSWORD, detail="no user name (device identifier)"
            )
        return then(
            self.registry.device(username),
            lambda rec: self._check(rec, username, password, certificate),
        )

    def _check(
        self,
        record: DeviceRecord | None,
        username: str,
        password: bytes | None,
        certificate: ClientCertificate | None = None,
    ) -> AuthResult:
        if record is None:
            if self.allow_anonymous:
                return AuthResult(acl=self._acl(OPEN_ACL), detail="anonymous")
            return AuthResult(Reason.BAD_USER_NAME_OR_PASSWORD, detail=f"unknown device {username}")
        if record.status == "locked":
            return AuthResult(Reason.BANNED, detail=f"device {username} is locked")
        if certificate is not None and _certificate_matches(record, certificate):
            return AuthResult(
                identity=record.identifier,
                acl=self._acl(DeviceAcl(record, self.registry)),
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
            acl=self._acl(DeviceAcl(record, self.registry)),
        )

    # -- status and routes --------------------------------------------------------------------

    def client_connected(self, connection: MqttConnection) -> None:
        device = connection.identity
        if device is None:
            return
        self.uplink.emit(
            tl.status_event(device, True, now_ms(self.clock), self.node, connection.peer, None)
        )
        self.redis.execute("HSET", self.keys.route, device, self.node).addErrback(self._redis_error)

    def client_disconnected(self, connection: MqttConnection, reason: str) -> None:
        device = connection.identity
        if device is None:
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

    def _redis_error(self, failure: Any) -> None:
        log.warn("Redis route update failed: {error}", error=failure.getErrorMessage())

    # -- device messages ----------------------------------------------------------------------

    def message_published(
        self, connection: MqttConnection, message: Message
    ) -> int | Deferred[int]:
        parsed = tl.parse(message.topic, message.payload)
        if parsed is None:
            return Reason.SUCCESS
        sender = connection.identity
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
            return then(
                self.registry.product(record.product), lambda prod: (device, _context(record, prod))
            )

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
        reached = self.broker.publish(Message(topic, payload, qos))
        reason = None if reached else "no subscriber"
        self.uplink.emit(tl.log_event(device, "down", topic, payload, bool(reached), reason, ts))


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
