"""The ThingLinks uplink pipeline (edge.thinglinks.uplink) in memory: messages go in by
sender, device, topic suffix and payload, as any transport hands them over, against an
in-memory registry; the answer for the device and the events emitted to the bus come out.
No process, socket or Redis."""

from __future__ import annotations

import json
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from edge.codecs import thinglinks as tl
from edge.thinglinks.uplink import Handled, UplinkPipeline

from .thinglinks_memory import Directory, Sink, device

SIGN_KEY = "sign-key-123"
AES_KEY, AES_IV = "0123456789abcdef", "fedcba9876543210"
NOW = 1_700_000_000.0
NOW_MS = int(NOW * 1000)

DEVICES = (
    device("d1", sign_key=SIGN_KEY, encrypt_key=AES_KEY, encrypt_vector=AES_IV),
    device("gw", node_type="gateway"),
    device("s1", gateway="gw", node_type="sub"),
    device("s2", gateway="gw", node_type="sub", status="locked"),
    device("s3", gateway="gw", node_type="sub", product="off"),
    device("other"),
    device("nomodel", product="broken"),
)


def pipeline(deferred: bool = False) -> tuple[UplinkPipeline, Sink]:
    clock = Clock()
    clock.advance(NOW)
    sink = Sink()
    return UplinkPipeline(Directory(*DEVICES, deferred=deferred), sink, clock), sink


def handle(
    sender: str | None,
    dev: str,
    suffix: str,
    payload: Any,
    deferred: bool = False,
    confirmed: bool = False,
) -> tuple[Handled, Sink]:
    uplink, sink = pipeline(deferred)
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    result: Any = uplink.handle(sender, dev, suffix, raw, confirmed)
    if isinstance(result, Deferred):
        found: list[Any] = []
        result.addBoth(found.append)
        result = found[0]
    assert isinstance(result, Handled), result
    # Whatever was handled is what went to the bus, the message log entry last.
    assert sink.events == result.events
    return result, sink


def datas(dev: str = "d1", **data: Any) -> dict[str, Any]:
    entry = {"deviceId": dev, "services": [{"serviceCode": "env", "data": data, "eventTime": 5}]}
    return {"devices": [entry]}


def answer(handled: Handled) -> dict[str, Any]:
    assert handled.answer is not None
    decoded: dict[str, Any] = json.loads(handled.answer)
    return decoded


@pytest.mark.parametrize("deferred", [False, True], ids=["cached", "loaded"])
def test_accepted_data_lands_without_an_answer(deferred):
    handled, _ = handle("d1", "d1", "datas", datas(temperature=21.5, humidity=40), deferred)
    assert handled.answer is None and not handled.errors and handled.accepted == 1
    data, log = handled.events
    assert data == {
        "t": "data",
        "dev": "d1",
        "prod": "thermo",
        "svc": "env",
        "ts": NOW_MS,
        "et": 5,
        "v": {"temperature": 21.5, "humidity": 40},
        "mid": None,
    }
    assert log["t"] == "log" and log["dir"] == "up" and log["ok"] is True
    assert log["topic"] == "/v1/devices/d1/datas" and log["reason"] is None
    assert json.loads(log["payload"]) == datas(temperature=21.5, humidity=40)


@pytest.mark.parametrize(
    ("payload", "code", "reason"),
    [
        (b"{not json", "malformed_json", "payload is not valid JSON"),
        (datas(pressure=3), "unknown_property", "pressure"),
        (datas(humidity="wet"), "wrong_type", "humidity"),
        (datas(humidity=101), "out_of_range", "100"),
        ({"devices": []}, "invalid_body", 'the body needs a non-empty "devices" list'),
        (datas("ghost", humidity=1), "unknown_device", "device ghost does not exist"),
        (datas("other", humidity=1), "not_allowed", "device other is not d1"),
    ],
)
def test_refused_data_is_answered_with_its_reason(payload, code, reason):
    handled, _ = handle("d1", "d1", "datas", payload)
    assert handled.rejected and handled.accepted == 0
    body = answer(handled)
    assert body["statusCode"] == 1 and reason in body["statusDesc"]
    assert [e["code"] for e in body["errors"]] == [code]
    assert body["statusDesc"] == handled.reason
    (log,) = handled.events
    assert log["ok"] is False and log["reason"] == body["statusDesc"]


def test_answer_keeps_the_exact_response_bytes():
    """The datasResponse is compact JSON in a fixed key order (devices parse it as such)."""
    handled, _ = handle("d1", "d1", "datas", datas(humidity="wet"))
    reason = "humidity must be an integer, got str 'wet'"
    expected = (
        f'{{"statusCode":1,"statusDesc":"{reason}","errors":[{{"deviceId":"d1",'
        f'"serviceCode":"env","property":"humidity","code":"wrong_type","reason":"{reason}"}}],'
        '"mid":null}'
    )
    assert handled.answer == expected.encode()


def test_partly_refused_data_lands_what_is_valid_and_answers_the_rest():
    handled, _ = handle("d1", "d1", "datas", datas(temperature=20, humidity=500))
    assert not handled.rejected and handled.accepted == 1
    assert handled.events[0]["v"] == {"temperature": 20}
    assert [e["property"] for e in answer(handled)["errors"]] == ["humidity"]


def envelope(body: Any, sign_key: str | None = SIGN_KEY, cipher: int = 0) -> dict[str, Any]:
    text = tl.body_text(body)
    if cipher:
        keys = tl.EnvelopeKeys(encrypt_key=AES_KEY, encrypt_vector=AES_IV)
        text = tl.encrypt_body(text, cipher, keys)
    head = {"mid": 42, "timeStamp": 1234, "cipherFlag": cipher}
    signed = {"head": head, "dataBody": text if cipher else body}
    if sign_key is not None:
        signed["dataSign"] = tl.data_sign(tl.body_text(signed["dataBody"]), 1234, sign_key)
    return signed


def test_signed_and_encrypted_envelope_is_unwrapped_with_the_devices_keys():
    handled, _ = handle("d1", "d1", "datas", envelope(datas(humidity=7), cipher=tl.CIPHER_AES))
    assert handled.accepted == 1 and not handled.errors
    assert handled.events[0]["v"] == {"humidity": 7} and handled.events[0]["mid"] == 42


def test_bad_signature_is_refused_with_its_reason():
    handled, _ = handle("d1", "d1", "datas", envelope(datas(humidity=7), sign_key="wrong"))
    assert handled.rejected
    body = answer(handled)
    assert body["mid"] is None  # the envelope was not trusted, nor its mid
    assert body["errors"][0]["code"] == "bad_signature"
    assert body["statusDesc"] == "dataSign does not match md5(dataBody:timeStamp:signKey)"


def test_signature_of_a_device_without_sign_key_is_refused():
    handled, _ = handle("other", "other", "datas", envelope(datas("other", humidity=7)))
    assert handled.errors[0].code == "bad_signature"
    assert handled.errors[0].reason == "dataSign given but the device has no sign key"


def test_gateway_reports_for_its_sub_devices_only_while_they_may_connect():
    payload = {
        "devices": [
            *datas("s1", humidity=1)["devices"],
            *datas("s2", humidity=2)["devices"],
            *datas("s3", humidity=3)["devices"],
            *datas("other", humidity=4)["devices"],
        ]
    }
    handled, _ = handle("gw", "gw", "datas", payload)
    assert [e["dev"] for e in handled.events if e["t"] == "data"] == ["s1"]
    assert [(e.device, e.code) for e in handled.errors] == [
        ("s2", "locked"),
        ("s3", "product_disabled"),
        ("other", "not_allowed"),
    ]
    assert answer(handled)["statusDesc"].startswith("3 problems; first: device s2 is locked")


def test_a_device_without_a_usable_model_is_told_why():
    handled, _ = handle("nomodel", "nomodel", "datas", datas("nomodel", humidity=1))
    assert handled.errors[0].code == "no_model"
    assert handled.errors[0].reason == "the thing model is invalid"


def test_events_are_validated_and_emitted():
    body = {"services": [{"serviceCode": "env", "event": "overheat", "params": {"level": 3}}]}
    handled, _ = handle("d1", "d1", "events", body)
    event, log = handled.events
    assert (
        event["t"] == "event" and event["event"] == "overheat" and event["params"] == {"level": 3}
    )
    assert log["topic"] == "/v1/devices/d1/events" and log["ok"] is True
    # Events are not answered on datasResponse, even when refused.
    refused, _ = handle("d1", "d1", "events", {"services": [{"serviceCode": "env"}]})
    assert refused.rejected and refused.answer is None


def test_command_response_of_a_sub_device_names_it():
    body = {"deviceIdentification": "s1", "mid": 9, "serviceCode": "env", "cmd": "reset"}
    handled, _ = handle("gw", "gw", "commandResponse", body)
    assert handled.events[0]["t"] == "cmdrsp" and handled.events[0]["dev"] == "s1"
    assert handled.events[0]["mid"] == 9
    stranger, _ = handle("gw", "gw", "commandResponse", {**body, "deviceIdentification": "other"})
    assert stranger.rejected and stranger.errors[0].code == "not_allowed"


@pytest.mark.parametrize(
    ("suffix", "kind", "op"),
    [
        ("shadow/update", "shadow", "update"),
        ("topo/add", "topo", "add"),
        ("topo/otaPull", "ota", "otaPull"),
    ],
)
def test_shadow_topology_and_ota_messages_become_their_events(suffix, kind, op):
    handled, _ = handle("gw", "gw", suffix, {"x": 1})
    assert handled.events[0] == {
        "t": kind,
        "dev": "gw",
        "prod": "thermo",
        "op": op,
        "body": {"x": 1},
        "ts": NOW_MS,
    }
    assert handled.events[1]["topic"] == f"/v1/devices/gw/{suffix}"


def test_other_suffixes_are_only_logged():
    handled, _ = handle("d1", "d1", "datasResponse", b"anything")
    assert handled.answer is None and not handled.errors
    (log,) = handled.events
    assert log["t"] == "log" and log["payload"] == "anything" and log["ok"] is True


def test_a_sub_devices_namespace_accepts_the_gateways_report():
    """A gateway may publish in its sub-device's namespace (its ACL lets it): the message is
    the sub-device's, sent by the gateway."""
    handled, _ = handle("gw", "s1", "datas", datas("s1", humidity=5))
    assert handled.accepted == 1 and handled.device == "s1"
    wrong, _ = handle("other", "s1", "datas", datas("gw", humidity=5))
    assert wrong.errors[0].code == "not_allowed"


def test_confirmed_emission_reports_when_the_bus_stored_it():
    handled, sink = handle("d1", "d1", "datas", datas(humidity=5), confirmed=True)
    assert handled.stored is not None and sink.pending == [handled.stored]
    done: list[Any] = []
    handled.stored.addCallback(done.append)
    assert not done
    sink.pending[0].callback(None)
    assert done == [None]


def test_unconfirmed_emission_needs_no_wait():
    handled, sink = handle("d1", "d1", "datas", datas(humidity=5))
    assert handled.stored is None and not sink.pending
