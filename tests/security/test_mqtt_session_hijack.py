"""H1 of the security review: a client id and its session belong to the identity that made
them. Another identity (another device, an application key, an anonymous client) using the
same client id is refused (MQTT 5 0x85, 3.1.1 return code 2) whatever its clean-start flag;
the owner is neither kicked nor loses its session, on the node that holds the session, across
nodes through the session persisted in Redis, and in the cross-node takeover message. A
resumed session keeps only the subscriptions the client's ACL allows now.

In memory (StringTransport), the Redis scripts on the machine's Redis, and end to end with
``python -m edge`` and paho clients.
"""

from __future__ import annotations

import json
import queue
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import redis
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties as PahoProperties
from twisted.internet.defer import Deferred, succeed

from edge.bus.keys import Keys
from edge.bus.sessions import CLAIM_SCRIPT, WRITE_SCRIPT
from edge.crypto import encrypt_secret
from edge.mqtt.codec import Decoder, encode
from edge.mqtt.errors import Reason
from edge.mqtt.message import Message
from edge.mqtt.packets import (
    MQTT_3_1_1,
    MQTT_5,
    ConnAck,
    Connect,
    Disconnect,
    SubAck,
    Subscribe,
    Subscription,
)
from edge.mqtt.properties import Properties
from edge.mqtt.session import Loaded, Session
from tests.edge.edge_process import Edge, running_edge
from tests.support.waiting import wait_for

from .mqtt_broker import Namespace, client, connected, make_broker

SECRET_KEY = "mqtt-hijack-test-secret-key"
IDENTIFIER_REJECTED = 2  # MQTT 3.1.1 CONNACK return code
CLIENT_ID_NOT_VALID = 0x85


def persistent(version: int) -> dict[str, Any]:
    """CONNECT fields of a session that outlives its connection."""
    if version == MQTT_5:
        return {"clean_start": False, "properties": Properties(session_expiry_interval=3600)}
    return {"clean_start": False}


# -- in memory --------------------------------------------------------------------------------


@pytest.mark.parametrize("victim_version", [MQTT_3_1_1, MQTT_5])
def test_other_identity_is_refused_and_owner_keeps_its_connection(victim_version: int):
    """Device b using device a's client id is refused, clean start or not, in either protocol
    version; a is not kicked, keeps its subscriptions and still gets its commands."""
    broker, _, _ = make_broker()
    victim = connected(broker, "victim-cid", "a", victim_version, **persistent(victim_version))
    victim.send(Subscribe(1, (Subscription("a/command", 1),)))
    assert victim.received() == [SubAck(1, (1,))]
    attempts = [(MQTT_5, False, CLIENT_ID_NOT_VALID), (MQTT_5, True, CLIENT_ID_NOT_VALID)]
    attempts += [(MQTT_3_1_1, False, IDENTIFIER_REJECTED), (MQTT_3_1_1, True, IDENTIFIER_REJECTED)]
    for version, clean, code in attempts:
        attacker = client(broker, version)
        connack = attacker.connect("victim-cid", username="b", clean_start=clean)
        assert (connack.reason_code, connack.session_present) == (code, False)
        assert attacker.closed
    assert not victim.closed and victim.received() == []
    assert broker.sessions["victim-cid"].owner == "a"
    broker.publish(Message("a/command", b"reboot", 1))
    (command,) = victim.received()
    assert command.payload == b"reboot"
    assert broker.refusals["client_id"] == 4


def test_offline_session_cannot_be_resumed_by_another_identity():
    """While a is away its session (and what is queued in it) stays a's: b is refused, a
    reconnects to it and gets the command queued meanwhile."""
    broker, _, _ = make_broker()
    victim = connected(broker, "victim-cid", "a", MQTT_5, **persistent(MQTT_5))
    victim.send(Subscribe(1, (Subscription("a/command", 1),)))
    victim.received()
    victim.send(Disconnect())
    broker.publish(Message("a/command", b"queued", 1))
    for clean in (False, True):
        attacker = client(broker, MQTT_5)
        assert attacker.connect("victim-cid", username="b", clean_start=clean).reason_code == 0x85
    back = client(broker, MQTT_5)
    back.send(Connect("victim-cid", MQTT_5, username="a", **persistent(MQTT_5)))
    connack, command = back.received()
    assert (connack.reason_code, connack.session_present) == (0, True)
    assert command.payload == b"queued"


@pytest.mark.parametrize(
    ("owner", "other"), [("a", None), (None, "a"), ("app:k1", "a"), ("app:k1", "app:k2")]
)
def test_client_ids_are_not_shared_between_kinds_of_identity(owner, other):
    """Devices, application keys and anonymous clients each keep their client ids."""
    broker, _, _ = make_broker()
    connected(broker, "shared-cid", owner, MQTT_5)
    intruder = client(broker, MQTT_5)
    assert intruder.connect("shared-cid", username=other).reason_code == 0x85


def test_same_identity_still_takes_over():
    """A second connection of the same identity with the client id takes it over (0x8E) and
    resumes the session, as before."""
    broker, _, _ = make_broker()
    first = connected(broker, "cid", "a", MQTT_5, **persistent(MQTT_5))
    second = client(broker, MQTT_5)
    connack = second.connect("cid", username="a", **persistent(MQTT_5))
    assert (connack.reason_code, connack.session_present) == (0, True)
    assert first.received() == [Disconnect(Reason.SESSION_TAKEN_OVER)]


def test_resumed_session_keeps_only_what_the_acl_allows_now():
    """Subscriptions of a resumed session are checked again against the client's ACL: one
    the ACL no longer allows is gone."""
    broker, hooks, _ = make_broker()
    device = connected(broker, "cid", "a", MQTT_5, **persistent(MQTT_5))
    device.send(Subscribe(1, (Subscription("a/command", 1), Subscription("a/secret", 1))))
    assert device.received() == [SubAck(1, (1, 1))]
    device.send(Disconnect())

    class Narrower(Namespace):
        def may_subscribe(self, topic_filter: str) -> bool:
            return topic_filter == "a/command"

    hooks.acls["a"] = Narrower("a")
    again = client(broker, MQTT_5)
    assert again.connect("cid", username="a", **persistent(MQTT_5)).session_present
    assert list(broker.sessions["cid"].subscriptions) == ["a/command"]
    broker.publish(Message("a/secret", b"no", 1))
    assert again.received() == []


class FakeStore:
    """A session store whose Redis holds another identity's session for every client id."""

    def __init__(self) -> None:
        self.forgotten: list[tuple[str, str | None]] = []

    def load(self, client_id: str, owner: str | None) -> Deferred[Loaded]:
        return succeed(Loaded.TAKEN)

    def forget(self, client_id: str, owner: str | None) -> None:
        self.forgotten.append((client_id, owner))

    def online(self, session: Session) -> None: ...
    def offline(self, session: Session) -> None: ...
    def subscriptions_changed(self, session: Session) -> None: ...
    def queued(self, session: Session, outgoing: Any) -> None: ...
    def discarded(self, session: Session) -> None: ...


def test_persisted_session_of_another_identity_is_refused():
    """A session the node does not hold but Redis has for another identity: resuming it is
    refused (0x85); a clean start asks the store to forget only what is the client's own."""
    broker, _, _ = make_broker()
    store = FakeStore()
    broker.store = store
    resume = client(broker, MQTT_3_1_1)
    assert resume.connect("victim-cid", username="b", clean_start=False).reason_code == 2
    fresh = client(broker, MQTT_5)
    assert fresh.connect("victim-cid", username="b").reason_code == 0
    assert store.forgotten == [("victim-cid", "b")]


# -- the Redis scripts ----------------------------------------------------------------------------


@pytest.fixture
def keys(redis_url: str) -> Iterator[Keys]:
    prefix = f"hj{uuid.uuid4().hex[:8]}:"
    yield Keys(prefix)
    r = redis.Redis.from_url(redis_url)
    for key in r.scan_iter(f"{prefix}*"):
        r.delete(key)
    r.close()


def test_redis_keeps_a_session_from_other_identities(redis_url: str, keys: Keys):
    """In Redis: another identity's clean start does not delete the session, its 'own' write
    does not replace it, and its claim gets 'taken' without moving it; the owner claims it."""
    r = redis.Redis.from_url(redis_url)
    cid = "victim-cid"
    session_keys = (keys.mqtt_session(cid), keys.mqtt_session_queue(cid), keys.mqtt_sessions)
    claim_keys = (*session_keys, keys.nodes)

    def write(mode: str, who: str, *args: Any) -> int:
        return r.eval(WRITE_SCRIPT, 3, *session_keys, "node-a", cid, mode, who, *args)

    def claim(who: str) -> Any:
        return r.eval(CLAIM_SCRIPT, 4, *claim_keys, "node-b", cid, "connect", 0, 30000, who)

    assert write("own", "a", '{"exp":3600,"next":1}', "[]") == 1
    r.rpush(keys.mqtt_session_queue(cid), b"queued command")
    assert write("forget", "b") == 0
    assert write("own", "b", '{"exp":60,"next":1}', "[]") == 0
    assert claim("b") == b"taken"
    assert claim("") == b"taken"  # nor an anonymous client
    assert r.hget(keys.mqtt_session(cid), "owner") == b"node-a"
    meta, _subs, queued, who = claim("a")
    assert (json.loads(meta)["exp"], queued, who) == (3600, [b"queued command"], b"a")
    assert r.hget(keys.mqtt_session(cid), "owner") == b"node-b"
    r.close()


def test_redis_drops_a_session_written_before_identities(redis_url: str, keys: Keys):
    """A session persisted without its identity cannot be proven anyone's: it is dropped
    rather than given to whoever claims it first."""
    r = redis.Redis.from_url(redis_url)
    cid = "legacy"
    r.hset(keys.mqtt_session(cid), mapping={"owner": "node-a", "meta": "{}", "subs": "[]"})
    r.rpush(keys.mqtt_session_queue(cid), b"secret for the old owner")
    claim_keys = (
        keys.mqtt_session(cid),
        keys.mqtt_session_queue(cid),
        keys.mqtt_sessions,
        keys.nodes,
    )
    assert r.eval(CLAIM_SCRIPT, 4, *claim_keys, "node-b", cid, "connect", 0, 30000, "b") is None
    assert not r.exists(keys.mqtt_session(cid), keys.mqtt_session_queue(cid))
    r.close()


# -- end to end: python -m edge and paho ----------------------------------------------------------


def _put_device(r: redis.Redis, prefix: str, identifier: str) -> None:
    r.hset(
        f"{prefix}dev:{identifier}",
        mapping={
            "product": "p",
            "secret": encrypt_secret(f"secret-{identifier}", SECRET_KEY),
            "status": "activated",
        },
    )


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    name = f"hijack{uuid.uuid4().hex[:8]}:"
    r = redis.Redis.from_url(redis_url)
    for device in ("victim", "attacker"):
        _put_device(r, name, device)
    r.close()
    yield name


ENV = {"DJANGO_SECRET_KEY": SECRET_KEY}


class Device:
    """A paho client of one device with a persistent session under a chosen client id."""

    def __init__(self, identifier: str, client_id: str, version: int) -> None:
        self.identifier = identifier
        self.version = version
        options = {"clean_session": False} if version == mqtt.MQTTv311 else {}
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=version, **options
        )
        self.client.username_pw_set(identifier, f"secret-{identifier}")
        self.client.reconnect_delay_set(60, 120)
        self.connacks: queue.Queue[tuple[int, bool]] = queue.Queue()
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.disconnects: queue.Queue[int] = queue.Queue()
        self.client.on_connect = lambda c, u, flags, rc, p: self.connacks.put(
            (rc.value, flags.session_present)
        )
        self.client.on_message = lambda c, u, m: self.messages.put(m)
        self.client.on_disconnect = lambda c, u, f, rc, p: self.disconnects.put(rc.value)

    def connect(self, edge: Edge, clean: bool = False) -> tuple[int, bool]:
        if self.version == mqtt.MQTTv5:
            props = PahoProperties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 3600
            self.client.connect(
                "127.0.0.1", edge.mqtt_port, 30, clean_start=clean, properties=props
            )
        else:
            self.client.connect("127.0.0.1", edge.mqtt_port, 30)
        self.client.loop_start()
        return self.connacks.get(timeout=10)

    def subscribe_commands(self) -> None:
        done: queue.Queue[int] = queue.Queue()
        self.client.on_subscribe = lambda c, u, mid, codes, p: done.put(codes[0].value)
        self.client.subscribe(f"/v1/devices/{self.identifier}/command", 1)
        assert done.get(timeout=10) == 1

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def raw_connack(edge: Edge, client_id: str, identifier: str, clean: bool) -> ConnAck:
    """A 3.1.1 CONNECT on a plain socket, its CONNACK decoded byte by byte."""
    connect = Connect(
        client_id,
        clean_start=clean,
        username=identifier,
        password=f"secret-{identifier}".encode(),
    )
    with socket.create_connection(("127.0.0.1", edge.mqtt_port), timeout=5) as sock:
        sock.sendall(encode(connect, MQTT_3_1_1))
        decoder = Decoder(MQTT_3_1_1)
        while True:
            data = sock.recv(64)
            assert data, "closed without CONNACK"
            packets = list(decoder.feed(data))
            if packets:
                assert isinstance(packets[0], ConnAck)
                return packets[0]


def send_command(edge: Edge, device: str, text: str) -> None:
    """A platform command, as webapp writes it to the node's downlink stream."""
    edge.redis.xadd(
        edge.key(f"down:{edge.node}"),
        {"topic": f"/v1/devices/{device}/command", "payload": text, "qos": 1, "dev": device},
    )


@pytest.mark.e2e
def test_device_cannot_hijack_a_connected_session(redis_url: str, prefix: str):
    """The review's exploit: device 'attacker' (right credentials) connects with the client
    id of device 'victim', whose persistent session is connected. Refused in 3.1.1 (return
    code 2, clean session 0 or 1) and 5.0 (0x85); the victim is not kicked and still gets its
    commands."""
    with running_edge(redis_url, prefix, ENV) as edge:
        victim = Device("victim", "victim-cid", mqtt.MQTTv311)
        try:
            assert victim.connect(edge) == (0, False)
            victim.subscribe_commands()
            for clean in (False, True):
                connack = raw_connack(edge, "victim-cid", "attacker", clean)
                assert connack.reason_code == IDENTIFIER_REJECTED
            attacker = Device("attacker", "victim-cid", mqtt.MQTTv5)
            assert attacker.connect(edge) == (CLIENT_ID_NOT_VALID, False)
            attacker.close()
            send_command(edge, "victim", "open the door")
            assert victim.messages.get(timeout=10).payload == b"open the door"
            assert victim.disconnects.empty()
        finally:
            victim.close()


@pytest.mark.e2e
def test_device_cannot_resume_a_session_persisted_by_another_node(redis_url: str, prefix: str):
    """The victim's session is left on node A (persisted in Redis, a command queued in it);
    the attacker asks node B for it: refused (0x85) and left in Redis. A clean start by the
    attacker on node B (which holds no copy to refuse it by) deletes nothing and is ended as
    soon as Redis says whose the client id is (0x87); the victim then resumes its session on
    node B and gets its command."""
    with ExitStack() as stack:
        a = stack.enter_context(running_edge(redis_url, prefix, ENV))
        b = stack.enter_context(running_edge(redis_url, prefix, ENV))
        victim = Device("victim", "victim-cid", mqtt.MQTTv5)
        assert victim.connect(a) == (0, False)
        victim.subscribe_commands()
        victim.close()
        send_command(a, "victim", "queued while away")
        wait_for(lambda: a.redis.llen(a.key("mqtt:sessq:victim-cid")) == 1)

        attacker = Device("attacker", "victim-cid", mqtt.MQTTv5)
        assert attacker.connect(b) == (CLIENT_ID_NOT_VALID, False)
        attacker.close()
        assert raw_connack(b, "victim-cid", "attacker", clean=False).reason_code == 2
        assert a.redis.hget(a.key("mqtt:sess:victim-cid"), "owner") == a.node.encode()

        squatter = Device("attacker", "victim-cid", mqtt.MQTTv5)
        assert squatter.connect(b, clean=True) == (0, False)
        assert squatter.disconnects.get(timeout=10) == 0x87
        squatter.close()
        assert a.redis.llen(a.key("mqtt:sessq:victim-cid")) == 1

        back = Device("victim", "victim-cid", mqtt.MQTTv5)
        try:
            assert back.connect(b) == (0, True)
            assert back.messages.get(timeout=10).payload == b"queued while away"
        finally:
            back.close()


@pytest.mark.e2e
def test_takeover_message_spares_another_identity(redis_url: str, prefix: str):
    """Across nodes a client id is claimed after CONNACK, and the node holding it is asked to
    close its connection: only a connection of the same identity is closed. The victim
    (connected on node A) keeps its connection and its commands while the attacker connects
    to node B with its client id; the victim connecting again on node B takes its client id
    back from its own older connection as before (0x8E)."""
    with ExitStack() as stack:
        a = stack.enter_context(running_edge(redis_url, prefix, ENV))
        b = stack.enter_context(running_edge(redis_url, prefix, ENV))
        victim = Device("victim", "victim-cid", mqtt.MQTTv5)
        stack.callback(victim.close)
        assert victim.connect(a, clean=True) == (0, False)
        victim.subscribe_commands()
        wait_for(lambda: a.redis.hget(a.key("mqtt:clients"), "victim-cid") == a.node.encode())
        assert raw_connack(b, "victim-cid", "attacker", clean=True).reason_code == 0
        time.sleep(0.5)  # node B has claimed the client id and sent node A its takeover message
        assert victim.disconnects.empty()
        send_command(a, "victim", "still yours")
        assert victim.messages.get(timeout=10).payload == b"still yours"
        again = Device("victim", "victim-cid", mqtt.MQTTv5)
        stack.callback(again.close)
        assert again.connect(b, clean=True) == (0, False)
        assert victim.disconnects.get(timeout=10) == 0x8E
