"""Cross-node MQTT routing through Redis (edge.bus.cluster): two ``python -m edge`` nodes
sharing one Redis and key prefix, paho clients (3.1.1 and 5.0) on either. What needs no sockets
(record encoding, routing decisions, takeover, liveness) is in test_bus_cluster.py, in memory."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack

import paho.mqtt.client as mqtt
import pytest
import redis
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.crypto import encrypt_secret
from tests.support.waiting import wait_for

from .edge_process import Client, Edge, metric, running_edge

SECRET_KEY = "cluster-test-secret-key"


@pytest.fixture(scope="module")
def nodes(edge_redis_url: str) -> Iterator[tuple[Edge, Edge]]:
    prefix = f"cl{uuid.uuid4().hex[:8]}:"
    r = redis.Redis.from_url(edge_redis_url)
    for device in ("cl-dev", "cl-other"):
        r.hset(
            f"{prefix}dev:{device}",
            mapping={
                "product": "p",
                "secret": encrypt_secret("s3cret", SECRET_KEY),
                "status": "activated",
            },
        )
    r.close()
    env = {"EDGE_ALLOW_ANONYMOUS": "1", "DJANGO_SECRET_KEY": SECRET_KEY}
    with ExitStack() as stack:
        a = stack.enter_context(running_edge(edge_redis_url, prefix, env))
        b = stack.enter_context(running_edge(edge_redis_url, prefix, env))
        yield a, b


def connect(
    edge: Edge,
    clients: list[Client],
    client_id: str,
    protocol: int = mqtt.MQTTv5,
    username: str | None = None,
) -> Client:
    client = Client(edge, client_id, protocol)
    clients.append(client)
    assert client.connect(username, "s3cret" if username else None) == 0
    return client


def drain(client: Client) -> list[mqtt.MQTTMessage]:
    out = []
    while not client.messages.empty():
        out.append(client.messages.get_nowait())
    return out


def subs(edge: Edge) -> dict[str, list[str]]:
    return {k.decode(): json.loads(v) for k, v in edge.redis.hgetall(edge.key("mqtt:subs")).items()}


pytestmark = pytest.mark.e2e


@pytest.mark.parametrize(("sub_version", "pub_version"), [(4, 5), (5, 4), (5, 5)])
def test_message_reaches_subscriber_on_the_other_node(
    nodes: tuple[Edge, Edge], clients: list[Client], sub_version: int, pub_version: int
):
    """A message published on node B reaches a subscriber on node A with its QoS and, in
    5.0, its properties; the filter is registered for A in tl:mqtt:subs."""
    a, b = nodes
    tag = uuid.uuid4().hex[:6]
    versions = {4: mqtt.MQTTv311, 5: mqtt.MQTTv5}
    sub = connect(a, clients, f"sub-{tag}", versions[sub_version])
    pub = connect(b, clients, f"pub-{tag}", versions[pub_version])
    assert sub.subscribe(f"{tag}/+/x", 2) == [2]
    wait_for(lambda: subs(a).get(f"{tag}/+/x") == [a.node])
    props = None
    if pub_version == 5:
        props = Properties(PacketTypes.PUBLISH)
        props.UserProperty = ("origin", "node-b")
        props.MessageExpiryInterval = 60
    for qos in (0, 1, 2):
        info = pub.client.publish(f"{tag}/{qos}/x", f"m{qos}".encode(), qos=qos, properties=props)
        info.wait_for_publish(5)
        message = sub.next_message(5)
        assert (message.topic, message.payload, message.qos) == (
            f"{tag}/{qos}/x",
            f"m{qos}".encode(),
            qos,
        )
        if sub_version == 5 and pub_version == 5:
            assert message.properties.UserProperty == [("origin", "node-b")]
            assert 55 <= message.properties.MessageExpiryInterval <= 60


def test_routing_stays_local_and_interest_is_withdrawn(
    nodes: tuple[Edge, Edge], clients: list[Client]
):
    """With every subscriber on the publishing node nothing is forwarded; a filter leaves
    tl:mqtt:subs when its last subscriber unsubscribes."""
    a, b = nodes
    tag = uuid.uuid4().hex[:6]
    sub = connect(a, clients, f"local-sub-{tag}")
    pub = connect(a, clients, f"local-pub-{tag}")
    sub.subscribe(f"{tag}/local", 1)
    wait_for(lambda: f"{tag}/local" in subs(a))
    before_a = metric(a, "edge_cluster_forwarded_out_total")
    before_b = metric(b, "edge_cluster_forwarded_in_total")
    for i in range(20):
        pub.publish(f"{tag}/local", str(i).encode(), qos=1)
        assert sub.next_message(5).payload == str(i).encode()
    other = connect(b, clients, f"nobody-{tag}")
    other.publish(f"{tag}/unsubscribed", b"x", qos=1)
    time.sleep(0.3)
    assert metric(a, "edge_cluster_forwarded_out_total") == before_a
    assert metric(b, "edge_cluster_forwarded_in_total") == before_b
    sub.client.unsubscribe(f"{tag}/local")
    wait_for(lambda: f"{tag}/local" not in subs(a))


def test_retained_messages_are_shared_by_all_nodes(nodes: tuple[Edge, Edge], clients: list[Client]):
    """A message retained on A is delivered to a later subscriber on B; clearing it on B
    clears it on A too."""
    a, b = nodes
    tag = uuid.uuid4().hex[:6]
    pub = connect(a, clients, f"ret-pub-{tag}")
    pub.client.publish(f"{tag}/state", b"on", qos=1, retain=True).wait_for_publish(5)
    wait_for(lambda: a.redis.hexists(a.key("mqtt:retained"), f"{tag}/state"))
    time.sleep(0.2)  # the broadcast of the change reaches node B
    late = connect(b, clients, f"ret-late-{tag}")
    late.subscribe(f"{tag}/#", 1)
    message = late.next_message(5)
    assert (message.payload, message.retain) == (b"on", True)
    clearer = connect(b, clients, f"ret-clear-{tag}")
    clearer.client.publish(f"{tag}/state", b"", qos=1, retain=True).wait_for_publish(5)
    wait_for(lambda: not a.redis.hexists(a.key("mqtt:retained"), f"{tag}/state"))
    time.sleep(0.2)
    later = connect(a, clients, f"ret-later-{tag}")
    later.subscribe(f"{tag}/#", 1)
    time.sleep(0.5)
    assert later.messages.empty()


def test_shared_subscription_spans_nodes(nodes: tuple[Edge, Edge], clients: list[Client]):
    """Members of one $share group on the other node share the messages, each exactly once;
    with a member on the publishing node, that member takes them."""
    a, b = nodes
    tag = uuid.uuid4().hex[:6]
    remote = [connect(b, clients, f"share-b{i}-{tag}") for i in range(2)]
    for member in remote:
        assert member.subscribe(f"$share/g{tag}/{tag}/jobs/#", 1) == [1]
    wait_for(lambda: subs(a).get(f"$share/g{tag}/{tag}/jobs/#") == [b.node])
    pub = connect(a, clients, f"share-pub-{tag}")
    for i in range(10):
        pub.publish(f"{tag}/jobs/{i}", str(i).encode(), qos=1)
    time.sleep(0.5)
    received = sorted(int(m.payload) for member in remote for m in drain(member))
    assert received == list(range(10))
    assert all(member.messages.empty() for member in remote)
    local = connect(a, clients, f"share-a-{tag}")
    local.subscribe(f"$share/g{tag}/{tag}/jobs/#", 1)
    time.sleep(0.2)
    for i in range(5):
        pub.publish(f"{tag}/jobs/{i}", b"again", qos=1)
    time.sleep(0.5)
    assert local.messages.qsize() == 5
    assert all(member.messages.empty() for member in remote)


def test_client_id_takeover_across_nodes(nodes: tuple[Edge, Edge], clients: list[Client]):
    """The same client id connecting to node B closes its connection on node A with
    'session taken over' (0x8E)."""
    a, b = nodes
    tag = uuid.uuid4().hex[:6]
    first = connect(a, clients, f"dup-{tag}")
    wait_for(lambda: a.redis.hget(a.key("mqtt:clients"), f"dup-{tag}") == a.node.encode())
    connect(b, clients, f"dup-{tag}")
    assert int(first.disconnects.get(timeout=5).value) == 0x8E
    wait_for(lambda: a.redis.hget(a.key("mqtt:clients"), f"dup-{tag}") == b.node.encode())


def test_device_takeover_across_nodes(nodes: tuple[Edge, Edge], clients: list[Client]):
    """A device connecting on node B closes its older connection on node A; the route
    points to B and the offline event of A is dated before B's online event."""
    a, b = nodes
    old = connect(a, clients, "dev-conn-1", mqtt.MQTTv5, username="cl-dev")
    wait_for(lambda: a.redis.hget(a.key("route"), "cl-dev") == a.node.encode())
    connect(b, clients, "dev-conn-2", mqtt.MQTTv311, username="cl-dev")
    assert int(old.disconnects.get(timeout=5).value) == 0x8E
    assert a.redis.hget(a.key("route"), "cl-dev") == b.node.encode()
    events = a.wait_for_events(lambda e: e.get("t") == "status" and e["dev"] == "cl-dev", 3)
    online_b = next(e for e in events if e["s"] == "online" and e["node"] == b.node)
    offline_a = next(e for e in events if e["s"] == "offline" and e["node"] == a.node)
    assert offline_a["reason"] == "takeover" and offline_a["ts"] < online_b["ts"]
    time.sleep(0.3)
    assert a.redis.hget(a.key("route"), "cl-dev") == b.node.encode()
