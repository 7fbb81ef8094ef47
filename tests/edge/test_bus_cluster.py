"""Cross-node routing (edge.bus.cluster) on an in-memory Redis: two nodes, each an in-memory
broker with its cluster part, share one Redis as two edge processes would. The wire format
(keys, channels, records) is the one real nodes use; tests/edge/test_cluster.py checks the
same paths over sockets with paho clients."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from edge.bus.cluster import Cluster
from edge.bus.cluster_records import KIND_SHARED, decode_records, encode_record
from edge.bus.cluster_scripts import _SHA1, PUSH_SCRIPT
from edge.mqtt.broker import Broker
from edge.mqtt.errors import Reason
from edge.mqtt.message import Message
from edge.mqtt.packets import (
    MQTT_5,
    Connect,
    Disconnect,
    Publish,
    Subscribe,
    Subscription,
    Unsubscribe,
)
from edge.mqtt.properties import Properties as EdgeProperties
from tests.support.broker import FakeClient
from tests.support.fake_redis import FakeRedis

from .bus_memory import KEYS, UserIsIdentity, fake_redis


class Node:
    def __init__(self, redis: FakeRedis, name: str) -> None:
        self.redis = redis
        self.name = name
        self.broker = Broker(redis.clock, UserIsIdentity())
        self.cluster = Cluster(
            redis.clock,
            redis,
            redis.client("redis"),
            KEYS,
            name,
            self.broker,
            wall=redis.clock.seconds,
        )
        self.cluster.attach()
        self.broker.start()

    def start(self) -> None:
        started = self.cluster.start()
        self.redis.settle()
        assert started.called

    def client(self, client_id: str, user: str | None = None, version: int = 4) -> FakeClient:
        client = FakeClient(self.broker, version)
        client.send(Connect(client_id, protocol_level=version, username=user))
        self.redis.settle()
        return client

    def published(self, client: FakeClient) -> list[tuple[str, bytes]]:
        self.redis.settle()
        return [(p.topic, p.payload) for p in client.received() if isinstance(p, Publish)]

    def forwards(self) -> list[str]:
        """The nodes this node pushed forward batches to (PUSH_SCRIPT on their queues)."""
        prefix = KEYS.mqtt_forward_queue("")
        return [
            str(c[3])[len(prefix) :]
            for c in self.cluster.client.commands  # type: ignore[attr-defined]
            if c[0] == "EVALSHA" and c[1] == _SHA1[PUSH_SCRIPT]
        ]


@pytest.fixture
def redis() -> FakeRedis:
    return fake_redis()


@pytest.fixture
def nodes(redis: FakeRedis) -> Iterator[tuple[Node, Node]]:
    a, b = Node(redis, "A"), Node(redis, "B")
    a.start()
    b.start()
    yield a, b
    for node in (a, b):
        node.cluster.stop()
    redis.settle()


def subs(redis: FakeRedis) -> dict[str, list[str]]:
    return {k.decode(): json.loads(v) for k, v in redis.sync.hgetall(KEYS.mqtt_subs).items()}


def test_record_round_trip():
    """A forwarded record keeps topic, payload, QoS, retain, origin, properties and expiry."""
    props = EdgeProperties(
        content_type="text/plain",
        response_topic="reply/here",
        correlation_data=b"\x00\x01",
        user_properties=(("k", "v"), ("k", "w")),
    )
    message = Message("a/b", b"\x00payload", 2, True, props, None, "origin-client")
    data = encode_record(message, KIND_SHARED, "$share/g/a/+", 1_700_000_000_123)
    data += encode_record(Message("c", b"", 0))
    first, second = list(decode_records(data))
    kind, share, decoded, expires = first
    assert (kind, share, expires) == (KIND_SHARED, "$share/g/a/+", 1_700_000_000_123)
    assert (decoded.topic, decoded.payload, decoded.qos, decoded.retain) == (
        "a/b",
        b"\x00payload",
        2,
        True,
    )
    assert decoded.origin == "origin-client" and decoded.properties == props
    assert (second[2].topic, second[2].payload, second[2].origin, second[3]) == ("c", b"", None, 0)
    with pytest.raises(ValueError):
        list(decode_records(data[:-3]))


def test_a_message_goes_only_to_the_node_with_a_matching_subscription(redis, nodes):
    a, b = nodes
    subscriber = b.client("sub")
    subscriber.send(Subscribe(1, (Subscription("a/+", 0),)))
    b.published(subscriber)
    assert subs(redis) == {"a/+": ["B"]}
    assert a.cluster.remote == {"a/+": ("B",)}

    publisher = a.client("pub")
    publisher.send(Publish("a/b", b"hello"), Publish("other", b"stays here"))
    assert b.published(subscriber) == [("a/b", b"hello")]
    assert a.forwards() == ["B"]  # one batch, for a/b only
    assert (a.cluster.stats["forwarded_out"], b.cluster.stats["forwarded_in"]) == (1, 1)


def test_the_last_unsubscribe_withdraws_the_interest(redis, nodes):
    a, b = nodes
    one, two = b.client("one"), b.client("two")
    for client in (one, two):
        client.send(Subscribe(1, (Subscription("x/#", 0),)))
    one.send(Unsubscribe(2, ("x/#",)))
    redis.settle()
    assert subs(redis) == {"x/#": ["B"]}
    two.send(Disconnect())
    redis.settle()
    assert subs(redis) == {} and a.cluster.remote == {}
    a.client("pub").send(Publish("x/1", b"nobody"))
    redis.settle()
    assert a.forwards() == []


def test_retained_messages_are_shared_by_every_node(redis, nodes):
    a, b = nodes
    a.client("pub").send(Publish("r/1", b"kept", retain=True))
    redis.settle()
    assert redis.sync.hexists(KEYS.mqtt_retained, "r/1")
    assert b.broker.retained["r/1"].payload == b"kept"
    late = b.client("late")
    late.send(Subscribe(1, (Subscription("r/#", 0),)))
    assert b.published(late) == [("r/1", b"kept")]
    a.client("pub2").send(Publish("r/1", b"", retain=True))
    redis.settle()
    assert not redis.sync.hexists(KEYS.mqtt_retained, "r/1")
    assert "r/1" not in b.broker.retained


def test_a_shared_subscription_on_another_node_gets_each_message_once(redis, nodes):
    a, b = nodes
    member = b.client("member", version=MQTT_5)
    member.send(Subscribe(1, (Subscription("$share/g/s/#", 0),)))
    b.published(member)
    publisher = a.client("pub")
    for i in range(3):
        publisher.send(Publish("s/x", b"%d" % i))
    assert b.published(member) == [("s/x", b"0"), ("s/x", b"1"), ("s/x", b"2")]


def test_a_client_connecting_to_another_node_closes_its_older_connection(redis, nodes):
    """Same client id and identity: the connection on A ends (session taken over) and
    tl:mqtt:clients names B; the same client id under another identity closes nothing."""
    a, b = nodes
    first = a.client("c1", "alice", MQTT_5)
    redis.clock.advance(1)
    other = b.client("c1", "mallory", MQTT_5)
    assert not first.closed
    other.send(Disconnect())
    redis.clock.advance(1)
    b.client("c1", "alice", MQTT_5)
    assert first.closed
    disconnect = [p for p in first.received() if isinstance(p, Disconnect)]
    assert disconnect[0].reason_code == Reason.SESSION_TAKEN_OVER
    assert redis.sync.hget(KEYS.mqtt_clients, "c1") == b"B"
    assert (b.cluster.stats["takeovers_sent"], a.cluster.stats["takeovers_done"]) >= (1, 1)


def test_a_silent_nodes_filters_are_dropped(redis, nodes):
    """The janitor keeps a node's filters while its heartbeat (tl:nodes) is fresh and drops
    them, in Redis and in every view, once it is silent for silent_after."""
    a, b = nodes
    b.client("sub").send(Subscribe(1, (Subscription("t/#", 0),)))
    redis.settle()
    redis.sync.hset(KEYS.nodes, "B", json.dumps({"ts": int(redis.clock.seconds() * 1000)}))
    redis.clock.advance(a.cluster.silent_after / 2)
    redis.settle()
    assert subs(redis) == {"t/#": ["B"]}
    redis.clock.advance(a.cluster.silent_after)
    redis.settle()
    assert subs(redis) == {} and a.cluster.remote == {}


def test_a_node_starting_again_forgets_what_its_previous_process_left(redis):
    redis.sync.hset(KEYS.mqtt_subs, "old/#", json.dumps(["A", "C"]))
    Node(redis, "A").start()
    assert subs(redis) == {"old/#": ["C"]}


def test_after_a_pubsub_reconnect_the_view_is_reloaded_and_filters_asserted(redis, nodes):
    """Redis lost the subscriptions hash (a restart) and the pub/sub connections came back:
    each node sends its filters again and reloads the others'."""
    a, b = nodes
    subscriber = b.client("sub")
    subscriber.send(Subscribe(1, (Subscription("k/#", 0),)))
    redis.settle()
    redis.sync.delete(KEYS.mqtt_subs)
    redis.resubscribe()
    redis.settle()
    assert subs(redis) == {"k/#": ["B"]}
    assert a.cluster.remote == {"k/#": ("B",)}
    a.client("pub").send(Publish("k/1", b"again"))
    assert b.published(subscriber) == [("k/1", b"again")]


def test_stopping_withdraws_the_nodes_filters(redis, nodes):
    _, b = nodes
    b.client("sub").send(Subscribe(1, (Subscription("z", 0),)))
    redis.settle()
    b.cluster.stop()
    redis.settle()
    assert subs(redis) == {}


def test_scripts_lost_by_redis_are_sent_again(redis, nodes):
    """Redis forgot the loaded scripts (a restart or SCRIPT FLUSH): EVALSHA fails with
    NOSCRIPT and the script goes again in full."""
    a, b = nodes
    redis.sync.script_flush()
    subscriber = b.client("sub")
    subscriber.send(Subscribe(1, (Subscription("f/1", 0),)))
    redis.settle()
    assert subs(redis) == {"f/1": ["B"]} and a.cluster.remote == {"f/1": ("B",)}
    assert any(c[0] == "EVAL" for c in b.cluster.client.commands)  # type: ignore[attr-defined]


def _script_calls(commands: list[tuple], source: str) -> int:
    from edge.bus.cluster_scripts import _SHA1

    return sum(1 for c in commands if c[0] == "EVALSHA" and c[1] == _SHA1[source])


def test_the_claims_and_removals_of_one_turn_go_to_redis_in_one_call(redis, nodes):
    """A connect burst of anonymous clients: one CLAIM_SCRIPT call for the turn's 50
    connections (not a command and a Deferred each), each client id registered to the node;
    their disconnects in one turn: one removal call. A device's claim goes at once (its route
    is written by the presence hook right after)."""
    from edge.bus.cluster_scripts import CLAIM_SCRIPT, DELETE_IF_OURS

    a, _ = nodes
    commands = a.cluster.redis.commands  # type: ignore[attr-defined]
    before = _script_calls(commands, CLAIM_SCRIPT)
    clients = []
    for i in range(50):
        client = FakeClient(a.broker, 4)
        client.send(Connect(f"anon-{i}", protocol_level=4))
        clients.append(client)
    assert _script_calls(commands, CLAIM_SCRIPT) == before and len(a.cluster._claims) == 50
    redis.settle()
    assert _script_calls(commands, CLAIM_SCRIPT) == before + 1
    held = redis.sync.hgetall(KEYS.mqtt_clients)
    assert {f"anon-{i}".encode() for i in range(50)} <= {k for k, v in held.items() if v == b"A"}

    removals = _script_calls(commands, DELETE_IF_OURS)
    for client in clients:
        client.drop()
    redis.settle()
    assert _script_calls(commands, DELETE_IF_OURS) == removals + 1
    assert not any(k.startswith(b"anon-") for k in redis.sync.hgetall(KEYS.mqtt_clients))

    device = FakeClient(a.broker, 4)
    device.send(Connect("dev-1", protocol_level=4, username="dev-1"))
    assert _script_calls(commands, CLAIM_SCRIPT) == before + 2  # without waiting for the turn
    redis.settle()
    assert redis.sync.hget(KEYS.route, "dev-1") == b"A"


def _payloads(node: Node, client: FakeClient) -> list[bytes]:
    return [payload for _topic, payload in node.published(client)]


def test_a_full_forward_queue_drops_qos0_and_holds_qos1_publishers_until_it_drains(redis, nodes):
    """Node B takes nothing from its queue for a while (busy): once what waits for it reaches
    A's forward_limit, a QoS 0 message for B is dropped and counted, a QoS 1 message is still
    queued and its publisher is no longer read; when B has taken its queue (and A has read the
    count again) the publisher is read again, and B's subscriber got every QoS 1 message, in
    order."""
    a, b = nodes
    subscriber = b.client("sub")
    subscriber.send(Subscribe(1, (Subscription("f/#", 1),)))
    redis.settle()
    a.cluster.forward_limit = 4096
    b.cluster._popping = True  # as if B's pop were still waiting for its reply: B reads nothing

    publisher = FakeClient(a.broker, 4)
    publisher.send(Connect("pub", protocol_level=4, keep_alive=10))
    noisy = a.client("noisy")
    payloads = [b"%03d" % i + b"x" * 200 for i in range(30)]
    publisher.send(*(Publish("f/1", p, qos=1, packet_id=i + 1) for i, p in enumerate(payloads)))
    redis.settle()
    assert a.cluster._full == {"B"} and a.cluster.backlog("B") >= 4096
    assert publisher.transport.producerState == "producing"  # nothing held yet

    noisy.send(Publish("f/0", b"qos 0, dropped"))
    publisher.send(Publish("f/1", b"030 held", qos=1, packet_id=31))
    redis.settle()
    assert a.cluster.stats["forward_dropped"] == 1
    assert publisher.transport.producerState == "paused"
    assert noisy.transport.producerState == "producing"  # QoS 0 publishers are not held
    samples = {name: value for name, _kind, _help, value in a.cluster.samples()}
    assert samples["edge_cluster_forward_dropped_total"] == 1
    assert samples["edge_cluster_publishers_held"] == 1
    assert samples["edge_cluster_forward_backlog_bytes"] >= 4096

    held = a.broker.sessions["pub"].connection
    assert held is not None
    for _ in range(50):  # 25 s, over 1.5 times its keep alive: a held publisher stays
        redis.clock.advance(0.5)
    assert held in a.cluster._paused and not publisher.closed

    b.cluster._popping = False
    b.cluster._drain()  # B is free again
    redis.settle()
    for _ in range(5):
        redis.clock.advance(0.05)  # A reads the count of B's queue again
        redis.settle()
    assert a.cluster._full == set() and a.cluster.backlog("B") == 0
    assert publisher.transport.producerState == "producing"
    assert _payloads(b, subscriber) == [*payloads, b"030 held"]
    assert redis.sync.llen(KEYS.mqtt_forward_queue("B")) == 0
    assert redis.sync.get(KEYS.mqtt_forward_bytes("B")) is None


def test_messages_forwarded_while_the_pubsub_connection_is_cut_are_not_lost(redis, nodes):
    """Redis cut B's pub/sub connection (as at its pubsub output-buffer limit): the wake for
    B's queue is lost with it, but the forwarded batch waits in the queue; B counts the
    reconnect and reads its queue once subscribed again. A wake lost alone is made up for by
    the poll every POLL_INTERVAL."""
    a, b = nodes
    subscriber = b.client("sub")
    subscriber.send(Subscribe(1, (Subscription("g/#", 1),)))
    redis.settle()
    publisher = a.client("pub")
    cut = b.cluster.subscriber
    redis.subscribers.remove(cut)  # B's pub/sub connection hears nothing meanwhile
    publisher.send(Publish("g/1", b"during the cut", qos=1, packet_id=1))
    redis.settle()
    cut.drop_pending()  # what the cut connection carried (B's wake) is lost
    redis.subscribers.append(cut)
    assert _payloads(b, subscriber) == []
    redis.resubscribe()
    redis.settle()
    assert b.cluster.stats["subscriber_reconnects"] == 1
    assert _payloads(b, subscriber) == [b"during the cut"]

    redis.subscribers.remove(cut)
    publisher.send(Publish("g/1", b"wake lost", qos=1, packet_id=2))
    redis.settle()
    cut.drop_pending()
    redis.subscribers.append(cut)
    assert _payloads(b, subscriber) == []
    redis.clock.advance(1.0)
    assert _payloads(b, subscriber) == [b"wake lost"]
    assert b.cluster.stats["subscriber_reconnects"] == 1
