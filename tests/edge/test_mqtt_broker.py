"""Broker behaviour on in-memory transports and a fake clock (no sockets, no real time)."""

from __future__ import annotations

from twisted.internet.defer import Deferred

from edge.mqtt.codec import encode
from edge.mqtt.errors import NotStored, Reason
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
from edge.mqtt.policy import Acl, AuthResult, BrokerHooks
from edge.mqtt.properties import Properties
from tests.support.broker import FakeClient, make_broker


def test_connect_v311_and_v5():
    """CONNACK accepts both versions; 5.0 gets the server's limits as properties."""
    broker, _ = make_broker()
    assert FakeClient(broker).connect("a") == ConnAck(0)
    connack = FakeClient(broker, MQTT_5).connect("b", keep_alive=30)
    assert connack.reason_code == 0
    assert connack.properties.receive_maximum == broker.config.receive_maximum
    assert connack.properties.topic_alias_maximum == broker.config.topic_alias_maximum


def test_assigned_client_identifier_v5():
    """An empty client id gets an assigned one (5.0); 3.1.1 with a persistent session is refused."""
    broker, _ = make_broker()
    connack = FakeClient(broker, MQTT_5).connect("")
    assert connack.properties.assigned_client_identifier
    refused = FakeClient(broker).connect("", clean_start=False)
    assert refused.reason_code == 0x02


def test_input_split_at_every_byte():
    """CONNECT+SUBSCRIBE fed one byte at a time is handled exactly like one chunk."""
    broker, _ = make_broker()
    client = FakeClient(broker, MQTT_5)
    data = encode(Connect("x", protocol_level=MQTT_5), MQTT_5) + encode(
        Subscribe(1, (Subscription("a/#", 1),)), MQTT_5
    )
    for i in range(len(data)):
        client.send_bytes(data[i : i + 1])
    packets = client.received()
    assert [type(p) for p in packets] == [ConnAck, SubAck]
    assert packets[1].reason_codes == (1,)


def test_publish_fan_out_qos0_and_qos1():
    """Subscribers get messages at min(publish QoS, subscription QoS); QoS 1 is acknowledged."""
    broker, _ = make_broker()
    sub0 = FakeClient(broker)
    sub0.connect("s0")
    sub1 = FakeClient(broker, MQTT_5)
    sub1.connect("s1")
    sub0.send(Subscribe(1, (Subscription("room/+/temp", 0),)))
    sub1.send(Subscribe(1, (Subscription("room/#", 1),)))
    assert sub0.received() == [SubAck(1, (0,))]
    assert sub1.received() == [SubAck(1, (1,))]
    pub = FakeClient(broker)
    pub.connect("p")
    pub.send(Publish("room/1/temp", b"21", qos=1, packet_id=7))
    assert pub.received() == [PubAck(7)]
    assert sub0.received() == [Publish("room/1/temp", b"21")]
    (delivered,) = sub1.received()
    assert (delivered.topic, delivered.payload, delivered.qos) == ("room/1/temp", b"21", 1)
    sub1.send(PubAck(delivered.packet_id))
    assert broker.sessions["s1"].inflight == {}


def test_dollar_topics_not_matched_by_wildcards():
    """'#' does not match $SYS/…, an explicit $SYS/# does."""
    broker, _ = make_broker()
    sub = FakeClient(broker)
    sub.connect("s")
    sub.send(Subscribe(1, (Subscription("#", 0), Subscription("$SYS/#", 0))))
    sub.received()
    pub = FakeClient(broker)
    pub.connect("p")
    pub.send(Publish("$SYS/x", b"1"), Publish("a", b"2"))
    assert [p.topic for p in sub.received()] == ["$SYS/x", "a"]


def test_ping_and_keepalive_with_grace():
    """PINGREQ is answered; silence beyond 1.5 x keep alive closes the connection (one sweep)."""
    broker, clock = make_broker()
    client = FakeClient(broker, MQTT_5)
    client.connect("k", keep_alive=10)
    client.send(PingReq())
    assert client.received() == [PingResp()]
    clock.advance(14)
    assert not client.closed
    clock.advance(2)
    assert client.received() == [Disconnect(Reason.KEEP_ALIVE_TIMEOUT)]
    assert client.closed


def test_connect_timeout():
    """A connection that never sends anything is closed (connect_silent_timeout after the
    accept; the CONNECT timeout counts from the first byte: tests/edge/test_connect_storm.py)."""
    broker, clock = make_broker()
    client = FakeClient(broker)
    clock.advance(broker.config.connect_timeout + 2)
    assert not client.closed
    clock.advance(broker.config.connect_silent_timeout)
    assert client.closed


def test_takeover_same_client_id():
    """A second connection with the same client id closes the first (5.0: reason 0x8E)."""
    broker, _ = make_broker()
    first = FakeClient(broker, MQTT_5)
    first.connect("same")
    second = FakeClient(broker, MQTT_5)
    second.connect("same")
    assert first.received() == [Disconnect(Reason.SESSION_TAKEN_OVER)]
    assert first.closed and not second.closed


class DenyingHooks(BrokerHooks):
    def __init__(self, reason: int) -> None:
        self.reason = reason

    def authenticate(self, connection):
        d: Deferred[AuthResult] = Deferred()
        connection.broker.clock.callLater(1, d.callback, AuthResult(self.reason, detail="nope"))
        return d


def test_auth_refusal_codes_per_version():
    """A refusal from the hooks maps to 0x04/0x05 (3.1.1) and 0x86/0x8A (5.0)."""
    for version, reason, expected in [
        (MQTT_3_1_1, Reason.BAD_USER_NAME_OR_PASSWORD, 0x04),
        (MQTT_3_1_1, Reason.BANNED, 0x05),
        (MQTT_5, Reason.BAD_USER_NAME_OR_PASSWORD, 0x86),
        (MQTT_5, Reason.BANNED, 0x8A),
    ]:
        broker, clock = make_broker(DenyingHooks(reason))
        client = FakeClient(broker, version)
        client.send(Connect("d", protocol_level=version), PingReq())
        assert client.received() == []
        clock.advance(1)
        (connack,) = client.received()
        assert connack.reason_code == expected
        assert connack.properties.reason_string == ("nope" if version == MQTT_5 else None)
        assert client.closed
        assert broker.stats["auth_failures"] == 1


class NamespaceAcl(Acl):
    def may_publish(self, topic):
        return topic.startswith("mine/")

    def may_subscribe(self, topic_filter):
        d: Deferred[bool] = Deferred()
        d.callback(topic_filter.startswith("mine/"))
        return d


class AclHooks(BrokerHooks):
    def __init__(self) -> None:
        self.acks: list[Deferred[int]] = []
        self.published: list[str] = []

    def authenticate(self, connection):
        return AuthResult(identity=connection.client_id, acl=NamespaceAcl())

    def message_published(self, connection, message):
        self.published.append(message.topic)
        d: Deferred[int] = Deferred()
        self.acks.append(d)
        return d


def test_acl_on_subscribe_and_publish():
    """Outside the ACL: SUBACK 0x80/0x87; PUBLISH dropped (3.1.1 still acked, 5.0 PUBACK 0x87)."""
    hooks = AclHooks()
    broker, _ = make_broker(hooks)
    v4 = FakeClient(broker)
    v4.connect("v4")
    v4.send(Subscribe(1, (Subscription("mine/a", 1), Subscription("other/a", 1))))
    assert v4.received() == [SubAck(1, (1, 0x80))]
    v5 = FakeClient(broker, MQTT_5)
    v5.connect("v5")
    v5.send(Subscribe(1, (Subscription("other/#", 0),)))
    assert v5.received() == [SubAck(1, (0x87,))]
    v4.send(Publish("other/x", b"1", qos=1, packet_id=3))
    assert v4.received() == [PubAck(3)]
    v5.send(Publish("other/x", b"1", qos=1, packet_id=4))
    (puback,) = v5.received()
    assert (puback.packet_id, puback.reason_code) == (4, Reason.NOT_AUTHORIZED)
    assert puback.properties.reason_string == "not authorized for this topic"
    assert hooks.published == []


def test_puback_waits_for_hook_and_keeps_order():
    """A PUBACK goes out only when the hook's Deferred fires, and acks stay in order."""
    hooks = AclHooks()
    broker, _ = make_broker(hooks)
    client = FakeClient(broker, MQTT_5)
    client.connect("c")
    client.send(
        Publish("mine/1", b"a", qos=1, packet_id=1), Publish("mine/2", b"b", qos=1, packet_id=2)
    )
    assert client.received() == []
    hooks.acks[1].callback(0)
    assert client.received() == []
    hooks.acks[0].callback(Reason.PAYLOAD_FORMAT_INVALID)
    acks = client.received()
    assert [(a.packet_id, a.reason_code) for a in acks] == [
        (1, Reason.PAYLOAD_FORMAT_INVALID),
        (2, 0),
    ]


def test_failed_hook_closes_connection_without_ack():
    """If storing a message fails, no PUBACK is sent and the client is disconnected."""
    hooks = AclHooks()
    broker, _ = make_broker(hooks)
    client = FakeClient(broker, MQTT_5)
    client.connect("c")
    client.send(Publish("mine/1", b"a", qos=1, packet_id=1))
    hooks.acks[0].errback(RuntimeError("redis down"))
    assert client.received() == [Disconnect(Reason.UNSPECIFIED_ERROR)]
    assert client.closed


def test_a_message_not_stored_closes_as_server_busy_without_a_traceback():
    """The bus refused the write (Redis down, or no replica confirmed it): no PUBACK, a
    5.0 client is told "server busy" and will resend; the offline reason says why, and
    nothing is logged as an unexpected error."""
    hooks = AclHooks()
    broker, _ = make_broker(hooks)
    failures: list[object] = []
    broker.log_failure = lambda failure, connection: failures.append(failure)  # type: ignore[method-assign]
    client = FakeClient(broker, MQTT_5)
    client.connect("c")
    client.send(Publish("mine/1", b"a", qos=1, packet_id=1))
    hooks.acks[0].errback(NotStored("WAIT: 0 of 1 replica(s) acknowledged within 1000 ms"))
    [disconnect] = client.received()
    assert disconnect.reason_code == Reason.SERVER_BUSY
    assert disconnect.properties.reason_string == "message not stored, send it again"
    assert client.closed and failures == []


def test_retained_messages():
    """A retained message is delivered on subscribe with retain=1; an empty payload clears it."""
    broker, _ = make_broker()
    pub = FakeClient(broker)
    pub.connect("p")
    pub.send(Publish("r/1", b"kept", retain=True))
    sub = FakeClient(broker)
    sub.connect("s")
    sub.send(Subscribe(1, (Subscription("r/#", 0),)))
    assert sub.received() == [SubAck(1, (0,)), Publish("r/1", b"kept", retain=True)]
    pub.send(Publish("r/1", b"", retain=True))
    assert sub.received() == [Publish("r/1", b"")]
    assert broker.retained == {}


def test_qos2_both_directions():
    """QoS 2: PUBREC/PUBREL/PUBCOMP in, and out; a duplicate PUBLISH is not delivered twice."""
    broker, _ = make_broker()
    sub = FakeClient(broker, MQTT_5)
    sub.connect("s")
    sub.send(Subscribe(1, (Subscription("q", 2),)))
    sub.received()
    pub = FakeClient(broker, MQTT_5)
    pub.connect("p")
    pub.send(Publish("q", b"once", qos=2, packet_id=9))
    assert pub.received() == [PubRec(9)]
    pub.send(Publish("q", b"once", qos=2, packet_id=9, dup=True))
    assert pub.received() == [PubRec(9)]
    pub.send(PubRel(9))
    assert pub.received() == [PubComp(9)]
    (delivered,) = sub.received()
    assert delivered.qos == 2
    sub.send(PubRec(delivered.packet_id))
    assert sub.received() == [PubRel(delivered.packet_id)]
    sub.send(PubComp(delivered.packet_id))
    assert broker.sessions["s"].inflight == {}


def test_will_on_drop_not_on_disconnect():
    """The will is published when the connection breaks, not after a normal DISCONNECT."""
    broker, _ = make_broker()
    watcher = FakeClient(broker)
    watcher.connect("w")
    watcher.send(Subscribe(1, (Subscription("wills/#", 0),)))
    watcher.received()
    polite = FakeClient(broker)
    polite.connect("polite", will=Will("wills/polite", b"x"))
    polite.send(Disconnect())
    rude = FakeClient(broker)
    rude.connect("rude", will=Will("wills/rude", b"y"))
    rude.drop()
    assert watcher.received() == [Publish("wills/rude", b"y")]


def test_persistent_session_queues_and_redelivers():
    """A persistent session keeps subscriptions and QoS 1 messages while offline."""
    broker, _ = make_broker()
    sub = FakeClient(broker, MQTT_5)
    sub.connect("ps", clean_start=False, properties=Properties(session_expiry_interval=60))
    sub.send(Subscribe(1, (Subscription("t", 1),)))
    sub.received()
    sub.drop()
    pub = FakeClient(broker)
    pub.connect("p")
    pub.send(Publish("t", b"while-away", qos=1, packet_id=1))
    again = FakeClient(broker, MQTT_5)
    again.send(
        Connect(
            "ps",
            protocol_level=MQTT_5,
            clean_start=False,
            properties=Properties(session_expiry_interval=60),
        )
    )
    connack, message = again.received()
    assert connack.session_present
    assert (message.payload, message.qos) == (b"while-away", 1)


def test_unsubscribe_codes():
    """UNSUBACK says which filters existed (5.0)."""
    broker, _ = make_broker()
    client = FakeClient(broker, MQTT_5)
    client.connect("u")
    client.send(Subscribe(1, (Subscription("a", 0),)))
    client.received()
    client.send(Unsubscribe(2, ("a", "b")))
    assert client.received() == [UnsubAck(2, (0, Reason.NO_SUBSCRIPTION_EXISTED))]


def test_malformed_packet_disconnects_with_reason():
    """A malformed packet from a 5.0 client gets DISCONNECT 0x81 and the connection closes."""
    broker, _ = make_broker()
    client = FakeClient(broker, MQTT_5)
    client.connect("m")
    client.send_bytes(b"\x30\x03\x00\x01+")
    (disconnect,) = client.received()
    assert disconnect.reason_code == Reason.TOPIC_NAME_INVALID
    assert disconnect.properties.reason_string == "wildcard in a topic name"
    assert client.closed


def test_route_cache_follows_subscription_changes():
    """Routing stays right when subscriptions change between messages on the same topic."""
    broker, _ = make_broker()
    pub = FakeClient(broker)
    pub.connect("p")
    sub = FakeClient(broker)
    sub.connect("s")
    pub.send(Publish("t/1", b"before"))
    sub.send(Subscribe(1, (Subscription("t/+", 0),)))
    pub.send(Publish("t/1", b"during"))
    sub.send(Unsubscribe(2, ("t/+",)))
    pub.send(Publish("t/1", b"after"))
    assert [p for p in sub.received() if isinstance(p, Publish)] == [Publish("t/1", b"during")]
