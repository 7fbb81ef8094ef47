"""End to end with paho-mqtt against ``python -m edge`` in anonymous mode: the scenarios the
Eclipse Paho interoperability suites (client_test.py for 3.1.1, client_test5.py for 5.0)
exercise, each written anew. A few need bytes paho will not send; those use a raw socket."""

from __future__ import annotations

import queue
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from edge.mqtt.codec import Decoder, encode
from edge.mqtt.packets import (
    MQTT_3_1_1,
    MQTT_5,
    ConnAck,
    Connect,
    Packet,
    Publish,
    PubRec,
    PubRel,
    Subscribe,
    Subscription,
)
from edge.mqtt.properties import Properties as EdgeProperties

from .edge_process import Edge, running_edge

pytestmark = pytest.mark.e2e

V311, V5 = mqtt.MQTTv311, mqtt.MQTTv5


@pytest.fixture(scope="module")
def edge(edge_redis_url: str) -> Iterator[Edge]:
    env = {"EDGE_ALLOW_ANONYMOUS": "1", "EDGE_ACL_DENY": "test/nosubscribe"}
    with running_edge(edge_redis_url, f"interop{uuid.uuid4().hex[:8]}:", env) as running:
        yield running


@pytest.fixture
def topic() -> str:
    """A topic prefix of the test's own, so tests sharing the edge never see each other."""
    return f"it{uuid.uuid4().hex[:8]}"


class Paho:
    """One paho client and network connection, with queues for everything that arrives."""

    def __init__(self, edge: Edge, client_id: str, version: int = V5, **options: Any) -> None:
        self.edge = edge
        self.version = version
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=version, **options
        )
        self.client.reconnect_delay_set(60, 120)  # never reconnect behind the test's back
        self.connacks: queue.Queue[tuple[bool, int, Any]] = queue.Queue()
        self.subacks: queue.Queue[list[int]] = queue.Queue()
        self.unsubacks: queue.Queue[list[int]] = queue.Queue()
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.acks: queue.Queue[int] = queue.Queue()
        self.disconnects: queue.Queue[int] = queue.Queue()
        c = self.client
        c.on_connect = lambda _c, _u, flags, rc, props: self.connacks.put(
            (flags.session_present, rc.value, props)
        )
        c.on_subscribe = lambda _c, _u, _m, codes, _p: self.subacks.put([x.value for x in codes])
        c.on_unsubscribe = lambda _c, _u, _m, codes, _p: self.unsubacks.put(
            [x.value for x in codes]
        )
        c.on_message = lambda _c, _u, message: self.messages.put(message)
        c.on_publish = lambda _c, _u, _m, rc, _p: self.acks.put(rc.value)
        c.on_disconnect = lambda _c, _u, _f, rc, _p: self.disconnects.put(rc.value)

    def connect(
        self, clean: bool = True, keepalive: int = 30, **props: Any
    ) -> tuple[bool, int, Any]:
        """CONNECT (5.0 properties by their paho names); returns (session present, code, props)."""
        properties = None
        if props:
            properties = Properties(PacketTypes.CONNECT)
            for name, value in props.items():
                setattr(properties, name, value)
        if self.version == V5:
            self.client.connect(
                "127.0.0.1",
                self.edge.mqtt_port,
                keepalive,
                clean_start=clean,
                properties=properties,
            )
        else:
            self.client.connect("127.0.0.1", self.edge.mqtt_port, keepalive)
        self.client.loop_start()
        return self.connacks.get(timeout=10)

    def subscribe(self, *subs: tuple[str, int | SubscribeOptions], **props: Any) -> list[int]:
        properties = None
        if props:
            properties = Properties(PacketTypes.SUBSCRIBE)
            for name, value in props.items():
                setattr(properties, name, value)
        if self.version == V5:
            options = [
                (t, o if isinstance(o, SubscribeOptions) else SubscribeOptions(o)) for t, o in subs
            ]
            self.client.subscribe(options, properties=properties)
        else:
            self.client.subscribe(list(subs))
        return self.subacks.get(timeout=10)

    def publish(
        self, topic: str, payload: bytes, qos: int = 0, retain: bool = False, **props: Any
    ) -> None:
        properties = None
        if props:
            properties = Properties(PacketTypes.PUBLISH)
            for name, value in props.items():
                setattr(properties, name, value)
        info = self.client.publish(topic, payload, qos, retain, properties=properties)
        info.wait_for_publish(timeout=10)

    def received(self, count: int, timeout: float = 5) -> list[mqtt.MQTTMessage]:
        return [self.messages.get(timeout=timeout) for _ in range(count)]

    def nothing_more(self, wait: float = 0.4) -> bool:
        time.sleep(wait)
        return self.messages.empty()

    def disconnect(self, **props: Any) -> None:
        properties = None
        if props:
            properties = Properties(PacketTypes.DISCONNECT)
            for name, value in props.items():
                setattr(properties, name, value)
        self.client.disconnect(properties=properties)
        self.client.loop_stop()

    def pause(self) -> None:
        """Stop reading and answering, the connection left open (paho-testing's pause)."""
        self.client.loop_stop()

    def break_connection(self) -> None:
        """The network drops: no DISCONNECT, no more reading (paho-testing's terminate/pause)."""
        self.client.loop_stop()
        sock = self.client.socket()
        if sock is not None:
            sock.close()


@pytest.fixture
def paho(edge: Edge) -> Iterator[Any]:
    """Makes Paho clients for a test; every one is stopped after it."""
    made: list[Paho] = []

    def make(client_id: str, version: int = V5, **options: Any) -> Paho:
        client = Paho(edge, client_id, version, **options)
        made.append(client)
        return client

    yield make
    for client in made:
        client.client.disconnect()
        client.client.loop_stop()


def raw_session(port: int, connect: Connect) -> tuple[socket.socket, Decoder, list[Packet]]:
    """A plain socket that sent ``connect``; returns it with what came back at first."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    version = connect.protocol_level
    sock.sendall(encode(connect, version))
    decoder = Decoder(version)
    return sock, decoder, read_packets(sock, decoder, 1)


def read_packets(sock: socket.socket, decoder: Decoder, count: int) -> list[Packet]:
    packets: list[Packet] = []
    while len(packets) < count:
        data = sock.recv(65536)
        if not data:
            break
        packets.extend(decoder.feed(data))
    return packets


# -- the scenarios ------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [V311, V5])
def test_basic_qos_0_1_2(paho, topic, version):
    """A client receives its own QoS 0, 1 and 2 publications on a QoS 2 subscription."""
    client = paho(f"{topic}-a", version)
    assert client.connect()[1] == 0
    assert client.subscribe((f"{topic}/A", 2)) == [2]
    for qos in range(3):
        client.publish(f"{topic}/A", f"qos {qos}".encode(), qos)
    got = client.received(3)
    assert sorted((m.payload, m.qos) for m in got) == [
        (b"qos 0", 0),
        (b"qos 1", 1),
        (b"qos 2", 2),
    ]


@pytest.mark.parametrize("version", [MQTT_3_1_1, MQTT_5])
def test_second_connect_and_wrong_protocol_name_are_refused(edge, version):
    """A second CONNECT on a connection closes it; so does a CONNECT naming another protocol."""
    sock, decoder, (connack,) = raw_session(edge.mqtt_port, Connect("twice", version))
    assert isinstance(connack, ConnAck) and connack.reason_code == 0
    sock.sendall(encode(Connect("twice", version), version))
    rest = read_packets(sock, decoder, 2)  # 5.0: a DISCONNECT 0x82, then the close
    assert [getattr(p, "reason_code", None) for p in rest] == ([0x82] if version == MQTT_5 else [])
    sock.close()
    with socket.create_connection(("127.0.0.1", edge.mqtt_port), timeout=5) as raw:
        raw.sendall(b"\x10\x0b\x00\x02hj\x04\x02\x00\x3c\x00\x01c")
        assert raw.recv(16) == b""  # another protocol: closed without an answer


@pytest.mark.parametrize("version", [V311, V5])
def test_retained_messages_set_and_cleared(paho, topic, version):
    """Retained QoS 0/1/2 messages reach a later wildcard subscriber with the retain flag
    (and their user properties); empty retained messages clear them."""
    client = paho(f"{topic}-r", version)
    client.connect()
    props = {"UserProperty": [("a", "2"), ("c", "3")]} if version == V5 else {}
    for qos, name in enumerate(("A/B", "C/D", "A/C")):
        client.publish(f"{topic}/{name}", f"qos {qos}".encode(), qos, retain=True, **props)
    assert client.subscribe((f"{topic}/+/+", 2)) == [2]
    got = client.received(3)
    assert sorted(m.qos for m in got) == [0, 1, 2]
    assert all(m.retain for m in got)
    if version == V5:
        assert all(m.properties.UserProperty == [("a", "2"), ("c", "3")] for m in got)
    for name in ("A/B", "C/D", "A/C"):
        client.publish(f"{topic}/{name}", b"", 1, retain=True)
    client.received(3)  # the clearing messages reach the live subscription
    late = paho(f"{topic}-late", version)
    late.connect()
    late.subscribe((f"{topic}/+/+", 2))
    assert late.nothing_more()


def test_offline_message_queueing_v311(paho, topic):
    """3.1.1 clean session 0: QoS 1 and 2 messages published while away arrive on return,
    with session present set."""
    away = paho(f"{topic}-away", V311, clean_session=False)
    assert away.connect()[:2] == (False, 0)
    away.subscribe((f"{topic}/+/+", 2))
    away.disconnect()
    sender = paho(f"{topic}-s", V311)
    sender.connect()
    for qos in range(3):
        sender.publish(f"{topic}/q/{qos}", f"qos {qos}".encode(), qos)
    back = paho(f"{topic}-away", V311, clean_session=False)
    present, code, _ = back.connect()
    assert (present, code) == (True, 0)
    got = back.received(2)
    assert sorted(m.payload for m in got) == [b"qos 1", b"qos 2"]
    assert back.nothing_more()


def test_offline_message_queueing_v5(paho, topic):
    """5.0 session expiry: the session and its queued QoS 1/2 messages survive a disconnect."""
    away = paho(f"{topic}-away")
    away.connect(SessionExpiryInterval=99999)
    away.subscribe((f"{topic}/+/+", 2))
    away.disconnect()
    sender = paho(f"{topic}-s")
    sender.connect()
    for qos in range(3):
        sender.publish(f"{topic}/q/{qos}", f"qos {qos}".encode(), qos)
    back = paho(f"{topic}-away")
    present, code, _ = back.connect(clean=False)
    assert (present, code) == (True, 0)
    assert sorted(m.payload for m in back.received(2)) == [b"qos 1", b"qos 2"]


@pytest.mark.parametrize("version", [V311, V5])
def test_will_message_on_broken_connection(paho, topic, version):
    """A connection that breaks publishes its will (with its 5.0 user properties)."""
    watcher = paho(f"{topic}-w", version)
    watcher.connect()
    watcher.subscribe((f"{topic}/will", 2))
    doomed = paho(f"{topic}-d", version)
    props = None
    if version == V5:
        props = Properties(PacketTypes.WILLMESSAGE)
        props.UserProperty = [("a", "2"), ("c", "3")]
    doomed.client.will_set(f"{topic}/will", b"client not disconnected", 1, properties=props)
    doomed.connect()
    doomed.break_connection()
    (will,) = watcher.received(1)
    assert will.payload == b"client not disconnected"
    if version == V5:
        assert will.properties.UserProperty == [("a", "2"), ("c", "3")]


def test_zero_length_client_id(edge, paho):
    """3.1.1: refused (0x02) with clean session 0, accepted with 1; 5.0: accepted with either,
    and given an assigned client identifier."""
    connect = Connect("", MQTT_3_1_1, clean_start=False)
    sock, _, (connack,) = raw_session(edge.mqtt_port, connect)
    assert connack == ConnAck(0x02)
    assert sock.recv(16) == b""
    sock.close()
    assert paho("", V311).connect()[1] == 0
    for clean in (False, True):
        client = paho("")
        _, code, props = client.connect(clean=clean)
        assert code == 0 and props.AssignedClientIdentifier
        client.disconnect()


@pytest.mark.parametrize("version", [V311, V5])
def test_overlapping_subscriptions(paho, topic, version):
    """Two matching subscriptions of one client: one message, at the higher QoS."""
    client = paho(f"{topic}-o", version)
    client.connect()
    client.subscribe((f"{topic}/A/#", 2), (f"{topic}/A/+", 1))
    client.publish(f"{topic}/A/C", b"overlapping topic filters", 2)
    (message,) = client.received(1)
    assert message.qos == 2
    assert client.nothing_more()


@pytest.mark.parametrize("version", [V311, V5])
def test_keepalive_expiry_publishes_the_will(paho, topic, version):
    """A client silent for 1.5 x its keep alive is disconnected and its will is published;
    a keep alive of 0 is never timed out (3.1.1) or given the server's (5.0)."""
    watcher = paho(f"{topic}-w", version)
    watcher.connect(keepalive=0)
    watcher.subscribe((f"{topic}/will", 2))
    silent = paho(f"{topic}-s", version)
    silent.client.will_set(f"{topic}/will", b"keepalive expiry", 2)
    started = time.monotonic()
    silent.connect(keepalive=2)
    silent.client.loop_stop()  # no more PINGREQs
    (will,) = watcher.received(1, timeout=8)
    assert will.payload == b"keepalive expiry"
    assert 2.9 <= time.monotonic() - started < 6


def test_redelivery_on_reconnect(paho, topic, edge):
    """Unacknowledged QoS 1 and QoS 2 messages are sent again, DUP set, when the session
    resumes on a new connection."""
    receiver = paho(f"{topic}-r")
    receiver.connect(SessionExpiryInterval=99999)
    receiver.subscribe((f"{topic}/A/#", 2))
    receiver.pause()  # the messages are sent to it but never acknowledged
    sender = paho(f"{topic}-s")
    sender.connect()
    sender.publish(f"{topic}/A/B", b"one", 1)
    sender.publish(f"{topic}/A/C", b"two", 2)
    time.sleep(0.3)
    receiver.break_connection()
    back = paho(f"{topic}-r")
    present, _, _ = back.connect(clean=False)
    assert present
    got = back.received(2)
    assert sorted(m.payload for m in got) == [b"one", b"two"]
    assert all(m.dup for m in got)


def test_redelivery_repeats_pubrel_for_a_received_qos2(edge, topic):
    """A QoS 2 message the client had PUBREC'd is completed with a resent PUBREL, not sent
    again as a PUBLISH."""
    session = EdgeProperties(session_expiry_interval=60)
    first = Connect(f"{topic}-raw", MQTT_5, clean_start=True, properties=session)
    sock, decoder, _ = raw_session(edge.mqtt_port, first)
    sock.sendall(encode(Subscribe(1, (Subscription(f"{topic}/q2", 2),)), MQTT_5))
    read_packets(sock, decoder, 1)
    sock.sendall(encode(Publish(f"{topic}/q2", b"x", qos=2, packet_id=5), MQTT_5))
    packets = read_packets(sock, decoder, 2)  # our PUBREC and the delivered PUBLISH
    delivered = next(p for p in packets if isinstance(p, Publish))
    sock.sendall(encode(PubRec(delivered.packet_id), MQTT_5))
    read_packets(sock, decoder, 1)  # PUBREL
    sock.close()
    again = Connect(f"{topic}-raw", MQTT_5, clean_start=False, properties=session)
    sock, decoder, (connack, *rest) = raw_session(edge.mqtt_port, again)
    rest += read_packets(sock, decoder, 1 - len(rest))
    assert connack.session_present
    assert rest == [PubRel(delivered.packet_id)]
    sock.close()


@pytest.mark.parametrize("version", [V311, V5])
def test_subscribe_failure_on_denied_filter(paho, version):
    """A filter in EDGE_ACL_DENY is refused with 0x80 in both versions."""
    client = paho(f"deny{version}", version)
    client.connect()
    assert client.subscribe(("test/nosubscribe", 2)) == [0x80]


@pytest.mark.parametrize("version", [V311, V5])
def test_dollar_topics_not_matched_by_wildcards(paho, topic, version):
    """A filter starting with a wildcard does not match topics starting with '$'."""
    client = paho(f"{topic}-d", version)
    client.connect(keepalive=0)
    client.subscribe(("+/+", 2), ("#", 0))
    client.publish(f"${topic}/A", b"", 1)
    assert client.nothing_more()
    client.subscribe((f"${topic}/+", 1))
    client.publish(f"${topic}/A", b"explicit", 1)
    assert client.received(1)[0].payload == b"explicit"


@pytest.mark.parametrize("version", [V311, V5])
def test_unsubscribe(paho, topic, version):
    """After unsubscribing one of three topics, only the other two are received; 5.0 UNSUBACK
    says 0x00 for it and 0x11 for a filter never subscribed."""
    client = paho(f"{topic}-u", version)
    client.connect()
    for name in ("A", "A/B", "C"):
        client.subscribe((f"{topic}/{name}", 2))
    client.client.unsubscribe([f"{topic}/A", f"{topic}/none"])
    codes = client.unsubacks.get(timeout=5)
    if version == V5:
        assert codes == [0x00, 0x11]
    sender = paho(f"{topic}-s", version)
    sender.connect()
    for name in ("A", "A/B", "C"):
        sender.publish(f"{topic}/{name}", name.encode(), 1)
    assert sorted(m.payload for m in client.received(2)) == [b"A/B", b"C"]
    assert client.nothing_more()


def test_user_properties_and_payload_format(paho, topic):
    """User properties, payload format indicator and content type pass through at every QoS."""
    client = paho(f"{topic}-p")
    client.connect()
    client.subscribe((f"{topic}/A", 2))
    for qos in range(3):
        client.publish(
            f"{topic}/A",
            b"",
            qos,
            UserProperty=[("a", "2"), ("c", "3")],
            PayloadFormatIndicator=1,
            ContentType="My name",
        )
    for message in client.received(3):
        props = message.properties
        assert props.UserProperty == [("a", "2"), ("c", "3")]
        assert (props.PayloadFormatIndicator, props.ContentType) == (1, "My name")


def test_message_expiry(paho, topic):
    """Queued messages whose expiry passed are not delivered; the others arrive with the
    remaining lifetime."""
    away = paho(f"{topic}-away")
    away.connect(SessionExpiryInterval=99999)
    away.subscribe((f"{topic}/A", 2))
    away.disconnect(SessionExpiryInterval=999999999)
    sender = paho(f"{topic}-s")
    sender.connect()
    for qos in (1, 2):
        sender.publish(f"{topic}/A", b"expire", qos, MessageExpiryInterval=1)
        sender.publish(f"{topic}/A", b"keep", qos, MessageExpiryInterval=60)
    time.sleep(2.1)
    back = paho(f"{topic}-away")
    back.connect(clean=False)
    got = back.received(2)
    assert [m.payload for m in got] == [b"keep", b"keep"]
    assert all(m.properties.MessageExpiryInterval < 60 for m in got)
    assert back.nothing_more()


def test_subscribe_options(paho, topic):
    """No local, retain as published, and retain handling 0/1/2."""
    a = paho(f"{topic}-a")
    b = paho(f"{topic}-b")
    a.connect()
    b.connect()
    a.subscribe((f"{topic}/A", SubscribeOptions(2, noLocal=True)))
    b.subscribe((f"{topic}/A", SubscribeOptions(2, noLocal=True)))
    a.publish(f"{topic}/A", b"noLocal test", 1)
    assert b.received(1)[0].payload == b"noLocal test"
    assert a.nothing_more()

    rap = paho(f"{topic}-rap")
    rap.connect()
    rap.subscribe((f"{topic}/R", SubscribeOptions(2, retainAsPublished=True)))
    rap.publish(f"{topic}/R", b"retain as published false", 1)
    rap.publish(f"{topic}/R", b"retain as published true", 1, retain=True)
    assert [m.retain for m in rap.received(2)] == [False, True]
    rap.publish(f"{topic}/R", b"", 1, retain=True)

    c = paho(f"{topic}-c")
    c.connect()
    for qos, name in enumerate(("A/B", "C/D", "A/C")):
        c.publish(f"{topic}/{name}", f"qos {qos}".encode(), qos, retain=True)
    c.subscribe((f"{topic}/+/+", SubscribeOptions(2, retainHandling=1)))
    assert len(c.received(3)) == 3
    c.subscribe((f"{topic}/+/+", SubscribeOptions(2, retainHandling=1)))
    assert c.nothing_more()
    d = paho(f"{topic}-d")
    d.connect()
    d.subscribe((f"{topic}/+/+", SubscribeOptions(2, retainHandling=2)))
    assert d.nothing_more()
    e = paho(f"{topic}-e")
    e.connect()
    for _ in range(2):
        e.subscribe((f"{topic}/+/+", SubscribeOptions(2, retainHandling=0)))
        assert sorted(m.qos for m in e.received(3)) == [0, 1, 2]
    for name in ("A/B", "C/D", "A/C"):
        c.publish(f"{topic}/{name}", b"", 0, retain=True)


def test_subscription_identifiers(paho, topic):
    """Each message carries the identifiers of the subscriptions it matched."""
    a = paho(f"{topic}-a")
    a.connect()
    a.subscribe((f"{topic}/A", 2), SubscriptionIdentifier=456789)
    b = paho(f"{topic}-b")
    b.connect()
    b.subscribe((f"{topic}/A", 2), SubscriptionIdentifier=2)
    b.subscribe((f"{topic}/A/#", 2), SubscriptionIdentifier=3)
    b.publish(f"{topic}/A", b"sub identifier test", 1)
    assert a.received(1)[0].properties.SubscriptionIdentifier == [456789]
    assert sorted(b.received(1)[0].properties.SubscriptionIdentifier) == [2, 3]


def test_request_response(paho, topic):
    """Response topic and correlation data reach the responder, whose answer reaches the
    requester."""
    requester = paho(f"{topic}-req")
    responder = paho(f"{topic}-rsp")
    requester.connect()
    responder.connect()
    requester.subscribe((f"{topic}/reply", SubscribeOptions(2, noLocal=True)))
    responder.subscribe((f"{topic}/request", SubscribeOptions(2, noLocal=True)))
    requester.publish(
        f"{topic}/request", b"request", 1, ResponseTopic=f"{topic}/reply", CorrelationData=b"334"
    )
    (request,) = responder.received(1)
    assert request.properties.ResponseTopic == f"{topic}/reply"
    assert request.properties.CorrelationData == b"334"
    responder.publish(request.properties.ResponseTopic, b"response", 1, CorrelationData=b"334")
    (response,) = requester.received(1)
    assert (response.payload, response.properties.CorrelationData) == (b"response", b"334")


def test_client_topic_aliases(paho, topic, edge):
    """A client may name a topic once by alias; alias 0 and an alias unknown on this
    connection are refused with a DISCONNECT."""
    client = paho(f"{topic}-alias")
    _, _, connack = client.connect(SessionExpiryInterval=99999)
    assert connack.TopicAliasMaximum >= 1
    client.subscribe((f"{topic}/A", 2))
    client.publish(f"{topic}/A", b"topic alias 1", 1, TopicAlias=1)
    client.publish("", b"topic alias 2", 1, TopicAlias=1)
    assert [m.payload for m in client.received(2)] == [b"topic alias 1", b"topic alias 2"]
    client.disconnect()
    again = paho(f"{topic}-alias")
    assert again.connect(clean=False)[0]
    again.client.publish("", b"topic alias 3", 1, properties=_alias_props(1))
    assert again.disconnects.get(timeout=5) == 0x82
    # paho refuses to send alias 0 itself: a raw PUBLISH with topic alias 0.
    sock, decoder, _ = raw_session(edge.mqtt_port, Connect(f"{topic}-zero", MQTT_5))
    sock.sendall(b"\x30\x07\x00\x01a\x03\x23\x00\x00")
    (disconnect,) = read_packets(sock, decoder, 1)
    assert disconnect.reason_code == 0x94
    sock.close()


def _alias_props(alias: int) -> Properties:
    props = Properties(PacketTypes.PUBLISH)
    props.TopicAlias = alias
    return props


def test_server_topic_aliases(paho, topic):
    """With Topic Alias Maximum 1 the server names the topic once and then sends the alias;
    without it, no aliases."""
    with_alias = paho(f"{topic}-a")
    with_alias.connect(TopicAliasMaximum=1)
    with_alias.subscribe((f"{topic}/A", 2))
    for qos in range(3):
        with_alias.publish(f"{topic}/A", b"topic alias 1", qos)
    got = with_alias.received(3)
    assert [m.topic for m in got] == [f"{topic}/A", "", ""]
    assert [m.properties.TopicAlias for m in got] == [1, 1, 1]
    plain = paho(f"{topic}-b")
    plain.connect()
    plain.subscribe((f"{topic}/B", 2))
    for qos in range(3):
        plain.publish(f"{topic}/B", b"no alias", qos)
    assert all(not hasattr(m.properties, "TopicAlias") for m in plain.received(3))


def test_maximum_packet_size(paho, topic):
    """A message larger than the client's Maximum Packet Size is not sent to it; smaller ones
    still are."""
    client = paho(f"{topic}-small")
    _, _, connack = client.connect(MaximumPacketSize=64)
    assert connack.MaximumPacketSize >= 65535
    client.subscribe((f"{topic}/A", 2))
    client.publish(f"{topic}/A", b"." * 20, 0)
    client.publish(f"{topic}/A", b"." * 64, 1)
    client.publish(f"{topic}/A", b"after", 1)
    assert [m.payload for m in client.received(2)] == [b"." * 20, b"after"]
    assert client.nothing_more()


def test_server_keep_alive(paho, topic):
    """A 5.0 client asking for 120 s is told the server keep alive of 60 s."""
    client = paho(f"{topic}-k")
    _, _, connack = client.connect(keepalive=120)
    assert connack.ServerKeepAlive == 60


def test_flow_control_client_receive_maximum(paho, topic):
    """With Receive Maximum 2 the server keeps at most two unacknowledged QoS 1 messages in
    flight; acknowledging one releases the next."""
    receiver = paho(f"{topic}-r", manual_ack=True)
    receiver.connect(ReceiveMaximum=2)
    receiver.subscribe((f"{topic}/A", 2))
    sender = paho(f"{topic}-s")
    sender.connect()
    for i in range(3):
        sender.publish(f"{topic}/A", f"message {i}".encode(), 1)
    first, second = receiver.received(2)
    assert receiver.nothing_more()
    receiver.client.ack(first.mid, 1)
    (third,) = receiver.received(1)
    assert [m.payload for m in (first, second, third)] == [b"message 0", b"message 1", b"message 2"]


def test_flow_control_server_receive_maximum(edge, topic):
    """More unreleased QoS 2 messages than the server's Receive Maximum → DISCONNECT 0x93."""
    sock, decoder, (connack,) = raw_session(edge.mqtt_port, Connect(f"{topic}-flood", MQTT_5))
    limit = connack.properties.receive_maximum
    sock.sendall(
        b"".join(
            encode(Publish(f"{topic}/A", b"m", qos=2, packet_id=i), MQTT_5)
            for i in range(1, limit + 2)
        )
    )
    packets = read_packets(sock, decoder, limit + 1)
    assert packets[-1].reason_code == 0x93
    assert sock.recv(16) == b""
    sock.close()


def test_will_delay(paho, topic):
    """A will is held for its delay (or the shorter session expiry) and not sent at all when
    the client comes back in time."""
    watcher = paho(f"{topic}-w")
    watcher.connect()
    watcher.subscribe((f"{topic}/will", 2))

    def doomed(delay: int, expiry: int) -> Paho:
        client = paho(f"{topic}-d")
        props = Properties(PacketTypes.WILLMESSAGE)
        props.WillDelayInterval = delay
        client.client.will_set(f"{topic}/will", f"{delay}/{expiry}".encode(), 1, properties=props)
        client.connect(SessionExpiryInterval=expiry)
        return client

    doomed(1, 10).break_connection()
    started = time.monotonic()
    assert watcher.received(1)[0].payload == b"1/10"
    assert 0.7 < time.monotonic() - started < 3
    doomed(5, 0).break_connection()
    started = time.monotonic()
    assert watcher.received(1)[0].payload == b"5/0"
    assert time.monotonic() - started < 1.5
    doomed(1, 10).break_connection()
    paho(f"{topic}-d").connect(clean=False, SessionExpiryInterval=10)
    assert watcher.nothing_more(1.3)


def test_session_expiry(paho, topic):
    """Expiry 0 ends the session at disconnect; a positive one keeps it that long; DISCONNECT
    may change it."""

    def connect(clean: bool, expiry: int) -> tuple[Paho, bool]:
        client = paho(f"{topic}-s")
        present, code, _ = client.connect(clean=clean, SessionExpiryInterval=expiry)
        assert code == 0
        return client, present

    client, _ = connect(True, 0)
    client.subscribe((f"{topic}/A", 2))
    client.disconnect()
    client, present = connect(False, 0)
    assert not present
    client.disconnect()
    client, _ = connect(True, 1)
    client.subscribe((f"{topic}/A", 2))
    client.disconnect()
    client, present = connect(False, 1)
    assert present
    client.disconnect()
    time.sleep(2.2)
    client, present = connect(False, 1)
    assert not present
    client.subscribe((f"{topic}/A", 2))
    client.disconnect(SessionExpiryInterval=30)
    time.sleep(2.2)
    client, present = connect(False, 1)
    assert present
    client.disconnect(SessionExpiryInterval=0)
    client, present = connect(False, 1)
    assert not present


def test_shared_subscriptions(paho, topic):
    """A message on a shared subscription reaches one member of the group; a plain
    subscription of both members gets it on each."""
    a = paho(f"{topic}-a")
    b = paho(f"{topic}-b")
    for client in (a, b):
        client.connect()
        assert client.subscribe((f"$share/sharename/{topic}/x", 2), (f"{topic}/A", 2)) == [2, 2]
    b.publish(f"{topic}/A", b"plain", 0)
    assert a.received(1)[0].payload == b"plain" and b.received(1)[0].payload == b"plain"
    b.publish(f"{topic}/x", b"shared", 0)
    time.sleep(0.5)
    assert a.messages.qsize() + b.messages.qsize() == 1


def test_assigned_client_identifier(paho):
    """An empty client id gets a non-empty assigned client identifier."""
    _, code, props = paho("").connect()
    assert code == 0 and props.AssignedClientIdentifier != ""
