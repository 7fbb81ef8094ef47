"""MQTT 5 features of the broker, on in-memory transports and a fake clock."""

from __future__ import annotations

from twisted.internet.task import Clock

from edge.mqtt.broker import Broker, BrokerConfig
from edge.mqtt.errors import Reason
from edge.mqtt.packets import (
    MQTT_3_1_1,
    MQTT_5,
    Connect,
    Disconnect,
    PubAck,
    Publish,
    SubAck,
    Subscribe,
    Subscription,
    Will,
)
from edge.mqtt.properties import Properties
from tests.support.broker import FakeClient, make_broker


def subscriber(
    broker: Broker, client_id: str, *subs: Subscription, props=None, **connect
) -> FakeClient:
    client = FakeClient(broker, MQTT_5)
    client.connect(client_id, **connect)
    client.send(Subscribe(1, subs))
    (suback,) = [p for p in client.received() if isinstance(p, SubAck)]
    assert all(code < 0x80 for code in suback.reason_codes)
    return client


def publisher(broker: Broker, version: int = MQTT_5) -> FakeClient:
    client = FakeClient(broker, version, port=50000)
    client.connect("pub")
    return client


def test_subscription_identifiers_and_overlap():
    """Overlapping subscriptions deliver once, carrying every matching subscription identifier."""
    broker, _ = make_broker()
    sub = FakeClient(broker, MQTT_5)
    sub.connect("s")
    sub.send(Subscribe(1, (Subscription("a/+", 0),), Properties(subscription_identifiers=(5,))))
    sub.send(Subscribe(2, (Subscription("a/#", 1),), Properties(subscription_identifiers=(9,))))
    sub.received()
    publisher(broker).send(Publish("a/b", b"x", qos=1, packet_id=1))
    (message,) = sub.received()
    assert message.qos == 1
    assert sorted(message.properties.subscription_identifiers) == [5, 9]


def test_no_local_and_retain_as_published():
    """no_local skips the client's own messages; retain_as_published keeps the retain flag."""
    broker, _ = make_broker()
    client = FakeClient(broker, MQTT_5)
    client.connect("me")
    client.send(
        Subscribe(
            1,
            (
                Subscription("own/#", 0, no_local=True),
                Subscription("keep/#", 0, retain_as_published=True),
                Subscription("plain/#", 0),
            ),
        )
    )
    client.received()
    client.send(
        Publish("own/x", b"1"),
        Publish("keep/x", b"2", retain=True),
        Publish("plain/x", b"3", retain=True),
    )
    assert [(p.topic, p.retain) for p in client.received()] == [
        ("keep/x", True),
        ("plain/x", False),
    ]


def test_retain_handling_options():
    """0: retained sent on every subscribe; 1: only on a new subscription; 2: never."""
    broker, _ = make_broker()
    publisher(broker).send(Publish("r/t", b"kept", retain=True))
    client = FakeClient(broker, MQTT_5)
    client.connect("c")

    def retained_after(sub: Subscription) -> int:
        client.send(Subscribe(1, (sub,)))
        return sum(1 for p in client.received() if isinstance(p, Publish))

    assert retained_after(Subscription("r/#", 0, retain_handling=0)) == 1
    assert retained_after(Subscription("r/#", 0, retain_handling=0)) == 1
    assert retained_after(Subscription("r/#", 0, retain_handling=1)) == 0
    assert retained_after(Subscription("r/+", 0, retain_handling=1)) == 1
    assert retained_after(Subscription("r/t", 0, retain_handling=2)) == 0


def test_message_expiry():
    """Expired messages are not delivered; the interval sent is what remains."""
    broker, clock = make_broker()
    sub = subscriber(
        broker,
        "s",
        Subscription("e/#", 1),
        clean_start=False,
        properties=Properties(session_expiry_interval=600),
    )
    sub.drop()
    pub = publisher(broker)
    pub.send(
        Publish(
            "e/short", b"1", qos=1, packet_id=1, properties=Properties(message_expiry_interval=5)
        ),
        Publish(
            "e/long", b"2", qos=1, packet_id=2, properties=Properties(message_expiry_interval=100)
        ),
    )
    clock.advance(10)
    again = FakeClient(broker, MQTT_5)
    again.send(
        Connect(
            "s",
            protocol_level=MQTT_5,
            clean_start=False,
            properties=Properties(session_expiry_interval=600),
        )
    )
    packets = again.received()
    messages = [p for p in packets if isinstance(p, Publish)]
    assert [m.topic for m in messages] == ["e/long"]
    assert messages[0].properties.message_expiry_interval == 90


def test_topic_alias_from_client():
    """A client may set an alias, then publish with an empty topic; unknown aliases are errors."""
    broker, _ = make_broker()
    sub = subscriber(broker, "s", Subscription("long/topic/name", 0))
    pub = publisher(broker)
    pub.send(
        Publish("long/topic/name", b"1", properties=Properties(topic_alias=1)),
        Publish("", b"2", properties=Properties(topic_alias=1)),
    )
    assert [(p.topic, p.payload) for p in sub.received()] == [
        ("long/topic/name", b"1"),
        ("long/topic/name", b"2"),
    ]
    pub.send(Publish("", b"3", properties=Properties(topic_alias=2)))
    (disconnect,) = pub.received()
    assert disconnect.reason_code == Reason.PROTOCOL_ERROR
    too_big = publisher(broker)
    too_big.send(
        Publish("t", b"", properties=Properties(topic_alias=broker.config.topic_alias_maximum + 1))
    )
    assert too_big.received()[0].reason_code == Reason.TOPIC_ALIAS_INVALID


def test_topic_alias_to_client():
    """Towards a client with a topic alias maximum, repeated topics are sent as aliases."""
    broker, _ = make_broker()
    sub = subscriber(
        broker,
        "s",
        Subscription("t/#", 0),
        properties=Properties(topic_alias_maximum=1),
    )
    pub = publisher(broker)
    pub.send(Publish("t/a", b"1"), Publish("t/a", b"2"), Publish("t/b", b"3"))
    got = sub.received()
    assert [(p.topic, p.properties.topic_alias) for p in got] == [
        ("t/a", 1),
        ("", 1),
        ("t/b", None),
    ]
    # Only one alias was allowed, so the second topic went out in full.
    assert sub.protocol.connection.aliases_out == {"t/a": 1}


def test_receive_maximum_of_client_limits_inflight():
    """No more unacknowledged QoS 1 messages than the client's receive maximum."""
    broker, _ = make_broker()
    sub = subscriber(
        broker,
        "s",
        Subscription("q", 1),
        properties=Properties(receive_maximum=2),
    )
    pub = publisher(broker)
    for i in range(1, 5):
        pub.send(Publish("q", str(i).encode(), qos=1, packet_id=i))
    first = sub.received()
    assert [p.payload for p in first] == [b"1", b"2"]
    sub.send(PubAck(first[0].packet_id))
    assert [p.payload for p in sub.received()] == [b"3"]


def test_maximum_packet_size_of_client():
    """A message larger than the client's maximum packet size is not sent to it."""
    broker, _ = make_broker()
    sub = subscriber(
        broker,
        "s",
        Subscription("big", 0),
        properties=Properties(maximum_packet_size=64),
    )
    pub = publisher(broker)
    pub.send(Publish("big", b"x" * 100), Publish("big", b"small"))
    assert [p.payload for p in sub.received()] == [b"small"]
    assert broker.stats["dropped"] == 1


def test_server_maximum_packet_size():
    """A packet above the server's maximum gets DISCONNECT 0x95."""
    broker, _ = make_broker(config=BrokerConfig(max_packet_size=128))
    client = FakeClient(broker, MQTT_5)
    client.connect("c")
    client.send(Publish("t", b"x" * 200))
    assert client.received()[0].reason_code == Reason.PACKET_TOO_LARGE
    assert client.closed


def test_shared_subscription_distributes():
    """Each message on a $share group goes to one member, alternating."""
    broker, _ = make_broker()
    a = subscriber(broker, "a", Subscription("$share/g/work/#", 1))
    b = subscriber(broker, "b", Subscription("$share/g/work/#", 1))
    pub = publisher(broker)
    for i in range(4):
        pub.send(Publish("work/x", str(i).encode()))
    got_a = [p.payload for p in a.received()]
    got_b = [p.payload for p in b.received()]
    assert sorted(got_a + got_b) == [b"0", b"1", b"2", b"3"]
    assert len(got_a) == len(got_b) == 2


def test_shared_subscription_with_no_local_is_protocol_error():
    """no_local on a shared subscription closes the connection (3.8.3.1)."""
    broker, _ = make_broker()
    client = FakeClient(broker, MQTT_5)
    client.connect("c")
    client.send(Subscribe(1, (Subscription("$share/g/x", 0, no_local=True),)))
    assert client.received()[0].reason_code == Reason.PROTOCOL_ERROR


def test_invalid_filters_get_0x8f():
    """Malformed filters are refused per subscription, others still granted."""
    broker, _ = make_broker()
    client = FakeClient(broker, MQTT_5)
    client.connect("c")
    client.send(
        Subscribe(1, (Subscription("a/#/b", 0), Subscription("$share/g", 0), Subscription("ok", 1)))
    )
    assert client.received()[0].reason_codes == (
        Reason.TOPIC_FILTER_INVALID,
        Reason.TOPIC_FILTER_INVALID,
        1,
    )


def test_will_delay_cancelled_by_reconnect_and_sent_after_delay():
    """With a will delay, a quick reconnect cancels the will; else it goes after the delay."""
    broker, clock = make_broker()
    watcher = subscriber(broker, "w", Subscription("will/#", 0))
    session = Properties(session_expiry_interval=100)
    will = Will("will/x", b"gone", properties=Properties(will_delay_interval=10))
    first = FakeClient(broker, MQTT_5)
    first.connect("d", clean_start=False, will=will, properties=session)
    first.drop()
    clock.advance(5)
    back = FakeClient(broker, MQTT_5)
    back.connect("d", clean_start=False, will=will, properties=session)
    clock.advance(20)
    assert watcher.received() == []
    back.drop()
    clock.advance(9)
    assert watcher.received() == []
    clock.advance(2)
    assert [p.payload for p in watcher.received()] == [b"gone"]


def test_will_with_disconnect_with_will_message():
    """DISCONNECT with reason 0x04 still publishes the will."""
    broker, _ = make_broker()
    watcher = subscriber(broker, "w", Subscription("will/#", 0))
    client = FakeClient(broker, MQTT_5)
    client.connect("d", will=Will("will/y", b"bye"))
    client.send(Disconnect(Reason.DISCONNECT_WITH_WILL))
    assert [p.payload for p in watcher.received()] == [b"bye"]


def test_session_expiry():
    """A persistent session disappears when its expiry interval has passed."""
    broker, clock = make_broker()
    client = FakeClient(broker, MQTT_5)
    client.connect("p", clean_start=False, properties=Properties(session_expiry_interval=30))
    client.drop()
    clock.advance(20)
    assert "p" in broker.sessions
    clock.advance(15)
    assert "p" not in broker.sessions


def test_disconnect_cannot_set_expiry_after_zero():
    """Session expiry 0 at CONNECT cannot be raised on DISCONNECT (3.14.2.2.2)."""
    broker, _ = make_broker()
    client = FakeClient(broker, MQTT_5)
    client.connect("z")
    client.send(Disconnect(0, Properties(session_expiry_interval=10)))
    assert client.received()[0].reason_code == Reason.PROTOCOL_ERROR


def test_offline_queue_is_bounded():
    """An offline persistent session keeps at most max_queued_messages, dropping the oldest."""
    broker, _ = make_broker(config=BrokerConfig(max_queued_messages=3))
    sub = subscriber(
        broker,
        "s",
        Subscription("q", 1),
        clean_start=False,
        properties=Properties(session_expiry_interval=60),
    )
    sub.drop()
    pub = publisher(broker)
    for i in range(1, 6):
        pub.send(Publish("q", str(i).encode(), qos=1, packet_id=i))
    assert [o.message.payload for o in broker.sessions["s"].pending] == [b"3", b"4", b"5"]
    assert broker.stats["dropped"] == 2


def test_request_problem_information_zero_suppresses_reason_strings():
    """With request problem information 0, PUBACKs carry no reason string."""
    from edge.mqtt.policy import Acl, AuthResult, BrokerHooks

    class Closed(Acl):
        def may_publish(self, topic):
            return False

    class Hooks(BrokerHooks):
        def authenticate(self, connection):
            return AuthResult(acl=Closed())

    clock = Clock()
    broker = Broker(clock, Hooks())
    client = FakeClient(broker, MQTT_5)
    client.connect("c", properties=Properties(request_problem_information=0))
    client.send(Publish("t", b"", qos=1, packet_id=1))
    (ack,) = client.received()
    assert ack.reason_code == Reason.NOT_AUTHORIZED and ack.properties.reason_string is None


def test_server_keep_alive_and_unsupported_version():
    """Keep alive 0 gets the server's keep alive; an unknown protocol level gets CONNACK 0x01."""
    broker, _ = make_broker(config=BrokerConfig(max_keep_alive=120))
    connack = FakeClient(broker, MQTT_5).connect("k", keep_alive=0)
    assert connack.properties.server_keep_alive == 120
    old = FakeClient(broker, MQTT_3_1_1)
    old.send_bytes(b"\x10\x0d\x00\x04MQTT\x07\x02\x00\x3c\x00\x01c")
    assert old.transport.value() == b"\x20\x02\x00\x01"
    assert old.closed


def test_client_publish_with_subscription_identifier_is_protocol_error():
    """A PUBLISH from a client must not carry a subscription identifier (MQTT-3.3.4-6)."""
    broker, _ = make_broker()
    client = FakeClient(broker, MQTT_5)
    client.connect("c")
    client.send(Publish("t", b"", properties=Properties(subscription_identifiers=(3,))))
    assert client.received()[0].reason_code == Reason.PROTOCOL_ERROR
    assert client.closed
