"""H9, M1 and L8 of the security review: the edge's budgets per identity and per connection.

One authenticated device must not exhaust the edge's memory, Redis or the database, and an
unauthenticated peer must not get the reactor to decode megabytes: retained bytes, queued
bytes, persistent sessions per identity, topic levels and filter length, publish rate and
bytes, CONNECT size and properties before authentication, connections per address and per
application key, and an idle limit for 3.1.1 clients without keep alive. A client over a
budget is told why where MQTT lets it (reason codes and strings) and nobody else is
affected. Each test states the exploit it replays (in memory, on StringTransports), and the
last ones run ``python -m edge`` with paho clients.
"""

from __future__ import annotations

import queue
import time
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import redis

from edge.codecs import thinglinks as tl
from edge.crypto import encrypt_secret
from edge.metrics import render_metrics
from edge.mqtt.broker import BrokerConfig
from edge.mqtt.codec import encode
from edge.mqtt.errors import Reason
from edge.mqtt.message import Message
from edge.mqtt.packets import (
    MQTT_3_1_1,
    MQTT_5,
    ConnAck,
    Connect,
    Disconnect,
    PubAck,
    SubAck,
    Subscribe,
    Subscription,
    Will,
)
from edge.mqtt.properties import Properties
from tests.edge.edge_process import Edge, running_edge

from .mqtt_broker import client, connected, make_broker, publish

PERSISTENT = {"clean_start": False, "properties": Properties(session_expiry_interval=3600)}


# -- M1: before authentication --------------------------------------------------------------


def test_connect_larger_than_64_kib_is_refused_before_authentication():
    """A 1 MiB CONNECT (the review's exploit, 200,000 empty user properties) is refused from
    its fixed header (0x95) without being buffered or decoded; authentication never runs."""
    broker, hooks, _ = make_broker()
    attacker = client(broker, MQTT_5)
    props = Properties(user_properties=(("", ""),) * 200_000)
    data = encode(Connect("x", MQTT_5, properties=props), MQTT_5)
    assert len(data) > 1_000_000
    attacker.send_bytes(data[:16])
    (connack,) = attacker.received()
    assert connack.reason_code == Reason.PACKET_TOO_LARGE
    assert attacker.closed and hooks.authenticated == 0
    assert broker.refusals["connect_size"] == 1


@pytest.mark.parametrize(
    "props",
    [
        Properties(user_properties=(("k", "v"),) * 33),
        Properties(user_properties=(("k", "v" * 9000),)),
        Properties(correlation_data=b"x" * 9000),
    ],
    ids=["33 user properties", "9 KB user property", "9 KB will property"],
)
def test_connect_properties_are_bounded(props: Properties):
    """More than 32 user properties or 8 KiB of properties (CONNECT or will) are refused with
    0x97 before authentication; the decoder stops at the first one too many."""
    broker, hooks, _ = make_broker()
    attacker = client(broker, MQTT_5)
    if props.correlation_data is not None:
        connect = Connect("x", MQTT_5, will=Will("w", b"", properties=props))
    else:
        connect = Connect("x", MQTT_5, properties=props)
    attacker.send(connect)
    (connack,) = attacker.received()
    assert connack.reason_code == Reason.QUOTA_EXCEEDED
    assert attacker.closed and hooks.authenticated == 0
    assert broker.refusals["properties"] == 1


def test_properties_of_later_packets_are_bounded_too():
    """An authenticated client's PUBLISH with 33 user properties ends its connection (0x97),
    so that no packet costs the reactor more than a few properties to decode."""
    broker, _, _ = make_broker()
    device = connected(broker, "d", "a")
    props = Properties(user_properties=(("k", "v"),) * 33)
    device.send(publish("a/x", properties=props))
    assert device.received() == [
        Disconnect(Reason.QUOTA_EXCEEDED, Properties(reason_string="more than 32 user properties"))
    ]


def test_connections_per_address():
    """An address may hold max_connections_per_address connections (before and after
    authentication); more are closed at once, others are not affected, a closed one frees
    its place, and loopback is not counted by default."""
    broker, _, _ = make_broker(BrokerConfig(max_connections_per_address=2))
    first, second = client(broker, host="203.0.113.9"), client(broker, host="203.0.113.9")
    third = client(broker, host="203.0.113.9")
    assert third.closed and not first.closed and not second.closed
    assert broker.refusals["connections_per_address"] == 1
    elsewhere = client(broker, host="198.51.100.1")
    assert elsewhere.connect("e").reason_code == 0
    first.drop()
    assert not client(broker, host="203.0.113.9").closed
    local = [client(broker, host="127.0.0.1") for _ in range(5)]
    assert not any(c.closed for c in local)


# -- L8: identity-less clients and keep alive 0 ----------------------------------------------


def test_application_key_connections_are_bounded():
    """An application key (no device identity) holds at most identity_connections
    connections: one more is refused with 0x97; taking over its own client id still works;
    another key is not affected."""
    broker, _, _ = make_broker(BrokerConfig(identity_connections=2))
    connected(broker, "k1-a", "app:k1")
    connected(broker, "k1-b", "app:k1")
    extra = client(broker)
    assert extra.connect("k1-c", username="app:k1").reason_code == Reason.QUOTA_EXCEEDED
    again = client(broker)
    assert again.connect("k1-b", username="app:k1").reason_code == 0
    connected(broker, "k2-a", "app:k2")
    assert broker.refusals["identity_connections"] == 1


def test_v311_keep_alive_zero_is_closed_when_idle():
    """A 3.1.1 client asking for no keep alive is closed after max_idle silent seconds (the
    MQTT 5 clients get a server keep alive instead)."""
    broker, _, clock = make_broker(BrokerConfig(max_idle=300))
    idle = connected(broker, "i", "app:k", MQTT_3_1_1, keep_alive=0)
    clock.advance(299)
    assert not idle.closed
    clock.advance(2)
    assert idle.closed


# -- H9: subscriptions and topics -----------------------------------------------------------


def test_deep_filter_gets_a_failure_suback():
    """The review's exploit: a filter 1,000 levels deep (about 1 MB of trie each) is refused
    with 0x8F and a reason string (3.1.1: 0x80) before the ACL or the trie see it; so is one
    of 17 levels, and one longer than 1,024 characters. A normal filter in the same
    SUBSCRIBE is granted."""
    broker, _, _ = make_broker()
    deep = "a/" + "/".join(["+"] * 1000)
    levels = "a/" + "/".join(["+"] * 16)
    long = "a/" + "x" * 1100
    v5 = connected(broker, "v5", "a")
    filters = (deep, levels, long, "$share/g/" + levels, "a/ok")
    v5.send(Subscribe(1, tuple(Subscription(f, 1) for f in filters)))
    why = Properties(reason_string="topic filter is longer than the server allows")
    assert v5.received() == [SubAck(1, (0x8F, 0x8F, 0x8F, 0x8F, 1), why)]
    v4 = connected(broker, "v4", "b", MQTT_3_1_1)
    v4.send(Subscribe(1, (Subscription("b/" + "/".join(["+"] * 1000), 0),)))
    assert v4.received() == [SubAck(1, (0x80,))]
    assert len(broker.subscriptions) == 1
    assert (broker.refusals["filter_levels"], broker.refusals["filter_length"]) == (2, 3)


def test_deep_topic_name_is_refused():
    """A PUBLISH to a topic deeper than 16 levels is dropped: PUBACK 0x90 with a reason."""
    broker, _, _ = make_broker()
    device = connected(broker, "d", "a")
    device.send(publish("a/" + "/".join(["x"] * 20)))
    (ack,) = device.received()
    assert (ack.reason_code, ack.properties.reason_string) == (
        Reason.TOPIC_NAME_INVALID,
        "topic name has more levels than the server allows",
    )


# -- H9: retained messages ------------------------------------------------------------------


def test_retained_bytes_per_identity():
    """A device may keep identity_retained_bytes of retained messages: beyond, its retained
    PUBLISH is refused with 0x97 (not kept, not delivered); replacing its own message within
    the budget works, and another device can still retain."""
    broker, _, _ = make_broker(BrokerConfig(identity_retained_bytes=1000))
    watcher = connected(broker, "w", "app:w")
    watcher.send(Subscribe(1, (Subscription("#", 0),)))
    watcher.received()
    device = connected(broker, "d", "a")
    device.send(publish("a/1", b"x" * 600, retain=True, packet_id=1))
    device.send(publish("a/2", b"x" * 600, retain=True, packet_id=2))
    device.send(publish("a/1", b"y" * 900, retain=True, packet_id=3))
    acks = [p for p in device.received() if isinstance(p, PubAck)]
    assert [a.reason_code for a in acks] == [0, Reason.QUOTA_EXCEEDED, 0]
    assert acks[1].properties.reason_string == "retained message budget exceeded"
    assert [p.topic for p in watcher.received()] == ["a/1", "a/1"]
    assert sorted(broker.retained) == ["a/1"]
    other = connected(broker, "o", "b")
    other.send(publish("b/1", b"z" * 600, retain=True))
    assert other.received() == [PubAck(1)]
    assert broker.retained.size == 3 + 900 + 3 + 600
    assert broker.retained.by_owner == {"a": 903, "b": 603}


def test_retained_bytes_in_all():
    """Beyond max_retained_bytes a retained message is delivered as usual but not kept
    (as beyond max_retained topics); clearing and expiry give the bytes back."""
    broker, _, _ = make_broker(BrokerConfig(max_retained_bytes=100))
    anonymous = connected(broker, "p", None)
    anonymous.send(publish("r/1", b"x" * 60, qos=0, retain=True))
    anonymous.send(publish("r/2", b"x" * 60, qos=0, retain=True))
    assert sorted(broker.retained) == ["r/1"] and broker.refusals["retained_bytes"] == 1
    anonymous.send(publish("r/1", b"", qos=0, retain=True))
    anonymous.send(publish("r/2", b"x" * 60, qos=0, retain=True))
    assert sorted(broker.retained) == ["r/2"] and broker.retained.size == 63


# -- H9: queues and sessions ----------------------------------------------------------------


def test_queued_bytes_per_session():
    """An offline session queues at most max_queued_bytes: the oldest messages go first, and
    a single message larger than the budget is not queued at all."""
    broker, _, _ = make_broker(BrokerConfig(max_queued_bytes=300))
    device = connected(broker, "d", "a", **PERSISTENT)
    device.send(Subscribe(1, (Subscription("a/#", 1),)))
    device.received()
    device.send(Disconnect())
    session = broker.sessions["d"]
    for n in range(5):
        broker.publish(Message("a/c", bytes([65 + n]) * 97, 1))
    assert [o.message.payload[:1] for o in session.pending] == [b"C", b"D", b"E"]
    assert session.queued_bytes == 300
    broker.publish(Message("a/c", b"z" * 1000, 1))
    assert session.queued_bytes == 0 and not session.pending
    assert broker.refusals["queued_bytes"] == 6
    back = client(broker)
    back.send(Connect("d", MQTT_5, username="a", **PERSISTENT))
    assert [type(p) for p in back.received()] == [ConnAck]


def test_persistent_sessions_per_identity():
    """The review's exploit: a new client id each time leaves a 7-day session behind. An
    identity holds at most identity_sessions persistent sessions: a new one ends the one
    offline longest; with every one online, the new one is refused (0x97)."""
    broker, _, clock = make_broker(BrokerConfig(identity_sessions=2))
    for n in range(3):
        device = connected(broker, f"cid-{n}", "a", **PERSISTENT)
        device.send(Disconnect())
        clock.advance(1)
    assert sorted(broker.sessions) == ["cid-1", "cid-2"]
    assert broker.refusals["identity_sessions_ended"] == 1
    app_a = connected(broker, "k-1", "app:k", **PERSISTENT)
    app_b = connected(broker, "k-2", "app:k", **PERSISTENT)
    third = client(broker)
    connack = third.connect("k-3", username="app:k", **PERSISTENT)
    assert connack.reason_code == Reason.QUOTA_EXCEEDED
    assert not app_a.closed and not app_b.closed
    assert sorted(broker.persistent["app:k"]) == ["k-1", "k-2"]
    assert broker.owner_connections == {"app:k": 2}
    # A client that asks for no persistent session is not counted.
    connected(broker, "k-4", "app:k")


# -- H9: publish rate and bytes -------------------------------------------------------------


def test_publish_rate_per_identity():
    """A device publishing faster than its budget (1 message/s, burst 3 here) gets 0x97 with
    a reason for what is over (MQTT 5, QoS 1) and its messages are dropped; after a second it
    may publish one more. Another device publishing at the same time is not affected."""
    broker, _, clock = make_broker(BrokerConfig(publish_rate=1, publish_burst=3))
    flood = connected(broker, "f", "a")
    calm = connected(broker, "c", "b")
    watcher = connected(broker, "w", "app:w")
    watcher.send(Subscribe(1, (Subscription("+/x", 0),)))
    watcher.received()
    for n in range(1, 6):
        flood.send(publish("a/x", packet_id=n))
    calm.send(publish("b/x", packet_id=5))
    codes = [a.reason_code for a in flood.received()]
    assert codes == [0, 0, 0, Reason.QUOTA_EXCEEDED, Reason.QUOTA_EXCEEDED]
    assert calm.received() == [PubAck(5)]
    assert [p.topic for p in watcher.received()] == ["a/x"] * 3 + ["b/x"]
    clock.advance(1)
    flood.send(publish("a/x", packet_id=6), publish("a/x", packet_id=7))
    assert [a.reason_code for a in flood.received()] == [0, Reason.QUOTA_EXCEEDED]
    assert broker.refusals["publish_rate"] == 3
    assert not flood.closed


@pytest.mark.parametrize(("version", "qos"), [(MQTT_5, 0), (MQTT_3_1_1, 0), (MQTT_3_1_1, 1)])
def test_publish_rate_disconnects_who_cannot_be_told(version: int, qos: int):
    """A sender an ack cannot tell (QoS 0, or MQTT 3.1.1) is disconnected when over its
    budget (MQTT 5: DISCONNECT 0x96 Message rate too high); its unacknowledged QoS 1
    message is not acked (it is sent again after reconnecting)."""
    broker, _, _ = make_broker(BrokerConfig(publish_rate=1, publish_burst=2))
    device = connected(broker, "d", "a", version)
    device.send(*(publish("a/x", qos=qos, packet_id=n) for n in (1, 2, 3)))
    packets = device.received()
    expected_acks = [PubAck(1), PubAck(2)] if qos else []
    if version == MQTT_5:
        why = Properties(reason_string="publish rate budget exceeded")
        expected_acks.append(Disconnect(Reason.MESSAGE_RATE_TOO_HIGH, why))
    assert packets == expected_acks
    assert device.closed


def test_publish_bytes_per_identity():
    """Bytes are metered like messages: a device with 1 KB/s (burst 2 KB) gets 0x97 for the
    message that would go over, with its own reason."""
    config = BrokerConfig(publish_bytes_rate=1000, publish_bytes_burst=2000)
    broker, _, _ = make_broker(config)
    device = connected(broker, "d", "a")
    device.send(publish("a/x", b"x" * 1500, packet_id=1), publish("a/x", b"x" * 1500, packet_id=2))
    first, second = device.received()
    assert (first.reason_code, second.reason_code) == (0, Reason.QUOTA_EXCEEDED)
    assert second.properties.reason_string == "publish byte budget exceeded"


def test_budget_refusals_are_metrics():
    """Every refusal is counted per budget for /metrics, with the bytes retained and queued."""
    broker, _, _ = make_broker(BrokerConfig(publish_rate=1, publish_burst=1))
    device = connected(broker, "d", "a")
    device.send(publish("a/x", packet_id=1), publish("a/x", packet_id=2))
    device.received()
    text = render_metrics(broker.samples())
    assert 'edge_budget_refusals_total{budget="publish_rate"} 1' in text
    assert 'edge_budget_refusals_total{budget="client_id"} 0' in text
    assert "edge_retained_bytes 0" in text


# -- H9: message log -------------------------------------------------------------------------


def test_message_log_keeps_4_kib_of_payload():
    """The review's exploit: every 1 MiB uplink became a 1 MiB log event in Redis and SQL.
    A log event keeps 4 KiB of payload and says how large it was; text stays valid UTF-8
    (a character split by the cut is dropped), binary stays base64."""
    event = tl.log_event("d", "up", "/v1/devices/d/other", "é".encode() * 600_000, True, None, 1)
    assert event["trunc"] == 1_200_000
    assert len(event["payload"].encode()) < 4200
    assert event["payload"].endswith("…[truncated: 1200000 bytes]")
    binary = tl.log_event("d", "up", "t", b"\xff" * 10_000, True, None, 1)
    assert (binary["enc"], binary["trunc"], len(binary["payload"])) == ("b64", 10_000, 5464)
    small = tl.log_event("d", "up", "t", b'{"a":1}', True, None, 1)
    assert small["payload"] == '{"a":1}' and "trunc" not in small


# -- configuration ---------------------------------------------------------------------------


def test_budgets_from_the_environment():
    """Every budget has an EDGE_* variable; 0 turns one off; nonsense is refused."""
    config = BrokerConfig.from_env(
        {
            "EDGE_PUBLISH_RATE": "2.5",
            "EDGE_IDENTITY_SESSIONS": "0",
            "EDGE_MAX_CONN_PER_IP": "50",
            "EDGE_CONN_LIMIT_EXEMPT": "10.0.0.0/8, fd00::/8",
            "EDGE_MAX_TOPIC_LEVELS": "",
        }
    )
    assert (config.publish_rate, config.identity_sessions) == (2.5, 0)
    assert config.max_connections_per_address == 50
    assert config.unlimited_addresses == ("10.0.0.0/8", "fd00::/8")
    assert config.max_topic_levels == BrokerConfig().max_topic_levels
    assert BrokerConfig.from_env({"EDGE_CONN_LIMIT_EXEMPT": ""}).unlimited_addresses == ()
    for bad in ({"EDGE_MAX_QUEUED_BYTES": "lots"}, {"EDGE_PUBLISH_BURST": "-1"}):
        with pytest.raises(ValueError):
            BrokerConfig.from_env(bad)
    with pytest.raises(ValueError):
        BrokerConfig.from_env({"EDGE_CONN_LIMIT_EXEMPT": "localhost"})


# -- end to end: python -m edge and paho ----------------------------------------------------

SECRET_KEY = "mqtt-budget-test-secret-key"


@pytest.fixture
def edge(redis_url: str) -> Iterator[Edge]:
    prefix = f"budget{uuid.uuid4().hex[:8]}:"
    r = redis.Redis.from_url(redis_url)
    for device in ("flood", "calm"):
        r.hset(
            f"{prefix}dev:{device}",
            mapping={
                "product": "p",
                "secret": encrypt_secret(f"secret-{device}", SECRET_KEY),
                "status": "activated",
            },
        )
    r.close()
    env = {
        "DJANGO_SECRET_KEY": SECRET_KEY,
        "EDGE_PUBLISH_RATE": "5",
        "EDGE_PUBLISH_BURST": "10",
    }
    with running_edge(redis_url, prefix, env) as running:
        yield running


class Paho:
    def __init__(self, edge: Edge, device: str, version: int = mqtt.MQTTv5) -> None:
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"{device}-cid", protocol=version
        )
        self.client.username_pw_set(device, f"secret-{device}")
        self.client.reconnect_delay_set(60, 120)
        self.acks: queue.Queue[int] = queue.Queue()
        self.subacks: queue.Queue[list[int]] = queue.Queue()
        self.disconnects: queue.Queue[tuple[int, Any]] = queue.Queue()
        connacks: queue.Queue[int] = queue.Queue()
        self.client.on_connect = lambda c, u, f, rc, p: connacks.put(rc.value)
        self.client.on_publish = lambda c, u, mid, rc, p: self.acks.put(rc.value)
        self.client.on_subscribe = lambda c, u, mid, codes, p: self.subacks.put(
            [x.value for x in codes]
        )
        self.client.on_disconnect = lambda c, u, f, rc, p: self.disconnects.put((rc.value, p))
        self.client.connect("127.0.0.1", edge.mqtt_port, 30)
        self.client.loop_start()
        assert connacks.get(timeout=10) == 0

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _metric(edge: Edge, line: str) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{edge.metrics_port}/metrics") as answer:
        return line in answer.read().decode()


@pytest.mark.e2e
def test_device_over_its_publish_budget_is_told_and_others_are_not(edge: Edge):
    """Device 'flood' sends 20 QoS 1 messages at once with a budget of 5/s (burst 10): the
    first 10 are acknowledged, the rest get PUBACK 0x97; then QoS 0 messages (which no ack
    can refuse) end its connection with DISCONNECT 0x96. Device 'calm', publishing meanwhile,
    has every message acknowledged and logged. A filter 1,000 levels deep gets a failure
    SUBACK (0x8F)."""
    flood, calm = Paho(edge, "flood"), Paho(edge, "calm")
    try:
        deep = "/v1/devices/flood/" + "/".join(["+"] * 1000)
        flood.client.subscribe(deep, 1)
        assert flood.subacks.get(timeout=10) == [0x8F]
        for n in range(20):
            flood.client.publish("/v1/devices/flood/other", f"f{n}".encode(), qos=1)
        codes = [flood.acks.get(timeout=10) for _ in range(20)]
        # The burst, and what 5/s refilled while the 20 came in (a slow machine).
        accepted = codes.count(0)
        assert 10 <= accepted <= 12 and codes.count(0x97) == 20 - accepted
        for n in range(5):
            calm.client.publish("/v1/devices/calm/other", f"c{n}".encode(), qos=1)
        assert [calm.acks.get(timeout=10) for _ in range(5)] == [0] * 5
        for _ in range(100):
            # 50/s, well over the budget, but one at a time: the server closes right after its
            # DISCONNECT, and input it has not read would turn that into a reset.
            flood.client.publish("/v1/devices/flood/other", b"q0", qos=0)
            try:
                code, props = flood.disconnects.get(timeout=0.02)
                break
            except queue.Empty:
                continue
        assert code == 0x96 and props.ReasonString == "publish rate budget exceeded"
        assert calm.disconnects.empty()
        logged = edge.wait_for_events(lambda e: e["t"] == "log" and e["dev"] == "calm", 5)
        assert sorted(e["payload"] for e in logged) == [f"c{n}" for n in range(5)]
        deadline = time.monotonic() + 10
        refused = f'edge_budget_refusals_total{{budget="publish_rate"}} {20 - accepted + 1}'
        while not _metric(edge, refused):
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        flood.close()
        calm.close()


@pytest.mark.e2e
def test_v311_device_over_its_budget_is_disconnected(edge: Edge):
    """A 3.1.1 device cannot be told by an ack: over its budget it is disconnected."""
    flood = Paho(edge, "flood", mqtt.MQTTv311)
    try:
        for _ in range(12):
            flood.client.publish("/v1/devices/flood/other", b"x", qos=0)
        assert flood.disconnects.get(timeout=10)[0] != 0
    finally:
        flood.close()
