"""End to end: dynamic registration, application clients, ACL rules from the registry, signed
and encrypted envelopes, wills on device topics and gateway command responses — with a real
Redis, ``python -m edge`` and paho."""

from __future__ import annotations

import hashlib
import json
import queue
import time
import uuid
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import redis

from edge.auth import sign_password
from edge.codecs import thinglinks as tl
from edge.crypto import encrypt_secret

from .edge_process import Client, Edge, running_edge

pytestmark = pytest.mark.e2e

SECRET_KEY = "e2e-auth-secret-key"
MODEL = {"services": {"env": {"properties": {"temperature": {"datatype": "decimal"}}}}}
API_KEY = "tlk_k1_" + "x" * 43
KEYS = tl.EnvelopeKeys("sign-key", "0123456789abcdef", "fedcba9876543210")


def put(r: redis.Redis, prefix: str, kind: str, name: str, **fields: Any) -> None:
    r.hset(f"{prefix}{kind}:{name}", mapping=fields)


def device_fields(secret: str, **extra: Any) -> dict[str, Any]:
    fields = {
        "product": "thermo",
        "secret": encrypt_secret(secret, SECRET_KEY),
        "status": "activated",
        "node_type": "direct",
        "gateway": "",
    }
    fields.update(extra)
    return fields


@pytest.fixture(scope="module")
def edge(edge_redis_url: str) -> Iterator[Edge]:
    prefix = f"auth{uuid.uuid4().hex[:8]}:"
    r = redis.Redis.from_url(edge_redis_url)
    rules = [
        {"action": "sub", "topic": "broadcast/#", "decision": "allow", "priority": 1},
        {"action": "all", "topic": "broadcast/secret", "decision": "deny", "priority": 5},
        {"action": "pub", "topic": "fleet/${product}/${device}", "decision": "allow"},
    ]
    put(
        r,
        prefix,
        "prod",
        "thermo",
        model=json.dumps(MODEL),
        type="common",
        secret=encrypt_secret("product-secret", SECRET_KEY),
        acl=json.dumps(rules),
    )
    put(r, prefix, "prod", "closed", model=json.dumps(MODEL), type="common", secret="")
    put(r, prefix, "dev", "d1", **device_fields("s1"))
    put(
        r,
        prefix,
        "dev",
        "d2",
        **device_fields(
            "s2",
            acl=json.dumps([{"action": "pub", "topic": "d2/out", "decision": "allow"}]),
            sign_key=encrypt_secret(KEYS.sign_key or "", SECRET_KEY),
            encrypt_key=encrypt_secret(KEYS.encrypt_key or "", SECRET_KEY),
            encrypt_vector=encrypt_secret(KEYS.encrypt_vector or "", SECRET_KEY),
        ),
    )
    put(r, prefix, "dev", "gw", **device_fields("sg", node_type="gateway"))
    put(r, prefix, "dev", "sub", **device_fields("ss", node_type="sub", gateway="gw"))
    put(r, prefix, "dev", "pending", **device_fields("sp", status="unactivated"))
    put(
        r,
        prefix,
        "app",
        "k1",
        key_hash=hashlib.sha256(API_KEY.encode()).hexdigest(),
        user="ops",
        scope="all",
    )
    put(r, prefix, "app", "old", key_hash=hashlib.sha256(b"old").hexdigest(), expires="1")
    put(
        r,
        prefix,
        "app",
        "pubber",
        key_hash=hashlib.sha256(b"pubber-key").hexdigest(),
        acl=json.dumps([{"action": "all", "topic": "apps/#", "decision": "allow"}]),
    )
    r.close()
    with running_edge(edge_redis_url, prefix, {"DJANGO_SECRET_KEY": SECRET_KEY}) as running:
        yield running


def client(
    edge: Edge, clients: list[Client], name: str, version: int = mqtt.MQTTv5
) -> tuple[Client, queue.Queue[int]]:
    c = Client(edge, name, version)
    clients.append(c)
    acks: queue.Queue[int] = queue.Queue()
    c.client.on_publish = lambda _c, _u, _m, rc, _p: acks.put(int(rc.value))
    return c, acks


def test_dynamic_registration(edge: Edge, clients: list[Client]):
    """A device that knows its product's secret registers itself: it may only ask and hear
    the answer; the request becomes a register event; webapp's answer reaches it; then it
    connects as itself. An activated device cannot register again."""
    newcomer, acks = client(edge, clients, "new-1-reg")
    assert newcomer.connect("thermo&new-1", "product-secret") == 0
    assert newcomer.subscribe("/v1/devices/new-1/registerResponse") == [1]
    assert newcomer.subscribe("/v1/devices/new-1/command") == [0x87]
    newcomer.publish("/v1/devices/new-1/datas", {"devices": []})
    assert acks.get(timeout=5) == 0x87
    newcomer.publish("/v1/devices/new-1/register", {"name": "Kitchen"})
    assert acks.get(timeout=5) == 0
    (event,) = edge.wait_for_events(lambda e: e["t"] == "register")
    assert (event["dev"], event["prod"], event["body"], event["node"]) == (
        "new-1",
        "thermo",
        {"name": "Kitchen"},
        edge.node,
    )
    # What webapp does: create the device, publish it, answer through the node's downlink.
    edge.redis.hset(edge.key("dev:new-1"), mapping=device_fields("fresh-secret"))
    edge.redis.publish(edge.key("registry"), "dev:new-1")
    answer = tl.register_response("new-1", 0, "successful", "fresh-secret", event["mid"])
    edge.redis.xadd(
        edge.key(f"down:{edge.node}"),
        {
            "topic": "/v1/devices/new-1/registerResponse",
            "payload": answer,
            "dev": "new-1",
            "conn": event["conn"],
        },
    )
    reply = json.loads(newcomer.next_message().payload)
    assert reply["data"] == {"deviceIdentification": "new-1", "secret": "fresh-secret"}
    (logged,) = edge.wait_for_events(
        lambda e: e["t"] == "log" and e["dir"] == "down" and e["dev"] == "new-1"
    )
    assert "fresh-secret" not in logged["payload"] and '"secret":"***"' in logged["payload"]
    newcomer.close()
    itself, _ = client(edge, clients, "new-1")
    assert itself.connect("new-1", "fresh-secret") == 0
    again, _ = client(edge, clients, "new-1-again")
    assert again.connect("thermo&new-1", "product-secret") == 0x87


def test_registration_refusals(edge: Edge, clients: list[Client]):
    """Wrong product secret, a product without dynamic registration, a device of another
    product, and a signed product password (accepted)."""
    cases = [
        ("thermo&x-1", "wrong", 0x86),
        ("closed&x-2", "", 0x86),
        ("nosuch&x-3", "product-secret", 0x86),
        ("thermo&d1", "product-secret", 0x87),
        ("thermo&bad id", "product-secret", 0x85),
        ("thermo&pending", "product-secret", 0),
    ]
    for i, (username, password, code) in enumerate(cases):
        c, _ = client(edge, clients, f"reg-{i}")
        assert c.connect(username, password) == code, username
    signed = sign_password("thermo&x-4", "product-secret", int(time.time() * 1000))
    c, _ = client(edge, clients, "reg-signed")
    assert c.connect("thermo&x-4", signed) == 0


def test_application_clients(edge: Edge, clients: list[Client]):
    """app:{key id} with the API key of a user who sees every device subscribes to every
    device's topics; publishing needs a rule; a wrong or expired key is refused."""
    app, acks = client(edge, clients, "app-1")
    assert app.connect("app:k1", API_KEY) == 0
    assert app.subscribe("/v1/devices/+/datas") == [1]
    device, _ = client(edge, clients, "d1-for-app")
    assert device.connect("d1", "s1") == 0
    device.publish("/v1/devices/d1/datas", {"devices": []})
    assert app.next_message().topic == "/v1/devices/d1/datas"
    app.publish("/v1/devices/d1/command", {"cmd": "x"})
    assert acks.get(timeout=5) == 0x87
    pubber, pub_acks = client(edge, clients, "app-2")
    assert pubber.connect("app:pubber", "pubber-key") == 0
    pubber.publish("apps/x", b"hi")
    assert pub_acks.get(timeout=5) == 0
    assert pubber.subscribe("/v1/devices/#") == [0x87]
    for i, (username, password, code) in enumerate(
        [("app:k1", "wrong", 0x86), ("app:nosuch", "x", 0x86), ("app:old", "old", 0x87)]
    ):
        refused, _ = client(edge, clients, f"app-bad-{i}")
        assert refused.connect(username, password) == code


def test_acl_rules_from_the_registry(edge: Edge, clients: list[Client]):
    """Product and device rules decide topics outside the device's namespace: priority,
    placeholders, deny over a wider allow, default deny."""
    d1, acks = client(edge, clients, "d1-acl")
    assert d1.connect("d1", "s1") == 0
    assert d1.subscribe("broadcast/news") == [1]
    assert d1.subscribe("broadcast/secret") == [0x87]
    assert d1.subscribe("broadcast/#") == [0x87]  # would include broadcast/secret
    assert d1.subscribe("elsewhere/#") == [0x87]
    assert d1.subscribe("$share/g//v1/devices/d1/command") == [1]
    assert d1.subscribe("$share/g//v1/devices/d2/command") == [0x87]
    for topic, code in [
        ("fleet/thermo/d1", 0),
        ("fleet/thermo/d2", 0x87),
        ("broadcast/news", 0x87),
        ("d2/out", 0x87),
    ]:
        d1.publish(topic, b"x")
        assert acks.get(timeout=5) == code, topic
    d2, acks2 = client(edge, clients, "d2-acl")
    assert d2.connect("d2", "s2") == 0
    d2.publish("d2/out", b"x")
    assert acks2.get(timeout=5) == 0


def test_signed_and_encrypted_envelopes(edge: Edge, clients: list[Client]):
    """An AES body signed with the device's sign key is decrypted and stored; a wrong
    dataSign is refused on datasResponse and in the log."""
    d2, _ = client(edge, clients, "d2-env")
    assert d2.connect("d2", "s2") == 0
    d2.subscribe("/v1/devices/d2/datasResponse")
    data = {
        "devices": [
            {"deviceId": "d2", "services": [{"serviceCode": "env", "data": {"temperature": 7}}]}
        ]
    }
    secret = tl.encrypt_body(json.dumps(data), tl.CIPHER_AES, KEYS)
    ts = 1700000000000
    good = {
        "head": {"mid": 3, "cipherFlag": 2, "timeStamp": ts},
        "dataBody": secret,
        "dataSign": tl.data_sign(secret, ts, "sign-key"),
    }
    d2.publish("/v1/devices/d2/datas", good)
    (stored,) = edge.wait_for_events(lambda e: e["t"] == "data" and e["dev"] == "d2")
    assert stored["v"] == {"temperature": 7} and stored["mid"] == 3
    d2.publish("/v1/devices/d2/datas", dict(good, dataSign="0" * 32))
    response = json.loads(d2.next_message().payload)
    assert response["errors"][0]["code"] == "bad_signature"
    edge.wait_for_events(
        lambda e: e["t"] == "log" and e["dev"] == "d2" and e["reason"] and "dataSign" in e["reason"]
    )


def test_will_on_a_device_topic_is_a_device_message(edge: Edge, clients: list[Client]):
    """A device's will on its datas topic is validated and stored like a publish."""
    doomed = Client(edge, "d1-will", mqtt.MQTTv311)
    will = {
        "devices": [
            {"deviceId": "d1", "services": [{"serviceCode": "env", "data": {"temperature": -1}}]}
        ]
    }
    doomed.client.will_set("/v1/devices/d1/datas", json.dumps(will), 1)
    assert doomed.connect("d1", "s1") == 0
    doomed.client.loop_stop()
    doomed.client.socket().close()
    found = edge.wait_for_events(
        lambda e: e["t"] == "data" and e["dev"] == "d1" and e["v"] == {"temperature": -1}
    )
    assert found


def test_gateway_command_response_names_the_sub_device(edge: Edge, clients: list[Client]):
    """A gateway answering a command for its sub-device gives a cmdrsp event of the
    sub-device."""
    gateway, _ = client(edge, clients, "gw-cmd")
    assert gateway.connect("gw", "sg") == 0
    gateway.publish(
        "/v1/devices/gw/commandResponse",
        {
            "head": {"mid": 11},
            "dataBody": {"deviceIdentification": "sub", "serviceCode": "env", "cmd": "c"},
        },
    )
    (event,) = edge.wait_for_events(lambda e: e["t"] == "cmdrsp" and e["mid"] == 11)
    assert event["dev"] == "sub"


def test_registry_changes_reach_connected_devices(edge: Edge, clients: list[Client]):
    """A rule added in webapp applies to a connected device at once; a device locked while
    connected is disconnected with 0x98 and reported offline (reason locked)."""
    put(edge.redis, edge.prefix, "dev", "live", **device_fields("sl"))
    live, _ = client(edge, clients, "live-1")
    assert live.connect("live", "sl") == 0
    assert live.subscribe("news/today") == [0x87]
    rule = [{"action": "sub", "topic": "news/#", "decision": "allow"}]
    edge.redis.hset(edge.key("dev:live"), "acl", json.dumps(rule))
    edge.redis.publish(edge.key("registry"), "dev:live")
    deadline = time.monotonic() + 5
    while live.subscribe("news/today") != [1]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    edge.redis.hset(edge.key("dev:live"), "status", "locked")
    edge.redis.publish(edge.key("registry"), "dev:live")
    assert live.disconnects.get(timeout=5) == 0x98
    edge.wait_for_events(
        lambda e: e["t"] == "status" and e["dev"] == "live" and e.get("reason") == "locked"
    )
