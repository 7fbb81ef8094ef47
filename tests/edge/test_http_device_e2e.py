"""End to end: the HTTP device API of ``python -m edge`` with a real Redis and ``requests``:
data reaches the uplink stream, a command written to the node's downlink stream reaches a
waiting long-poll, and wrong credentials, another device's path and a device of an MQTT
product are refused."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import requests

from edge.crypto import encrypt_secret
from tests.support.waiting import wait_for_port

from .edge_process import Edge, running_edge
from .redis_server import free_port

pytestmark = pytest.mark.e2e

SECRET_KEY = "e2e-http-secret-key"
MODEL = {"services": {"env": {"properties": {"temperature": {"datatype": "decimal"}}}}}


def put(r: redis.Redis, key: str, **fields: Any) -> None:
    r.hset(key, mapping=fields)


def device_fields(product: str, secret: str) -> dict[str, Any]:
    return {
        "product": product,
        "secret": encrypt_secret(secret, SECRET_KEY),
        "status": "activated",
        "node_type": "direct",
        "gateway": "",
    }


@pytest.fixture(scope="module")
def edge(edge_redis_url: str) -> Iterator[Edge]:
    prefix = f"http{uuid.uuid4().hex[:8]}:"
    r = redis.Redis.from_url(edge_redis_url)
    put(r, f"{prefix}prod:hp", model=json.dumps(MODEL), type="common", protocol="http")
    put(r, f"{prefix}prod:mp", model=json.dumps(MODEL), type="common", protocol="mqtt")
    put(r, f"{prefix}dev:h1", **device_fields("hp", "secret-1"))
    put(r, f"{prefix}dev:h2", **device_fields("hp", "secret-2"))
    put(r, f"{prefix}dev:m1", **device_fields("mp", "secret-m"))
    r.close()
    port = free_port()
    env = {"DJANGO_SECRET_KEY": SECRET_KEY, "EDGE_HTTP_PORT": str(port)}
    with running_edge(edge_redis_url, prefix, env) as running:
        wait_for_port(port, running.process, 30, running.log_path)
        running.http = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
        yield running


def url(edge: Edge, path: str) -> str:
    return f"{edge.http}{path}"  # type: ignore[attr-defined]


def datas(device: str, **values: Any) -> dict[str, Any]:
    services = [{"serviceCode": "env", "data": values}]
    return {"devices": [{"deviceId": device, "services": services}]}


def test_posted_data_reaches_the_uplink_stream_on_a_kept_alive_connection(edge: Edge):
    with requests.Session() as session:
        session.auth = ("h1", "secret-1")
        first = session.post(url(edge, "/v1/devices/h1/datas"), json=datas("h1", temperature=21.5))
        assert first.status_code == 200, first.text
        assert first.json() == {
            "statusCode": 0,
            "statusDesc": "successful",
            "errors": [],
            "mid": None,
        }
        refused = session.post(
            url(edge, "/v1/devices/h1/datas"), json=datas("h1", temperature="hot")
        )
        assert refused.status_code == 400 and refused.json()["errors"][0]["property"]
    [event] = edge.wait_for_events(lambda e: e["t"] == "data" and e["dev"] == "h1")
    assert event["v"] == {"temperature": 21.5} and event["prod"] == "hp"
    edge.wait_for_events(lambda e: e["t"] == "status" and e["dev"] == "h1" and e["s"] == "online")


def test_a_command_on_the_downlink_stream_reaches_a_waiting_long_poll(edge: Edge):
    got: list[requests.Response] = []
    poll = threading.Thread(
        target=lambda: got.append(
            requests.get(
                url(edge, "/v1/devices/h2/command?wait=20"), auth=("h2", "secret-2"), timeout=30
            )
        )
    )
    poll.start()
    # The device is attached (its lease began) once its poll was authenticated.
    edge.wait_for_events(lambda e: e["t"] == "status" and e["dev"] == "h2")
    command = {"mid": 9, "serviceCode": "env", "cmd": "reboot", "paras": {}}
    edge.redis.xadd(
        edge.key(f"down:{edge.node}"),
        {"topic": "/v1/devices/h2/command", "payload": json.dumps(command), "qos": "1"},
    )
    poll.join(30)
    [answer] = got
    assert answer.status_code == 200, answer.text
    assert answer.json() == command and answer.headers["X-ThingLinks-Topic"] == "command"
    empty = requests.get(url(edge, "/v1/devices/h2/command"), auth=("h2", "secret-2"), timeout=10)
    assert empty.status_code == 204


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/devices/h1/datas"),
        ("POST", "/v1/devices/h1/events"),
        ("POST", "/v1/devices/h1/shadow/update"),
        ("POST", "/v1/devices/h1/topo/query"),
        ("GET", "/v1/devices/h1/command?wait=1"),
    ],
)
def test_a_wrong_password_is_refused_on_every_path(edge: Edge, method: str, path: str):
    answer = requests.request(method, url(edge, path), auth=("h1", "nope"), data=b"{}", timeout=10)
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"] == 'Basic realm="thinglinks"'
    assert "wrong secret" in answer.json()["statusDesc"]


def test_another_devices_path_and_a_device_of_an_mqtt_product_are_forbidden(edge: Edge):
    other = requests.post(
        url(edge, "/v1/devices/h2/datas"),
        auth=("h1", "secret-1"),
        json=datas("h2", temperature=1),
        timeout=10,
    )
    assert other.status_code == 403
    mqtt_device = requests.post(
        url(edge, "/v1/devices/m1/datas"),
        auth=("m1", "secret-m"),
        json=datas("m1", temperature=1),
        timeout=10,
    )
    assert mqtt_device.status_code == 403
    assert "uses mqtt, not http" in mqtt_device.json()["statusDesc"]
    too_large = requests.post(
        url(edge, "/v1/devices/h1/datas"),
        auth=("h1", "secret-1"),
        data=b"x" * (300 * 1024),
        timeout=10,
    )
    assert too_large.status_code == 413
