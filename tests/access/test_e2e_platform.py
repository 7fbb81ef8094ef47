"""The whole platform (edge, ingest, web as processes, paho over TCP, the API over HTTP): a
device registers itself with its product's secret, then reports as itself; ACL rules and
envelope keys set through the API apply at the edge."""

from __future__ import annotations

import json

import pytest
from django.db import connection

from edge.codecs import thinglinks as tl
from tests.support.platform import Client, Platform, datas, running_platform
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def platform(transactional_db, django_user_model, redis_url, thermo_payload):
    django_user_model.objects.create_superuser("e2e", "", "pw-e2e-123")
    with running_platform(connection.settings_dict, redis_url, "e2e", "pw-e2e-123") as p:
        status, body = p.call("POST", "/api/v1/products/", thermo_payload)
        assert status == 201, body
        yield p


def test_a_device_registers_itself_then_reports(platform):
    """Registration on → the device asks with the product secret → it is created and gets its
    secret → it connects as itself and its data is stored."""
    status, body = platform.call("POST", "/api/v1/product-registrations/", {"product": "thermo"})
    assert status == 201, body
    product_secret = body["secret"]
    newcomer = Client(platform.mqtt_port, "thermo&reg-001", product_secret, "reg-001-setup")
    assert newcomer.connected() == 0
    assert newcomer.subscribe("/v1/devices/reg-001/registerResponse") == [1]
    newcomer.publish("/v1/devices/reg-001/register", {"name": "Hall"})
    topic, answer = newcomer.next_message(timeout=20)
    newcomer.close()
    assert topic == "/v1/devices/reg-001/registerResponse" and answer["statusCode"] == 0
    secret = answer["data"]["secret"]
    status, device = platform.call("GET", "/api/v1/devices/reg-001/")
    assert status == 200 and device["name"] == "Hall" and device["product"] == "thermo"

    itself = Client(platform.mqtt_port, "reg-001", secret)
    assert itself.connected() == 0
    itself.publish("/v1/devices/reg-001/datas", datas("reg-001", {"temperature": 22.5}))
    wait_for(lambda: platform.call(
        "GET", "/api/v1/devices/reg-001/telemetry/?service=env&property=temperature")[1]
        .get("results"), timeout=20)
    itself.close()
    again = Client(platform.mqtt_port, "thermo&reg-001", product_secret, "reg-001-again")
    assert again.connected() == 0x87  # activated: no second registration (3.1.1 code 5)
    again.close()


def test_acl_rules_and_envelope_keys_through_the_api(platform):
    """A product rule created over HTTP lets a connected device subscribe outside its
    namespace; keys generated over HTTP decrypt and verify its AES body."""
    status, created = platform.call("POST", "/api/v1/devices/",
                                    {"product": "thermo", "identifier": "acl-001"})
    assert status == 201, created
    device = Client(platform.mqtt_port, "acl-001", created["secret"])
    assert device.connected() == 0
    assert device.subscribe("broadcast/all") == [0x80]
    status, body = platform.call("POST", "/api/v1/acl-rules/", {
        "product": "thermo", "action": "sub", "topic": "broadcast/#", "decision": "allow"})
    assert status == 201, body
    wait_for(lambda: device.subscribe("broadcast/all") == [1], timeout=20)

    status, body = platform.call("POST", "/api/v1/device-keys/", {"device": "acl-001"})
    assert status == 201, body
    keys = tl.EnvelopeKeys(**body["keys"])
    text = json.dumps(datas("acl-001", {"temperature": 30}))
    cipher = tl.encrypt_body(text, tl.CIPHER_AES, keys)
    device.subscribe("/v1/devices/acl-001/datasResponse")
    envelope = {"head": {"mid": 4, "cipherFlag": 2, "timeStamp": 1700000000000},
                "dataBody": cipher,
                "dataSign": tl.data_sign(cipher, 1700000000000, keys.sign_key or "")}
    wait_for(lambda: _reported(platform, device, envelope), timeout=30)
    device.close()


def _reported(platform: Platform, device: Client, envelope: dict) -> bool:
    """Publish until the keys reached the edge (the registry update is asynchronous) and the
    value is stored."""
    device.publish("/v1/devices/acl-001/datas", envelope)
    status, body = platform.call(
        "GET", "/api/v1/devices/acl-001/telemetry/?service=env&property=temperature")
    return status == 200 and bool(body.get("results"))
