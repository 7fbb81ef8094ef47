"""An HTTP device through the running platform (edge, ingest and web processes): a product
whose protocol is http, a device that posts its data with ``requests`` and reads it back as
stored telemetry over the REST API, then long-polls the command the API sends it and
answers it."""

from __future__ import annotations

import threading

import pytest
import requests
from django.db import connection

from tests.support.platform import datas, running_platform
from tests.support.waiting import wait_for, wait_for_port

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def platform(transactional_db, django_user_model, redis_url):
    django_user_model.objects.create_superuser("e2e", "", "pw-e2e-123")
    with running_platform(connection.settings_dict, redis_url, "e2e", "pw-e2e-123") as p:
        wait_for_port(int(p.env["EDGE_HTTP_PORT"]), p.processes["edge"])
        yield p


def test_an_http_device_reports_stored_telemetry_and_gets_a_command(platform, thermo_payload):
    status, body = platform.call(
        "POST", "/api/v1/products/", {**thermo_payload, "protocol": "http"}
    )
    assert status == 201, body
    status, body = platform.call(
        "POST", "/api/v1/devices/", {"product": "thermo", "identifier": "h-1"}
    )
    assert status == 201, body
    base = f"http://127.0.0.1:{platform.env['EDGE_HTTP_PORT']}/v1/devices/h-1"
    device = requests.Session()
    device.auth = ("h-1", body["secret"])

    posted = device.post(f"{base}/datas", json=datas("h-1", {"temperature": 25.5}), timeout=10)
    assert posted.status_code == 200, posted.text

    def stored():
        status, body = platform.call(
            "GET", "/api/v1/devices/h-1/telemetry/?service=env&property=temperature"
        )
        return [r["value"] for r in body["results"]] if status == 200 else None

    assert wait_for(stored, timeout=20) == [25.5]
    wait_for(
        lambda: platform.call("GET", "/api/v1/devices/h-1/")[1]["connect_status"] == "online",
        timeout=20,
    )

    got: list[requests.Response] = []
    poll = threading.Thread(
        target=lambda: got.append(device.get(f"{base}/command?wait=20", timeout=30))
    )
    poll.start()
    command = {
        "service": "env",
        "command": "set_interval",
        "params": {"seconds": 10},
        "timeout": 10,
    }
    status, sent = platform.call("POST", "/api/v1/devices/h-1/commands/", command)
    assert status in (200, 201, 202), sent
    poll.join(30)
    [answer] = got
    assert answer.status_code == 200, answer.text
    received = answer.json()  # the envelope, as on the MQTT command topic
    mid, command_body = received["head"]["mid"], received["dataBody"]
    assert command_body["cmd"] == "set_interval" and command_body["params"] == {"seconds": 10}
    reply = {"head": {"mid": mid}, "dataBody": {"msgType": "deviceRsp", "serviceCode": "env",
             "cmd": "set_interval", "errCode": 0, "params": {"result": "ok"}}}  # fmt: skip
    answered = device.post(f"{base}/commandResponse", json=reply, timeout=10)
    assert answered.status_code == 200, answered.text

    def finished():
        status, body = platform.call("GET", f"/api/v1/commands/{sent['id']}/")
        return body["status"] if status == 200 and body["status"] != "sent" else None

    assert wait_for(finished, timeout=20) == "succeeded"
