"""End to end: raw TCP and UDP devices against ``python -m edge`` and a real Redis, with plain
sockets: JSON devices and the two example binary codecs report data that lands on the uplink
stream, wrong credentials are refused, and commands written to the node's downlink stream
reach a TCP device at once and a UDP device in answer to its next datagram."""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from edge.auth import sign_password
from edge.crypto import encrypt_secret
from tests.support.example_models import METER_SOURCE, TH_SENSOR_SOURCE

from .edge_process import Edge, running_edge
from .raw_client import Lines
from .redis_server import free_port
from .test_frames_codec import EXAMPLES, METER, METER_READING, SECRET, TH, TH_REPORT, th_login
from .test_raw_udp import METER_ID

pytestmark = pytest.mark.e2e

SECRET_KEY = "e2e-raw-secret-key"
MODEL = {"services": {"env": {"properties": {"temperature": {"datatype": "decimal"}}}}}


def put(r: redis.Redis, prefix: str, kind: str, name: str, **fields: Any) -> None:
    r.hset(f"{prefix}{kind}:{name}", mapping=fields)


def device_fields(product: str) -> dict[str, Any]:
    return {
        "product": product,
        "secret": encrypt_secret(SECRET, SECRET_KEY),
        "status": "activated",
        "node_type": "direct",
        "gateway": "",
    }


@pytest.fixture(scope="module")
def edge(edge_redis_url: str) -> Iterator[Edge]:
    prefix = f"raw{uuid.uuid4().hex[:8]}:"
    r = redis.Redis.from_url(edge_redis_url)
    model = json.dumps(MODEL)
    put(r, prefix, "prod", "jtcp", model=model, type="common", protocol="tcp")
    put(r, prefix, "prod", "judp", model=model, type="common", protocol="udp")
    put(r, prefix, "prod", "th", model=json.dumps(TH_SENSOR_SOURCE), type="common", protocol="tcp",
        codec=(EXAMPLES / "th-sensor-tcp.json").read_text())  # fmt: skip
    put(r, prefix, "prod", "meter", model=json.dumps(METER_SOURCE), type="common",
        protocol="udp", codec=(EXAMPLES / "meter-udp.json").read_text())  # fmt: skip
    put(r, prefix, "dev", "tcp-1", **device_fields("jtcp"))
    put(r, prefix, "dev", "udp-1", **device_fields("judp"))
    put(r, prefix, "dev", "th-001", **device_fields("th"))
    put(r, prefix, "dev", METER_ID, **device_fields("meter"))
    env = {
        "DJANGO_SECRET_KEY": SECRET_KEY,
        "EDGE_TCP_PORT": str(free_port()),
        "EDGE_UDP_PORT": str(free_port()),
    }
    with running_edge(edge_redis_url, prefix, env) as running:
        running.tcp_port = int(env["EDGE_TCP_PORT"])  # type: ignore[attr-defined]
        running.udp_port = int(env["EDGE_UDP_PORT"])  # type: ignore[attr-defined]
        wait_listening(running)
        yield running
    r.close()


def wait_listening(edge: Edge) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if "rawudp devices on" in edge.log():
            return
        time.sleep(0.05)
    raise AssertionError(edge.log())


def udp_exchange(port: int, data: bytes, answers: int = 1) -> list[bytes]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(10)
        sock.sendto(data, ("127.0.0.1", port))
        return [sock.recvfrom(4096)[0] for _ in range(answers)]


def command(edge: Edge, device: str, body: dict[str, Any], mid: int) -> None:
    payload = json.dumps({"head": {"mid": mid, "cipherFlag": 0}, "dataBody": body})
    edge.redis.xadd(
        edge.key(f"down:{edge.node}"),
        {"topic": f"/v1/devices/{device}/command", "payload": payload, "qos": "1", "dev": device},
    )


def datas(device: str, service: str = "env", **values: Any) -> dict[str, Any]:
    return {
        "devices": [{"deviceId": device, "services": [{"serviceCode": service, "data": values}]}]
    }


def test_a_json_tcp_device_reports_and_gets_a_command_at_once(edge: Edge) -> None:
    conn = Lines(edge.tcp_port, timeout=10)  # type: ignore[attr-defined]
    try:
        conn.send({"deviceId": "tcp-1", "password": SECRET})
        assert conn.read() == {"statusCode": 0, "statusDesc": "successful"}
        conn.send({"topic": "datas", "payload": datas("tcp-1", temperature=21.5)})
        answer = conn.read()
        assert answer["topic"] == "datasResponse" and answer["payload"]["statusCode"] == 0
        edge.wait_for_events(lambda e: e["t"] == "data" and e["dev"] == "tcp-1")
        conn.send({"topic": "datas", "payload": datas("tcp-1", nothing=1)})
        refused = conn.read()["payload"]
        assert refused["statusCode"] == 1 and refused["errors"][0]["code"] == "unknown_property"

        command(edge, "tcp-1", {"serviceCode": "env", "cmd": "beep", "params": {}}, 41)
        sent = conn.read()
        assert sent["topic"] == "command" and sent["payload"]["head"]["mid"] == 41
    finally:
        conn.close()


def test_a_json_udp_device_reports_and_gets_its_command_with_its_next_datagram(
    edge: Edge,
) -> None:
    port = edge.udp_port  # type: ignore[attr-defined]

    def post(temperature: float, answers: int = 1) -> list[dict[str, Any]]:
        password = sign_password("udp-1", SECRET, int(time.time() * 1000))
        message = {"deviceId": "udp-1", "password": password, "topic": "datas",
                   "payload": datas("udp-1", temperature=temperature)}  # fmt: skip
        return [json.loads(d) for d in udp_exchange(port, json.dumps(message).encode(), answers)]

    (answer,) = post(20.5)
    assert answer["topic"] == "datasResponse" and answer["payload"]["statusCode"] == 0
    edge.wait_for_events(lambda e: e["t"] == "data" and e["dev"] == "udp-1")

    command(edge, "udp-1", {"serviceCode": "env", "cmd": "beep", "params": {}}, 42)
    edge.wait_for_events(
        lambda e: e["t"] == "log" and e["dev"] == "udp-1" and e["dir"] == "down"
        and e["ok"] and "queued" in (e.get("reason") or "")
    )  # fmt: skip
    time.sleep(0.01)  # a later signed password
    answer, sent = post(20.6, answers=2)
    assert answer["topic"] == "datasResponse"
    assert sent["topic"] == "command" and sent["payload"]["head"]["mid"] == 42
    edge.wait_for_events(
        lambda e: e["t"] == "log" and e["dev"] == "udp-1" and e["dir"] == "down"
        and e.get("reason") == "delivered when the device asked for it"
    )  # fmt: skip


def test_wrong_credentials_are_refused_on_tcp_and_udp(edge: Edge) -> None:
    conn = Lines(edge.tcp_port, timeout=10)  # type: ignore[attr-defined]
    try:
        conn.send({"deviceId": "tcp-1", "password": "wrong"})
        assert conn.read() == {"statusCode": 1, "statusDesc": "wrong secret for device tcp-1"}
        assert conn.reader.readline() == b""  # closed
    finally:
        conn.close()
    message = {"deviceId": "udp-1", "password": "wrong", "topic": "datas",
               "payload": datas("udp-1", temperature=1)}  # fmt: skip
    (answer,) = udp_exchange(edge.udp_port, json.dumps(message).encode())  # type: ignore[attr-defined]
    assert json.loads(answer) == {"statusCode": 1, "statusDesc": "wrong secret for device udp-1"}


def test_a_binary_th_sensor_over_tcp(edge: Edge) -> None:
    with socket.create_connection(("127.0.0.1", edge.tcp_port), timeout=10) as sock:  # type: ignore[attr-defined]
        sock.sendall(th_login() + TH_REPORT)
        accepted = TH.encode("login_answer", {"result": "accepted"})
        assert sock.recv(len(accepted)) == accepted
        (data,) = edge.wait_for_events(lambda e: e["t"] == "data" and e["dev"] == "th-001")
        assert data["v"] == {"temperature": 25.3, "humidity": 45.0}
        body = {"serviceCode": "config", "cmd": "setReportInterval", "params": {"interval": 60}}
        command(edge, "th-001", body, 43)
        frame = TH.encode_command("config", "setReportInterval", {"interval": 60}, mid=43)
        assert sock.recv(len(frame)) == frame


def test_a_binary_meter_over_udp(edge: Edge) -> None:
    port = edge.udp_port  # type: ignore[attr-defined]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(10)
        sock.sendto(METER_READING, ("127.0.0.1", port))
        (data,) = edge.wait_for_events(lambda e: e["t"] == "data" and e["dev"] == METER_ID)
        assert data["v"]["voltage"] == 231.0
        body = {"serviceCode": "meter", "cmd": "setRelay", "params": {"on": True}}
        command(edge, METER_ID, body, 44)
        edge.wait_for_events(
            lambda e: e["t"] == "log" and e["dev"] == METER_ID and e["dir"] == "down"
        )
        sock.sendto(METER_READING, ("127.0.0.1", port))
        frame, _ = sock.recvfrom(4096)
        assert frame == METER.encode_command(
            "meter", "setRelay", {"on": True}, mid=44, secret=SECRET, device=METER_ID
        )
