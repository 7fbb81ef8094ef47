"""What the platform sends devices: each ``tl:down:{node}`` entry (docs/bus.md) is published
through the broker (a registration answer goes to the asking connection only; a device served
by another transport gets it through its endpoint, :mod:`edge.thinglinks.endpoints`) and
written to the message log, with why it reached nobody."""

from __future__ import annotations

from edge.clock import now_ms
from edge.codecs import thinglinks as tl
from edge.mqtt.broker import Broker
from edge.mqtt.message import Message

from .endpoints import Downlink as DeviceDownlink
from .endpoints import Endpoints, Queued
from .interfaces import Clock, EventSink
from .registration import Registrations


class Downlink:
    def __init__(
        self,
        clock: Clock,
        sink: EventSink,
        registrations: Registrations,
        endpoints: Endpoints | None = None,
    ) -> None:
        self.clock = clock
        self.sink = sink
        self.registrations = registrations
        # Devices on this node served by HTTP, CoAP, raw TCP or UDP: their messages go to
        # their endpoint, not through the broker (they have no MQTT subscription).
        self.endpoints = endpoints
        self.broker: Broker | None = None

    def deliver(self, fields: dict[bytes, bytes]) -> None:
        """Publish one downlink entry through the broker and log it."""
        assert self.broker is not None
        topic = fields.get(b"topic", b"").decode("utf-8", "replace")
        payload = fields.get(b"payload", b"")
        try:
            qos = min(max(int(fields.get(b"qos", b"0")), 0), 2)
        except ValueError:
            qos = 0
        split = tl.split_topic(topic)
        device = fields.get(b"dev", b"").decode("utf-8", "replace") or (split[0] if split else "")
        ts = now_ms(self.clock.seconds)
        if not topic or "+" in topic or "#" in topic:
            self.sink.emit(tl.log_event(device, "down", topic, payload, False, "invalid topic", ts))
            return
        if split is not None and split[1] == tl.REGISTER_RESPONSE:
            token = fields.get(b"conn", b"").decode("ascii", "replace")
            reached, reason = self.registrations.downlink(
                split[0], token, Message(topic, payload, qos)
            )
        elif split is not None and self.endpoints is not None and split[0] in self.endpoints:
            reason = self.endpoints.deliver(split[0], DeviceDownlink(split[1], payload))
            # A queued message is no failure: it goes out when the device next asks.
            reached = reason is None or isinstance(reason, Queued)
        else:
            reached = self.broker.publish(Message(topic, payload, qos)) > 0
            reason = None if reached else "no subscriber"
        logged = tl.redacted(topic, payload)
        self.sink.emit(tl.log_event(device, "down", topic, logged, reached, reason, ts))
