"""The ThingLinks layer behind the MQTT broker (edge.thinglinks.mqtt), in memory: a broker,
clients over in-memory transports, the in-memory registry and uplink stream, and an
in-memory Redis for routes and signed passwords. What a device sees (CONNACK, datasResponse,
acknowledgements) and what reaches the bus."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.task import Clock

from edge.auth import sign_password
from edge.bus.keys import Keys
from edge.bus.registry import ProductRecord
from edge.mqtt.broker import Broker
from edge.mqtt.errors import Reason
from edge.mqtt.packets import (
    MQTT_5,
    Connect,
    PubAck,
    Publish,
    SubAck,
    Subscribe,
    Subscription,
)
from edge.thinglinks.mqtt import EdgeHooks
from tests.support.broker import FakeClient
from tests.support.fake_redis import FakeRedis

from .thinglinks_memory import Directory, Sink, device

NOW = 1_700_000_000.0


class Edge:
    """One node: broker, ThingLinks hooks and what they talk to, all in memory."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.redis = FakeRedis(self.clock)
        self.keys = Keys("tl:")
        self.directory = Directory(
            device("d1"), device("gw", node_type="gateway"), device("s1", gateway="gw")
        )
        self.sink = Sink()
        self.hooks = EdgeHooks(
            clock=self.clock,
            redis=self.redis.client(),
            keys=self.keys,
            registry=self.directory,
            uplink=self.sink,
            node="n1",
        )
        self.broker = Broker(self.clock, self.hooks)
        self.hooks.broker = self.broker

    def client(self, username: str, password: bytes, client_id: str = "c1") -> FakeClient:
        client = FakeClient(self.broker, MQTT_5)
        connack = client.connect(client_id, username=username, password=password)
        assert connack.reason_code == 0, connack
        return client

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.sink.events if e["t"] == kind]


def test_device_refused_data_gets_datas_response_and_0x99():
    edge = Edge()
    client = edge.client("d1", b"s3cret")
    assert edge.events("status")[0]["s"] == "online"
    edge.redis.settle()
    assert edge.redis.sync.hget("tl:route", "d1") == b"n1"
    client.send(Subscribe(1, (Subscription("/v1/devices/d1/datasResponse"),)))
    assert isinstance(client.received()[0], SubAck)

    bad = json.dumps({"devices": [{"deviceId": "d1", "services": []}]}).encode()
    client.send(Publish("/v1/devices/d1/datas", b"{oops", qos=1, packet_id=7))
    (response,) = client.received()
    assert isinstance(response, Publish) and response.topic == "/v1/devices/d1/datasResponse"
    body = json.loads(response.payload)
    assert body["errors"][0]["code"] == "malformed_json"
    # QoS 1: acknowledged once the bus stored the events, with 0x99 (nothing was accepted).
    edge.sink.pending[-1].callback(None)
    (ack,) = client.received()
    assert isinstance(ack, PubAck)
    assert (ack.packet_id, ack.reason_code) == (7, Reason.PAYLOAD_FORMAT_INVALID)
    (log,) = edge.events("log")
    assert log["ok"] is False and log["reason"] == body["statusDesc"]

    # A body without services is no refusal: nothing to land, nothing to answer.
    client.send(Publish("/v1/devices/d1/datas", bad))
    assert client.received() == []


def test_accepted_qos1_data_is_acknowledged_after_the_bus_stored_it():
    edge = Edge()
    client = edge.client("d1", b"s3cret")
    payload = json.dumps(
        {
            "devices": [
                {"deviceId": "d1", "services": [{"serviceCode": "env", "data": {"humidity": 3}}]}
            ]
        }
    ).encode()
    client.send(Publish("/v1/devices/d1/datas", payload, qos=1, packet_id=3))
    assert client.received() == []
    edge.sink.pending[-1].callback(None)
    (ack,) = client.received()
    assert isinstance(ack, PubAck) and ack.packet_id == 3 and ack.reason_code == 0
    (data,) = edge.events("data")
    assert data["dev"] == "d1" and data["v"] == {"humidity": 3}


def test_a_device_may_not_publish_in_another_devices_namespace():
    edge = Edge()
    client = edge.client("d1", b"s3cret")
    client.send(Publish("/v1/devices/s1/datas", b"{}", qos=1, packet_id=1))
    (ack,) = client.received()
    assert ack.reason_code == Reason.NOT_AUTHORIZED
    assert edge.events("log") == []


def test_wrong_secret_and_replayed_signed_password_are_refused():
    edge = Edge()
    client = FakeClient(edge.broker, MQTT_5)
    connack = client.connect("c1", username="d1", password=b"wrong")
    assert connack.reason_code == Reason.BAD_USER_NAME_OR_PASSWORD
    signed = sign_password("d1", "s3cret", int(NOW * 1000)).encode()
    first = FakeClient(edge.broker, MQTT_5, port=40001)
    first.send(Connect("c2", protocol_level=MQTT_5, username="d1", password=signed))
    edge.redis.settle()
    assert first.received()[0].reason_code == 0
    again = FakeClient(edge.broker, MQTT_5, port=40002)
    again.send(Connect("c3", protocol_level=MQTT_5, username="d1", password=signed))
    edge.redis.settle()
    assert again.received()[0].reason_code == Reason.BAD_USER_NAME_OR_PASSWORD


def test_a_locked_device_is_disconnected_when_the_registry_says_so():
    edge = Edge()
    client = edge.client("d1", b"s3cret")
    edge.directory.devices["d1"] = device("d1", status="locked")
    edge.hooks.registry_changed("dev", "d1")
    assert client.closed
    offline = edge.events("status")[-1]
    assert offline["s"] == "offline" and offline["reason"] == "locked"


def test_registration_answer_goes_to_the_asking_connection_only_and_is_logged_redacted():
    edge = Edge()
    edge.directory.products["reg"] = ProductRecord("reg", "direct", None, None, secret="ps")
    client = edge.client("reg&newdev", b"ps")
    client.send(Subscribe(1, (Subscription("/v1/devices/newdev/registerResponse"),)))
    client.received()
    client.send(Publish("/v1/devices/newdev/register", b'{"name": "n"}'))
    (event,) = edge.events("register")
    assert (event["dev"], event["prod"], event["body"]) == ("newdev", "reg", {"name": "n"})

    answer = json.dumps({"statusCode": 0, "data": {"secret": "new-secret"}}).encode()
    topic = b"/v1/devices/newdev/registerResponse"
    edge.hooks.deliver_downlink({b"topic": topic, b"payload": answer, b"conn": b"stranger"})
    assert client.received() == []
    assert edge.events("log")[-1]["reason"] == "the registering connection is gone"

    token = event["conn"].encode()
    edge.hooks.deliver_downlink({b"topic": topic, b"payload": answer, b"conn": token})
    (delivered,) = client.received()
    assert isinstance(delivered, Publish) and delivered.payload == answer
    log = edge.events("log")[-1]
    assert log["ok"] is True and json.loads(log["payload"])["data"]["secret"] == "***"


def test_downlink_to_nobody_is_logged_with_the_reason():
    edge = Edge()
    topic = b"/v1/devices/d1/command"
    edge.hooks.deliver_downlink({b"topic": topic, b"payload": b"{}", b"qos": b"1"})
    log = edge.events("log")[-1]
    assert (log["dev"], log["dir"], log["ok"], log["reason"]) == (
        "d1",
        "down",
        False,
        "no subscriber",
    )
    edge.hooks.deliver_downlink({b"topic": b"/v1/devices/+/command", b"payload": b"{}"})
    assert edge.events("log")[-1]["reason"] == "invalid topic"
