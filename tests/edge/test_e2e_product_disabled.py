"""End to end: the devices of a disabled product are refused at CONNECT (not authorized, with
the reason in the log), disconnected when their product is disabled while they are connected,
and let in again when it is enabled — with a real Redis, ``python -m edge`` and paho."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest
import redis

from edge.crypto import encrypt_secret
from tests.support.waiting import wait_for

from .edge_process import Client, Edge, raw_connack, running_edge

pytestmark = pytest.mark.e2e

SECRET_KEY = "e2e-product-disabled-key"
MODEL = {"services": {"env": {"properties": {"temperature": {"datatype": "decimal"}}}}}


def put_product(r: redis.Redis, prefix: str, identifier: str, status: str) -> None:
    r.hset(f"{prefix}prod:{identifier}", mapping={
        "model": json.dumps(MODEL), "type": "common", "status": status,
        "secret": encrypt_secret("product-secret", SECRET_KEY)})


def put_device(r: redis.Redis, prefix: str, identifier: str, product: str, secret: str) -> None:
    r.hset(f"{prefix}dev:{identifier}", mapping={
        "product": product, "secret": encrypt_secret(secret, SECRET_KEY),
        "status": "activated", "node_type": "direct", "gateway": ""})


@pytest.fixture(scope="module")
def edge(edge_redis_url: str) -> Iterator[Edge]:
    prefix = f"pdis{uuid.uuid4().hex[:8]}:"
    r = redis.Redis.from_url(edge_redis_url)
    put_product(r, prefix, "off", "disabled")
    put_product(r, prefix, "on", "enabled")
    put_device(r, prefix, "d-off", "off", "s-off")
    put_device(r, prefix, "d-on", "on", "s-on")
    r.close()
    with running_edge(edge_redis_url, prefix, {"DJANGO_SECRET_KEY": SECRET_KEY}) as running:
        yield running


def wait_for_log(edge: Edge, text: str) -> None:
    wait_for(lambda: text in edge.log(), 5, message=lambda: edge.log()[-2000:])


def set_product_status(edge: Edge, identifier: str, status: str) -> None:
    """What webapp's `publish_product` does when a product is saved."""
    edge.redis.hset(edge.key(f"prod:{identifier}"), "status", status)
    edge.redis.publish(edge.key("registry"), f"prod:{identifier}")


def test_a_device_of_a_disabled_product_is_not_authorized(edge: Edge, clients: list[Client]):
    """Right secret, disabled product: CONNACK 0x87 (MQTT 5) / 0x05 (3.1.1), and the log says
    why. Dynamic registration into the product is refused too."""
    v5 = Client(edge, "off-5", mqtt.MQTTv5)
    clients.append(v5)
    assert v5.connect("d-off", "s-off") == 0x87
    assert raw_connack(edge.mqtt_port, "d-off", b"s-off").reason_code == 0x05
    wait_for_log(edge, "device d-off: product off is disabled")
    registering = Client(edge, "off-reg", mqtt.MQTTv5)
    clients.append(registering)
    assert registering.connect("off&d-new", "product-secret") == 0x87
    wait_for_log(edge, "product off is disabled")


@pytest.mark.parametrize("version", [mqtt.MQTTv5, mqtt.MQTTv311])
def test_disabling_a_product_disconnects_its_devices(edge: Edge, clients: list[Client],
                                                     version: int):
    """Connected devices of the product are disconnected (5.0: DISCONNECT 0x98) and reported
    offline with reason product_disabled; they get in again once it is enabled."""
    product, device = f"tog{version}", f"d-tog{version}"
    put_product(edge.redis, edge.prefix, product, "enabled")
    put_device(edge.redis, edge.prefix, device, product, "s-tog")
    other = Client(edge, f"on-{version}", version)
    clients.append(other)
    assert other.connect("d-on", "s-on") == 0
    live = Client(edge, f"tog-{version}", version)
    clients.append(live)
    assert live.connect(device, "s-tog") == 0
    edge.wait_for_events(lambda e: e["t"] == "status" and e["dev"] == device
                         and e["s"] == "online")

    set_product_status(edge, product, "disabled")
    code = live.disconnects.get(timeout=5)
    if version == mqtt.MQTTv5:
        assert code == 0x98
    (offline,) = edge.wait_for_events(lambda e: e["t"] == "status" and e["dev"] == device
                                      and e["s"] == "offline")
    assert offline["reason"] == "product_disabled"
    wait_for_log(edge, f"{device} disconnected: device {device}: product {product} is disabled")
    # A device of another product is left alone.
    assert other.disconnects.empty()
    assert other.subscribe("/v1/devices/d-on/command") == [1]

    again = Client(edge, f"tog-again-{version}", mqtt.MQTTv5)
    clients.append(again)
    assert again.connect(device, "s-tog") == 0x87
    assert raw_connack(edge.mqtt_port, device, b"s-tog").reason_code == 0x05

    set_product_status(edge, product, "enabled")
    deadline = time.monotonic() + 5
    while True:
        back = Client(edge, f"tog-back-{version}-{time.monotonic_ns()}", version)
        clients.append(back)
        if back.connect(device, "s-tog") == 0:
            break
        assert time.monotonic() < deadline
        time.sleep(0.1)
