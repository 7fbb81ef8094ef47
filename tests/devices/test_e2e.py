"""End to end: ``python -m edge`` as a subprocess, real paho MQTT devices, the ingest worker
run by the test, and the REST API — commands (online and offline), shadow and gateways."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from tests.devices.test_shadow import LAMP
from tests.edge.edge_process import Client

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def pump(worker):
    """Run the ingest worker until ``check()`` is truthy; returns its value."""

    def run(check: Callable[[], Any], timeout: float = 10.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            worker.process(worker.read())
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"not reached in {timeout} s; last {value!r}")

    return run


@pytest.fixture
def devices(live):
    made: list[Client] = []

    def connect(identifier: str, secret: str, *subscriptions: str) -> Client:
        client = Client(live, f"{identifier}-{uuid.uuid4().hex[:4]}")
        made.append(client)
        assert client.connect(identifier, secret) == 0
        for topic in subscriptions:
            assert client.subscribe(topic) == [1]
        return client

    yield connect
    for client in made:
        client.close()


@pytest.fixture
def answer(pump):
    """Run ingest until the client receives a message on a topic ending with ``suffix``."""

    def wait(client: Client, suffix: str) -> tuple[str, dict[str, Any]]:
        found: list[tuple[str, dict[str, Any]]] = []

        def arrived() -> bool:
            while not client.messages.empty():
                message = client.messages.get_nowait()
                if message.topic.endswith(suffix):
                    found.append((message.topic, json.loads(message.payload)))
            return bool(found)

        pump(arrived)
        return found[0]

    return wait


def envelope(body: dict[str, Any], mid: int) -> dict[str, Any]:
    return {"head": {"mid": mid, "cipherFlag": 0, "timeStamp": int(time.time() * 1000)},
            "dataBody": body, "dataSign": ""}


def receive(client: Client, suffix: str) -> tuple[str, dict[str, Any]]:
    """The next message on a topic ending with ``suffix`` (the device's own publishes, which
    its wildcard subscription echoes, are skipped)."""
    while True:
        message = client.next_message()
        if message.topic.endswith(suffix):
            return message.topic, json.loads(message.payload)


def create(api, product: dict[str, Any] | None, identifier: str, product_id: str) -> str:
    if product is not None:
        assert api.post("/api/v1/products/", product, format="json").status_code == 201
    response = api.post("/api/v1/devices/", {"product": product_id, "identifier": identifier},
                        format="json")
    assert response.status_code == 201, response.json()
    return response.json()["secret"]


def status_of(api, identifier: str) -> str:
    return api.get(f"/api/v1/devices/{identifier}/").json()["connect_status"]


def test_commands_online_and_offline(api, thermo_payload, live, pump, devices):
    """A command waits for the offline device, reaches it on connect, and the device's reply
    with the same mid completes it; an invalid command is refused."""
    secret = create(api, thermo_payload, "dev-1", "thermo")
    body = {"service": "env", "command": "set_interval", "params": {"seconds": 10}}
    waiting = api.post("/api/v1/devices/dev-1/commands/", body, format="json").json()
    assert waiting["status"] == "pending"

    device = devices("dev-1", secret, "/v1/devices/dev-1/command")
    pump(lambda: api.get(f"/api/v1/commands/{waiting['id']}/").json()["status"] == "sent")
    topic, message = receive(device, "/command")
    assert topic == "/v1/devices/dev-1/command"
    assert message["head"]["mid"] == waiting["id"]
    assert message["dataBody"]["cmd"] == "set_interval"
    assert message["dataBody"]["params"] == {"seconds": 10}
    device.publish("/v1/devices/dev-1/commandResponse", envelope(
        {"msgType": "deviceRsp", "serviceCode": "env", "cmd": "set_interval", "errCode": 0,
         "params": {"result": "10 s"}}, waiting["id"]))
    done = pump(lambda: (c := api.get(f"/api/v1/commands/{waiting['id']}/").json())[
        "status"] == "succeeded" and c)
    assert done["response"] == {"result": "10 s"}

    online = api.post("/api/v1/devices/dev-1/commands/",
                      {**body, "params": {"seconds": 60}}, format="json").json()
    assert online["status"] == "sent"
    _topic, message = receive(device, "/command")
    assert message["head"]["mid"] == online["id"]
    device.publish("/v1/devices/dev-1/commandResponse", envelope(
        {"msgType": "deviceRsp", "serviceCode": "env", "cmd": "set_interval", "errCode": 1,
         "params": {"result": "refused"}}, online["id"]))
    pump(lambda: api.get(f"/api/v1/commands/{online['id']}/").json()["status"] == "failed")

    bad = api.post("/api/v1/devices/dev-1/commands/",
                   {**body, "params": {"seconds": 99999}}, format="json")
    assert bad.status_code == 400 and bad.json()["errors"][0]["code"] == "out_of_range"


def test_shadow_round_trip(api, live, pump, devices, answer):
    """Desired → delta to the device → /shadow/update → empty delta; /shadow/get; stale
    versions are refused."""
    secret = create(api, LAMP, "lamp-1", "lamp")
    device = devices("lamp-1", secret, "/v1/devices/lamp-1/shadow/#")
    pump(lambda: status_of(api, "lamp-1") == "online")

    written = api.put("/api/v1/devices/lamp-1/shadow/",
                      {"desired": {"light": {"power": True, "brightness": 80}}, "version": 0},
                      format="json")
    assert written.status_code == 200, written.json()
    _topic, delta = receive(device, "/shadow/delta")
    assert delta["dataBody"]["delta"] == {"light": {"power": True, "brightness": 80}}
    stale = api.put("/api/v1/devices/lamp-1/shadow/",
                    {"desired": {"light": {"power": False}}, "version": 0}, format="json")
    assert stale.status_code == 409 and stale.json()["code"] == "version_conflict"

    device.publish("/v1/devices/lamp-1/shadow/update", envelope(
        {"reported": {"light": {"power": True, "brightness": 80}}}, 3))
    _topic, updated = answer(device, "/shadow/updateResponse")
    assert updated["dataBody"]["statusCode"] == 0 and updated["dataBody"]["delta"] == {}
    assert api.get("/api/v1/devices/lamp-1/shadow/").json()["delta"] == {}

    device.publish("/v1/devices/lamp-1/shadow/get", {})
    _topic, doc = answer(device, "/shadow/getResponse")
    assert doc["dataBody"]["reported"] == {"light": {"power": True, "brightness": 80}}
    assert doc["dataBody"]["version"] == 2


def test_gateway_with_sub_devices(api, thermo_payload, live, pump, devices, answer):
    """topo/add over MQTT, the gateway reports its child's data, unknown children are refused,
    commands reach the child through the gateway, and the child follows the gateway offline."""
    from tests.devices.conftest import GATEWAY

    api.post("/api/v1/products/", thermo_payload, format="json")
    secret = create(api, GATEWAY, "gw-1", "gw")
    gateway = devices("gw-1", secret, "/v1/devices/gw-1/#")
    pump(lambda: status_of(api, "gw-1") == "online")

    gateway.publish("/v1/devices/gw-1/topo/add", envelope(
        {"deviceInfos": [{"nodeId": "s-1", "name": "child",
                          "productIdentification": "thermo"}]}, 1))
    _topic, added = answer(gateway, "/topo/addResponse")
    assert added["dataBody"]["statusCode"] == 0
    assert added["dataBody"]["data"][0]["deviceInfo"]["deviceId"] == "s-1"

    gateway.publish("/v1/devices/gw-1/topo/update", {"deviceStatuses": [
        {"deviceId": "s-1", "status": "ONLINE"}]})
    assert answer(gateway, "/topo/updateResponse")[1]["dataBody"]["statusCode"] == 0
    assert status_of(api, "s-1") == "online"

    gateway.publish("/v1/devices/gw-1/datas", {"devices": [
        {"deviceId": "s-1", "services": [{"serviceCode": "env", "data": {"temperature": 22.5}}]},
        {"deviceId": "ghost", "services": [{"serviceCode": "env", "data": {"temperature": 1}}]},
    ]})
    _topic, refused = receive(gateway, "/datasResponse")
    assert refused["errors"][0]["deviceId"] == "ghost"
    assert refused["errors"][0]["code"] == "unknown_device"

    def child_values():
        body = api.get("/api/v1/devices/s-1/telemetry/?service=env&property=temperature").json()
        return [r["value"] for r in body["results"]]

    assert pump(child_values) == [22.5]

    command = api.post("/api/v1/devices/s-1/commands/", {
        "service": "env", "command": "set_interval", "params": {"seconds": 5}},
        format="json").json()
    topic, message = receive(gateway, "/command")
    assert topic == "/v1/devices/gw-1/command"
    assert message["dataBody"]["deviceIdentification"] == "s-1"
    gateway.publish("/v1/devices/gw-1/commandResponse", envelope(
        {"deviceIdentification": "s-1", "msgType": "deviceRsp", "serviceCode": "env",
         "cmd": "set_interval", "errCode": 0, "params": {"result": "ok"}},
        command["id"]))
    pump(lambda: api.get(f"/api/v1/commands/{command['id']}/").json()["status"] == "succeeded")

    gateway.close()
    pump(lambda: status_of(api, "gw-1") == "offline")
    assert status_of(api, "s-1") == "offline"


def test_ota_upgrade_over_mqtt_and_http(api, thermo_payload, live, pump, devices, answer,
                                        live_server, settings, tmp_path):
    """A campaign reaches the device on /topo/otaCommand, the device downloads the package
    over HTTP from the signed link, reports progress and success; pull and report work."""
    import hashlib
    import urllib.request

    from django.core.files.uploadedfile import SimpleUploadedFile

    settings.MEDIA_ROOT = tmp_path
    settings.PUBLIC_BASE_URL = live_server.url
    firmware = b"firmware-3.1.0 " * 1000
    secret = create(api, thermo_payload, "dev-1", "thermo")
    package = api.post("/api/v1/ota/packages/", {
        "product": "thermo", "name": "fw", "package_type": "firmware", "version": "3.1.0",
        "file": SimpleUploadedFile("fw.bin", firmware)}, format="multipart").json()
    device = devices("dev-1", secret, "/v1/devices/dev-1/topo/#")
    pump(lambda: status_of(api, "dev-1") == "online")

    campaign = api.post("/api/v1/ota/campaigns/", {
        "name": "e2e", "package": package["id"], "target_type": "product"},
        format="json").json()
    _topic, command = receive(device, "/topo/otaCommand")
    body = command["dataBody"]
    with urllib.request.urlopen(body["fileLocation"], timeout=10) as response:  # noqa: S310
        downloaded = response.read()
    assert downloaded == firmware
    assert hashlib.sha256(downloaded).hexdigest() == body["checksum"]

    for status, progress in ((1, 50), (2, 100)):
        device.publish("/v1/devices/dev-1/topo/otaCommandResponse", envelope(
            {"deviceIdentification": "dev-1", "otaTaskId": body["otaTaskId"],
             "upgradeStatus": status, "progress": progress}, 20 + status))
    done = pump(lambda: (c := api.get(f"/api/v1/ota/campaigns/{campaign['id']}/").json())[
        "status"] == "finished" and c)
    assert done["summary"]["succeeded"] == 1
    assert api.get("/api/v1/devices/dev-1/").json()["fw_version"] == "3.1.0"

    device.publish("/v1/devices/dev-1/topo/otaPull", {"packageType": 1,
                                                     "currentVersion": "3.1.0"})
    _topic, pulled = answer(device, "/topo/otaPullResponse")
    assert pulled["dataBody"]["statusCode"] == 1 and "already" in pulled["dataBody"][
        "statusDesc"]
