"""The ThingLinks layer as the MQTT broker's hooks: a thin adapter that hands each broker
event to the piece of :mod:`edge.thinglinks` that owns it (authentication, registration,
the uplink pipeline, presence, registry changes, the downlink)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from edge.bus.client import Commands
from edge.bus.keys import Keys
from edge.codecs import thinglinks as tl
from edge.deferreds import then
from edge.mqtt.broker import Broker
from edge.mqtt.errors import Reason
from edge.mqtt.message import Message
from edge.mqtt.policy import AuthResult, BrokerHooks, Client
from edge.throttle import AuthThrottle

from .acl import app_of, registration_of
from .auth import Authenticator, CertificateOf
from .changes import RegistryFollower
from .downlink import Downlink
from .endpoints import Endpoints
from .interfaces import Clock, Directory, EventSink
from .presence import OnlineStamp, Presence
from .registration import Registrations
from .uplink import Handled, UplinkPipeline

log = Logger(namespace="edge")


class EdgeHooks(BrokerHooks):
    def __init__(
        self,
        *,
        clock: Clock,
        redis: Commands,
        keys: Keys,
        registry: Directory,
        uplink: EventSink,
        node: str,
        allow_anonymous: bool = False,
        acl_deny: Iterable[str] = (),
        throttle: AuthThrottle | None = None,
        certificates: CertificateOf | None = None,
        device_lease: float = 300.0,
        mailbox_limit: int = 16,
    ) -> None:
        self.uplink = uplink
        self.throttle = throttle or AuthThrottle(clock, redis, keys)
        self.auth = Authenticator(
            clock=clock,
            redis=redis,
            keys=keys,
            directory=registry,
            throttle=self.throttle,
            allow_anonymous=allow_anonymous,
            acl_deny=acl_deny,
            certificates=certificates,
        )
        self.pipeline = UplinkPipeline(registry, uplink, clock)
        self.registrations = Registrations(clock, uplink, node)
        self.presence = Presence(
            clock, redis, keys, uplink, node, OnlineStamp.for_node(keys.prefix, node)
        )
        # Devices of the other transports (HTTP, CoAP, raw TCP, UDP) on this node.
        self.endpoints = Endpoints(
            clock,
            self.presence,
            lease=device_lease,
            mailbox_limit=mailbox_limit,
            mailbox_ttl=device_lease,
        )
        self.follower = RegistryFollower(clock, registry, self.auth, self.endpoints)
        self.downlink = Downlink(clock, uplink, self.registrations, self.endpoints)
        self._broker: Broker | None = None

    @property
    def broker(self) -> Broker | None:
        return self._broker

    @broker.setter
    def broker(self, broker: Broker | None) -> None:
        """The broker these hooks serve (set once it is built with them)."""
        self._broker = broker
        self.registrations.broker = self.follower.broker = self.downlink.broker = broker

    def authenticate(self, connection: Client) -> AuthResult | Deferred[AuthResult]:
        return self.auth.authenticate(connection)

    def registry_changed(self, kind: str, identifier: str) -> None:
        self.follower.changed(kind, identifier)

    def deliver_downlink(self, fields: dict[bytes, bytes]) -> None:
        self.downlink.deliver(fields)

    def client_connected(self, connection: Client) -> None:
        device = connection.identity
        if device is not None:
            self.presence.online(device, connection.peer)
            return
        registration = registration_of(connection)
        if registration is not None:
            self.registrations.connected(connection, registration)
            return
        app = app_of(connection)
        if app is not None:
            self.follower.app_connected(connection, app)

    def client_disconnected(self, connection: Client, reason: str) -> None:
        device = connection.identity
        if device is not None:
            # A takeover by a newer connection on this node keeps the route.
            still_here = self.broker is not None and device in self.broker.by_identity
            self.presence.offline(device, connection.peer, reason, still_here)
            return
        registration = registration_of(connection)
        if registration is not None:
            self.registrations.disconnected(connection, registration)
            return
        self.follower.app_disconnected(connection)

    def message_published(self, connection: Client, message: Message) -> int | Deferred[int]:
        registration = registration_of(connection)
        if registration is not None:
            return self.registrations.request(registration, connection, message)
        return self._device_message(connection.identity, message)

    def will_published(self, identity: str | None, will: Message) -> None:
        """A will on a device topic is handled like any message of its device."""
        result = self._device_message(identity, will)
        if isinstance(result, Deferred):
            result.addErrback(lambda f: log.warn("will not stored: {e}", e=f.getErrorMessage()))

    def _device_message(self, sender: str | None, message: Message) -> int | Deferred[int]:
        """A message on ``/v1/devices/{id}/…`` goes through the pipeline; its answer is
        published on the device's ``datasResponse``, and the message is acknowledged once
        its events are stored (QoS 1/2) with 0x99 when nothing of it was accepted."""
        split = tl.split_topic(message.topic)
        if split is None:
            return Reason.SUCCESS
        handled = self.pipeline.handle(sender, split[0], split[1], message.payload, message.qos > 0)
        result: Any = then(handled, self._answered)
        return result  # type: ignore[no-any-return]

    def _answered(self, handled: Handled) -> int | Deferred[int]:
        if handled.answer is not None and self.broker is not None:
            self.broker.publish(Message(tl.response_topic(handled.device), handled.answer))
        code = Reason.PAYLOAD_FORMAT_INVALID if handled.rejected else Reason.SUCCESS
        if handled.stored is None:
            return code
        return handled.stored.addCallback(lambda _: code)
