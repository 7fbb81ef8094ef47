"""The fan-in hot path byte by byte: the batch decoder (``Decoder.decode_all``), the received
bytes of a QoS 0 PUBLISH forwarded unchanged when nothing in them changes (and re-encoded when
something does), and the per-topic routing cache."""

from __future__ import annotations

import pytest

from edge.mqtt.codec import Decoder, encode
from edge.mqtt.errors import MalformedPacket, PacketTooLarge, ProtocolError, Reason
from edge.mqtt.message import Message
from edge.mqtt.packets import (
    MQTT_3_1_1,
    MQTT_5,
    Disconnect,
    PingReq,
    Publish,
    SubAck,
    Subscribe,
    Subscription,
    Unsubscribe,
)
from edge.mqtt.policy import BrokerHooks
from edge.mqtt.properties import Properties
from tests.support.broker import FakeClient, make_broker

# A QoS 0 PUBLISH of "a/b" with payload "hi" (3.1.1): fixed header, topic, payload.
RAW_311 = b"\x30\x07\x00\x03a/bhi"
# The same in 5.0: an empty property block (0x00) before the payload.
RAW_5 = b"\x30\x08\x00\x03a/b\x00hi"


def connected(version: int) -> Decoder:
    """A decoder of a connection whose CONNECT was read."""
    return Decoder(version)


# -- the batch decoder ----------------------------------------------------------------------


def test_decode_all_reads_every_complete_packet_in_one_pass_and_keeps_the_rest():
    qos1 = encode(Publish("q", b"1", qos=1, packet_id=7))
    retained = encode(Publish("r", b"2", retain=True))
    data = RAW_311 + b"\xc0\x00" + qos1 + retained + RAW_311 + RAW_311[:4]
    decoder = connected(MQTT_3_1_1)
    packets, error = decoder.decode_all(data)
    assert error is None
    assert packets == [
        Publish("a/b", b"hi"),
        PingReq(),
        Publish("q", b"1", qos=1, packet_id=7),
        Publish("r", b"2", retain=True),
        Publish("a/b", b"hi"),
    ]
    # The received bytes are kept only for the QoS 0 PUBLISH without the retain flag.
    assert [getattr(p, "raw", None) for p in packets] == [RAW_311, None, None, None, RAW_311]
    assert type(packets[0].raw) is bytes
    # The incomplete tail waits for the rest of its packet.
    packets, error = decoder.decode_all(RAW_311[4:])
    assert (packets, error) == ([Publish("a/b", b"hi")], None)
    assert packets[0].raw == RAW_311


def test_decode_all_byte_by_byte_gives_the_same_packets_and_raw_bytes():
    stream = RAW_311 * 3 + encode(Publish("x/y", b"z" * 300)) + b"\xc0\x00"
    whole, error = connected(MQTT_3_1_1).decode_all(stream)
    assert error is None
    decoder = connected(MQTT_3_1_1)
    pieces = []
    for i in range(len(stream)):
        got, error = decoder.decode_all(stream[i : i + 1])
        assert error is None
        pieces += got
    assert pieces == whole
    assert [getattr(p, "raw", None) for p in pieces] == [getattr(p, "raw", None) for p in whole]
    assert whole[3].raw == encode(Publish("x/y", b"z" * 300))  # two-byte remaining length


def test_a_large_packet_in_chunks():
    packet = encode(Publish("big", b"b" * 200_000))
    decoder = connected(MQTT_3_1_1)
    out = []
    for i in range(0, len(packet), 4096):
        got, error = decoder.decode_all(packet[i : i + 4096])
        assert error is None
        out += got
    assert out == [Publish("big", b"b" * 200_000)]
    assert out[0].raw == packet


def test_the_error_of_a_bad_packet_comes_after_the_good_ones_before_it():
    bad = b"\x30\x05\x00\x03a/#"  # wildcard in a topic name
    packets, error = connected(MQTT_3_1_1).decode_all(RAW_311 + bad + RAW_311)
    assert packets == [Publish("a/b", b"hi")]
    assert isinstance(error, ProtocolError)
    assert error.reason == Reason.TOPIC_NAME_INVALID
    # feed() yields the good packets, then raises.
    gen = connected(MQTT_3_1_1).feed(RAW_311 + bad)
    assert next(gen) == Publish("a/b", b"hi")
    with pytest.raises(ProtocolError):
        next(gen)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"\x30\x05\x00\x03a\x00b", MalformedPacket),  # U+0000
        (b"\x30\x05\x00\x03a\xffb", MalformedPacket),  # not UTF-8
        (b"\x30\x05\x00\x03a+b", ProtocolError),  # wildcard
        (b"\x30\x04\x00\x00hi", ProtocolError),  # empty topic without an alias
        (b"\x30\x05\x00\x09a/b", MalformedPacket),  # topic runs past the packet
        (b"\x30\x01\x00", MalformedPacket),  # shorter than the topic length
        (b"\x38\x05\x00\x03a/b", MalformedPacket),  # DUP on QoS 0
        (b"\x36\x05\x00\x03a/b", MalformedPacket),  # QoS 3
    ],
)
def test_invalid_qos0_publish_is_refused_as_before(data, error):
    packets, found = connected(MQTT_3_1_1).decode_all(data)
    assert packets == []
    assert isinstance(found, error)


def test_maximum_packet_size_still_checked_from_the_fixed_header():
    decoder = Decoder(MQTT_3_1_1, max_packet_size=100)
    packets, error = decoder.decode_all(b"\x30\xff\x01")  # 255 bytes announced
    assert packets == []
    assert isinstance(error, PacketTooLarge)
    decoder = Decoder(MQTT_3_1_1, max_packet_size=100)
    assert decoder.decode_all(b"\x30") == ([], None)
    _, error = decoder.decode_all(b"\xff\x01")
    assert isinstance(error, PacketTooLarge)


def test_the_first_packet_must_still_be_connect():
    packets, error = Decoder().decode_all(RAW_311)
    assert packets == []
    assert isinstance(error, ProtocolError)


@pytest.mark.parametrize(
    ("props", "kept"),
    [
        (Properties(), True),
        (Properties(user_properties=(("b", "2"), ("a", "1"))), True),
        (Properties(content_type="text/plain", payload_format_indicator=1), True),
        (Properties(topic_alias=3), False),  # the receiver must get the topic, not the alias
        (Properties(message_expiry_interval=60), False),  # counted down when sent on
    ],
)
def test_v5_raw_only_when_the_properties_go_on_unchanged(props, kept):
    data = encode(Publish("a/b", b"hi", properties=props), MQTT_5)
    (packet,), error = connected(MQTT_5).decode_all(data)
    assert error is None
    assert packet == Publish("a/b", b"hi", properties=props)
    assert packet.raw == (data if kept else None)


def test_raw_is_not_part_of_the_packet_value():
    a = Publish("a/b", b"hi", raw=RAW_311)
    b = Publish("a/b", b"hi")
    assert a == b
    assert hash(a) == hash(b)
    assert "raw" not in repr(a)
    assert encode(a) == encode(b) == RAW_311


# -- forwarding the received bytes ----------------------------------------------------------


class Seen(BrokerHooks):
    def __init__(self) -> None:
        self.messages: list[Message] = []

    def message_published(self, connection, message):
        self.messages.append(message)
        return super().message_published(connection, message)


def subscribe(client: FakeClient, *subs: Subscription, props=None) -> None:
    client.send(Subscribe(1, subs, props or Properties()))
    (suback,) = client.received()
    assert isinstance(suback, SubAck)
    assert all(code < 0x80 for code in suback.reason_codes)


def raw_out(client: FakeClient) -> bytes:
    client.broker.flush()
    data = client.transport.value()
    client.transport.clear()
    return data


def clients(broker, *versions, **connect):
    out = []
    for i, version in enumerate(versions):
        client = FakeClient(broker, version, port=41000 + i)
        client.connect(f"c{i}", **connect)
        out.append(client)
    return out


def test_v311_to_v311_gets_the_received_bytes():
    hooks = Seen()
    broker, _ = make_broker(hooks)
    pub, sub, other = clients(broker, MQTT_3_1_1, MQTT_3_1_1, MQTT_3_1_1)
    subscribe(sub, Subscription("a/#"))
    subscribe(other, Subscription("a/+"))
    pub.send_bytes(RAW_311 * 3)
    assert raw_out(sub) == RAW_311 * 3
    assert raw_out(other) == RAW_311 * 3
    # Not re-encoded: the bytes sent are the very object received.
    assert all(m.frame4 == RAW_311 and m.frame5 is None for m in hooks.messages)


def test_v5_to_v5_gets_the_received_bytes_user_properties_in_their_order():
    broker, _ = make_broker()
    pub, sub = clients(broker, MQTT_5, MQTT_5)
    subscribe(sub, Subscription("a/#"))
    props = Properties(user_properties=(("z", "1"), ("a", "2")), content_type="c")
    data = encode(Publish("a/b", b"hi", properties=props), MQTT_5)
    pub.send_bytes(data)
    assert raw_out(sub) == data


def test_across_versions_the_message_is_encoded_for_the_receiver():
    broker, _ = make_broker()
    pub3, pub5, sub3, sub5 = clients(broker, MQTT_3_1_1, MQTT_5, MQTT_3_1_1, MQTT_5)
    subscribe(sub3, Subscription("a/#"))
    subscribe(sub5, Subscription("a/#"))
    pub3.send_bytes(RAW_311)
    assert raw_out(sub5) == RAW_5  # the 5.0 form: an empty property block added
    assert raw_out(sub3) == RAW_311
    props = Properties(user_properties=(("k", "v"),))
    pub5.send_bytes(encode(Publish("a/b", b"hi", properties=props), MQTT_5))
    assert raw_out(sub3) == RAW_311  # the properties left out for 3.1.1
    assert raw_out(sub5) == encode(Publish("a/b", b"hi", properties=props), MQTT_5)


def test_retain_flag_and_retain_as_published():
    broker, _ = make_broker()
    pub, plain, keep = clients(broker, MQTT_5, MQTT_5, MQTT_5)
    subscribe(plain, Subscription("a/#"))
    subscribe(keep, Subscription("a/#", retain_as_published=True))
    pub.send(Publish("a/b", b"hi", retain=True))
    assert raw_out(plain) == RAW_5  # retain flag cleared for a live message
    assert raw_out(keep) == b"\x31" + RAW_5[1:]  # kept as published
    # A new subscriber gets the retained message with the flag.
    (late,) = clients(broker, MQTT_3_1_1)
    late.send(Subscribe(1, (Subscription("a/b"),)))
    late.broker.flush()
    assert late.transport.value().endswith(b"\x31" + RAW_311[1:])


def test_subscription_identifiers_are_added_for_their_subscriber_only():
    broker, _ = make_broker()
    pub, plain, ident = clients(broker, MQTT_5, MQTT_5, MQTT_5)
    subscribe(plain, Subscription("a/#"))
    subscribe(ident, Subscription("a/#"), props=Properties(subscription_identifiers=(9,)))
    pub.send_bytes(RAW_5)
    assert raw_out(plain) == RAW_5
    got = raw_out(ident)
    assert got != RAW_5
    (packet,) = Decoder(MQTT_5).feed(got)
    assert packet.properties.subscription_identifiers == (9,)
    assert (packet.topic, packet.payload, packet.qos) == ("a/b", b"hi", 0)


def test_topic_aliases_in_and_out():
    broker, _ = make_broker()
    pub, plain = clients(broker, MQTT_5, MQTT_5)
    aliasing = FakeClient(broker, MQTT_5, port=42000)
    aliasing.connect("aliasing", properties=Properties(topic_alias_maximum=4))
    subscribe(plain, Subscription("a/#"))
    subscribe(aliasing, Subscription("a/#"))
    # The publisher sets alias 1 for a/b, then uses it with an empty topic.
    pub.send(Publish("a/b", b"hi", properties=Properties(topic_alias=1)))
    pub.send(Publish("", b"hi", properties=Properties(topic_alias=1)))
    assert raw_out(plain) == RAW_5 * 2  # full topic, no alias property
    first, second = Decoder(MQTT_5).feed(raw_out(aliasing))
    assert (first.topic, first.properties.topic_alias) == ("a/b", 1)
    assert (second.topic, second.properties.topic_alias) == ("", 1)


def test_qos_downgrade_and_no_upgrade():
    broker, _ = make_broker()
    pub, sub0, sub1 = clients(broker, MQTT_3_1_1, MQTT_3_1_1, MQTT_3_1_1)
    subscribe(sub0, Subscription("a/#", 0))
    subscribe(sub1, Subscription("a/#", 1))
    pub.send(Publish("a/b", b"hi", qos=1, packet_id=5))
    assert raw_out(sub0) == RAW_311  # QoS 1 sent on at QoS 0: no packet identifier
    (packet,) = sub1.received()
    assert (packet.qos, packet.packet_id) == (1, 1)
    pub.transport.clear()
    pub.send_bytes(RAW_311)
    assert raw_out(sub1) == RAW_311  # QoS 0 stays QoS 0 for a QoS 1 subscription


def test_message_expiry_goes_on_as_an_interval():
    broker, _ = make_broker()
    pub, sub = clients(broker, MQTT_5, MQTT_5)
    subscribe(sub, Subscription("a/#"))
    pub.send(Publish("a/b", b"hi", properties=Properties(message_expiry_interval=60)))
    (packet,) = sub.received()
    assert packet.properties.message_expiry_interval == 60


def test_receiver_maximum_packet_size_still_applies_to_forwarded_bytes():
    broker, _ = make_broker()
    (pub,) = clients(broker, MQTT_5)
    small = FakeClient(broker, MQTT_5, port=42001)
    small.connect("small", properties=Properties(maximum_packet_size=10))
    subscribe(small, Subscription("a/#"))
    dropped = broker.stats["dropped"]
    pub.send_bytes(RAW_5 + encode(Publish("a/b", b"x" * 50), MQTT_5))
    assert raw_out(small) == RAW_5
    assert broker.stats["dropped"] == dropped + 1


def test_no_local_subscription_is_still_honoured():
    broker, _ = make_broker()
    me, other = clients(broker, MQTT_5, MQTT_5)
    subscribe(me, Subscription("a/#", no_local=True))
    subscribe(other, Subscription("a/#"))
    me.send_bytes(RAW_5)
    assert raw_out(me) == b""
    assert raw_out(other) == RAW_5
    other.send_bytes(RAW_5)
    assert raw_out(me) == RAW_5


def test_congested_receiver_drops_qos0_as_before():
    broker, _ = make_broker()
    pub, sub = clients(broker, MQTT_3_1_1, MQTT_3_1_1)
    subscribe(sub, Subscription("a/#"))
    sub.protocol.pauseProducing()
    pub.send_bytes(RAW_311)
    assert raw_out(sub) == b""
    sub.protocol.resumeProducing()
    pub.send_bytes(RAW_311)
    assert raw_out(sub) == RAW_311


# -- the routing cache ----------------------------------------------------------------------


def test_route_cache_follows_subscriptions_sessions_and_shared_groups():
    broker, _ = make_broker()
    pub, a, b, c = clients(broker, MQTT_3_1_1, MQTT_3_1_1, MQTT_3_1_1, MQTT_3_1_1)
    subscribe(a, Subscription("t/#"))
    pub.send_bytes(b"\x30\x05\x00\x03t/x")
    assert raw_out(a) == b"\x30\x05\x00\x03t/x"
    # A new subscription to a cached topic is heard at once.
    subscribe(b, Subscription("t/x", 0))
    pub.send_bytes(b"\x30\x05\x00\x03t/x")
    assert raw_out(a) == raw_out(b) == b"\x30\x05\x00\x03t/x"
    # An overlapping subscription: still one copy, at the highest QoS.
    subscribe(a, Subscription("t/+", 1))
    pub.send(Publish("t/x", b"", qos=1, packet_id=1))
    (packet,) = a.received()
    assert packet.qos == 1
    # Unsubscribed: no longer heard.
    b.send(Unsubscribe(2, ("t/x",)))
    b.received()
    pub.send_bytes(b"\x30\x05\x00\x03t/x")
    assert raw_out(b) == b""
    # A shared group: each message to one member, with the plain subscribers as before.
    subscribe(b, Subscription("$share/g/t/#"))
    subscribe(c, Subscription("$share/g/t/#"))
    a.received()
    pub.send_bytes(b"\x30\x05\x00\x03t/x" * 2)
    assert raw_out(a) == b"\x30\x05\x00\x03t/x" * 2
    assert raw_out(b) + raw_out(c) == b"\x30\x05\x00\x03t/x" * 2
    # A session that ends (clean disconnect, no expiry) is no longer routed to.
    a.send(Disconnect())
    pub.send_bytes(b"\x30\x05\x00\x03t/x")
    assert "c1" not in broker.sessions
    routes = broker._routes.values()
    assert all(entry.session.client_id != "c1" for r in routes for entry in r.entries)
