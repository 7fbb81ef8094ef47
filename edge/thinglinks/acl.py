"""What each kind of client may publish and subscribe to: a device its own namespace (a
gateway also its sub-devices') and what its ACL rules allow (edge.acl), an application
client the devices of its user's data scope, a registering device its request and answer,
an anonymous client (development) anything but devices' topics."""

from __future__ import annotations

import secrets
from typing import Any

from twisted.internet.defer import Deferred

from edge.acl import bind, decide, ordered, parse_rules
from edge.bus.registry import AppRecord, DeviceRecord, ProductRecord
from edge.codecs import thinglinks as tl
from edge.deferreds import then
from edge.mqtt.policy import Acl, Client, DenyListAcl
from edge.mqtt.topics import overlaps, split_shared

from .interfaces import Directory

# What an application client whose user sees every device may do when webapp published no
# rules for its key. A client whose user is scoped subscribes to its devices' topics only.
DEFAULT_APP_RULES = parse_rules(b'[{"action":"sub","topic":"#","decision":"allow"}]')
# Every device's topics: ACL rules never open them (a device reaches its own namespace, a
# gateway its sub-devices', an application client the devices of its data scope).
DEVICE_NAMESPACES = tl.TOPIC_PREFIX + "#"


def outside_devices(topic: str) -> bool:
    """Whether no device's ``/v1/devices/{id}/…`` topic matches ``topic`` (name or filter)."""
    return not overlaps(topic, DEVICE_NAMESPACES)


class AnonymousAcl(Acl):
    """EDGE_ALLOW_ANONYMOUS (development): anything, except publishing on devices' topics,
    which would be taken as their data or reach them as commands."""

    __slots__ = ()

    def may_publish(self, topic: str) -> bool:
        return outside_devices(topic)

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
        self, device: DeviceRecord, registry: Directory, product: ProductRecord | None = None
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
        return outside_devices(topic) and decide(self.rules, action, topic)


class AppAcl(ActionAcl):
    """An application client (an API key): the data scope of the key's user decides which
    devices' topics it reaches, its rules (docs/bus.md) what it may do there and elsewhere.

    A user who sees every device keeps the broker-wide default (subscribe to anything). A
    scoped user's client names one device per filter (``/v1/devices/{id}/…``, no wildcard
    at the device level) and may subscribe to the topics of the devices of its scope only;
    ``devices`` remembers which ones it was allowed, so that a device leaving the scope can
    end the connection."""

    __slots__ = ("app", "devices", "registry", "rules")

    def __init__(self, app: AppRecord, registry: Directory) -> None:
        self.app = app
        self.registry = registry
        self.rules = app.acl or (DEFAULT_APP_RULES if app.everything else ())
        self.devices: set[str] = set()

    def _allowed(self, action: str, topic: str) -> bool | Deferred[bool]:
        if self.app.everything:
            return decide(self.rules, action, topic)
        split = tl.split_topic(topic)
        if split is None or "+" in split[0] or "#" in split[0]:
            return outside_devices(topic) and decide(self.rules, action, topic)
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


def inner(acl: Acl) -> Acl:
    """The ACL a deny list (EDGE_ACL_DENY) wraps, or ``acl`` itself."""
    return acl.inner if isinstance(acl, DenyListAcl) else acl


def device_of(connection: Client) -> DeviceAcl | None:
    acl = inner(connection.acl)
    return acl if isinstance(acl, DeviceAcl) else None


def registration_of(connection: Client) -> RegistrationAcl | None:
    acl = inner(connection.acl)
    return acl if isinstance(acl, RegistrationAcl) else None


def app_of(connection: Client) -> AppAcl | None:
    acl = inner(connection.acl)
    return acl if isinstance(acl, AppAcl) else None
