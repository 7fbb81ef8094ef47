"""The normative statements of MQTT 3.1.1 and 5.0, checked one by one against the broker on
in-memory transports (``[MQTT-x.x.x-y]`` names the statement). Behaviour already covered by
test_mqtt_broker.py and test_mqtt5_features.py is not repeated here."""

from __future__ import annotations

import pytest

from edge.mqtt.broker import Broker, BrokerConfig
from edge.mqtt.codec import encode
from edge.mqtt.errors import Reason
from edge.mqtt.packets import (
    MQTT_3_1_1,
    MQTT_5,
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
from edge.mqtt.policy import OPEN_ACL, AuthResult, BrokerHooks, DenyListAcl
from edge.mqtt.properties import Properties
from tests.support.broker import FakeClient, make_broker


def connected(broker: Broker, client_id: str, version: int = MQTT_5, **connect) -> FakeClient:
    client = FakeClient(broker, version)
    assert client.connect(client_id, **connect).reason_code == 0
    return client


def subscribed(broker: Broker, client_id: str, *subs: Subscription, version=MQTT_5, **connect):
    client = connected(broker, client_id, version, **connect)
    client.send(Subscribe(1, subs))
    (suback,) = client.received()
    assert all(code < 0x80 for code in suback.reason_codes), suback
    return client


def connect_bytes(
    level: int = 4, flags: int = 0x02, tail: bytes = b"\x00\x01c", name: bytes = b"MQTT"
) -> bytes:
    """A CONNECT packet built by hand (to send what the encoder refuses to build)."""
    props = b"\x00" if level == 5 else b""
    body = len(name).to_bytes(2, "big") + name + bytes((level, flags)) + b"\x00\x3c" + props + tail
    return bytes((0x10, len(body))) + body


class DenyHooks(BrokerHooks):
    def authenticate(self, connection):
        return AuthResult(acl=DenyListAcl(OPEN_ACL, ["test/nosubscribe", "secret/#"]))


def test_deny_list_refuses_with_0x80_and_allows_wider_filters():
    """EDGE_ACL_DENY filters: SUBACK 0x80 in both versions (what interoperability suites
    expect), PUBACK 0x87 for a publish; '#' is accepted and never carries denied topics."""
    broker, _ = make_broker(hooks=DenyHooks())
    for version in (MQTT_3_1_1, MQTT_5):
        client = connected(broker, f"d{version}", version)
        client.send(
            Subscribe(
                1,
                (
                    Subscription("test/nosubscribe", 2),
                    Subscription("secret/+/x", 1),
                    Subscription("#", 0),
                    Subscription("$share/g/secret/x", 0),
                ),
            )
        )
        assert client.received() == [SubAck(1, (0x80, 0x80, 0, 0x80))]
    client.send(Publish("secret/a", b"no", qos=1, packet_id=1))
    (ack,) = client.received()
    assert ack.reason_code == Reason.NOT_AUTHORIZED


# -- 3.1 CONNECT --------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [MQTT_3_1_1, MQTT_5])
def test_first_packet_must_be_connect(version):
    """[MQTT-3.1.0-1] Anything but CONNECT first closes the connection without an answer."""
    broker, _ = make_broker()
    client = FakeClient(broker, version)
    client.send(PingReq())
    assert client.received() == []
    assert client.closed


def test_second_connect_is_a_protocol_violation():
    """[MQTT-3.1.0-2] A second CONNECT closes the connection: 3.1.1 silently, 5.0 with a
    DISCONNECT 0x82."""
    broker, _ = make_broker()
    old = connected(broker, "a", MQTT_3_1_1)
    old.send(Connect("a"))
    assert old.received() == [] and old.closed
    new = connected(broker, "b")
    new.send(Connect("b", protocol_level=MQTT_5))
    (disconnect,) = new.received()
    assert disconnect.reason_code == Reason.PROTOCOL_ERROR
    assert new.closed


def test_wrong_protocol_name_closes():
    """[MQTT-3.1.2-1] A protocol name other than MQTT is not processed as MQTT."""
    broker, _ = make_broker()
    client = FakeClient(broker)
    client.send_bytes(connect_bytes(name=b"hj"))
    assert client.closed and client.transport.value() == b""
    assert broker.sessions == {}


@pytest.mark.parametrize(("level", "answer"), [(6, b"\x20\x02\x00\x01"), (2, b"\x20\x02\x00\x01")])
def test_unsupported_protocol_level(level, answer):
    """[MQTT-3.1.2-2] An unsupported level gets CONNACK 0x01 (unacceptable protocol level)."""
    broker, _ = make_broker()
    client = FakeClient(broker)
    client.send_bytes(connect_bytes(level=level))
    assert client.transport.value() == answer
    assert client.closed


@pytest.mark.parametrize(
    ("flags", "reason"),
    [
        (0x03, Reason.MALFORMED_PACKET),  # reserved flag [MQTT-3.1.2-3]
        (0x0A, Reason.MALFORMED_PACKET),  # will QoS 1 without the will flag [MQTT-3.1.2-11]
        (0x22, Reason.MALFORMED_PACKET),  # will retain without the will flag [MQTT-3.1.2-13]
        (0x1E, Reason.MALFORMED_PACKET),  # will QoS 3 [MQTT-3.1.2-12]
    ],
)
def test_invalid_connect_flags(flags, reason):
    """Invalid CONNECT flags: 3.1.1 closes at once, 5.0 answers CONNACK 0x81 then closes."""
    broker, _ = make_broker()
    old = FakeClient(broker, MQTT_3_1_1)
    old.send_bytes(connect_bytes(level=4, flags=flags))
    assert old.transport.value() == b"" and old.closed
    new = FakeClient(broker, MQTT_5)
    new.send_bytes(connect_bytes(level=5, flags=flags))
    (connack,) = new.received()
    assert connack.reason_code == reason and not connack.session_present
    assert new.closed
    assert broker.sessions == {}


def test_password_without_user_name_v311():
    """[MQTT-3.1.2-22] 3.1.1: the password flag without the user name flag is malformed."""
    broker, _ = make_broker()
    client = FakeClient(broker)
    client.send_bytes(connect_bytes(flags=0x42, tail=b"\x00\x01c\x00\x02pw"))
    assert client.closed and client.transport.value() == b""


def test_will_topic_with_wildcard_v5():
    """[MQTT-3.1.3-11] A will topic must be a valid topic name: 5.0 CONNACK 0x90."""
    broker, _ = make_broker()
    client = FakeClient(broker, MQTT_5)
    client.send(Connect("w", protocol_level=MQTT_5, will=Will("a/+", b"x")))
    (connack,) = client.received()
    assert connack.reason_code == Reason.TOPIC_NAME_INVALID
    assert client.closed


def test_zero_length_client_id():
    """[MQTT-3.1.3-7/8] 3.1.1: empty client id with clean session 0 → 0x02 and close; with
    clean session 1 it is accepted. [MQTT-3.1.3-6/7] 5.0: accepted and assigned either way."""
    broker, _ = make_broker()
    refused = FakeClient(broker)
    assert refused.connect("", clean_start=False) == ConnAck(0x02)
    assert refused.closed
    accepted = FakeClient(broker)
    assert accepted.connect("", clean_start=True) == ConnAck(0)
    for clean in (False, True):
        connack = FakeClient(broker, MQTT_5).connect("", clean_start=clean)
        assert connack.reason_code == 0
        assert connack.properties.assigned_client_identifier


def test_session_present_flag():
    """[MQTT-3.2.2-1/2/3] Session present is 0 with clean start, 1 when a session resumes."""
    broker, _ = make_broker()
    for version in (MQTT_3_1_1, MQTT_5):
        props = Properties(session_expiry_interval=60) if version == MQTT_5 else Properties()
        cid = f"s{version}"
        first = FakeClient(broker, version)
        assert first.connect(cid, clean_start=False, properties=props).session_present is False
        first.send(Disconnect())
        again = FakeClient(broker, version)
        assert again.connect(cid, clean_start=False, properties=props).session_present is True
        again.send(Disconnect())
        clean = FakeClient(broker, version)
        assert clean.connect(cid, clean_start=True).session_present is False


def test_refused_connack_has_no_session_present():
    """[MQTT-3.2.2-4/6] A refusing CONNACK has session present 0 and the connection closes."""

    class Refuse(BrokerHooks):
        def authenticate(self, connection):
            return AuthResult(Reason.NOT_AUTHORIZED)

    broker, _ = make_broker(hooks=Refuse())
    connected_before = FakeClient(broker, MQTT_5)
    connack = connected_before.connect("x", clean_start=False)
    assert connack.reason_code == Reason.NOT_AUTHORIZED and not connack.session_present
    assert connected_before.closed


def test_enhanced_authentication_not_supported():
    """[MQTT-4.12.0-1] An unsupported authentication method gets CONNACK 0x8C."""
    broker, _ = make_broker()
    client = FakeClient(broker, MQTT_5)
    connack = client.connect("a", properties=Properties(authentication_method="SCRAM-SHA-1"))
    assert connack.reason_code == Reason.BAD_AUTHENTICATION_METHOD
    assert client.closed


# -- keep alive ---------------------------------------------------------------------------------


def test_keep_alive_zero_v311_never_times_out():
    """[MQTT-3.1.2-10] Keep alive 0 switches the mechanism off (3.1.1): with no idle limit
    (EDGE_MAX_IDLE=0) the client is never closed."""
    broker, clock = make_broker(config=BrokerConfig(max_idle=0))
    client = connected(broker, "k", MQTT_3_1_1, keep_alive=0)
    clock.advance(24 * 3600)
    assert not client.closed


def test_keep_alive_zero_v311_idle_limit():
    """The spec lets a server close an inactive client whatever its keep alive (3.1.2.10):
    a 3.1.1 client without keep alive is closed after max_idle seconds of silence (L8); any
    packet starts the count again."""
    broker, clock = make_broker(config=BrokerConfig(max_idle=600))
    client = connected(broker, "k", MQTT_3_1_1, keep_alive=0)
    clock.advance(500)
    client.send(PingReq())
    assert client.received() == [PingResp()]
    clock.advance(500)
    assert not client.closed
    clock.advance(101)
    assert client.closed
    assert broker.refusals["idle"] == 1


def test_server_keep_alive_default():
    """[MQTT-3.2.2-21] A 5.0 client asking 120 s (or 0) is told the server's 60 s, and held to
    it: silence beyond 1.5 x 60 s closes with 0x8D. A client asking less keeps its value."""
    broker, clock = make_broker()
    clients = []
    for asked in (120, 0):
        client = FakeClient(broker, MQTT_5)
        connack = client.connect(f"k{asked}", keep_alive=asked)
        assert connack.properties.server_keep_alive == 60
        clients.append(client)
    short = FakeClient(broker, MQTT_5)
    assert short.connect("k30", keep_alive=30).properties.server_keep_alive is None
    clock.advance(46)
    assert short.closed
    assert not any(c.closed for c in clients)
    clock.advance(45)
    for client in clients:
        assert client.received() == [Disconnect(Reason.KEEP_ALIVE_TIMEOUT)]
        assert client.closed


# -- 3.3 PUBLISH --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x36\x06\x00\x01a\x00\x01\x00", Reason.MALFORMED_PACKET),  # QoS 3 [MQTT-3.3.1-4]
        (b"\x38\x04\x00\x01a\x00", Reason.MALFORMED_PACKET),  # DUP on QoS 0 [MQTT-3.3.1-2]
        (b"\x30\x04\x00\x01+\x00", Reason.TOPIC_NAME_INVALID),  # wildcard [MQTT-3.3.2-2]
        (b"\x30\x07\x00\x01a\x03\x23\x00\x00", Reason.TOPIC_ALIAS_INVALID),  # alias 0
        (b"\x30\x07\x00\x01a\x03\x23\x01\x00", Reason.TOPIC_ALIAS_INVALID),  # alias 256 > 64
        (b"\x30\x06\x00\x00\x03\x23\x00\x05", Reason.PROTOCOL_ERROR),  # unknown alias
        (b"\x30\x03\x00\x00\x00", Reason.PROTOCOL_ERROR),  # empty topic, no alias
    ],
)
def test_invalid_publish_disconnects_with_reason(data, reason):
    """An invalid PUBLISH closes the connection with a DISCONNECT saying why (4.13)."""
    broker, _ = make_broker()
    watcher = subscribed(broker, "w", Subscription("#", 0))
    client = connected(broker, "p")
    client.send_bytes(data)
    (disconnect,) = client.received()
    assert disconnect.reason_code == reason
    assert client.closed
    assert watcher.received() == []
    assert not watcher.closed  # nothing else is affected


def test_topic_aliases_do_not_survive_the_connection():
    """[MQTT-3.3.2-7] Topic alias mappings end with the network connection."""
    broker, _ = make_broker()
    watcher = subscribed(broker, "w", Subscription("long/topic", 0))
    props = Properties(session_expiry_interval=60)
    client = connected(broker, "p", clean_start=False, properties=props)
    client.send(Publish("long/topic", b"1", properties=Properties(topic_alias=1)))
    client.send(Publish("", b"2", properties=Properties(topic_alias=1)))
    assert [p.payload for p in watcher.received()] == [b"1", b"2"]
    client.send(Disconnect())
    again = connected(broker, "p", clean_start=False, properties=props)
    again.send(Publish("", b"3", properties=Properties(topic_alias=1)))
    assert again.received()[0].reason_code == Reason.PROTOCOL_ERROR
    assert watcher.received() == []


def test_payload_format_indicator_checked():
    """[MQTT-3.3.2-4] A payload flagged UTF-8 that is not: PUBACK 0x99, not forwarded."""
    broker, _ = make_broker()
    watcher = subscribed(broker, "w", Subscription("t", 1))
    client = connected(broker, "p")
    utf8 = Properties(payload_format_indicator=1)
    client.send(Publish("t", b"\xff\xfe", qos=1, packet_id=1, properties=utf8))
    (ack,) = client.received()
    assert ack.reason_code == Reason.PAYLOAD_FORMAT_INVALID
    assert watcher.received() == []
    client.send(Publish("t", "héllo".encode(), qos=1, packet_id=2, properties=utf8))
    assert client.received() == [PubAck(2)]
    (message,) = watcher.received()
    assert message.properties.payload_format_indicator == 1


def test_receive_maximum_exceeded_counts_unreleased_qos2():
    """[MQTT-3.3.4-7/8] More QoS 2 PUBLISH packets than Receive Maximum awaiting PUBREL
    → DISCONNECT 0x93; within the limit, a PUBREL frees a slot."""
    broker, _ = make_broker(config=BrokerConfig(receive_maximum=3))
    client = connected(broker, "q")
    for packet_id in (1, 2, 3):
        client.send(Publish("t", b"", qos=2, packet_id=packet_id))
    assert client.received() == [PubRec(1), PubRec(2), PubRec(3)]
    client.send(PubRel(1))
    client.send(Publish("t", b"", qos=2, packet_id=4))
    assert client.received() == [PubComp(1), PubRec(4)]
    client.send(Publish("t", b"", qos=2, packet_id=5))
    (disconnect,) = client.received()
    assert disconnect.reason_code == Reason.RECEIVE_MAXIMUM_EXCEEDED
    assert client.closed


def test_qos2_resend_before_pubrel_is_not_counted_or_delivered():
    """[MQTT-4.3.3-9] A QoS 2 PUBLISH resent before PUBREL is acknowledged, not delivered."""
    broker, _ = make_broker(config=BrokerConfig(receive_maximum=1))
    watcher = subscribed(broker, "w", Subscription("t", 0))
    client = connected(broker, "q")
    client.send(Publish("t", b"once", qos=2, packet_id=9))
    client.send(Publish("t", b"once", qos=2, packet_id=9, dup=True))
    assert client.received() == [PubRec(9), PubRec(9)]
    assert [p.payload for p in watcher.received()] == [b"once"]
    assert not client.closed


# -- retained messages --------------------------------------------------------------------------


def test_retained_flags_and_clearing():
    """[MQTT-3.3.1-5..12] A retained message reaches new subscribers with RETAIN 1, live
    subscribers with RETAIN 0; a zero-byte retained message clears it and is not stored."""
    broker, _ = make_broker()
    live = subscribed(broker, "live", Subscription("r/#", 1))
    pub = connected(broker, "p", MQTT_3_1_1)
    pub.send(Publish("r/1", b"on", qos=1, retain=True, packet_id=1))
    (forwarded,) = live.received()
    assert (forwarded.payload, forwarded.retain) == (b"on", False)
    late = connected(broker, "late")
    late.send(Subscribe(1, (Subscription("r/+", 2),)))
    suback, stored = late.received()
    assert suback == SubAck(1, (2,))
    assert (stored.payload, stored.retain, stored.qos) == (b"on", True, 1)
    pub.send(Publish("r/1", b"", retain=True))
    assert broker.retained == {}
    (clear,) = late.received()
    assert clear.payload == b""
    again = subscribed(broker, "again", Subscription("r/#", 0))
    assert again.received() == []


def test_retained_qos0_replaces_and_expired_is_dropped():
    """[MQTT-3.3.1-7] A retained QoS 0 message replaces the previous one; an expired
    retained message is neither sent nor kept."""
    broker, clock = make_broker()
    pub = connected(broker, "p")
    pub.send(Publish("r", b"old", qos=1, retain=True, packet_id=1))
    pub.send(Publish("r", b"new", retain=True))
    late = connected(broker, "late")
    late.send(Subscribe(1, (Subscription("r", 1),)))
    assert [(p.payload, p.qos) for p in late.received()[1:]] == [(b"new", 0)]
    pub.send(Publish("x", b"brief", retain=True, properties=Properties(message_expiry_interval=5)))
    clock.advance(6)
    subscribed(broker, "later", Subscription("x", 0))
    assert "x" not in broker.retained


def test_retain_handling_on_persistent_session_resubscribe():
    """[MQTT-3.8.4-?] Retain handling 1 sends retained messages only for a new subscription,
    also after the session resumed; 2 never sends them."""
    broker, _ = make_broker()
    connected(broker, "p").send(Publish("r", b"kept", retain=True))
    props = Properties(session_expiry_interval=60)
    client = connected(broker, "s", clean_start=False, properties=props)
    client.send(Subscribe(1, (Subscription("r", 0, retain_handling=1),)))
    assert [type(p) for p in client.received()] == [SubAck, Publish]
    client.send(Disconnect())
    again = connected(broker, "s", clean_start=False, properties=props)
    again.send(Subscribe(2, (Subscription("r", 0, retain_handling=1),)))
    assert again.received() == [SubAck(2, (0,))]
    again.send(Subscribe(3, (Subscription("r", 1, retain_handling=2),)))
    assert again.received() == [SubAck(3, (1,))]


# -- 3.6 PUBREL, 3.4 PUBACK ---------------------------------------------------------------------


def test_pubrel_for_unknown_packet_identifier():
    """[MQTT-3.6.2-?] PUBREL for an unknown id gets PUBCOMP 0x92 (5.0), a plain PUBCOMP (3.1.1)."""
    broker, _ = make_broker()
    new = connected(broker, "n")
    new.send(PubRel(77))
    (comp,) = new.received()
    assert (comp.packet_id, comp.reason_code) == (77, Reason.PACKET_IDENTIFIER_NOT_FOUND)
    old = connected(broker, "o", MQTT_3_1_1)
    old.send(PubRel(77))
    assert old.received() == [PubComp(77)]


def test_puback_for_unknown_packet_identifier_is_ignored():
    """An acknowledgement for nothing in flight changes nothing and keeps the connection."""
    broker, _ = make_broker()
    client = connected(broker, "n")
    client.send(PubAck(5), PingReq())
    assert client.received() == [PingResp()]


# -- 3.8 SUBSCRIBE, 3.10 UNSUBSCRIBE ------------------------------------------------------------


@pytest.mark.parametrize("version", [MQTT_3_1_1, MQTT_5])
def test_subscribe_without_filters_closes(version):
    """[MQTT-3.8.3-3] A SUBSCRIBE without a topic filter is a protocol violation."""
    broker, _ = make_broker()
    client = connected(broker, "s", version)
    client.send_bytes(b"\x82\x03\x00\x01\x00" if version == MQTT_5 else b"\x82\x02\x00\x01")
    packets = client.received()
    assert client.closed
    if version == MQTT_5:
        assert packets[0].reason_code == Reason.PROTOCOL_ERROR


@pytest.mark.parametrize("version", [MQTT_3_1_1, MQTT_5])
def test_unsubscribe_without_filters_closes(version):
    """[MQTT-3.10.3-2] An UNSUBSCRIBE without a topic filter is a protocol violation."""
    broker, _ = make_broker()
    client = connected(broker, "s", version)
    client.send_bytes(b"\xa2\x03\x00\x01\x00" if version == MQTT_5 else b"\xa2\x02\x00\x01")
    client.received()
    assert client.closed


def test_subscription_identifier_zero_is_protocol_error():
    """[MQTT-3.8.2-?] A subscription identifier of 0 is a protocol error."""
    broker, _ = make_broker()
    client = connected(broker, "s")
    client.send_bytes(b"\x82\x08\x00\x01\x02\x0b\x00\x00\x01a\x00")
    (disconnect,) = client.received()
    assert disconnect.reason_code == Reason.PROTOCOL_ERROR


def test_unsubscribe_reason_codes():
    """[MQTT-3.11.3-1] One UNSUBACK code per filter: 0x00, 0x11 not subscribed, 0x8F invalid."""
    broker, _ = make_broker()
    client = subscribed(broker, "u", Subscription("a/b", 1))
    client.send(Unsubscribe(2, ("a/b", "c", "a/#/b", "$share/g")))
    assert client.received() == [UnsubAck(2, (0x00, 0x11, 0x8F, 0x8F))]


def test_subscription_quota():
    """More subscriptions than the session may hold are refused with 0x97 (0x80 in 3.1.1)
    and a reason string; replacing an existing one is always allowed."""
    broker, _ = make_broker(config=BrokerConfig(max_subscriptions=2))
    new = subscribed(broker, "q", Subscription("a", 0), Subscription("b", 0))
    new.send(Subscribe(2, (Subscription("c", 0), Subscription("a", 1))))
    why = Properties(reason_string="too many subscriptions in this session")
    assert new.received() == [SubAck(2, (Reason.QUOTA_EXCEEDED, 1), why)]
    old = subscribed(broker, "o", Subscription("a", 0), Subscription("b", 0), version=MQTT_3_1_1)
    old.send(Subscribe(2, (Subscription("c", 0),)))
    assert old.received() == [SubAck(2, (0x80,))]


# -- 3.14 DISCONNECT and wills ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "will_sent"),
    [(0x00, False), (0x04, True), (0x80, True), (0x83, True)],
)
def test_disconnect_reason_decides_the_will(reason, will_sent):
    """[MQTT-3.1.2-8/10] Only a normal disconnection (0x00) discards the will; 0x04 and the
    error codes a client may send publish it."""
    broker, _ = make_broker()
    watcher = subscribed(broker, "w", Subscription("will", 0))
    client = connected(broker, "c", will=Will("will", b"bye"))
    client.send(Disconnect(reason))
    assert [p.payload for p in watcher.received()] == ([b"bye"] if will_sent else [])
    assert client.closed


def test_will_on_keep_alive_timeout_v311():
    """[MQTT-3.1.2-8] A keep alive timeout publishes the will (3.1.1 closes silently)."""
    broker, clock = make_broker()
    watcher = subscribed(broker, "w", Subscription("will", 0), version=MQTT_3_1_1)
    watcher.send(PingReq())
    client = connected(broker, "c", MQTT_3_1_1, keep_alive=2, will=Will("will", b"gone"))
    for _ in range(4):
        clock.advance(1)
        watcher.send(PingReq())
    assert client.closed and client.received() == []
    assert [p for p in watcher.received() if isinstance(p, Publish)] == [Publish("will", b"gone")]


def test_packet_too_large_disconnects_with_0x95():
    """[MQTT-3.2.2-15] A packet above the server's Maximum Packet Size → DISCONNECT 0x95."""
    broker, _ = make_broker(config=BrokerConfig(max_packet_size=100))
    client = connected(broker, "big")
    client.send(Publish("t", b"x" * 200))
    (disconnect,) = client.received()
    assert disconnect.reason_code == Reason.PACKET_TOO_LARGE
    assert client.closed


def test_reason_strings_left_out_when_too_large_for_the_client():
    """[MQTT-3.1.2-25] Packets above the client's Maximum Packet Size are not sent as such:
    the reason string is left out."""

    broker, _ = make_broker(hooks=DenyHooks())
    client = connected(broker, "small", properties=Properties(maximum_packet_size=8))
    client.send(Publish("secret/t", b"", qos=1, packet_id=1))
    broker.flush()
    assert client.transport.value() == encode(PubAck(1, Reason.NOT_AUTHORIZED), MQTT_5)


def test_retained_store_is_bounded():
    """Beyond max_retained topics a new retained message is delivered but not kept; replacing
    or clearing a kept one still works."""
    broker, _ = make_broker(config=BrokerConfig(max_retained=2))
    live = subscribed(broker, "live", Subscription("r/#", 0))
    pub = connected(broker, "p")
    for name in ("a", "b", "c"):
        pub.send(Publish(f"r/{name}", name.encode(), retain=True))
    assert [p.payload for p in live.received()] == [b"a", b"b", b"c"]
    assert sorted(broker.retained) == ["r/a", "r/b"]
    assert broker.stats["retained_refused"] == 1
    pub.send(Publish("r/a", b"A", retain=True), Publish("r/b", b"", retain=True))
    pub.send(Publish("r/c", b"c", retain=True))
    assert {t: m.payload for t, m in broker.retained.items()} == {"r/a": b"A", "r/c": b"c"}
