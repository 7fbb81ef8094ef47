"""UDP devices (edge.transports.rawudp) with the in-memory ThingLinks layer: JSON datagrams,
queue mode for commands (and what the message log says of them), the binary meter codec with
its MAC, and the size and rate budgets."""

from __future__ import annotations

import json
from typing import Any

from edge.auth import sign_password
from edge.bus.registry import ProductRecord
from edge.rawdevices.frames import Candidate
from edge.throttle import FAILURE_LIMIT
from edge.transports.rawcommon import CodecCatalog, RawConfig
from edge.transports.rawudp import DELIVERED, RawUdpProtocol
from tests.support.example_models import METER_MODEL

from .test_frames_codec import METER, METER_READING, SECRET, meter_frame
from .test_thinglinks_mqtt import NOW, Edge
from .thinglinks_memory import MODEL, device

SOURCE = ("10.0.0.2", 5000)
METER_ID = "000012345678"
class Transport:
    """The datagrams a protocol sent, by destination."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def write(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((data, addr))

    def take(self) -> list[bytes]:
        sent, self.sent = self.sent, []
        return [data for data, _ in sent]


def udp_edge(**config: Any) -> tuple[Edge, RawUdpProtocol, Transport]:
    edge = Edge()
    products = edge.directory.products
    products["rawthermo"] = ProductRecord("rawthermo", "direct", MODEL, None, protocol="udp")
    products["meter"] = ProductRecord(
        "meter", "direct", METER_MODEL, None, protocol="udp", codec=METER
    )
    edge.directory.devices["u1"] = device("u1", product="rawthermo")
    edge.directory.devices[METER_ID] = device(METER_ID, product="meter")
    catalog = CodecCatalog(edge.redis.client(), edge.keys)
    catalog.codecs["udp"]["meter"] = Candidate("meter", METER)
    protocol = RawUdpProtocol(edge.clock, edge.hooks, catalog, RawConfig(**config))
    transport = Transport()
    protocol.transport = transport  # type: ignore[assignment]
    return edge, protocol, transport


def datagram(password: str = SECRET, device_id: str = "u1", **values: Any) -> bytes:
    body = {
        "devices": [{"deviceId": device_id, "services": [{"serviceCode": "env", "data": values}]}]
    }
    return json.dumps(
        {"deviceId": device_id, "password": password, "topic": "datas", "payload": body}
    ).encode()


def test_a_json_datagram_lands_and_is_answered_to_its_source() -> None:
    edge, protocol, transport = udp_edge()
    signed = sign_password("u1", "s3cret", int(NOW * 1000))
    protocol.datagramReceived(datagram(signed, temperature=20.5), SOURCE)
    edge.redis.settle()
    edge.sink.pending[-1].callback(None)
    (answer,) = transport.take()
    assert json.loads(answer)["payload"]["statusCode"] == 0
    assert transport.sent == []
    (data,) = edge.events("data")
    assert data["dev"] == "u1" and data["v"] == {"temperature": 20.5}
    assert "u1" in edge.hooks.endpoints  # online for a lease
    # the same signed password again is a replay
    protocol.datagramReceived(datagram(signed, temperature=20.5), SOURCE)
    edge.redis.settle()
    (refused,) = transport.take()
    assert json.loads(refused) == {
        "statusCode": 1,
        "statusDesc": "signed password of u1 already used",
    }


def test_wrong_password_and_bad_datagrams_are_answered_with_the_reason() -> None:
    edge, protocol, transport = udp_edge()
    protocol.datagramReceived(datagram("wrong", temperature=1), SOURCE)
    assert json.loads(transport.take()[0]) == {
        "statusCode": 1,
        "statusDesc": "wrong secret for device u1",
    }
    protocol.datagramReceived(b"{oops", SOURCE)
    assert "not JSON" in json.loads(transport.take()[0])["statusDesc"]
    assert edge.events("data") == []


def test_commands_wait_for_the_next_datagram_and_the_log_says_so() -> None:
    edge, protocol, transport = udp_edge()
    protocol.datagramReceived(datagram(temperature=1), SOURCE)
    edge.sink.pending[-1].callback(None)
    transport.take()
    command = b'{"head":{"mid":5},"dataBody":{"cmd":"x"}}'
    edge.hooks.deliver_downlink({b"topic": b"/v1/devices/u1/command", b"payload": command})
    queued = edge.events("log")[-1]
    assert queued["dir"] == "down" and queued["ok"] is True
    assert queued["reason"] == "queued until the device asks for it"
    assert transport.sent == []

    protocol.datagramReceived(datagram(temperature=2), SOURCE)
    edge.sink.pending[-1].callback(None)
    answer, sent = transport.take()
    assert json.loads(answer)["topic"] == "datasResponse"
    assert json.loads(sent) == {
        "topic": "command",
        "payload": {"head": {"mid": 5}, "dataBody": {"cmd": "x"}},
    }
    delivered = edge.events("log")[-1]
    assert (delivered["dir"], delivered["ok"], delivered["reason"]) == ("down", True, DELIVERED)


def test_a_binary_meter_reports_with_its_mac_and_gets_a_relay_command() -> None:
    edge, protocol, transport = udp_edge()
    protocol.datagramReceived(METER_READING, SOURCE)
    (data,) = edge.events("data")
    assert data["dev"] == METER_ID and data["v"]["voltage"] == 231.0
    command = json.dumps(
        {
            "head": {"mid": 9},
            "dataBody": {"serviceCode": "meter", "cmd": "setRelay", "params": {"on": True}},
        }
    ).encode()
    edge.hooks.deliver_downlink(
        {b"topic": f"/v1/devices/{METER_ID}/command".encode(), b"payload": command}
    )
    assert transport.sent == []
    protocol.datagramReceived(METER_READING, SOURCE)
    assert transport.sent == []  # the commands go once the reading is stored
    edge.sink.pending[-1].callback(None)
    (frame,) = transport.take()
    assert frame == METER.encode_command(
        "meter", "setRelay", {"on": True}, mid=9, secret=SECRET, device=METER_ID
    )


def test_a_meter_frame_with_a_wrong_mac_is_dropped_and_counted() -> None:
    edge, protocol, transport = udp_edge(udp_rate=100)
    forged = meter_frame(METER_READING[:-8].hex(), secret="not-the-secret")
    for _ in range(FAILURE_LIMIT):
        protocol.datagramReceived(forged, SOURCE)
    assert edge.events("data") == [] and transport.sent == []
    # counted like failed logins (here in the process: the test's Redis is not connected)
    assert edge.hooks.throttle.local.blocked(f"user:{METER_ID}")
    assert edge.hooks.throttle.local.blocked("addr:10.0.0.2")


def test_size_and_rate_budgets_drop_datagrams_unanswered() -> None:
    edge, protocol, transport = udp_edge(max_datagram=64, udp_rate=2)
    protocol.datagramReceived(b"{" + b" " * 100 + b"}", SOURCE)
    assert transport.sent == [] and protocol.dropped == 1
    for _ in range(3):
        protocol.datagramReceived(b"{oops", SOURCE)
    assert len(transport.take()) == 2 and protocol.dropped == 2
    edge.clock.advance(0.5)
    protocol.datagramReceived(b"{oops", SOURCE)
    assert len(transport.take()) == 1
    protocol.datagramReceived(b"{oops", ("10.0.0.3", 1))  # another source has its own budget
    assert len(transport.take()) == 1
    assert [(name, value) for name, _, _, value in protocol.samples()] == [
        ("edge_udp_datagrams_total", 6),
        ("edge_udp_dropped_total", 2),
    ]
