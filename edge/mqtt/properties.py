"""MQTT 5.0 properties (section 2.2.2): one immutable value with a field per property."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from enum import Enum
from typing import Any

from .errors import MalformedPacket, ProtocolError, QuotaExceeded, Reason
from .wire import Reader, encode_binary, encode_utf8, encode_vbi, u16, u32

# Packet type numbers (2.1.2); WILL stands for the will properties inside a CONNECT payload.
CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT, AUTH = range(8, 16)
WILL = 0


class Kind(Enum):
    BYTE = 1
    TWO = 2
    FOUR = 4
    VBI = 5
    UTF8 = 6
    BINARY = 7
    PAIR = 8


_ACKS = frozenset({PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK})

# identifier: (field name, kind, packet types that may carry it)
PROPERTY_TABLE: dict[int, tuple[str, Kind, frozenset[int]]] = {
    0x01: ("payload_format_indicator", Kind.BYTE, frozenset({PUBLISH, WILL})),
    0x02: ("message_expiry_interval", Kind.FOUR, frozenset({PUBLISH, WILL})),
    0x03: ("content_type", Kind.UTF8, frozenset({PUBLISH, WILL})),
    0x08: ("response_topic", Kind.UTF8, frozenset({PUBLISH, WILL})),
    0x09: ("correlation_data", Kind.BINARY, frozenset({PUBLISH, WILL})),
    0x0B: ("subscription_identifiers", Kind.VBI, frozenset({PUBLISH, SUBSCRIBE})),
    0x11: ("session_expiry_interval", Kind.FOUR, frozenset({CONNECT, CONNACK, DISCONNECT})),
    0x12: ("assigned_client_identifier", Kind.UTF8, frozenset({CONNACK})),
    0x13: ("server_keep_alive", Kind.TWO, frozenset({CONNACK})),
    0x15: ("authentication_method", Kind.UTF8, frozenset({CONNECT, CONNACK, AUTH})),
    0x16: ("authentication_data", Kind.BINARY, frozenset({CONNECT, CONNACK, AUTH})),
    0x17: ("request_problem_information", Kind.BYTE, frozenset({CONNECT})),
    0x18: ("will_delay_interval", Kind.FOUR, frozenset({WILL})),
    0x19: ("request_response_information", Kind.BYTE, frozenset({CONNECT})),
    0x1A: ("response_information", Kind.UTF8, frozenset({CONNACK})),
    0x1C: ("server_reference", Kind.UTF8, frozenset({CONNACK, DISCONNECT})),
    0x1F: ("reason_string", Kind.UTF8, _ACKS | {CONNACK, DISCONNECT, AUTH}),
    0x21: ("receive_maximum", Kind.TWO, frozenset({CONNECT, CONNACK})),
    0x22: ("topic_alias_maximum", Kind.TWO, frozenset({CONNECT, CONNACK})),
    0x23: ("topic_alias", Kind.TWO, frozenset({PUBLISH})),
    0x24: ("maximum_qos", Kind.BYTE, frozenset({CONNACK})),
    0x25: ("retain_available", Kind.BYTE, frozenset({CONNACK})),
    0x26: ("user_properties", Kind.PAIR, frozenset(range(0, 16)) - {PINGREQ, PINGRESP}),
    0x27: ("maximum_packet_size", Kind.FOUR, frozenset({CONNECT, CONNACK})),
    0x28: ("wildcard_subscription_available", Kind.BYTE, frozenset({CONNACK})),
    0x29: ("subscription_identifier_available", Kind.BYTE, frozenset({CONNACK})),
    0x2A: ("shared_subscription_available", Kind.BYTE, frozenset({CONNACK})),
}

# Properties whose value is a flag: anything but 0 or 1 is a protocol error.
_BOOLEAN = frozenset({0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A})
# Properties for which 0 is a protocol error.
_NON_ZERO = frozenset({0x0B, 0x21, 0x23, 0x27})


@dataclass(frozen=True, slots=True)
class Properties:
    """The properties of one packet; ``None`` (or empty) means absent."""

    payload_format_indicator: int | None = None
    message_expiry_interval: int | None = None
    content_type: str | None = None
    response_topic: str | None = None
    correlation_data: bytes | None = None
    subscription_identifiers: tuple[int, ...] = ()
    session_expiry_interval: int | None = None
    assigned_client_identifier: str | None = None
    server_keep_alive: int | None = None
    authentication_method: str | None = None
    authentication_data: bytes | None = None
    request_problem_information: int | None = None
    will_delay_interval: int | None = None
    request_response_information: int | None = None
    response_information: str | None = None
    server_reference: str | None = None
    reason_string: str | None = None
    receive_maximum: int | None = None
    topic_alias_maximum: int | None = None
    topic_alias: int | None = None
    maximum_qos: int | None = None
    retain_available: int | None = None
    user_properties: tuple[tuple[str, str], ...] = ()
    maximum_packet_size: int | None = None
    wildcard_subscription_available: int | None = None
    subscription_identifier_available: int | None = None
    shared_subscription_available: int | None = None

    def __bool__(self) -> bool:
        return self != NO_PROPERTIES

    def with_(self, **changes: Any) -> Properties:
        return replace(self, **changes)


NO_PROPERTIES = Properties()
_FIELD_NAMES = frozenset(f.name for f in fields(Properties))
assert {name for name, _, _ in PROPERTY_TABLE.values()} == _FIELD_NAMES


PropertyLimits = tuple[int, int] | None
"""``(most bytes, most user properties)`` a property block may hold (0: no limit), or None."""


def decode_properties(
    reader: Reader, packet_type: int, limits: PropertyLimits = None
) -> Properties:
    """Read a property length and the properties that follow it.

    ``limits`` bound what a server decodes for a client (M1: a CONNECT of 200,000 empty user
    properties cost half a second of CPU): over them, the packet is refused with 0x97 before
    the properties are read, or at the first user property too many.
    """
    length = reader.vbi()
    if length > reader.remaining():
        raise MalformedPacket("property length runs past the packet")
    if length == 0:
        return NO_PROPERTIES
    max_users = 0
    if limits is not None:
        max_bytes, max_users = limits
        if max_bytes and length > max_bytes:
            raise QuotaExceeded(f"{length} bytes of properties exceed {max_bytes}", "properties")
    end = reader.pos + length
    sub = Reader(reader.data, reader.pos, end)
    reader.pos = end
    values: dict[str, Any] = {}
    user_properties: list[tuple[str, str]] = []
    subscription_ids: list[int] = []
    while sub.remaining():
        ident = sub.vbi()
        entry = PROPERTY_TABLE.get(ident)
        if entry is None:
            raise MalformedPacket(f"unknown property identifier 0x{ident:02x}")
        name, kind, allowed = entry
        if packet_type not in allowed:
            raise MalformedPacket(f"property {name} is not allowed in this packet")
        value = _read_value(sub, kind)
        if ident in _BOOLEAN and value not in (0, 1):
            raise ProtocolError(f"property {name} must be 0 or 1")
        if ident in _NON_ZERO and value == 0:
            # A topic alias of 0 has its own reason code (3.3.2.3.4).
            code = Reason.TOPIC_ALIAS_INVALID if ident == 0x23 else None
            raise ProtocolError(f"property {name} must not be 0", code)
        if kind is Kind.PAIR:
            if max_users and len(user_properties) >= max_users:
                raise QuotaExceeded(f"more than {max_users} user properties", "properties")
            user_properties.append(value)
        elif ident == 0x0B:
            if subscription_ids and packet_type != PUBLISH:
                raise ProtocolError("subscription identifier given twice")
            subscription_ids.append(value)
        elif name in values:
            raise ProtocolError(f"property {name} given twice")
        else:
            values[name] = value
    if user_properties:
        values["user_properties"] = tuple(user_properties)
    if subscription_ids:
        values["subscription_identifiers"] = tuple(subscription_ids)
    return Properties(**values)


def _read_value(reader: Reader, kind: Kind) -> Any:
    if kind is Kind.BYTE:
        return reader.byte()
    if kind is Kind.TWO:
        return reader.u16()
    if kind is Kind.FOUR:
        return reader.u32()
    if kind is Kind.VBI:
        return reader.vbi()
    if kind is Kind.UTF8:
        return reader.utf8()
    if kind is Kind.BINARY:
        return reader.binary()
    return (reader.utf8(), reader.utf8())


def encode_properties(props: Properties) -> bytes:
    """The property length followed by the properties, in identifier order."""
    if props is NO_PROPERTIES:
        return b"\x00"
    out = bytearray()
    for ident, (name, kind, _) in PROPERTY_TABLE.items():
        value = getattr(props, name)
        if value is None or value == ():
            continue
        if kind is Kind.PAIR:
            for key, val in value:
                out.append(ident)
                out += encode_utf8(key) + encode_utf8(val)
        elif ident == 0x0B:
            for sub_id in value:
                out.append(ident)
                out += encode_vbi(sub_id)
        else:
            out.append(ident)
            out += _encode_value(kind, value)
    return encode_vbi(len(out)) + bytes(out)


def _encode_value(kind: Kind, value: Any) -> bytes:
    if kind is Kind.BYTE:
        return bytes((value,))
    if kind is Kind.TWO:
        return u16(value)
    if kind is Kind.FOUR:
        return u32(value)
    if kind is Kind.VBI:
        return encode_vbi(value)
    if kind is Kind.UTF8:
        return encode_utf8(value)
    return encode_binary(value)
