"""End to end with paho in anonymous mode: the edge as a general MQTT broker (3.1.1 and 5.0)."""

from __future__ import annotations

import queue
import time
import uuid
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from .edge_process import Client, Edge, running_edge

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def broker(edge_redis_url: str) -> Iterator[Edge]:
    env = {"EDGE_ALLOW_ANONYMOUS": "1", "EDGE_ACL_DENY": "secret/#,$SYS/#"}
    with running_edge(edge_redis_url, f"e2eb{uuid.uuid4().hex[:8]}:", env) as edge:
        yield edge


def anon(
    broker: Edge, clients: list[Client], client_id: str, protocol: int = mqtt.MQTTv5
) -> Client:
    client = Client(broker, client_id, protocol)
    clients.append(client)
    assert client.connect(None, None) == 0
    return client


def test_anonymous_pubsub_both_versions_and_deny_list(broker: Edge, clients: list[Client]):
    """Anonymous 3.1.1 and 5.0 clients talk to each other; EDGE_ACL_DENY filters are refused."""
    v4 = anon(broker, clients, "v4", mqtt.MQTTv311)
    v5 = anon(broker, clients, "v5")
    assert v4.subscribe("chat/#", 2) == [2]
    assert v4.subscribe("secret/x", 1) == [0x80]
    assert v5.subscribe("secret/#", 1) == [0x80]
    v5.publish("chat/hello", b"hi", qos=2)
    message = v4.next_message()
    assert (message.topic, message.payload, message.qos) == ("chat/hello", b"hi", 2)
    acks: queue.Queue[int] = queue.Queue()
    v5.client.on_publish = lambda c, u, mid, rc, props: acks.put(int(rc.value))
    v5.publish("secret/x", b"no", qos=1)
    assert acks.get(timeout=5) == 0x87


def test_retained_and_shared_subscriptions(broker: Edge, clients: list[Client]):
    """Retained messages reach late subscribers; a $share group splits the messages."""
    pub = anon(broker, clients, "pub")
    pub.client.publish("state/lamp", b"on", qos=1, retain=True).wait_for_publish(5)
    late = anon(broker, clients, "late")
    late.subscribe("state/+", 1)
    retained = late.next_message()
    assert (retained.payload, retained.retain) == (b"on", True)
    workers = [anon(broker, clients, f"w{i}") for i in range(2)]
    for worker in workers:
        assert worker.subscribe("$share/g/jobs/#", 1) == [1]
    for i in range(6):
        pub.publish(f"jobs/{i}", str(i).encode())
    time.sleep(0.5)
    counts = [w.messages.qsize() for w in workers]
    assert sum(counts) == 6 and all(c > 0 for c in counts)


def test_will_and_persistent_session(broker: Edge, clients: list[Client]):
    """A broken connection publishes its will; a persistent session receives what it missed."""
    watcher = anon(broker, clients, "watcher")
    watcher.subscribe("wills/#", 1)
    doomed = Client(broker, "doomed")
    doomed.client.will_set("wills/doomed", b"gone", qos=1)
    assert doomed.connect(None, None) == 0
    doomed.client.loop_stop()
    doomed.client.socket().close()
    assert watcher.next_message().payload == b"gone"

    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 300
    sleeper = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id="sleeper", protocol=mqtt.MQTTv5
    )
    connacks: queue.Queue = queue.Queue()
    sleeper.on_connect = lambda c, u, flags, rc, p: connacks.put(flags.session_present)
    got: queue.Queue = queue.Queue()
    sleeper.on_message = lambda c, u, m: got.put(m.payload)
    sleeper.connect("127.0.0.1", broker.mqtt_port, clean_start=False, properties=props)
    sleeper.loop_start()
    assert connacks.get(timeout=5) is False
    sleeper.subscribe("inbox/sleeper", 1)
    time.sleep(0.3)
    sleeper.disconnect()
    sleeper.loop_stop()
    anon(broker, clients, "sender").publish("inbox/sleeper", b"while you slept", qos=1)
    sleeper.connect("127.0.0.1", broker.mqtt_port, clean_start=False, properties=props)
    sleeper.loop_start()
    try:
        assert connacks.get(timeout=5) is True
        assert got.get(timeout=5) == b"while you slept"
    finally:
        sleeper.disconnect()
        sleeper.loop_stop()


def test_request_response_properties_pass_through(broker: Edge, clients: list[Client]):
    """Response topic, correlation data and user properties reach the subscriber unchanged."""
    responder = anon(broker, clients, "responder")
    responder.subscribe("rpc/req", 1)
    requester = anon(broker, clients, "requester")
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = "rpc/reply/1"
    props.CorrelationData = b"\x01\x02"
    props.UserProperty = [("trace", "abc")]
    requester.client.publish("rpc/req", b"?", qos=1, properties=props).wait_for_publish(5)
    message = responder.next_message()
    assert message.properties.ResponseTopic == "rpc/reply/1"
    assert message.properties.CorrelationData == b"\x01\x02"
    assert ("trace", "abc") in message.properties.UserProperty


def test_topic_aliases_and_subscription_identifiers_with_paho(broker: Edge, clients: list[Client]):
    """paho receives the aliases the edge assigns and its subscription identifier."""
    receiver = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id="aliased", protocol=mqtt.MQTTv5
    )
    got: queue.Queue = queue.Queue()
    receiver.on_message = lambda c, u, m: got.put(m)
    subacks: queue.Queue = queue.Queue()
    receiver.on_subscribe = lambda c, u, mid, codes, p: subacks.put(codes)
    connect = Properties(PacketTypes.CONNECT)
    connect.TopicAliasMaximum = 4
    receiver.connect("127.0.0.1", broker.mqtt_port, properties=connect)
    receiver.loop_start()
    try:
        subscribe = Properties(PacketTypes.SUBSCRIBE)
        subscribe.SubscriptionIdentifier = 7
        receiver.subscribe("alias/#", qos=1, properties=subscribe)
        subacks.get(timeout=5)
        sender = anon(broker, clients, "alias-sender")
        for i in range(3):
            sender.publish("alias/long/topic/name", str(i).encode())
        messages = [got.get(timeout=5) for _ in range(3)]
        # paho does not resolve aliases itself: the first message names the topic and sets
        # alias 1, the next ones carry only the alias.
        assert [m.topic for m in messages] == ["alias/long/topic/name", "", ""]
        assert [m.properties.TopicAlias for m in messages] == [1, 1, 1]
        assert [m.payload for m in messages] == [b"0", b"1", b"2"]
        assert messages[2].properties.SubscriptionIdentifier == [7]
    finally:
        receiver.disconnect()
        receiver.loop_stop()
