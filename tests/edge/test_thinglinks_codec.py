"""The ThingLinks payload codec: topics, envelopes, validation and the events it builds."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from edge.codecs import thinglinks as tl

from .thinglinks_memory import MODEL

CONTEXTS = {
    "d1": tl.DeviceContext("d1", "thermo", MODEL),
    "s1": tl.DeviceContext("s1", "thermo", MODEL),
}


def body(device: str = "d1", data: dict | None = None, service: str = "env") -> dict:
    return {
        "devices": [
            {
                "deviceId": device,
                "services": [{"serviceCode": service, "data": data or {}, "eventTime": 5}],
            }
        ]
    }


def run(topic: str, payload: bytes, contexts=CONTEXTS) -> tl.Outcome:
    parsed = tl.parse(topic, payload)
    assert parsed is not None
    return tl.evaluate(parsed, contexts, ts=1000)


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("/v1/devices/d1/datas", ("d1", "datas")),
        ("/v1/devices/d1/topo/add", ("d1", "topo/add")),
        ("/v1/devices/d1", None),
        ("/v1/devices//datas", None),
        ("/v2/devices/d1/datas", None),
        ("other", None),
    ],
)
def test_split_topic(topic, expected):
    """Only /v1/devices/{id}/{suffix} is a device topic."""
    assert tl.split_topic(topic) == expected


def test_bare_and_enveloped_bodies_are_equivalent():
    """dataBody may be an object or a JSON string inside the envelope; mid is kept."""
    bare = json.dumps(body(data={"temperature": 20})).encode()
    as_object = json.dumps(
        {
            "head": {"mid": 3, "cipherFlag": 0},
            "dataBody": body(data={"temperature": 20}),
            "dataSign": "",
        }
    ).encode()
    as_string = json.dumps(
        {"head": {"mid": 4}, "dataBody": json.dumps(body(data={"temperature": 20}))}
    ).encode()
    for payload, mid in [(bare, None), (as_object, 3), (as_string, 4)]:
        outcome = run("/v1/devices/d1/datas", payload)
        assert outcome.errors == [] and outcome.response is None
        assert outcome.events == [
            {
                "t": "data",
                "dev": "d1",
                "prod": "thermo",
                "svc": "env",
                "ts": 1000,
                "et": 5,
                "v": {"temperature": 20.0},
                "mid": mid,
            }
        ]


def test_partial_acceptance_and_response():
    """Valid properties are kept, invalid ones reported with a code and reason."""
    payload = json.dumps(
        {"head": {"mid": 9}, "dataBody": body(data={"temperature": 500, "humidity": 50})}
    ).encode()
    outcome = run("/v1/devices/d1/datas", payload)
    assert outcome.events[0]["v"] == {"humidity": 50}
    assert not outcome.rejected_entirely
    response = json.loads(outcome.response)
    assert response["statusCode"] == 1 and response["mid"] == 9
    (error,) = response["errors"]
    assert (
        error["deviceId"] == "d1"
        and error["serviceCode"] == "env"
        and error["property"] == "temperature"
    )
    assert error["code"] == "out_of_range" and "125" in error["reason"]


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"{nope", "malformed_json"),
        (b"\xff\xfe", "malformed_json"),
        (json.dumps({"head": {"mid": 1}, "dataBody": "{bad"}).encode(), "malformed_json"),
        (
            json.dumps({"head": {"mid": 1, "cipherFlag": 3}, "dataBody": "xx"}).encode(),
            "unsupported_cipher",
        ),
        (
            json.dumps({"head": {"mid": 1, "cipherFlag": 2}, "dataBody": "xx"}).encode(),
            "undecryptable",
        ),
        (json.dumps({"devices": "x"}).encode(), "invalid_body"),
        (json.dumps(body(service="nope", data={"a": 1})).encode(), "unknown_service"),
        (json.dumps(body(data={"pressure": 1})).encode(), "unknown_property"),
        (json.dumps(body(data={"humidity": "wet"})).encode(), "wrong_type"),
        (json.dumps(body(device="stranger", data={"humidity": 1})).encode(), "unknown_device"),
    ],
)
def test_rejections(payload, code):
    """Each kind of bad input is rejected entirely with its code."""
    outcome = run("/v1/devices/d1/datas", payload)
    assert outcome.rejected_entirely
    assert outcome.errors[0].code == code
    assert json.loads(outcome.response)["errors"][0]["code"] == code


def test_sub_device_refused_by_context():
    """A devices entry the caller refused (not a sub-device) is reported, others still land."""
    contexts = {**CONTEXTS, "s1": tl.DataError("not_allowed", "s1 is not a sub-device of d1", "s1")}
    payload = {
        "devices": [
            body("d1", {"humidity": 1})["devices"][0],
            body("s1", {"humidity": 2})["devices"][0],
        ]
    }
    outcome = run("/v1/devices/d1/datas", json.dumps(payload).encode(), contexts)
    assert [e["dev"] for e in outcome.events] == ["d1"]
    assert [e.code for e in outcome.errors] == ["not_allowed"]


def test_other_topics_become_events():
    """commandResponse, events, topo, OTA and shadow messages produce their uplink events."""
    rsp = {
        "head": {"mid": 12},
        "dataBody": {
            "msgType": "deviceRsp",
            "serviceCode": "env",
            "cmd": "c",
            "errCode": 1,
            "params": {"x": 1},
        },
    }
    (event,) = run("/v1/devices/d1/commandResponse", json.dumps(rsp).encode()).events
    assert event == {
        "t": "cmdrsp",
        "dev": "d1",
        "mid": 12,
        "svc": "env",
        "cmd": "c",
        "err": 1,
        "params": {"x": 1},
        "ts": 1000,
    }
    events = {
        "services": [
            {"serviceCode": "env", "event": "overheat", "params": {"level": 3}, "eventTime": 7}
        ]
    }
    (event,) = run("/v1/devices/d1/events", json.dumps(events).encode()).events
    assert (event["t"], event["event"], event["params"], event["et"]) == (
        "event",
        "overheat",
        {"level": 3},
        7,
    )
    (event,) = run("/v1/devices/d1/topo/add", b'{"deviceInfos":[]}').events
    assert (event["t"], event["op"], event["body"]) == ("topo", "add", {"deviceInfos": []})
    (event,) = run("/v1/devices/d1/topo/otaPull", b"{}").events
    assert (event["t"], event["op"]) == ("ota", "otaPull")
    (event,) = run("/v1/devices/d1/shadow/update", b'{"reported":{}}').events
    assert (event["t"], event["op"]) == ("shadow", "update")
    other = run("/v1/devices/d1/custom/thing", b"\x00binary")
    assert other.events == [] and other.errors == []


def test_unknown_event_is_reported():
    """An event the model does not define is an error, not an event."""
    events = {"services": [{"serviceCode": "env", "event": "explode", "params": {}}]}
    outcome = run("/v1/devices/d1/events", json.dumps(events).encode())
    assert outcome.events == [] and outcome.errors[0].code == "unknown_event"


def test_log_event_encodes_binary_as_base64():
    """Non-UTF-8 payloads are logged in base64 with enc=b64."""
    text = tl.log_event("d1", "up", "t", b"hello", True, None, 1)
    assert text["payload"] == "hello" and "enc" not in text
    binary = tl.log_event("d1", "down", "t", b"\xff\x00", False, "why", 1)
    assert (binary["payload"], binary["enc"], binary["reason"]) == ("/wA=", "b64", "why")


KEYS = tl.EnvelopeKeys(
    sign_key="sign-key", encrypt_key="0123456789abcdef", encrypt_vector="fedcba9876543210"
)


def envelope(data_body, ts: int = 1700000000000, cipher: int = 0, sign: str = "") -> bytes:
    return json.dumps(
        {
            "head": {"mid": 7, "cipherFlag": cipher, "timeStamp": ts},
            "dataBody": data_body,
            "dataSign": sign,
        }
    ).encode()


def test_data_sign_is_checked_when_present():
    """dataSign = md5(dataBody:timeStamp:signKey), dataBody as compact JSON or as the string
    it was sent as; a wrong or unverifiable signature refuses the message."""
    data = body(data={"temperature": 20})
    text = json.dumps(data, separators=(",", ":"))
    good = tl.data_sign(text, 1700000000000, "sign-key")
    assert good == hashlib.md5(f"{text}:1700000000000:sign-key".encode()).hexdigest()  # noqa: S324 - the legacy scheme
    for payload in (envelope(data, sign=good), envelope(text, sign=good), envelope(data)):
        parsed = tl.parse("/v1/devices/d1/datas", payload, KEYS)
        assert parsed is not None and not parsed.errors and parsed.mid == 7
    for payload, keys in (
        (envelope(data, sign="0" * 32), KEYS),
        (envelope(data, ts=1, sign=good), KEYS),
        (envelope(data, sign=good), tl.EnvelopeKeys()),
    ):
        outcome = tl.evaluate(tl.parse("/v1/devices/d1/datas", payload, keys), CONTEXTS, ts=1)
        assert [e.code for e in outcome.errors] == ["bad_signature"]
        assert outcome.response is not None and b"dataSign" in outcome.response
        assert not [e for e in outcome.events if e["t"] == "data"]


@pytest.mark.parametrize("cipher", [tl.CIPHER_SM4, tl.CIPHER_AES])
def test_encrypted_bodies_are_decrypted(cipher):
    """cipherFlag 1 (SM4) and 2 (AES): CBC, PKCS#7, base64, with the device's key and IV;
    the signature covers the ciphertext."""
    text = json.dumps(body(data={"temperature": 21.5}))
    secret = tl.encrypt_body(text, cipher, KEYS)
    sign = tl.data_sign(secret, 1700000000000, "sign-key")
    outcome = run_with(envelope(secret, cipher=cipher, sign=sign), KEYS)
    assert [e["v"] for e in outcome.events if e["t"] == "data"] == [{"temperature": 21.5}]
    other = tl.EnvelopeKeys(encrypt_key="x" * 16, encrypt_vector="y" * 16)
    for payload, keys in (
        (envelope(secret, cipher=cipher), other),
        (envelope(secret, cipher=cipher), tl.EnvelopeKeys()),
        (envelope("not base64!", cipher=cipher), KEYS),
        (envelope({"devices": []}, cipher=cipher), KEYS),
    ):
        outcome = run_with(payload, keys)
        assert [e.code for e in outcome.errors] == ["undecryptable"], payload


def run_with(payload: bytes, keys: tl.EnvelopeKeys) -> tl.Outcome:
    parsed = tl.parse("/v1/devices/d1/datas", payload, keys)
    assert parsed is not None
    return tl.evaluate(parsed, CONTEXTS, ts=1)


def test_gateway_command_response_for_a_sub_device():
    """A gateway's commandResponse naming a sub-device is that sub-device's response; one
    naming a device that is not its sub-device is refused."""
    payload = json.dumps(
        {"deviceIdentification": "s1", "serviceCode": "env", "cmd": "c", "errCode": 0}
    ).encode()
    parsed = tl.parse("/v1/devices/d1/commandResponse", envelope(json.loads(payload)))
    assert parsed is not None and parsed.devices == {"d1", "s1"}
    outcome = tl.evaluate(parsed, CONTEXTS, ts=1)
    assert [(e["t"], e["dev"], e["mid"]) for e in outcome.events] == [("cmdrsp", "s1", 7)]
    refused = dict(CONTEXTS, s1=tl.DataError("not_allowed", "not a sub-device", "s1"))
    outcome = tl.evaluate(parsed, refused, ts=1)
    assert outcome.events == [] and outcome.errors[0].code == "not_allowed"
    own = tl.parse("/v1/devices/d1/commandResponse", payload.replace(b'"s1"', b'"d1"'))
    assert own is not None and own.subject is None


def test_a_logged_payload_with_a_nul_byte_is_kept_as_base64():
    """Valid UTF-8 with U+0000 cannot go into a SQL text column: it is logged like binary."""
    from edge.codecs.thinglinks import log_event

    event = log_event("d1", "up", "/v1/devices/d1/datas", b"a\x00b", False, "x", 1)
    assert event["enc"] == "b64" and base64.b64decode(event["payload"]) == b"a\x00b"
    assert log_event("d1", "up", "t", "é".encode(), True, None, 1)["payload"] == "é"
