"""The sans-I/O MQTT codec, byte by byte, for protocol levels 4 (3.1.1) and 5."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.mqtt.codec import Decoder, encode
from edge.mqtt.errors import (
    MalformedPacket,
    MqttError,
    PacketTooLarge,
    ProtocolError,
    Reason,
    UnsupportedProtocolVersion,
)
from edge.mqtt.packets import (
    MQTT_3_1_1,
    MQTT_5,
    Auth,
    ConnAck,
    Connect,
    Disconnect,
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
from edge.mqtt.properties import Properties
from edge.mqtt.wire import decode_vbi, encode_utf8, encode_vbi

FULL_PROPS = Properties(
    payload_format_indicator=1,
    message_expiry_interval=3600,
    content_type="application/json",
    response_topic="reply/here",
    correlation_data=b"\x00\x01corr",
    subscription_identifiers=(1, 268_435_455),
    topic_alias=7,
    user_properties=(("k", "v"), ("k", "v2"), ("ключ", "值")),
)

V311_PACKETS = [
    Connect("c1"),
    Connect("", clean_start=False, keep_alive=0),
    Connect(
        "dev-001",
        keep_alive=30,
        username="dev-001",
        password=b"s3cr3t\x00\xff",
        will=Will("/v1/devices/dev-001/status", b"gone", qos=1, retain=True),
    ),
    Connect("legacy", protocol_level=3, username="u"),
    ConnAck(0, session_present=True),
    ConnAck(5),
    Publish("a/b", b"hello"),
    Publish("a/b", b"", qos=1, packet_id=1, retain=True),
    Publish("a/b", b"x" * 300, qos=2, packet_id=65535, dup=True),
    Publish("ü/€/𝄞", b"\x00\xff"),
    PubAck(1),
    PubRec(2),
    PubRel(3),
    PubComp(65535),
    Subscribe(10, (Subscription("a/+/c", 1), Subscription("#", 2), Subscription("x", 0))),
    SubAck(10, (0, 1, 2, 0x80)),
    Unsubscribe(11, ("a/+/c", "#")),
    UnsubAck(11),
    PingReq(),
    PingResp(),
    Disconnect(),
]

V5_PACKETS = [
    Connect("c5", protocol_level=MQTT_5),
    Connect(
        "c5",
        protocol_level=MQTT_5,
        clean_start=False,
        keep_alive=120,
        password=b"pw-without-user",
        properties=Properties(
            session_expiry_interval=0xFFFFFFFF,
            receive_maximum=20,
            maximum_packet_size=1024,
            topic_alias_maximum=10,
            request_response_information=1,
            request_problem_information=0,
            authentication_method="SCRAM",
            authentication_data=b"\x01\x02",
            user_properties=(("a", "b"),),
        ),
        will=Will(
            "will/topic",
            b"bye",
            qos=2,
            properties=Properties(
                will_delay_interval=5,
                payload_format_indicator=0,
                message_expiry_interval=10,
                content_type="text/plain",
                response_topic="r",
                correlation_data=b"c",
            ),
        ),
    ),
    ConnAck(
        0,
        True,
        Properties(
            session_expiry_interval=60,
            assigned_client_identifier="auto-1",
            server_keep_alive=30,
            response_information="resp/",
            server_reference="other:1883",
            reason_string="fine",
            receive_maximum=100,
            topic_alias_maximum=5,
            maximum_qos=1,
            retain_available=1,
            maximum_packet_size=65536,
            wildcard_subscription_available=1,
            subscription_identifier_available=0,
            shared_subscription_available=1,
            authentication_method="m",
            authentication_data=b"d",
        ),
    ),
    ConnAck(Reason.BANNED),
    Publish("t", b"p", qos=1, packet_id=5, properties=FULL_PROPS),
    Publish("", b"aliased", properties=Properties(topic_alias=3)),
    PubAck(1),
    PubAck(1, Reason.PAYLOAD_FORMAT_INVALID),
    PubAck(1, Reason.NOT_AUTHORIZED, Properties(reason_string="no", user_properties=(("a", "b"),))),
    PubRec(2, Reason.NO_MATCHING_SUBSCRIBERS),
    PubRel(3, Reason.PACKET_IDENTIFIER_NOT_FOUND),
    PubComp(4, 0, Properties(reason_string="ok")),
    Subscribe(
        9,
        (
            Subscription("a/#", 2, no_local=True, retain_as_published=True, retain_handling=2),
            Subscription("$share/g/x", 1, retain_handling=1),
        ),
        Properties(subscription_identifiers=(42,)),
    ),
    SubAck(9, (2, 0x87, 0x8F), Properties(reason_string="partly")),
    Unsubscribe(12, ("a/#",), Properties(user_properties=(("u", "p"),))),
    UnsubAck(12, (0, 0x11)),
    PingReq(),
    PingResp(),
    Disconnect(),
    Disconnect(Reason.DISCONNECT_WITH_WILL),
    Disconnect(
        Reason.SESSION_TAKEN_OVER, Properties(session_expiry_interval=0, reason_string="bye")
    ),
    Auth(),
    Auth(
        Reason.CONTINUE_AUTHENTICATION,
        Properties(authentication_method="m", authentication_data=b"x"),
    ),
]


def decode_all(data: bytes, version: int | None) -> list:
    decoder = Decoder(version)
    return list(decoder.feed(data))


@pytest.mark.parametrize(
    ("version", "packet"),
    [(MQTT_3_1_1, p) for p in V311_PACKETS] + [(MQTT_5, p) for p in V5_PACKETS],
    ids=lambda v: type(v).__name__ if not isinstance(v, int) else f"v{v}",
)
def test_round_trip_split_at_every_byte(version, packet):
    """Every packet survives encode → decode, whole and split at every byte boundary."""
    data = encode(packet, version)
    decoder_version = None if isinstance(packet, Connect) else version
    assert decode_all(data, decoder_version) == [packet]
    for cut in range(1, len(data)):
        decoder = Decoder(decoder_version)
        first = list(decoder.feed(data[:cut]))
        second = list(decoder.feed(data[cut:]))
        assert first + second == [packet]


def test_byte_by_byte_stream_of_many_packets():
    """A session's worth of packets fed one byte at a time comes out whole and in order."""
    packets = [Connect("c", protocol_level=MQTT_5), *V5_PACKETS[4:]]
    stream = b"".join(encode(p, MQTT_5) for p in packets)
    decoder = Decoder()
    out = []
    for i in range(len(stream)):
        out.extend(decoder.feed(stream[i : i + 1]))
    assert out == packets
    assert decoder.version == MQTT_5


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, b"\x00"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (16_383, b"\xff\x7f"),
        (16_384, b"\x80\x80\x01"),
        (2_097_151, b"\xff\xff\x7f"),
        (2_097_152, b"\x80\x80\x80\x01"),
        (268_435_455, b"\xff\xff\xff\x7f"),
    ],
)
def test_variable_byte_integer_table(value, encoded):
    """The spec's table of variable byte integer sizes (1.5.5)."""
    assert encode_vbi(value) == encoded
    assert decode_vbi(encoded, 0, len(encoded)) == (value, len(encoded))


def test_variable_byte_integer_limits():
    """Five bytes and non-minimal encodings are malformed; values past the limit don't encode."""
    with pytest.raises(MalformedPacket):
        decode_vbi(b"\xff\xff\xff\xff\x7f", 0, 5)
    with pytest.raises(MalformedPacket):
        decode_vbi(b"\x80\x00", 0, 2)
    with pytest.raises(ValueError):
        encode_vbi(268_435_456)
    assert decode_vbi(b"\x80\x80", 0, 2) == (-1, 0)


def test_utf8_example_from_spec():
    """'A𪛔' is encoded as 00 05 41 F0 AA 9B 94 (1.5.4, figure 1-3)."""
    assert encode_utf8("A\U0002a6d4") == bytes.fromhex("000541f0aa9b94")


def test_spec_connect_variable_header_v311():
    """The 3.1.1 CONNECT variable header example (3.1.2.10): flags CE, keep alive 10."""
    data = bytes.fromhex("00044d5154540 4ce000a".replace(" ", ""))
    payload = (
        encode_utf8("cid") + encode_utf8("wt") + b"\x00\x01w" + encode_utf8("u") + b"\x00\x02pw"
    )
    body = data + payload
    (packet,) = decode_all(bytes((0x10, len(body))) + body, None)
    assert packet == Connect(
        "cid", keep_alive=10, username="u", password=b"pw", will=Will("wt", b"w", qos=1)
    )


def test_spec_connect_variable_header_v5():
    """The 5.0 CONNECT variable header example (3.1.2.11): session expiry interval 10."""
    header = bytes.fromhex("00044d51545405c2000a0511 0000000a".replace(" ", ""))
    body = header + encode_utf8("c") + encode_utf8("u") + b"\x00\x01p"
    (packet,) = decode_all(bytes((0x10, len(body))) + body, None)
    assert packet.properties.session_expiry_interval == 10
    assert (packet.keep_alive, packet.username, packet.password) == (10, "u", b"p")


def test_known_short_packets():
    """Fixed byte forms of the small packets."""
    assert encode(PingReq()) == b"\xc0\x00"
    assert encode(PubAck(1), MQTT_5) == b"\x40\x02\x00\x01"
    assert encode(PubAck(1, 0x99), MQTT_5) == b"\x40\x03\x00\x01\x99"
    assert encode(PubAck(1, 0x99), MQTT_3_1_1) == b"\x40\x02\x00\x01"
    assert encode(Disconnect(), MQTT_5) == b"\xe0\x00"
    assert encode(ConnAck(0x86), MQTT_5) == b"\x20\x03\x00\x86\x00"
    assert encode(ConnAck(4), MQTT_3_1_1) == b"\x20\x02\x00\x04"
    assert decode_all(b"\x40\x02\x00\x07", MQTT_5) == [PubAck(7)]
    assert decode_all(b"\xe0\x01\x8e", MQTT_5) == [Disconnect(0x8E)]


@pytest.mark.parametrize(
    ("data", "version", "error", "reason"),
    [
        (b"\x20\x02\x00\x00", None, ProtocolError, Reason.PROTOCOL_ERROR),
        (b"\x00\x00", MQTT_3_1_1, MalformedPacket, Reason.MALFORMED_PACKET),
        (b"\xf0\x00", MQTT_3_1_1, MalformedPacket, Reason.MALFORMED_PACKET),
        (b"\xc1\x00", MQTT_3_1_1, MalformedPacket, Reason.MALFORMED_PACKET),
        (b"\xc0\x01\x00", MQTT_3_1_1, MalformedPacket, Reason.MALFORMED_PACKET),
        (b"\x80\x05\x00\x01\x00\x01a", MQTT_3_1_1, MalformedPacket, Reason.MALFORMED_PACKET),
        (b"\x82\x02\x00\x01", MQTT_3_1_1, ProtocolError, Reason.PROTOCOL_ERROR),
        (b"\x82\x06\x00\x01\x00\x01a\x04", MQTT_3_1_1, MalformedPacket, Reason.MALFORMED_PACKET),
        (b"\x82\x07\x00\x01\x00\x00\x01a\x30", MQTT_5, ProtocolError, Reason.PROTOCOL_ERROR),
        (b"\x82\x07\x00\x01\x00\x00\x01a\x03", MQTT_5, MalformedPacket, Reason.MALFORMED_PACKET),
        (b"\x36\x05\x00\x01a\x00\x01", MQTT_3_1_1, MalformedPacket, Reason.MALFORMED_PACKET),
        (b"\x38\x03\x00\x01a", MQTT_3_1_1, MalformedPacket, Reason.MALFORMED_PACKET),
        (b"\x32\x05\x00\x01a\x00\x00", MQTT_3_1_1, MalformedPacket, Reason.MALFORMED_PACKET),
        (b"\x30\x03\x00\x01+", MQTT_3_1_1, ProtocolError, Reason.TOPIC_NAME_INVALID),
        (b"\x30\x02\x00\x00", MQTT_3_1_1, ProtocolError, Reason.PROTOCOL_ERROR),
        (b"\x30\x04\x00\x01\x00x", MQTT_3_1_1, MalformedPacket, Reason.MALFORMED_PACKET),
        (b"\x30\x05\x00\x02\xed\xa0x", MQTT_3_1_1, MalformedPacket, Reason.MALFORMED_PACKET),
        (b"\x30\x04\x00\x02\xc0\xaf", MQTT_3_1_1, MalformedPacket, Reason.MALFORMED_PACKET),
        (b"\x40\x02\x00\x00", MQTT_3_1_1, MalformedPacket, Reason.MALFORMED_PACKET),
        (b"\x40\x03\x00\x01\x05", MQTT_5, MalformedPacket, Reason.MALFORMED_PACKET),
        (b"\x40\x03\x00\x01\x00", MQTT_3_1_1, MalformedPacket, Reason.MALFORMED_PACKET),
        # a property that PUBLISH may not carry (session expiry interval)
        (
            b"\x30\x09\x00\x01a\x05\x11\x00\x00\x00\x01",
            MQTT_5,
            MalformedPacket,
            Reason.MALFORMED_PACKET,
        ),
        # an unknown property identifier
        (b"\x30\x06\x00\x01a\x02\x7f\x00", MQTT_5, MalformedPacket, Reason.MALFORMED_PACKET),
        # the same property twice
        (b"\x30\x08\x00\x01a\x04\x01\x00\x01\x01", MQTT_5, ProtocolError, Reason.PROTOCOL_ERROR),
        # payload format indicator 2, topic alias 0
        (b"\x30\x06\x00\x01a\x02\x01\x02", MQTT_5, ProtocolError, Reason.PROTOCOL_ERROR),
        (b"\x30\x07\x00\x01a\x03\x23\x00\x00", MQTT_5, ProtocolError, Reason.TOPIC_ALIAS_INVALID),
        # property length beyond the packet
        (b"\x30\x05\x00\x01a\x09\x01", MQTT_5, MalformedPacket, Reason.MALFORMED_PACKET),
        # empty topic without an alias
        (b"\x30\x03\x00\x00\x00", MQTT_5, ProtocolError, Reason.PROTOCOL_ERROR),
        # two subscription identifiers in SUBSCRIBE
        (
            b"\x82\x0b\x00\x01\x04\x0b\x01\x0b\x02\x00\x01a\x00",
            MQTT_5,
            ProtocolError,
            Reason.PROTOCOL_ERROR,
        ),
        (b"\xe0\x01\x05", MQTT_5, MalformedPacket, Reason.MALFORMED_PACKET),
        (b"\x30\xff\xff\xff\xff\x7f", MQTT_3_1_1, MalformedPacket, Reason.MALFORMED_PACKET),
    ],
)
def test_invalid_packets_carry_reason_codes(data, version, error, reason):
    """Each violation raises the codec error with the reason code the server sends back."""
    with pytest.raises(error) as excinfo:
        decode_all(data, version)
    assert excinfo.value.reason == reason


def connect_bytes(name: bytes, level: int, flags: int, tail: bytes = b"\x00\x01c") -> bytes:
    body = len(name).to_bytes(2, "big") + name + bytes((level, flags)) + b"\x00\x3c" + tail
    return bytes((0x10, len(body))) + body


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (connect_bytes(b"MQTT", 6, 2), UnsupportedProtocolVersion),
        (connect_bytes(b"MQTX", 4, 2), UnsupportedProtocolVersion),
        (connect_bytes(b"MQTT", 4, 3), MalformedPacket),
        (connect_bytes(b"MQTT", 4, 0x10), MalformedPacket),
        (connect_bytes(b"MQTT", 4, 0x1C), MalformedPacket),
        (connect_bytes(b"MQTT", 4, 0x42, b"\x00\x01c\x00\x01p"), MalformedPacket),
        (connect_bytes(b"MQTT", 4, 0x02, b"\x00\x01cX"), MalformedPacket),
        (connect_bytes(b"MQTT", 4, 0x06, b"\x00\x01c\x00\x01#\x00\x00"), ProtocolError),
    ],
)
def test_invalid_connect(data, error):
    """Bad protocol names/levels, reserved flags and will rules."""
    with pytest.raises(error):
        decode_all(data, None)


def test_unsupported_version_reports_level():
    """The error tells the broker which level the client asked for."""
    with pytest.raises(UnsupportedProtocolVersion) as excinfo:
        decode_all(connect_bytes(b"MQTT", 6, 2), None)
    assert excinfo.value.level == 6
    assert excinfo.value.reason == Reason.UNSUPPORTED_PROTOCOL_VERSION


def test_maximum_packet_size_checked_from_the_header():
    """An oversized packet is refused as soon as its fixed header is read, not buffered."""
    decoder = Decoder(MQTT_5, max_packet_size=100)
    with pytest.raises(PacketTooLarge) as excinfo:
        list(decoder.feed(b"\x30\xe8\x07"))
    assert excinfo.value.reason == Reason.PACKET_TOO_LARGE


def test_version_adopted_from_connect():
    """A server-side decoder reads later packets in the CONNECT's protocol level."""
    data = encode(Connect("c", protocol_level=MQTT_5), MQTT_5) + encode(PubAck(3, 0x10), MQTT_5)
    assert decode_all(data, None) == [Connect("c", protocol_level=MQTT_5), PubAck(3, 0x10)]


# --- fuzzing -------------------------------------------------------------------------------

ALL_SAMPLES = [encode(p, MQTT_3_1_1) for p in V311_PACKETS] + [
    encode(p, MQTT_5) for p in V5_PACKETS
]


def _feed_everything(data: bytes, version: int | None) -> None:
    decoder = Decoder(version, max_packet_size=4096)
    with contextlib.suppress(MqttError):
        list(decoder.feed(data))


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.binary(max_size=300), st.sampled_from([None, MQTT_3_1_1, MQTT_5]))
def test_fuzz_random_bytes(data, version):
    """Random bytes never raise anything but the codec's errors."""
    _feed_everything(data, version)


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    st.sampled_from(ALL_SAMPLES),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4),
    st.sampled_from([None, MQTT_3_1_1, MQTT_5]),
    st.integers(0, 3),
)
def test_fuzz_mutated_packets(sample, mutations, version, truncate):
    """Valid packets with bytes flipped or cut never raise anything but the codec's errors."""
    data = bytearray(sample)
    for position, value in mutations:
        data[position % len(data)] = value
    if truncate:
        del data[-truncate:]
    _feed_everything(bytes(data), version)
    # Whatever decodes must encode again without error.
    decoder = Decoder(version)
    try:
        packets = list(decoder.feed(bytes(data)))
    except MqttError:
        return
    for packet in packets:
        encode(packet, decoder.version or MQTT_3_1_1)
