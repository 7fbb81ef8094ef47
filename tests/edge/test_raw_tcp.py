"""Raw TCP devices (edge.transports.rawtcp) over in-memory transports and the in-memory
ThingLinks layer: JSON-lines login, data and commands, the binary th-sensor codec, refusals
with their reasons and the connection budgets."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from edge.bus.registry import ProductRecord
from edge.rawdevices.frames import Candidate
from edge.transports.rawcommon import CodecCatalog, RawConfig
from edge.transports.rawtcp import RawTcpFactory, RawTcpProtocol
from tests.support.example_models import TH_SENSOR_MODEL

from .test_frames_codec import SECRET, TH, TH_INTERVAL_SET, TH_REPORT, th_login
from .test_thinglinks_mqtt import Edge
from .thinglinks_memory import MODEL, device

COMMAND = json.dumps(
    {
        "head": {"mid": 7, "cipherFlag": 0},
        "dataBody": {
            "deviceIdentification": "th-001",
            "msgType": "cloudReq",
            "serviceCode": "config",
            "cmd": "setReportInterval",
            "params": {"interval": 60},
        },
    }
).encode()


def raw_edge() -> Edge:
    edge = Edge()
    products = edge.directory.products
    products["rawthermo"] = ProductRecord("rawthermo", "direct", MODEL, None, protocol="tcp")
    products["th"] = ProductRecord("th", "direct", TH_SENSOR_MODEL, None, protocol="tcp", codec=TH)
    edge.directory.devices["t1"] = device("t1", product="rawthermo")
    edge.directory.devices["th-001"] = device("th-001", product="th")
    return edge


class Conn:
    """One device connection to a raw TCP factory."""

    def __init__(self, factory: RawTcpFactory, port: int = 4000) -> None:
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", "10.0.0.1", port))
        self.protocol = factory.buildProtocol(None)
        self.protocol.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def take(self) -> bytes:
        data = self.transport.value()
        self.transport.clear()
        return data

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.take().splitlines()]

    @property
    def closed(self) -> bool:
        return bool(self.transport.disconnecting)

    def lose(self) -> None:
        self.protocol.connectionLost(None)


def factory(edge: Edge, **config: Any) -> RawTcpFactory:
    catalog = CodecCatalog(edge.redis.client(), edge.keys)
    catalog.codecs["tcp"]["th"] = Candidate("th", TH)
    return RawTcpFactory(edge.clock, edge.hooks, catalog, RawConfig(**config))


def datas(device_id: str, **values: Any) -> bytes:
    body = {
        "devices": [{"deviceId": device_id, "services": [{"serviceCode": "env", "data": values}]}]
    }
    return json.dumps({"topic": "datas", "payload": body}).encode() + b"\n"


def login(conn: Conn, device_id: str = "t1", password: str = SECRET) -> dict[str, Any]:
    conn.send(json.dumps({"deviceId": device_id, "password": password}).encode() + b"\n")
    (answer,) = conn.lines()
    return answer


def test_a_json_device_logs_in_reports_and_gets_commands() -> None:
    edge = raw_edge()
    conn = Conn(factory(edge))
    assert login(conn) == {"statusCode": 0, "statusDesc": "successful"}
    assert ("t1", "online", None) in [
        (e["dev"], e["s"], e.get("reason")) for e in edge.events("status")
    ]

    conn.send(datas("t1", temperature=21.5, humidity=40))
    assert conn.take() == b""  # answered once stored
    edge.sink.pending[-1].callback(None)
    (answer,) = conn.lines()
    assert answer["topic"] == "datasResponse" and answer["payload"]["statusCode"] == 0
    (data,) = edge.events("data")
    assert data["dev"] == "t1" and data["v"] == {"temperature": 21.5, "humidity": 40}

    conn.send(datas("t1", temperature=500))
    edge.sink.pending[-1].callback(None)
    (refused,) = conn.lines()
    assert refused["payload"]["statusCode"] == 1
    assert "above max" in refused["payload"]["statusDesc"]

    edge.hooks.deliver_downlink(
        {b"topic": b"/v1/devices/t1/command", b"payload": b'{"head":{"mid":3},"dataBody":{}}'}
    )
    (command,) = conn.lines()
    assert command == {"topic": "command", "payload": {"head": {"mid": 3}, "dataBody": {}}}
    assert edge.events("log")[-1]["ok"] is True

    conn.lose()
    assert edge.events("status")[-1]["s"] == "offline"
    assert "t1" not in edge.hooks.endpoints


def test_answers_keep_the_order_of_the_lines() -> None:
    edge = raw_edge()
    conn = Conn(factory(edge))
    login(conn)
    conn.send(datas("t1", temperature=1) + datas("t1", temperature=999))
    first, second = edge.sink.pending[-2:]
    second.callback(None)
    assert conn.take() == b""
    first.callback(None)
    answers = conn.lines()
    assert [a["payload"]["statusCode"] for a in answers] == [0, 1]


def test_a_bad_line_is_answered_and_the_connection_goes_on() -> None:
    edge = raw_edge()
    conn = Conn(factory(edge))
    login(conn)
    conn.send(b"{oops\n")
    (error,) = conn.lines()
    assert error["statusCode"] == 1 and "not JSON" in error["statusDesc"]
    assert not conn.closed
    conn.send(b'{"topic": "datas", "payload": "{oops"}\n')
    edge.sink.pending[-1].callback(None)
    (answer,) = conn.lines()
    assert answer["payload"]["errors"][0]["code"] == "malformed_json"


def test_wrong_credentials_are_refused_with_the_reason_and_the_connection_closed() -> None:
    edge = raw_edge()
    conn = Conn(factory(edge))
    answer = login(conn, password="wrong")
    assert answer == {"statusCode": 1, "statusDesc": "wrong secret for device t1"}
    assert conn.closed
    other = Conn(factory(edge))
    answer = login(other, device_id="d1")  # an MQTT product's device
    assert answer["statusCode"] == 1 and other.closed


def test_an_oversized_line_closes_the_connection_with_the_reason() -> None:
    edge = raw_edge()
    conn = Conn(factory(edge, max_line=100))
    login(conn)
    conn.send(b'{"topic": "datas", "payload": "' + b"x" * 200)
    (error,) = conn.lines()
    assert "100 bytes" in error["statusDesc"] and conn.closed


def test_login_and_idle_timeouts_and_the_connection_budget() -> None:
    edge = raw_edge()
    made = factory(edge, login_timeout=5, idle_timeout=60, max_connections=1)
    silent = Conn(made)
    edge.clock.advance(5)
    assert silent.closed and silent.lines() == [{"statusCode": 1, "statusDesc": "login timeout"}]
    silent.lose()

    conn = Conn(made)
    over = Conn(made, port=4001)
    assert over.closed and "over 1 raw TCP connections" in over.lines()[0]["statusDesc"]
    over.lose()
    login(conn)
    edge.clock.advance(59)
    conn.send(b"\n")  # anything renews the idle timer
    edge.clock.advance(59)
    assert not conn.closed
    edge.clock.advance(1)
    assert conn.closed
    conn.lose()
    assert made.counter.open == 0
    assert [(name, value) for name, _, _, value, _ in made.samples()] == [
        ("edge_transport_connections", 0),
        ("edge_transport_accepted_total", 3),
    ]


def test_many_waiting_messages_pause_reading_until_they_are_answered() -> None:
    edge = raw_edge()
    conn = Conn(factory(edge, max_pending=2))
    login(conn)
    conn.send(datas("t1", temperature=1) * 2)
    assert conn.transport.producerState == "paused"
    for pending in edge.sink.pending[-2:]:
        pending.callback(None)
    assert conn.transport.producerState == "producing"
    assert len(conn.lines()) == 2


def test_a_newer_connection_of_the_device_replaces_the_older() -> None:
    edge = raw_edge()
    made = factory(edge)
    first, second = Conn(made), Conn(made, port=4001)
    login(first)
    login(second)
    assert first.closed and not second.closed
    first.lose()
    assert edge.hooks.endpoints.get("t1") is second.protocol


def test_a_binary_th_sensor_logs_in_reports_and_gets_a_command_frame() -> None:
    edge = raw_edge()
    conn = Conn(factory(edge))
    stream = th_login() + TH_REPORT
    for byte in stream:  # one byte at a time
        conn.send(bytes([byte]))
    assert conn.take() == TH.encode("login_answer", {"result": "accepted"})
    assert isinstance(edge.hooks.endpoints.get("th-001"), RawTcpProtocol)
    (data,) = edge.events("data")
    assert data["dev"] == "th-001" and data["v"] == {"temperature": 25.3, "humidity": 45.0}

    edge.hooks.deliver_downlink({b"topic": b"/v1/devices/th-001/command", b"payload": COMMAND})
    assert conn.take() == TH.encode_command("config", "setReportInterval", {"interval": 60}, mid=7)
    assert edge.events("log")[-1]["ok"] is True

    conn.send(TH_INTERVAL_SET)
    (response,) = edge.events("cmdrsp")
    assert response["dev"] == "th-001" and response["mid"] == 7

    unknown = COMMAND.replace(b"setReportInterval", b"reboot")
    edge.hooks.deliver_downlink({b"topic": b"/v1/devices/th-001/command", b"payload": unknown})
    log = edge.events("log")[-1]
    assert log["ok"] is False and "no frame for config.reboot" in log["reason"]
    assert conn.take() == b""


def test_a_binary_login_with_a_wrong_secret_is_answered_refused_and_closed() -> None:
    edge = raw_edge()
    conn = Conn(factory(edge))
    conn.send(th_login(password="wrong"))
    assert conn.take() == TH.encode("login_answer", {"result": "refused"})
    assert conn.closed
    assert edge.events("data") == []


def test_binary_frames_before_login_or_garbage_close_the_connection() -> None:
    edge = raw_edge()
    conn = Conn(factory(edge))
    conn.send(TH_REPORT)
    assert conn.closed and conn.protocol.closing is not None
    assert "login frame" in conn.protocol.closing
    garbage = Conn(factory(edge), port=4001)
    garbage.send(b"\x00\x01\x02")
    assert garbage.closed and "bad_header" in (garbage.protocol.closing or "")


def test_a_device_of_a_json_product_cannot_use_a_codec_it_does_not_have() -> None:
    edge = raw_edge()
    conn = Conn(factory(edge))
    conn.send(th_login(device="t1"))  # t1 is a JSON (no codec) tcp device
    assert conn.take() == TH.encode("login_answer", {"result": "refused"})
    assert conn.closed and "no binary codec" in (conn.protocol.closing or "")
