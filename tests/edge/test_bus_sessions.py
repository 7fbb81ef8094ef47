"""Persistent MQTT sessions in Redis (edge.bus.sessions) on an in-memory Redis and in-memory
brokers: what a node writes when a client goes away, how another node resumes it, and that
a session is only ever resumed or replaced by its own identity (H1)."""

from __future__ import annotations

import json

from edge.bus.sessions import FORGET_SCRIPT, SessionStore
from edge.mqtt.broker import Broker
from edge.mqtt.packets import MQTT_5, ConnAck, Connect, Publish, Subscribe, Subscription
from edge.mqtt.properties import Properties
from edge.mqtt.session import Loaded
from tests.support.broker import FakeClient
from tests.support.fake_redis import FakeRedis

from .bus_memory import KEYS, UserIsIdentity, fake_redis


class Node:
    """One edge node: a broker and its session store, sharing the cluster's Redis."""

    def __init__(self, redis: FakeRedis, name: str) -> None:
        self.redis = redis
        self.name = name
        clock = redis.clock
        self.broker = Broker(clock, UserIsIdentity())
        self.store = SessionStore(redis.client(), KEYS, name, self.broker, wall=clock.seconds)
        self.store.attach()
        self.broker.start()

    def connect(
        self, client_id: str, user: str, version: int = 4, expiry: int | None = None, **kw
    ) -> tuple[FakeClient, ConnAck]:
        """A client connecting with clean start 0 (unless told): its CONNACK may wait for the
        store, so it is read once Redis answered."""
        client = FakeClient(self.broker, version)
        props = Properties(session_expiry_interval=expiry) if expiry is not None else None
        extra = {"properties": props} if props is not None else {}
        kw.setdefault("clean_start", False)
        client.send(Connect(client_id, protocol_level=version, username=user, **kw, **extra))
        self.redis.settle()
        packets = client.received()
        assert isinstance(packets[0], ConnAck), packets
        client.pending = packets[1:]  # type: ignore[attr-defined]
        return client, packets[0]


def setup() -> tuple[FakeRedis, Node, Node]:
    redis = fake_redis()
    return redis, Node(redis, "A"), Node(redis, "B")


def stored(redis: FakeRedis, client_id: str) -> dict[str, str]:
    raw = redis.sync.hgetall(KEYS.mqtt_session(client_id))
    return {k.decode(): v.decode() for k, v in raw.items()}


def test_an_offline_session_is_written_with_its_expiry_and_resumed_on_another_node():
    """A's client subscribes and goes away; a QoS 1 message queued for it is appended in
    Redis; the client comes back on B, which takes the session over (owner B) with its
    subscription and the queued message."""
    redis, a, b = setup()
    client, connack = a.connect("c1", "alice", MQTT_5, expiry=600)
    assert not connack.session_present
    client.send(Subscribe(1, (Subscription("t/#", 1),)))
    redis.settle()
    held = stored(redis, "c1")
    assert (held["owner"], held["who"]) == ("A", "alice")
    assert json.loads(held["subs"])[0][:2] == ["t/#", 1]
    assert redis.sync.hget(KEYS.mqtt_sessions, "c1") == b"A"
    assert redis.sync.pttl(KEYS.mqtt_session("c1")) == -1  # online: no expiry yet

    client.drop()
    redis.settle()
    assert 590_000 < redis.sync.pttl(KEYS.mqtt_session("c1")) <= 600_000
    assert json.loads(stored(redis, "c1")["meta"])["exp"] == 600

    publisher, _ = a.connect("pub", "bob", clean_start=True)
    publisher.send(Publish("t/x", b"while away", qos=1, packet_id=1))
    redis.settle()
    assert redis.sync.llen(KEYS.mqtt_session_queue("c1")) == 1

    del a.broker.sessions["c1"]  # node A is gone: its memory with it
    back, connack = b.connect("c1", "alice", MQTT_5, expiry=600)
    assert connack.session_present
    delivered = [p for p in back.pending if isinstance(p, Publish)]  # type: ignore[attr-defined]
    assert [(p.topic, p.payload) for p in delivered] == [("t/x", b"while away")]
    assert "t/#" in b.broker.sessions["c1"].subscriptions
    assert stored(redis, "c1")["owner"] == "B"
    assert redis.sync.hget(KEYS.mqtt_sessions, "c1") == b"B"
    assert b.store.stats["loaded"] == 1


def test_another_identity_neither_resumes_nor_replaces_a_session():
    """H1: mallory connecting with alice's client id is refused on resume, and a clean start
    of hers is undone (her connection ends); alice's session stays in Redis untouched."""
    redis, a, b = setup()
    client, _ = a.connect("c1", "alice")
    client.send(Subscribe(1, (Subscription("secret/#", 1),)))
    client.drop()
    redis.settle()
    before = stored(redis, "c1")

    results: list[Loaded] = []
    b.store.load("c1", "mallory").addCallback(results.append)
    redis.settle()
    assert results == [Loaded.TAKEN]
    _, connack = b.connect("c1", "mallory")
    assert connack.reason_code != 0
    assert "c1" not in b.broker.sessions

    thief, connack = b.connect("c1", "mallory", clean_start=True)
    assert connack.reason_code == 0  # B held no copy to refuse it by...
    redis.settle()
    assert thief.closed  # ...so Redis's answer ends the connection
    assert stored(redis, "c1") == before


def test_an_expired_session_is_not_resumed_and_is_deleted():
    """A session whose expiry passed while it was offline (by the wall clock) is dropped by
    the node that finds it."""
    redis, a, b = setup()
    client, _ = a.connect("c1", "alice", MQTT_5, expiry=60)
    client.drop()
    redis.settle()
    del a.broker.sessions["c1"]
    redis.clock.advance(120)
    _, connack = b.connect("c1", "alice", MQTT_5, expiry=60)
    assert not connack.session_present
    redis.settle()
    assert not redis.sync.exists(KEYS.mqtt_session_queue("c1"))
    # What is there now is the new, empty session of the new connection.
    assert json.loads(stored(redis, "c1")["subs"]) == []


def test_sessions_of_a_silent_node_are_restored_at_start():
    """A node starting restores the sessions of nodes whose heartbeat stopped, not those of
    a live node; it looks again once a node that just stopped counts as gone."""
    redis, a, b = setup()
    client, _ = a.connect("c1", "alice")
    client.send(Subscribe(1, (Subscription("t/#", 1),)))
    client.drop()
    redis.settle()
    beat = {"ts": int(redis.clock.seconds() * 1000)}
    redis.sync.hset(KEYS.nodes, "A", json.dumps(beat))

    counts: list[int] = []
    b.store.start().addCallback(counts.append)
    redis.settle()
    assert counts == [0] and "c1" not in b.broker.sessions
    assert stored(redis, "c1")["owner"] == "A"

    redis.clock.advance(b.store.retry_restore_after)  # A's heartbeat is 35 s old now
    redis.settle()
    assert "c1" in b.broker.sessions
    assert "t/#" in b.broker.sessions["c1"].subscriptions
    assert stored(redis, "c1")["owner"] == "B"
    assert b.store.stats["restored"] == 1
    b.store.stop()


def test_a_clean_start_forgets_the_persisted_session():
    redis, a, _ = setup()
    client, _ = a.connect("c1", "alice")
    client.drop()
    redis.settle()
    assert redis.sync.exists(KEYS.mqtt_session("c1"))
    again, _ = a.connect("c1", "alice", clean_start=True)
    redis.settle()
    assert not again.closed
    assert not redis.sync.exists(KEYS.mqtt_session("c1"))
    assert redis.sync.hget(KEYS.mqtt_sessions, "c1") is None


def test_the_clean_starts_of_one_turn_are_forgotten_in_one_call():
    """A connect burst with clean start: one FORGET_SCRIPT call for the turn (not the whole
    WRITE_SCRIPT and a Deferred per connection); each persisted session of the same identity
    is gone, another identity's session stays and its squatter is refused."""
    redis, a, b = setup()
    for i in range(5):
        client, _ = b.connect(f"c{i}", f"user{i}", MQTT_5, expiry=600)
        client.drop()
    redis.settle()
    commands = a.store.redis.commands  # type: ignore[attr-defined]
    before = len(commands)
    clients = []
    for i in range(5):
        client = FakeClient(a.broker, MQTT_5)
        user = "mallory" if i == 4 else f"user{i}"
        client.send(Connect(f"c{i}", protocol_level=MQTT_5, username=user, clean_start=True))
        clients.append(client)
    redis.settle()
    forgets = [c for c in commands[before:] if c[0] == "EVAL" and c[1] == FORGET_SCRIPT]
    assert len(forgets) == 1 and forgets[0][-10:] == tuple(
        x for i in range(5) for x in (f"c{i}", "mallory" if i == 4 else f"user{i}")
    )
    for i in range(4):
        assert not redis.sync.exists(KEYS.mqtt_session(f"c{i}"))
        assert not clients[i].closed
    assert stored(redis, "c4")["who"] == "user4"
    assert clients[4].closed
