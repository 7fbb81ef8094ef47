"""One device's data end to end (issue 2): real edge, ingest and web processes, a real MQTT
client (paho), the REST API over HTTP."""

from __future__ import annotations

import json
import time

import pytest
from django.db import connection

from tests.support.platform import Client, datas, running_platform
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def platform(transactional_db, django_user_model, redis_url):
    django_user_model.objects.create_superuser("e2e", "", "pw-e2e-123")
    with running_platform(connection.settings_dict, redis_url, "e2e", "pw-e2e-123") as p:
        yield p


@pytest.fixture
def thermo_device(platform, thermo_payload):
    status, body = platform.call("POST", "/api/v1/products/", thermo_payload)
    assert status == 201, body
    status, body = platform.call("POST", "/api/v1/devices/",
                                 {"product": "thermo", "identifier": "dev-001", "name": "one"})
    assert status == 201, body
    return body["identifier"], body["secret"]


def test_a_device_reports_and_the_api_reads_it_back(platform, thermo_device):
    """Connect, publish bare and enveloped datas, read telemetry, shadow and status over HTTP."""
    identifier, secret = thermo_device
    device = Client(platform.mqtt_port, identifier, secret)
    assert device.connected() == 0
    wait_for(lambda: platform.call("GET", f"/api/v1/devices/{identifier}/")[1][
        "connect_status"] == "online", timeout=20)

    device.publish(f"/v1/devices/{identifier}/datas", datas(identifier, {"temperature": 25.6}))
    event_time = int(time.time() * 1000) - 5000
    device.publish(f"/v1/devices/{identifier}/datas", {
        "head": {"mid": 7, "cipherFlag": 0, "timeStamp": event_time},
        "dataBody": {"devices": [{"deviceId": identifier, "services": [
            {"serviceCode": "env", "data": {"temperature": 21.0, "humidity": 40},
             "eventTime": event_time}]}]},
        "dataSign": ""}, qos=0)

    def values():
        status, body = platform.call(
            "GET", f"/api/v1/devices/{identifier}/telemetry/?service=env&property=temperature")
        assert status == 200, body
        return sorted(r["value"] for r in body["results"]) if len(body["results"]) == 2 else None

    assert wait_for(values, timeout=20) == [21.0, 25.6]
    _status, shadow = platform.call("GET", f"/api/v1/devices/{identifier}/shadow/")
    assert shadow["reported"]["env"]["temperature"]["value"] == 25.6
    assert shadow["reported"]["env"]["humidity"]["value"] == 40

    detail = platform.call("GET", f"/api/v1/devices/{identifier}/")[1]
    assert detail["status"] == "activated" and detail["last_seen"]

    device.close()
    wait_for(lambda: platform.call("GET", f"/api/v1/devices/{identifier}/")[1][
        "connect_status"] == "offline", timeout=20)


def test_bad_input_is_answered_and_logged(platform, thermo_device, thermo_payload):
    """Wrong secret, foreign topics, malformed JSON, unknown and out-of-range values."""
    identifier, secret = thermo_device
    intruder = Client(platform.mqtt_port, identifier, "not-the-secret")
    # paho reports the 3.1.1 return codes 4/5 as the MQTT 5 reason codes 0x86/0x87
    assert intruder.connected() in (0x86, 0x87)
    intruder.close()

    status, _other = platform.call("POST", "/api/v1/devices/",
                                  {"product": "thermo", "identifier": "dev-002"})
    assert status == 201

    device = Client(platform.mqtt_port, identifier, secret)
    assert device.connected() == 0
    assert device.subscribe("/v1/devices/dev-002/#") == [0x80]
    assert device.subscribe(f"/v1/devices/{identifier}/datasResponse") == [1]

    topic = f"/v1/devices/{identifier}/datas"
    device.publish(topic, b"{not json")
    reply_topic, reply = device.next_message()
    assert reply_topic == f"/v1/devices/{identifier}/datasResponse"
    assert reply["statusCode"] != 0 and "JSON" in json.dumps(reply)

    device.publish(topic, datas(identifier, {"temperature": 500, "humidity": 50, "color": 3}))
    _, reply = device.next_message()
    reasons = json.dumps(reply["errors"])
    assert "above max 125" in reasons and "color" in reasons

    def stored():
        body = platform.call("GET", f"/api/v1/devices/{identifier}/telemetry/"
                                    "?service=env&property=humidity")[1]
        return [r["value"] for r in body["results"]]

    assert wait_for(stored, timeout=20) == [50]  # the good value of the same message landed

    def rejected():
        body = platform.call("GET", f"/api/v1/devices/{identifier}/messages/?result=rejected")[1]
        return body["results"] if len(body["results"]) >= 2 else None

    log = wait_for(rejected, timeout=20)
    assert any("above max" in m["reason"] for m in log)
    assert any("{not json" in m["payload"] for m in log)
    device.close()


def test_api_docs_are_served_locally(platform):
    """The OpenAPI schema and the Swagger UI (no CDN) are served by the web process."""
    status, schema = platform.call("GET", "/api/schema/?format=json")
    assert status == 200 and "/api/v1/devices/{identifier}/telemetry/" in schema["paths"]
    import urllib.request

    request = urllib.request.Request(f"http://127.0.0.1:{platform.web_port}/api/docs/",
                                     headers={"Authorization": f"Bearer {platform.token}"})
    with urllib.request.urlopen(request) as page:  # noqa: S310
        html = page.read().decode()
    assert "swagger-ui" in html
    assert "unpkg" not in html and "cdn" not in html.lower()
