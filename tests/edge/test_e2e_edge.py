"""End to end: a real Redis, ``python -m edge`` as a subprocess, paho-mqtt clients over TCP."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import redis

from edge.auth import sign_password
from edge.crypto import encrypt_secret
from edge.mqtt.packets import ConnAck

from .edge_process import ROOT, Client, Edge, raw_connack, running_edge

pytestmark = pytest.mark.e2e

SECRET_KEY = "e2e-test-secret-key"
MODEL = {
    "services": {
        "env": {
            "properties": {
                "temperature": {"datatype": "decimal", "min": -40, "max": 125},
                "humidity": {"datatype": "int", "min": 0, "max": 100},
            },
            "commands": {
                "set_interval": {
                    "requests": {"seconds": {"datatype": "int", "min": 1, "max": 3600}}
                }
            },
            "events": {"overheat": {"params": {"level": {"datatype": "int"}}}},
        }
    }
}


def put_device(r: redis.Redis, prefix: str, identifier: str, secret: str, **fields: str) -> None:
    record = {
        "product": "thermo",
        "secret": encrypt_secret(secret, SECRET_KEY),
        "status": "activated",
        "node_type": "direct",
        "gateway": "",
    }
    record.update(fields)
    r.hset(f"{prefix}dev:{identifier}", mapping=record)


@pytest.fixture(scope="module")
def edge(edge_redis_url: str) -> Iterator[Edge]:
    prefix = f"e2e{uuid.uuid4().hex[:8]}:"
    r = redis.Redis.from_url(edge_redis_url)
    r.hset(
        f"{prefix}prod:thermo", mapping={"model": json.dumps(MODEL), "type": "common", "secret": ""}
    )
    r.hset(
        f"{prefix}prod:gw", mapping={"model": json.dumps(MODEL), "type": "gateway", "secret": ""}
    )
    put_device(r, prefix, "thermo-1", "s3cret")
    put_device(r, prefix, "thermo-2", "other-secret")
    put_device(r, prefix, "locked-1", "s3cret", status="locked")
    put_device(r, prefix, "gw-1", "gw-secret", product="gw", node_type="gateway")
    put_device(r, prefix, "sub-1", "sub-secret", node_type="sub", gateway="gw-1")
    put_device(r, prefix, "sub-locked", "sub-secret", node_type="sub", gateway="gw-1",
               status="locked")
    r.close()
    with running_edge(edge_redis_url, prefix, {"DJANGO_SECRET_KEY": SECRET_KEY}) as running:
        yield running


def datas(device: str, data: dict[str, Any], service: str = "env") -> dict[str, Any]:
    return {
        "devices": [
            {
                "deviceId": device,
                "services": [{"serviceCode": service, "data": data, "eventTime": 1700000000000}],
            }
        ]
    }


def test_connack_refusals(edge: Edge, clients: list[Client]):
    """Bad secret, unknown device and locked device are refused with the right codes."""
    assert raw_connack(edge.mqtt_port, "thermo-1", b"wrong") == ConnAck(0x04)
    assert raw_connack(edge.mqtt_port, "nobody", b"x") == ConnAck(0x04)
    assert raw_connack(edge.mqtt_port, "locked-1", b"s3cret") == ConnAck(0x05)
    v5 = Client(edge, "bad5", mqtt.MQTTv5)
    clients.append(v5)
    assert v5.connect("thermo-1", "wrong") == 0x86
    locked = Client(edge, "locked5", mqtt.MQTTv5)
    clients.append(locked)
    assert locked.connect("locked-1", "s3cret") == 0x8A
    assert "s3cret" not in edge.log() and "wrong" not in edge.log().replace("wrong secret", "")


def test_datas_accept_reject_and_status(edge: Edge, clients: list[Client]):
    """Good values reach tl:uplink, bad ones come back on datasResponse, all are logged."""
    device = Client(edge, "thermo-1-client")
    clients.append(device)
    assert device.connect("thermo-1", "s3cret") == 0
    edge.wait_for_events(
        lambda e: e["t"] == "status" and e["dev"] == "thermo-1" and e["s"] == "online"
    )
    assert edge.redis.hget(edge.key("route"), "thermo-1") == edge.node.encode()
    assert device.subscribe("/v1/devices/thermo-1/datasResponse") == [1]
    assert device.subscribe("/v1/devices/thermo-2/command") == [0x80]

    device.publish(
        "/v1/devices/thermo-1/datas", datas("thermo-1", {"temperature": 25.5, "humidity": 40})
    )
    enveloped = {
        "head": {"mid": 77, "cipherFlag": 0, "timeStamp": 1700000000000},
        "dataBody": json.dumps(datas("thermo-1", {"temperature": 500, "humidity": 41})),
        "dataSign": "",
    }
    device.publish("/v1/devices/thermo-1/datas", enveloped)
    response = json.loads(device.next_message().payload)
    assert response["statusCode"] == 1 and response["mid"] == 77
    assert response["errors"][0]["code"] == "out_of_range"
    assert response["errors"][0]["property"] == "temperature"
    assert "500" in response["statusDesc"]

    device.publish("/v1/devices/thermo-1/datas", b"{not json")
    malformed = json.loads(device.next_message().payload)
    assert malformed["errors"][0]["code"] == "malformed_json" and malformed["mid"] is None

    device.publish("/v1/devices/thermo-1/datas", datas("thermo-2", {"temperature": 1}))
    foreign = json.loads(device.next_message().payload)
    assert foreign["errors"][0]["code"] == "not_allowed"

    data = edge.wait_for_events(lambda e: e["t"] == "data" and e["dev"] == "thermo-1", count=2)
    assert data[0]["v"] == {"temperature": 25.5, "humidity": 40} and data[0]["prod"] == "thermo"
    assert (
        data[1]["v"] == {"humidity": 41} and data[1]["mid"] == 77 and data[1]["et"] == 1700000000000
    )
    logs = edge.wait_for_events(
        lambda e: e["t"] == "log" and e["dev"] == "thermo-1" and e["dir"] == "up", count=4
    )
    assert [entry["ok"] for entry in logs] == [True, False, False, False]
    assert "above" in logs[1]["reason"] and logs[2]["payload"] == "{not json"

    device.close()
    clients.remove(device)
    offline = edge.wait_for_events(
        lambda e: e["t"] == "status" and e["dev"] == "thermo-1" and e["s"] == "offline"
    )
    assert offline[0]["reason"] == "disconnect"


def test_mqtt5_acl_and_reason_codes(edge: Edge, clients: list[Client]):
    """5.0: SUBACK/PUBACK 0x87 outside the namespace, PUBACK 0x99 for rejected data."""
    device = Client(edge, "thermo-2-v5", mqtt.MQTTv5)
    clients.append(device)
    acks: queue.Queue[int] = queue.Queue()
    device.client.on_publish = lambda c, u, mid, rc, props: acks.put(int(rc.value))
    assert device.connect("thermo-2", "other-secret") == 0
    assert device.subscribe("/v1/devices/thermo-1/#") == [0x87]
    assert device.subscribe("/v1/devices/thermo-2/datasResponse") == [1]
    device.publish("/v1/devices/thermo-1/datas", datas("thermo-1", {"temperature": 1}))
    assert acks.get(timeout=5) == 0x87
    device.publish("/v1/devices/thermo-2/datas", datas("thermo-2", {"nope": 1}))
    assert acks.get(timeout=5) == 0x99
    assert json.loads(device.next_message().payload)["errors"][0]["code"] == "unknown_property"
    device.publish("/v1/devices/thermo-2/datas", datas("thermo-2", {"temperature": 20, "nope": 1}))
    assert acks.get(timeout=5) == 0


def test_gateway_reports_for_sub_device(edge: Edge, clients: list[Client]):
    """A gateway may publish its sub-devices' data and use their namespaces."""
    gateway = Client(edge, "gw-1-client")
    clients.append(gateway)
    assert gateway.connect("gw-1", "gw-secret") == 0
    assert gateway.subscribe("/v1/devices/sub-1/command") == [1]
    assert gateway.subscribe("/v1/devices/thermo-1/command") == [0x80]
    gateway.publish("/v1/devices/gw-1/datas", datas("sub-1", {"temperature": 30}))
    found = edge.wait_for_events(lambda e: e["t"] == "data" and e["dev"] == "sub-1")
    assert found[0]["v"] == {"temperature": 30.0}


def test_gateway_cannot_report_for_a_locked_sub_device(edge: Edge, clients: list[Client]):
    """A sub-device that could not connect itself (locked, or of a disabled product) cannot
    report through its gateway either: refused with the reason, the other entry accepted."""
    gateway = Client(edge, "gw-1-locked")
    clients.append(gateway)
    assert gateway.connect("gw-1", "gw-secret") == 0
    assert gateway.subscribe("/v1/devices/gw-1/datasResponse") == [1]
    body = datas("sub-locked", {"temperature": 31})
    body["devices"].append(datas("sub-1", {"temperature": 32})["devices"][0])
    gateway.publish("/v1/devices/gw-1/datas", body)
    response = json.loads(gateway.next_message().payload)
    assert response["statusCode"] == 1
    assert [(e["deviceId"], e["code"]) for e in response["errors"]] == [("sub-locked", "locked")]
    edge.wait_for_events(lambda e: e["t"] == "data" and e["dev"] == "sub-1"
                         and e["v"] == {"temperature": 32.0})
    assert not [e for e in edge.events() if e["t"] == "data" and e["dev"] == "sub-locked"]


def test_downlink_and_takeover(edge: Edge, clients: list[Client]):
    """Entries on tl:down:{node} reach the device; a second connection of a device takes over."""
    device = Client(edge, "thermo-1-a")
    clients.append(device)
    assert device.connect("thermo-1", "s3cret") == 0
    assert device.subscribe("/v1/devices/thermo-1/command") == [1]
    command = {
        "head": {"mid": 5},
        "dataBody": {
            "msgType": "cloudReq",
            "serviceCode": "env",
            "cmd": "set_interval",
            "params": {"seconds": 10},
        },
    }
    edge.redis.xadd(
        edge.key(f"down:{edge.node}"),
        {
            "topic": "/v1/devices/thermo-1/command",
            "payload": json.dumps(command),
            "qos": 1,
            "dev": "thermo-1",
            "mid": 5,
        },
    )
    message = device.next_message()
    assert (
        message.topic == "/v1/devices/thermo-1/command" and json.loads(message.payload) == command
    )
    edge.wait_for_events(lambda e: e["t"] == "log" and e["dir"] == "down" and e["ok"] is True)

    device.publish(
        "/v1/devices/thermo-1/commandResponse",
        {
            "head": {"mid": 5},
            "dataBody": {
                "msgType": "deviceRsp",
                "serviceCode": "env",
                "cmd": "set_interval",
                "errCode": 0,
                "params": {"result": "ok"},
            },
        },
    )
    rsp = edge.wait_for_events(lambda e: e["t"] == "cmdrsp")
    assert rsp[0]["mid"] == 5 and rsp[0]["params"] == {"result": "ok"}

    second = Client(edge, "thermo-1-b")
    clients.append(second)
    assert second.connect("thermo-1", "s3cret") == 0
    edge.wait_for_events(
        lambda e: e["t"] == "status" and e["dev"] == "thermo-1" and e.get("reason") == "takeover"
    )
    assert edge.redis.hget(edge.key("route"), "thermo-1") == edge.node.encode()


def test_signed_password(edge: Edge, clients: list[Client]):
    """A current HMAC-SHA256 signed password is accepted; an expired one is refused."""
    now_ms = int(time.time() * 1000)
    fresh = Client(edge, "signed", mqtt.MQTTv5)
    clients.append(fresh)
    assert fresh.connect("thermo-2", sign_password("thermo-2", "other-secret", now_ms)) == 0
    stale = Client(edge, "stale", mqtt.MQTTv5)
    clients.append(stale)
    old = now_ms - 3_600_000
    assert stale.connect("thermo-2", sign_password("thermo-2", "other-secret", old)) == 0x86


def test_metrics_and_health(edge: Edge):
    """/metrics speaks Prometheus text, /healthz says ok."""
    base = f"http://127.0.0.1:{edge.metrics_port}"
    with urllib.request.urlopen(f"{base}/metrics", timeout=5) as reply:  # noqa: S310
        text = reply.read().decode()
    assert "# TYPE edge_connections gauge" in text
    assert "edge_auth_failures_total" in text
    with urllib.request.urlopen(f"{base}/healthz", timeout=5) as reply:  # noqa: S310
        assert reply.read() == b"ok\n"


def test_shutdown_reports_offline_and_exits_zero(edge: Edge):
    """SIGTERM closes connections with reason shutdown, flushes the uplink and exits 0."""
    device = Client(edge, "last")
    assert device.connect("thermo-2", "other-secret") == 0
    edge.process.send_signal(signal.SIGTERM)
    assert edge.process.wait(15) == 0
    device.client.loop_stop()
    offline = edge.wait_for_events(
        lambda e: e["t"] == "status" and e["dev"] == "thermo-2" and e.get("reason") == "shutdown"
    )
    assert offline and edge.redis.hget(edge.key("nodes"), edge.node) is None


def test_edge_imports_no_django():
    """The edge process must not load Django."""
    code = (
        "import sys, edge.service, edge.__main__; "
        "print([m for m in sys.modules if m.startswith('django')])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
