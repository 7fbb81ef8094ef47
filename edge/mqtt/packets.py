"""MQTT control packets as small immutable values, shared by versions 3.1.1 and 5.0.

The same value is encoded for either version: fields that a version does not have (properties
and reason codes in 3.1.1) are left out by the encoder.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .properties import NO_PROPERTIES, Properties

MQTT_3_1 = 3
MQTT_3_1_1 = 4
MQTT_5 = 5


@dataclass(frozen=True, slots=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class Connect:
    client_id: str
    protocol_level: int = MQTT_3_1_1
    clean_start: bool = True
    keep_alive: int = 60
    username: str | None = None
    password: bytes | None = None
    will: Will | None = None
    properties: Properties = NO_PROPERTIES

    @property
    def protocol_name(self) -> str:
        return "MQIsdp" if self.protocol_level == MQTT_3_1 else "MQTT"


@dataclass(frozen=True, slots=True)
class ConnAck:
    reason_code: int = 0
    session_present: bool = False
    properties: Properties = NO_PROPERTIES


@dataclass(slots=True, unsafe_hash=True)
class Publish:
    """A PUBLISH (treated as immutable, like the other packets).

    Not frozen: one is decoded per received message, and a frozen dataclass's ``__init__``
    (an ``object.__setattr__`` per field) was a tenth of the broker's fan-in CPU.

    ``raw`` is set by the decoder on a QoS 0 PUBLISH without the retain flag whose received
    bytes a subscriber of the same protocol version may get unchanged (no topic alias, no
    message expiry): the whole packet, fixed header included. It is not part of the value
    (not compared, not shown) and never encoded: ``encode`` always builds the bytes from the
    fields.
    """

    topic: str
    payload: bytes = b""
    qos: int = 0
    retain: bool = False
    dup: bool = False
    packet_id: int | None = None
    properties: Properties = NO_PROPERTIES
    raw: bytes | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class PubAck:
    packet_id: int
    reason_code: int = 0
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class PubRec:
    packet_id: int
    reason_code: int = 0
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class PubRel:
    packet_id: int
    reason_code: int = 0
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class PubComp:
    packet_id: int
    reason_code: int = 0
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class Subscription:
    topic_filter: str
    qos: int = 0
    no_local: bool = False
    retain_as_published: bool = False
    retain_handling: int = 0


@dataclass(frozen=True, slots=True)
class Subscribe:
    packet_id: int
    subscriptions: tuple[Subscription, ...]
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class SubAck:
    packet_id: int
    reason_codes: tuple[int, ...]
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    packet_id: int
    topic_filters: tuple[str, ...]
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class UnsubAck:
    packet_id: int
    reason_codes: tuple[int, ...] = ()
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class PingReq:
    pass


@dataclass(frozen=True, slots=True)
class PingResp:
    pass


@dataclass(frozen=True, slots=True)
class Disconnect:
    reason_code: int = 0
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class Auth:
    reason_code: int = 0
    properties: Properties = NO_PROPERTIES


Packet = (
    Connect
    | ConnAck
    | Publish
    | PubAck
    | PubRec
    | PubRel
    | PubComp
    | Subscribe
    | SubAck
    | Unsubscribe
    | UnsubAck
    | PingReq
    | PingResp
    | Disconnect
    | Auth
)
