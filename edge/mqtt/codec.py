"""Sans-I/O MQTT codec: bytes in, packets out (``Decoder``); packets in, bytes out (``encode``).

Nothing here does I/O or keeps time. The decoder accepts data in chunks of any size; any input
that is not a valid packet raises an :class:`~edge.mqtt.errors.MqttError` carrying the MQTT 5
reason code, after which the decoder must be discarded with its connection.
"""

from __future__ import annotations

from collections.abc import Iterator

from . import properties as P
from .errors import (
    MalformedPacket,
    MqttError,
    PacketTooLarge,
    ProtocolError,
    Reason,
    UnsupportedProtocolVersion,
)
from .packets import (
    MQTT_3_1,
    MQTT_3_1_1,
    MQTT_5,
    Auth,
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    PingReq,
    PingResp,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    Subscribe,
    Subscription,
    UnsubAck,
    Unsubscribe,
    Will,
)
from .properties import NO_PROPERTIES, Properties, decode_properties, encode_properties
from .wire import (
    MAX_VARIABLE_BYTE_INTEGER,
    Reader,
    decode_utf8,
    decode_vbi,
    encode_binary,
    encode_utf8,
    encode_vbi,
    u16,
)

MAX_PACKET_SIZE = 1 + 4 + MAX_VARIABLE_BYTE_INTEGER

# Reason codes each packet may carry in MQTT 5 (section 3.x.2.1); anything else is malformed.
CONNACK_REASONS = frozenset(
    {0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95,
     0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F}
)  # fmt: skip
PUBACK_REASONS = frozenset({0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99})
PUBREL_REASONS = frozenset({0x00, 0x92})
SUBACK_REASONS = frozenset({0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2})
UNSUBACK_REASONS = frozenset({0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91})
DISCONNECT_REASONS = frozenset(
    {0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94,
     0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2}
)  # fmt: skip
AUTH_REASONS = frozenset({0x00, 0x18, 0x19})
CONNACK_V311_CODES = frozenset(range(6))
SUBACK_V311_CODES = frozenset({0x00, 0x01, 0x02, 0x80})

_ACK_TYPES: dict[int, tuple[type[PubAck | PubRec | PubRel | PubComp], frozenset[int]]] = {
    P.PUBACK: (PubAck, PUBACK_REASONS),
    P.PUBREC: (PubRec, PUBACK_REASONS),
    P.PUBREL: (PubRel, PUBREL_REASONS),
    P.PUBCOMP: (PubComp, PUBREL_REASONS),
}


class Decoder:
    """Turns a byte stream into packets.

    ``version`` is the protocol level of the connection. A server-side decoder starts with
    ``None``: the first packet must then be a CONNECT, whose protocol level is adopted.

    A server bounds what a client may send before it is authenticated (M1): the CONNECT may
    not exceed ``max_connect_size`` bytes (0: ``max_packet_size``), and ``property_limits``
    bound the property block of every packet (``decode_properties``).
    """

    __slots__ = (
        "_buffer",
        "connect_level",
        "max_connect_size",
        "max_packet_size",
        "property_limits",
        "version",
    )

    def __init__(
        self,
        version: int | None = None,
        max_packet_size: int = MAX_PACKET_SIZE,
        max_connect_size: int = 0,
        property_limits: P.PropertyLimits = None,
    ) -> None:
        self._buffer = bytearray()
        self.version = version
        self.max_packet_size = max_packet_size
        self.max_connect_size = max_connect_size
        self.property_limits = property_limits
        # The protocol level a CONNECT announced, known even when the rest of it is invalid,
        # so that a server can answer a broken 5.0 CONNECT with a 5.0 CONNACK (4.13.1).
        self.connect_level: int | None = None

    def feed(self, data: bytes) -> Iterator[Packet]:
        """Add ``data`` and yield every packet that is now complete, in order; an invalid
        packet raises its error after the packets before it were yielded."""
        packets, error = self.decode_all(data)
        yield from packets
        if error is not None:
            raise error

    def decode_all(self, data: bytes) -> tuple[list[Packet], MqttError | None]:
        """Add ``data`` and decode every packet now complete in one pass over the bytes:
        the packets, in order, and the error of the first invalid packet (None when all
        were valid; nothing after an invalid packet is decoded).

        The hot path of the broker: a QoS 0 PUBLISH is read in the loop itself, and keeps
        its received bytes (``Publish.raw``) when a subscriber may get them unchanged.
        """
        buffer = self._buffer
        max_packet_size = self.max_packet_size
        out: list[Packet] = []
        if buffer:
            buffer += data
            have = len(buffer)
            if have < 2:
                return out, None
            try:
                length, start = decode_vbi(buffer, 1, have)
            except MqttError as exc:
                return out, exc
            if self.version is not None and have < start + length <= max_packet_size:
                return out, None  # the first packet is still incomplete: nothing copied
            data = bytes(buffer)
            buffer.clear()
        size = len(data)
        pos = 0
        append = out.append
        try:
            while size - pos >= 2:
                length = data[pos + 1]
                if length < 0x80:
                    start = pos + 2
                else:
                    length, start = decode_vbi(data, pos + 1, size)
                    if length < 0:
                        break
                end = start + length
                if end - pos > max_packet_size:
                    raise PacketTooLarge(
                        f"packet of {end - pos} bytes exceeds {max_packet_size}"
                    )
                version = self.version
                if version is None and self.max_connect_size and end - pos > self.max_connect_size:
                    # Refused from its fixed header; the level, when it came, says how to answer.
                    level_at = start + 6
                    if size > level_at and data[start : start + 6] == b"\x00\x04MQTT":
                        self.connect_level = data[level_at]
                    raise PacketTooLarge(
                        f"CONNECT of {end - pos} bytes exceeds {self.max_connect_size}"
                    )
                if end > size:
                    break
                first = data[pos]
                if first == 0x30 and version is not None and length >= 2:
                    # QoS 0, no retain, no DUP: the fields straight from the received bytes.
                    topic_end = start + 2 + ((data[start] << 8) | data[start + 1])
                    if topic_end <= end and version != MQTT_5:
                        try:
                            topic = data[start + 2 : topic_end].decode("utf-8")
                        except UnicodeDecodeError:
                            topic = ""
                        if topic and "\x00" not in topic and "+" not in topic and "#" not in topic:
                            append(
                                Publish(
                                    topic, data[topic_end:end], 0, False, False, None,
                                    NO_PROPERTIES, data[pos:end],
                                )
                            )  # fmt: skip
                            pos = end
                            continue
                    # Anything unusual (or MQTT 5 properties) takes the general path.
                    append(
                        _decode_publish(
                            0, data[start:end], version == MQTT_5, self.property_limits,
                            data[pos:end],
                        )
                    )  # fmt: skip
                else:
                    append(self._decode(first, data[start:end]))
                pos = end
        except MqttError as exc:
            return out, exc
        if pos < size:
            buffer += data[pos:] if pos else data
        return out, None

    def _decode(self, first: int, body: bytes) -> Packet:
        packet_type = first >> 4
        flags = first & 0x0F
        version = self.version
        if version is None:
            if packet_type != P.CONNECT:
                raise ProtocolError("the first packet must be CONNECT")
            if len(body) > 2:
                level_at = 2 + ((body[0] << 8) | body[1])
                if level_at < len(body):
                    self.connect_level = body[level_at]
            if flags:
                raise MalformedPacket("reserved flags set in the fixed header")
            connect = _decode_connect(Reader(body), self.property_limits)
            self.version = MQTT_5 if connect.protocol_level == MQTT_5 else MQTT_3_1_1
            return connect
        v5 = version == MQTT_5
        limits = self.property_limits
        if packet_type == P.PUBLISH:
            return _decode_publish(flags, body, v5, limits)
        expected_flags = 0x02 if packet_type in (P.PUBREL, P.SUBSCRIBE, P.UNSUBSCRIBE) else 0
        if flags != expected_flags:
            raise MalformedPacket("reserved flags in the fixed header have the wrong value")
        reader = Reader(body)
        packet: Packet
        if packet_type in _ACK_TYPES:
            packet = _decode_ack(packet_type, reader, v5, limits)
        elif packet_type == P.SUBSCRIBE:
            packet = _decode_subscribe(reader, v5, limits)
        elif packet_type == P.SUBACK:
            packet = _decode_suback(reader, v5)
        elif packet_type == P.UNSUBSCRIBE:
            packet = _decode_unsubscribe(reader, v5, limits)
        elif packet_type == P.UNSUBACK:
            packet = _decode_unsuback(reader, v5)
        elif packet_type in (P.PINGREQ, P.PINGRESP):
            packet = PingReq() if packet_type == P.PINGREQ else PingResp()
        elif packet_type == P.DISCONNECT:
            packet = _decode_disconnect(reader, v5, limits)
        elif packet_type == P.AUTH and v5:
            packet = _decode_auth(reader, limits)
        elif packet_type == P.CONNECT:
            packet = _decode_connect(reader, limits)
        elif packet_type == P.CONNACK:
            packet = _decode_connack(reader, v5)
        else:
            raise MalformedPacket(f"reserved packet type {packet_type}")
        if reader.remaining():
            raise MalformedPacket("bytes left over at the end of the packet")
        return packet


def check_topic_name(topic: str) -> None:
    """A Topic Name (4.7): no wildcards."""
    if "+" in topic or "#" in topic:
        raise ProtocolError("wildcard in a topic name", Reason.TOPIC_NAME_INVALID)


def _decode_connect(r: Reader, limits: P.PropertyLimits = None) -> Connect:
    name = r.utf8()
    level = r.byte()
    known = (name == "MQTT" and level in (MQTT_3_1_1, MQTT_5)) or (
        name == "MQIsdp" and level == MQTT_3_1
    )
    if not known:
        raise UnsupportedProtocolVersion(
            f"protocol {name!r} level {level} is not supported",
            level,
            mqtt=name in ("MQTT", "MQIsdp"),
        )
    v5 = level == MQTT_5
    flags = r.byte()
    if flags & 0x01:
        raise MalformedPacket("reserved CONNECT flag set")
    has_will = bool(flags & 0x04)
    will_qos = (flags >> 3) & 0x03
    will_retain = bool(flags & 0x20)
    has_password = bool(flags & 0x40)
    has_username = bool(flags & 0x80)
    if not has_will and (will_qos or will_retain):
        raise MalformedPacket("will QoS or retain set without a will")
    if will_qos == 3:
        raise MalformedPacket("will QoS 3")
    if has_password and not has_username and not v5:
        raise MalformedPacket("password without a user name")
    keep_alive = r.u16()
    props = decode_properties(r, P.CONNECT, limits) if v5 else NO_PROPERTIES
    client_id = r.utf8()
    will = None
    if has_will:
        will_props = decode_properties(r, P.WILL, limits) if v5 else NO_PROPERTIES
        will_topic = r.utf8()
        if not will_topic:
            raise ProtocolError("empty will topic", Reason.TOPIC_NAME_INVALID)
        check_topic_name(will_topic)
        will = Will(will_topic, r.binary(), will_qos, will_retain, will_props)
    username = r.utf8() if has_username else None
    password = r.binary() if has_password else None
    if r.remaining():
        raise MalformedPacket("bytes left over at the end of CONNECT")
    return Connect(
        client_id=client_id,
        protocol_level=level,
        clean_start=bool(flags & 0x02),
        keep_alive=keep_alive,
        username=username,
        password=password,
        will=will,
        properties=props,
    )


def _decode_connack(r: Reader, v5: bool) -> ConnAck:
    flags = r.byte()
    if flags & 0xFE:
        raise MalformedPacket("reserved CONNACK flags set")
    code = r.byte()
    if code not in (CONNACK_REASONS if v5 else CONNACK_V311_CODES):
        raise MalformedPacket(f"invalid CONNACK code 0x{code:02x}")
    props = decode_properties(r, P.CONNACK) if v5 else NO_PROPERTIES
    return ConnAck(code, bool(flags), props)


def _decode_publish(
    flags: int, body: bytes, v5: bool, limits: P.PropertyLimits = None, frame: bytes | None = None
) -> Publish:
    """A PUBLISH from its fixed header flags and body. ``frame``, the whole received packet
    of a QoS 0 PUBLISH without the retain flag, becomes ``raw`` when a subscriber of the same
    version may get it unchanged: no topic alias and no message expiry to count down."""
    # The hot path: read the fields straight from the body rather than through a Reader.
    qos = (flags >> 1) & 0x03
    if qos == 3:
        raise MalformedPacket("PUBLISH with QoS 3")
    dup = bool(flags & 0x08)
    if dup and not qos:
        raise MalformedPacket("DUP set on a QoS 0 PUBLISH")
    size = len(body)
    if size < 2:
        raise MalformedPacket("PUBLISH shorter than its topic length")
    pos = 2 + ((body[0] << 8) | body[1])
    if pos > size:
        raise MalformedPacket("topic name runs past the packet")
    topic = decode_utf8(body[2:pos])
    check_topic_name(topic)
    packet_id = None
    if qos:
        if pos + 2 > size:
            raise MalformedPacket("PUBLISH without its packet identifier")
        packet_id = (body[pos] << 8) | body[pos + 1]
        if not packet_id:
            raise MalformedPacket("packet identifier 0")
        pos += 2
    props = NO_PROPERTIES
    if v5:
        reader = Reader(body, pos)
        props = decode_properties(reader, P.PUBLISH, limits)
        pos = reader.pos
    if not topic and props.topic_alias is None:
        raise ProtocolError("empty topic name without a topic alias")
    if frame is not None and (
        props.topic_alias is not None or props.message_expiry_interval is not None
    ):
        frame = None
    return Publish(topic, body[pos:], qos, bool(flags & 0x01), dup, packet_id, props, frame)


def _packet_id(r: Reader) -> int:
    packet_id = r.u16()
    if not packet_id:
        raise MalformedPacket("packet identifier 0")
    return packet_id


def _decode_ack(
    packet_type: int, r: Reader, v5: bool, limits: P.PropertyLimits = None
) -> PubAck | PubRec | PubRel | PubComp:
    cls, allowed = _ACK_TYPES[packet_type]
    packet_id = _packet_id(r)
    code = 0
    props = NO_PROPERTIES
    if v5 and r.remaining():
        code = r.byte()
        if code not in allowed:
            raise MalformedPacket(f"invalid reason code 0x{code:02x}")
        if r.remaining():
            props = decode_properties(r, packet_type, limits)
    return cls(packet_id, code, props)


def _decode_subscribe(r: Reader, v5: bool, limits: P.PropertyLimits = None) -> Subscribe:
    packet_id = _packet_id(r)
    props = decode_properties(r, P.SUBSCRIBE, limits) if v5 else NO_PROPERTIES
    subscriptions = []
    while r.remaining():
        topic_filter = r.utf8()
        options = r.byte()
        qos = options & 0x03
        if qos == 3:
            raise MalformedPacket("subscription with QoS 3")
        if v5:
            if options & 0xC0:
                raise MalformedPacket("reserved subscription option bits set")
            retain_handling = (options >> 4) & 0x03
            if retain_handling == 3:
                raise ProtocolError("retain handling 3")
            subscriptions.append(
                Subscription(
                    topic_filter, qos, bool(options & 0x04), bool(options & 0x08), retain_handling
                )
            )
        else:
            if options & 0xFC:
                raise MalformedPacket("reserved subscription option bits set")
            subscriptions.append(Subscription(topic_filter, qos))
    if not subscriptions:
        raise ProtocolError("SUBSCRIBE without a topic filter")
    return Subscribe(packet_id, tuple(subscriptions), props)


def _decode_suback(r: Reader, v5: bool) -> SubAck:
    packet_id = _packet_id(r)
    props = decode_properties(r, P.SUBACK) if v5 else NO_PROPERTIES
    codes = tuple(r.rest())
    allowed = SUBACK_REASONS if v5 else SUBACK_V311_CODES
    if not codes or any(code not in allowed for code in codes):
        raise MalformedPacket("invalid SUBACK return codes")
    return SubAck(packet_id, codes, props)


def _decode_unsubscribe(r: Reader, v5: bool, limits: P.PropertyLimits = None) -> Unsubscribe:
    packet_id = _packet_id(r)
    props = decode_properties(r, P.UNSUBSCRIBE, limits) if v5 else NO_PROPERTIES
    filters = []
    while r.remaining():
        filters.append(r.utf8())
    if not filters:
        raise ProtocolError("UNSUBSCRIBE without a topic filter")
    return Unsubscribe(packet_id, tuple(filters), props)


def _decode_unsuback(r: Reader, v5: bool) -> UnsubAck:
    packet_id = _packet_id(r)
    if not v5:
        return UnsubAck(packet_id)
    props = decode_properties(r, P.UNSUBACK)
    codes = tuple(r.rest())
    if not codes or any(code not in UNSUBACK_REASONS for code in codes):
        raise MalformedPacket("invalid UNSUBACK reason codes")
    return UnsubAck(packet_id, codes, props)


def _decode_disconnect(r: Reader, v5: bool, limits: P.PropertyLimits = None) -> Disconnect:
    if not v5 or not r.remaining():
        return Disconnect()
    code = r.byte()
    if code not in DISCONNECT_REASONS:
        raise MalformedPacket(f"invalid DISCONNECT reason code 0x{code:02x}")
    props = decode_properties(r, P.DISCONNECT, limits) if r.remaining() else NO_PROPERTIES
    return Disconnect(code, props)


def _decode_auth(r: Reader, limits: P.PropertyLimits = None) -> Auth:
    if not r.remaining():
        return Auth()
    code = r.byte()
    if code not in AUTH_REASONS:
        raise MalformedPacket(f"invalid AUTH reason code 0x{code:02x}")
    props = decode_properties(r, P.AUTH, limits) if r.remaining() else NO_PROPERTIES
    return Auth(code, props)


# --- encoding ------------------------------------------------------------------------------


def _frame(first: int, body: bytes) -> bytes:
    return bytes((first,)) + encode_vbi(len(body)) + body


def encode(packet: Packet, version: int = MQTT_3_1_1) -> bytes:
    """The bytes of ``packet`` for a connection of protocol level ``version``."""
    v5 = version == MQTT_5
    if isinstance(packet, Publish):
        return encode_publish(packet, v5)
    if isinstance(packet, PubAck | PubRec | PubRel | PubComp):
        first = _ACK_FIRST_BYTE[type(packet)]
        tail = _reason_and_props(packet.reason_code, packet.properties, v5)
        return _frame(first, u16(packet.packet_id) + tail)
    if isinstance(packet, Subscribe):
        body = bytearray(u16(packet.packet_id))
        if v5:
            body += encode_properties(packet.properties)
        for sub in packet.subscriptions:
            options = sub.qos
            if v5:
                options |= sub.no_local << 2 | sub.retain_as_published << 3
                options |= sub.retain_handling << 4
            body += encode_utf8(sub.topic_filter) + bytes((options,))
        return _frame(0x82, bytes(body))
    if isinstance(packet, SubAck):
        props = encode_properties(packet.properties) if v5 else b""
        return _frame(0x90, u16(packet.packet_id) + props + bytes(packet.reason_codes))
    if isinstance(packet, Unsubscribe):
        props = encode_properties(packet.properties) if v5 else b""
        filters = b"".join(encode_utf8(f) for f in packet.topic_filters)
        return _frame(0xA2, u16(packet.packet_id) + props + filters)
    if isinstance(packet, UnsubAck):
        tail = encode_properties(packet.properties) + bytes(packet.reason_codes) if v5 else b""
        return _frame(0xB0, u16(packet.packet_id) + tail)
    if isinstance(packet, PingReq):
        return b"\xc0\x00"
    if isinstance(packet, PingResp):
        return b"\xd0\x00"
    if isinstance(packet, Disconnect):
        return _frame(0xE0, _reason_and_props(packet.reason_code, packet.properties, v5))
    if isinstance(packet, Auth):
        return _frame(0xF0, _reason_and_props(packet.reason_code, packet.properties, True))
    if isinstance(packet, ConnAck):
        props = encode_properties(packet.properties) if v5 else b""
        return _frame(0x20, bytes((int(packet.session_present), packet.reason_code)) + props)
    return _encode_connect(packet)


_ACK_FIRST_BYTE: dict[type, int] = {PubAck: 0x40, PubRec: 0x50, PubRel: 0x62, PubComp: 0x70}


def _reason_and_props(code: int, props: Properties, v5: bool) -> bytes:
    """The optional reason code and properties of acks, DISCONNECT and AUTH (3.4.2.1)."""
    if not v5 or (code == 0 and props is NO_PROPERTIES):
        return b""
    if props is NO_PROPERTIES:
        return bytes((code,))
    return bytes((code,)) + encode_properties(props)


def encode_publish(packet: Publish, v5: bool) -> bytes:
    return encode_publish_fields(
        packet.topic,
        packet.payload,
        packet.qos,
        packet.retain,
        packet.dup,
        packet.packet_id,
        packet.properties,
        v5,
    )


def encode_publish_fields(
    topic: str,
    payload: bytes,
    qos: int,
    retain: bool,
    dup: bool,
    packet_id: int | None,
    props: Properties,
    v5: bool,
) -> bytes:
    """A PUBLISH from its fields (the broker's send path builds no packet object)."""
    raw_topic = topic.encode("utf-8")
    parts = [len(raw_topic).to_bytes(2, "big"), raw_topic]
    if qos:
        if not packet_id:
            raise ValueError("a QoS 1 or 2 PUBLISH needs a packet identifier")
        parts.append(packet_id.to_bytes(2, "big"))
    if v5:
        parts.append(b"\x00" if props is NO_PROPERTIES else encode_properties(props))
    parts.append(payload)
    body = b"".join(parts)
    first = 0x30 | (dup << 3) | (qos << 1) | retain
    return bytes((first,)) + encode_vbi(len(body)) + body


def _encode_connect(packet: Connect) -> bytes:
    v5 = packet.protocol_level == MQTT_5
    will = packet.will
    flags = packet.clean_start << 1
    flags |= (packet.username is not None) << 7 | (packet.password is not None) << 6
    if will is not None:
        flags |= 0x04 | (will.qos << 3) | (will.retain << 5)
    body = bytearray(encode_utf8(packet.protocol_name))
    body += bytes((packet.protocol_level, flags)) + u16(packet.keep_alive)
    if v5:
        body += encode_properties(packet.properties)
    body += encode_utf8(packet.client_id)
    if will is not None:
        if v5:
            body += encode_properties(will.properties)
        body += encode_utf8(will.topic) + encode_binary(will.payload)
    if packet.username is not None:
        body += encode_utf8(packet.username)
    if packet.password is not None:
        body += encode_binary(packet.password)
    return _frame(0x10, bytes(body))


__all__ = [
    "MAX_PACKET_SIZE",
    "Decoder",
    "check_topic_name",
    "decode_utf8",
    "encode",
    "encode_publish",
    "encode_publish_fields",
]
