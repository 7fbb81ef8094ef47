"""Dynamic registration: a device connected as ``{product}&{device}`` (edge.thinglinks.auth)
sends one request on ``/v1/devices/{device}/register``; the edge emits a ``register`` event,
and webapp's answer comes back through this node's downlink with the token of the asking
connection. The answer (it carries the new secret) goes to that connection alone, never
through the broker's routing."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from edge.clock import now_ms
from edge.codecs import thinglinks as tl
from edge.mqtt.broker import Broker
from edge.mqtt.errors import Reason
from edge.mqtt.message import Message
from edge.mqtt.policy import Client

from .acl import RegistrationAcl, registration_of
from .interfaces import Clock, EventSink

log = Logger(namespace="edge")


class Registrations:
    """The registering connections of this node, one per device identifier (a newer one
    takes over), their requests and the answers to them."""

    def __init__(self, clock: Clock, sink: EventSink, node: str) -> None:
        self.clock = clock
        self.sink = sink
        self.node = node
        self.broker: Broker | None = None
        self.connections: dict[str, Client] = {}

    def connected(self, connection: Client, registration: RegistrationAcl) -> None:
        older = self.connections.get(registration.device)
        self.connections[registration.device] = connection
        if older is not None and older is not connection:
            older.close(Reason.SESSION_TAKEN_OVER, "takeover")

    def disconnected(self, connection: Client, registration: RegistrationAcl) -> None:
        if self.connections.get(registration.device) is connection:
            del self.connections[registration.device]

    def request(
        self, registration: RegistrationAcl, connection: Client, message: Message
    ) -> int | Deferred[int]:
        """A registering device's request (its only allowed topic): a ``register`` event that
        webapp answers on ``…/registerResponse`` through this node's downlink."""
        ts = now_ms(self.clock.seconds)
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
            self.answer(connection, Message(registration.answer, answer))
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
            self.sink.emit(event)
            return Reason.SUCCESS
        return self.sink.emit_confirmed([event]).addCallback(lambda _: Reason.SUCCESS)

    def answer(self, connection: Client, message: Message) -> bool:
        """Give a registration answer to the registering connection alone (when it
        subscribed to it), never through the broker's routing: nobody else hears a secret."""
        registration = registration_of(connection)
        if self.broker is None or registration is None:
            return False
        return self.broker.deliver_to(connection, registration.answer, message)

    def downlink(self, device: str, token: str, message: Message) -> tuple[bool, str | None]:
        """webapp's answer for ``device``: to the connection that asked (``token``), if it is
        still here; otherwise to nobody. Whether it reached it, and why not."""
        connection = self.connections.get(device)
        registration = registration_of(connection) if connection is not None else None
        if connection is None or registration is None or registration.token != token:
            return False, "the registering connection is gone"
        if not self.answer(connection, message):
            return False, "no subscriber"
        return True, None
