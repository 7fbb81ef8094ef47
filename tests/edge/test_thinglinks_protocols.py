"""A product's protocol names the transport its devices use (ProductRecord.admits), the
registry carries it and the product's binary codec, and the authenticator refuses a device
over another transport, or any login that is not a device's on a device transport."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.bus.registry import ProductRecord, parse_product
from edge.mqtt.errors import Reason
from edge.thinglinks.auth import AuthResult

from .test_thinglinks_mqtt import Edge
from .thinglinks_memory import MODEL, device

EXAMPLES = Path(__file__).resolve().parents[2] / "edge" / "frames" / "examples"


@pytest.mark.parametrize(
    ("protocol", "admitted"),
    [
        ("mqtt", {"mqtt"}),
        ("websocket", {"mqtt"}),
        ("http", {"http"}),
        ("coap", {"coap"}),
        ("tcp", {"tcp"}),
        ("udp", {"udp"}),
    ],
)
def test_a_products_protocol_admits_its_transport_only(protocol: str, admitted: set[str]):
    product = ProductRecord("p", "common", MODEL, None, protocol=protocol)
    assert {t for t in ("mqtt", "http", "coap", "tcp", "udp") if product.admits(t)} == admitted


def test_the_registry_reads_protocol_and_codec():
    codec = (EXAMPLES / "th-sensor-tcp.json").read_bytes()
    reply = [b"type", b"common", b"model", b'{"services": {}}', b"protocol", b"tcp",
             b"codec", codec]  # fmt: skip
    record = parse_product("p", reply)
    assert record is not None and record.protocol == "tcp"
    assert record.codec is not None and record.codec_error is None
    broken = parse_product("p", [b"protocol", b"udp", b"codec", b'{"codec": 1}'])
    assert broken is not None and broken.codec is None
    assert broken.codec_error is not None and broken.codec_error.startswith("invalid codec")
    plain = parse_product("p", [b"type", b"common"])
    assert plain is not None and (plain.protocol, plain.codec) == ("mqtt", None)


def check(edge: Edge, username: str, password: bytes, transport: str) -> AuthResult:
    result = edge.hooks.auth.check(username, password, "10.0.0.9:1234", None, transport)
    assert isinstance(result, AuthResult)
    return result


def test_a_device_connects_only_over_its_products_transport():
    edge = Edge()
    edge.directory.products["web"] = ProductRecord("web", "common", MODEL, None, protocol="http")
    edge.directory.devices["h1"] = device("h1", product="web")
    assert check(edge, "h1", b"s3cret", "http").identity == "h1"
    over_mqtt = check(edge, "h1", b"s3cret", "mqtt")
    assert over_mqtt.reason == Reason.NOT_AUTHORIZED
    assert over_mqtt.detail == "device h1: product web uses http, not mqtt"
    assert check(edge, "d1", b"s3cret", "http").reason == Reason.NOT_AUTHORIZED
    assert check(edge, "d1", b"s3cret", "mqtt").identity == "d1"
    assert check(edge, "h1", b"wrong", "http").reason == Reason.BAD_USER_NAME_OR_PASSWORD


@pytest.mark.parametrize("username", ["", "app:k1", "web&h9"])
def test_a_device_transport_takes_device_credentials_only(username: str):
    edge = Edge()
    edge.hooks.auth.allow_anonymous = True
    result = check(edge, username, b"whatever", "http")
    assert result.reason == Reason.BAD_USER_NAME_OR_PASSWORD
    assert result.detail == "http takes a device identifier and its secret"
