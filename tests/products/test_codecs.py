"""Product codecs on the platform side: the example products, decode and encode through the
API with the thing model's verdicts, validation with the codec's reasons, sample frames re-run
on every codec or model change, the registry hash, export and import, and the data scope."""

from __future__ import annotations

import base64
import copy
import json

import pytest

from edge.frames import Codec
from edge.frames.checksums import crc16_modbus, frame_mac
from tests.system.conftest import Org, login
from webapp.products import actions
from webapp.products.builtin_templates import TEMPLATES, example_codec
from webapp.products.models import Product

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commit_hooks")]

SECRET = "s3cret"
TH_REPORT = "aa550200fd01c2753e"  # 25.3 °C, 45.0 %
TH_INTERVAL_SET = "aa55830000000700003cdce6"  # command 7: ok, 60 s
METER_READING = "68001801000012345678000186a009060fa083d4af67c5ec92b1e1"


def th_frame(hex_body: str) -> str:
    body = bytes.fromhex(hex_body)
    return (body + crc16_modbus(body).to_bytes(2, "little")).hex()


def th_login(device: str = "th-001") -> str:
    fields = device.encode().ljust(32, b"\0") + SECRET.encode().ljust(96, b"\0")
    return th_frame("aa5501" + fields.hex())


def template(identifier: str) -> dict:
    return copy.deepcopy(next(t for t in TEMPLATES if t["identifier"] == identifier))


def example_product(identifier: str, kind: str = "th-sensor-tcp", department=None) -> Product:
    data = template(kind)
    data = {k: v for k, v in data.items() if k != "description"}
    product = actions.create_product(acting_user=None, data={
        **data, "identifier": identifier, "department": department})
    return product


def decode(api, identifier: str, **body):
    return api.post(f"/api/v1/products/{identifier}/codec/decode/", body, format="json")


def encode(api, identifier: str, **body):
    return api.post(f"/api/v1/products/{identifier}/codec/encode/", body, format="json")


def test_example_templates_make_codec_products(api, redis_client, redis_prefix):
    """The two shipped examples start products with their codec, samples and a model the
    samples pass; the registry hash carries the protocol and the codec for the edge."""
    for identifier, protocol in (("th-sensor-tcp", "tcp"), ("meter-udp", "udp")):
        made = api.post("/api/v1/products/", {"identifier": f"my-{identifier}",
                                              "name": "Example", "template": identifier},
                        format="json")
        assert made.status_code == 201, made.json()
        body = made.json()
        assert body["protocol"] == protocol and body["data_format"] == "binary"
        assert body["codec"] == example_codec(identifier)
        assert body["codec_version"] == 1 and len(body["codec_samples"]) == 3
        published = redis_client.hgetall(f"{redis_prefix}prod:my-{identifier}")
        assert published[b"protocol"] == protocol.encode()
        assert Codec.loads(published[b"codec"]).spec.name == identifier
    plain = api.post("/api/v1/products/", {"identifier": "plain", "name": "Plain"},
                     format="json")
    assert plain.json()["codec"] is None
    published = redis_client.hgetall(f"{redis_prefix}prod:plain")
    assert published[b"protocol"] == b"mqtt" and published[b"codec"] == b""


def test_decode_a_tcp_stream_with_login(api, redis_prefix):
    """A login frame then a report and a command answer: the frames after the login are its
    device's, each value valid in the thing model."""
    example_product("th")
    response = decode(api, "th", hex=th_login() + TH_REPORT + " " + TH_INTERVAL_SET)
    assert response.status_code == 200, response.json()
    login_msg, report, answer = response.json()["messages"]
    assert login_msg["kind"] == "login" and login_msg["device"] == "th-001"
    assert login_msg["topic"] is None and SECRET not in json.dumps(login_msg)
    assert report["topic"] == "datas"
    assert report["body"] == {"devices": [{"deviceId": "th-001", "services": [
        {"serviceCode": "env", "data": {"temperature": 25.3, "humidity": 45.0}}]}]}
    assert [(v["name"], v["valid"]) for v in report["model"]] == [
        ("temperature", True), ("humidity", True)]
    assert answer["topic"] == "commandResponse"
    assert answer["body"]["cmd"] == "setReportInterval" and answer["body"]["mid"] == 7
    assert answer["model"] == [{"service": "config", "name": "interval", "value": 60,
                                "valid": True}]


def test_decode_says_what_the_model_refuses(api, redis_prefix):
    example_product("th")
    hot = th_frame("aa5502" + (1300).to_bytes(2, "big").hex() + (450).to_bytes(2, "big").hex())
    response = decode(api, "th", hex=hot, device="th-009")
    assert response.status_code == 200
    (message,) = response.json()["messages"]
    assert message["body"]["devices"][0]["deviceId"] == "th-009"
    temperature, humidity = message["model"]
    assert temperature["valid"] is False and temperature["code"] == "out_of_range"
    assert "above max 125" in temperature["reason"]
    assert humidity["valid"] is True


def test_decode_a_udp_datagram_with_a_mac(api, redis_prefix):
    """Base64 input; the MAC is checked with the given secret, and refused with the reason
    without one or with a wrong one."""
    example_product("meter", "meter-udp")
    frame = base64.b64encode(bytes.fromhex(METER_READING)).decode()
    response = decode(api, "meter", base64=frame, secret=SECRET)
    assert response.status_code == 200, response.json()
    (message,) = response.json()["messages"]
    assert message["device"] == "000012345678" and message["topic"] == "datas"
    data = message["body"]["devices"][0]["services"][0]["data"]
    assert data == {"energy": 1000.0, "voltage": 231.0, "current": 4.0, "relay": True,
                    "mode": "eco", "tamper": True}
    assert all(v["valid"] for v in message["model"])
    unsigned = decode(api, "meter", base64=frame)
    assert unsigned.status_code == 400
    assert unsigned.json()["frame_error"] == "unauthenticated"
    wrong = decode(api, "meter", base64=frame, secret="other")
    assert wrong.status_code == 400 and wrong.json()["frame_error"] == "bad_mac"
    assert "does not match" in wrong.json()["detail"]


def test_bad_input_is_answered_400_with_the_reason(api, redis_prefix):
    example_product("th")
    cases = [
        ({"hex": "zz"}, "not hex"),
        ({"base64": "***"}, "not base64"),
        ({}, "hex or base64"),
        ({"hex": TH_REPORT[:-4]}, "incomplete frame"),
        ({"hex": "aa5509" + "00" * 6}, "no message has the type 9"),
        ({"hex": "00" * 9000}, "at most"),
        ({"hex": th_frame("aa550200fd01c2")[:-2] + "00"}, "crc16-modbus"),
    ]
    for body, reason in cases:
        response = decode(api, "th", **body)
        assert response.status_code == 400, (body, response.json())
        assert reason in json.dumps(response.json()), (body, response.json())
    api.post("/api/v1/products/", {"identifier": "plain", "name": "Plain"}, format="json")
    none = decode(api, "plain", hex=TH_REPORT)
    assert none.status_code == 400 and none.json()["code"] == "no_codec"


def test_encode_commands_of_both_examples(api, redis_prefix):
    example_product("th")
    example_product("meter", "meter-udp")
    th = encode(api, "th", service="config", command="setReportInterval",
                params={"interval": 60}, mid=7)
    assert th.status_code == 200, th.json()
    frame = bytes.fromhex(th.json()["hex"])
    assert frame == bytes.fromhex(th_frame("aa5503" + "00000007" + "003c"))
    assert base64.b64decode(th.json()["base64"]) == frame and th.json()["length"] == 11

    meter = encode(api, "meter", service="meter", command="setRelay", params={"on": True},
                   mid=9, device="000012345678", secret=SECRET)
    assert meter.status_code == 200, meter.json()
    frame = bytes.fromhex(meter.json()["hex"])
    body = bytes.fromhex("680014030000123456780000000901")
    assert frame == body + frame_mac(SECRET, body, 8)

    refused = [
        (encode(api, "th", service="config", command="setReportInterval",
                params={"interval": 0}), "below min 1"),
        (encode(api, "th", service="config", command="setReportInterval"), "required"),
        (encode(api, "th", service="env", command="reboot"), "unknown command"),
        (encode(api, "meter", service="meter", command="setRelay", params={"on": True},
                secret=SECRET), "names its device"),
        (encode(api, "meter", service="meter", command="setRelay", params={"on": True},
                device="000012345678"), "secret"),
    ]
    for response, reason in refused:
        assert response.status_code == 400, response.json()
        assert reason in response.json()["detail"], response.json()


def test_codec_validation_names_the_problem(api, redis_prefix):
    """An invalid codec is refused with the path and reason of edge.frames; only tcp and udp
    products have one, and the codec's transport is the product's protocol."""
    codec = example_codec("th-sensor-tcp")
    broken = copy.deepcopy(codec)
    broken["messages"][1]["fields"][0]["type"] = "u9"
    base = {"identifier": "p1", "name": "P", "protocol": "tcp"}
    cases = [
        ({**base, "codec": broken}, "codec", "messages[1].fields[0].type"),
        ({**base, "protocol": "mqtt", "codec": codec}, "codec",
         "only tcp and udp products have a binary codec; this product's protocol is mqtt"),
        ({**base, "protocol": "udp", "codec": codec}, "codec", "the codec is for tcp"),
        ({**base, "codec_samples": [{"name": "x", "hex": "00", "expect": {}}]},
         "codec_samples", "need a codec"),
        ({**base, "codec": codec, "codec_samples": [{"name": "x", "hex": "0g",
                                                     "expect": {}}]},
         "codec_samples", "[0].hex: not hex"),
    ]
    for body, field, reason in cases:
        response = api.post("/api/v1/products/", body, format="json")
        assert response.status_code == 400, response.json()
        assert reason in response.json()["errors"][field][0], response.json()
    example_product("th")
    to_mqtt = api.patch("/api/v1/products/th/", {"protocol": "mqtt"}, format="json")
    assert to_mqtt.status_code == 400
    assert "only tcp and udp" in to_mqtt.json()["errors"]["codec"][0]


def test_samples_run_when_the_codec_or_the_model_changes(api, redis_prefix):
    """A sample that no longer decodes to what it expects refuses the save, naming the
    sample and the reason; so does a model change the decoded values no longer fit."""
    example_product("th")
    samples = Product.objects.get(identifier="th").codec_samples
    wrong = [{**samples[0], "expect": {"temperature": 25.4}}]
    response = api.patch("/api/v1/products/th/", {"codec_samples": wrong}, format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "codec_sample_failed"
    assert response.json()["samples"] == [{"sample": "report 25.3 C 45 %", "reason":
                                           "temperature decodes to 25.3, not 25.4"}]

    codec = example_codec("th-sensor-tcp")
    codec["messages"][1]["fields"][0]["scale"] = 0.01
    response = api.patch("/api/v1/products/th/", {"codec": codec}, format="json")
    assert response.status_code == 400
    assert "temperature decodes to 2.53" in response.json()["detail"]

    services = template("th-sensor-tcp")["services"]
    services[0]["properties"][0]["max"] = 20
    response = api.patch("/api/v1/products/th/", {"services": services}, format="json")
    assert response.status_code == 400, response.json()
    assert response.json()["samples"][0] == {
        "sample": "report 25.3 C 45 %",
        "reason": "the thing model refuses temperature: temperature=25.3 is above max 20"}
    model = api.get("/api/v1/products/th/thing-model/").json()["services"]
    assert model[0]["properties"][0]["max"] == 125  # nothing was saved

    services[0]["properties"][0]["max"] = 125
    services[1]["commands"][0]["responses"] = []
    response = api.patch("/api/v1/products/th/", {"services": services}, format="json")
    assert response.status_code == 400
    assert "unknown property 'interval'" in response.json()["detail"]
    assert Product.objects.get(identifier="th").codec_version == 1


def test_codec_version_and_registry_follow_changes(api, redis_client, redis_prefix):
    example_product("th")
    key = f"{redis_prefix}prod:th"
    assert Product.objects.get(identifier="th").codec_version == 1
    renamed = api.patch("/api/v1/products/th/", {"name": "Renamed"}, format="json")
    assert renamed.json()["codec_version"] == 1
    fewer = api.patch("/api/v1/products/th/", {"codec_samples": []}, format="json")
    assert fewer.status_code == 200 and fewer.json()["codec_version"] == 2
    removed = api.patch("/api/v1/products/th/", {"codec": None}, format="json")
    assert removed.status_code == 200 and removed.json()["codec_version"] == 3
    assert redis_client.hget(key, "codec") == b""
    moved = api.patch("/api/v1/products/th/", {"protocol": "udp"}, format="json")
    assert moved.status_code == 200
    assert redis_client.hget(key, "protocol") == b"udp"
    meter = example_codec("meter-udp")
    added = api.patch("/api/v1/products/th/", {"codec": meter}, format="json")
    assert added.status_code == 200 and added.json()["codec_version"] == 4
    assert json.loads(redis_client.hget(key, "codec")) == meter


def test_export_import_round_trip_keeps_the_codec(api, redis_prefix):
    example_product("meter", "meter-udp")
    exported = api.get("/api/v1/products/meter/thing-model/").json()
    assert exported["codec"] == example_codec("meter-udp")
    copied = api.post("/api/v1/products/import/?identifier=meter-copy", exported,
                      format="json")
    assert copied.status_code == 201, copied.json()
    assert copied.json()["codec"] == exported["codec"]
    assert copied.json()["codec_samples"] == exported["codec_samples"]
    assert copied.json()["protocol"] == "udp"

    thinglinks = api.get("/api/v1/products/meter/thing-model/?dialect=thinglinks").json()
    assert thinglinks["protocolType"] == "UDP" and thinglinks["codec"] == exported["codec"]
    again = api.post("/api/v1/products/import/?identifier=meter-tl", thinglinks,
                     format="json")
    assert again.status_code == 201, again.json()
    assert again.json()["codec"] == exported["codec"]
    assert again.json()["codec_samples"] == exported["codec_samples"]

    broken = {**exported, "codec_samples": [{**exported["codec_samples"][0],
                                             "secret": "other"}]}
    refused = api.post("/api/v1/products/import/?identifier=meter-bad", broken,
                       format="json")
    assert refused.status_code == 400
    assert "the MAC does not match" in refused.json()["detail"]
    assert not Product.objects.filter(identifier="meter-bad").exists()


def test_a_scoped_operator_decodes_only_their_departments_products(redis_prefix):
    from rest_framework.test import APIClient

    org = Org()
    example_product("th-a", department=org.a)
    example_product("th-b", department=org.b)
    org.user("alice", org.a, ("products.view_product",), scope="department")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {login(client, 'alice').json()['access']}")
    assert decode(client, "th-a", hex=TH_REPORT).status_code == 200
    assert decode(client, "th-b", hex=TH_REPORT).status_code == 404
    assert encode(client, "th-b", service="config", command="setReportInterval",
                  params={"interval": 60}).status_code == 404


def test_templates_carry_checked_codecs(api, redis_prefix):
    """A template's codec is checked like a product's; a product overriding the template's
    protocol must still fit the codec it gets."""
    meter = example_codec("meter-udp")
    refused = api.post("/api/v1/product-templates/", {
        "identifier": "tpl-m", "name": "M", "protocol": "http", "codec": meter},
        format="json")
    assert refused.status_code == 400
    assert "only tcp and udp" in refused.json()["errors"]["codec"][0]
    made = api.post("/api/v1/product-templates/", {
        "identifier": "tpl-m", "name": "M", "protocol": "udp", "codec": meter},
        format="json")
    assert made.status_code == 201 and made.json()["codec"] == meter
    mismatch = api.post("/api/v1/products/", {"identifier": "m1", "name": "M",
                                              "template": "meter-udp", "protocol": "tcp"},
                        format="json")
    assert mismatch.status_code == 400
    assert "the codec is for udp" in mismatch.json()["errors"]["codec"][0]
    saved = api.post("/api/v1/products/", {"identifier": "m2", "name": "M",
                                           "template": "tpl-m"}, format="json")
    assert saved.status_code == 201 and saved.json()["codec"] == meter
    again = api.post("/api/v1/products/m2/save-as-template/",
                     {"identifier": "tpl-m2", "name": "M2"}, format="json")
    assert again.status_code == 201 and again.json()["codec"] == meter
