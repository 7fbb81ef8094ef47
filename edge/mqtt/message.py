"""The values the broker routes and queues: an application message, and a message sent at
QoS 1/2 and not yet acknowledged. Plain data, shared by the broker, the connections, the
session store (edge.bus.sessions) and the applications hooked into the broker."""

from __future__ import annotations

from .properties import NO_PROPERTIES, Properties


class Message:
    """An application message as the broker routes it (treated as immutable).

    A plain ``__slots__`` class rather than a frozen dataclass: one is built per PUBLISH, and
    frozen dataclasses are several times slower to construct.
    """

    __slots__ = (
        "expires_at",
        "frame4",
        "frame5",
        "origin",
        "payload",
        "properties",
        "qos",
        "retain",
        "topic",
    )

    def __init__(
        self,
        topic: str,
        payload: bytes,
        qos: int = 0,
        retain: bool = False,
        properties: Properties = NO_PROPERTIES,
        expires_at: float | None = None,
        origin: str | None = None,
    ) -> None:
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.properties = properties
        self.expires_at = expires_at
        self.origin = origin
        # The message as a QoS 0 PUBLISH without the retain flag, subscription identifiers
        # or topic alias, for MQTT 3.1.1 (frame4) and 5.0 (frame5) receivers: the received
        # bytes when they do, else encoded by the first receiver that needs it and shared by
        # the others (edge.mqtt.connection.MqttConnection.send_message). Only kept on QoS 0
        # messages without the retain flag, which are never queued nor retained.
        self.frame4: bytes | None = None
        self.frame5: bytes | None = None

    def __repr__(self) -> str:
        size = len(self.payload)
        return f"<Message {self.topic!r} qos={self.qos} retain={self.retain} {size} bytes>"


class Outgoing:
    """A QoS 1/2 message sent to a client and not yet fully acknowledged."""

    __slots__ = ("message", "qos", "released", "retain", "subscription_ids")

    def __init__(
        self, message: Message, qos: int, retain: bool, subscription_ids: tuple[int, ...]
    ) -> None:
        self.message = message
        self.qos = qos
        self.retain = retain
        self.subscription_ids = subscription_ids
        self.released = False  # QoS 2: PUBREC received, PUBREL sent
