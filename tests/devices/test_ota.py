"""OTA: packages with checksums, campaigns over a product, a group or a list, per-device
progress through the ThingLinks OTA topics, signed expiring downloads, pull/report/read."""

from __future__ import annotations

import hashlib
import time

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.devices.conftest import now_ms
from webapp.devices.models import Device
from webapp.ota import actions
from webapp.ota.models import OtaTask

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commit_hooks")]

FIRMWARE = b"\x7fELF firmware image " * 100


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    settings.PUBLIC_BASE_URL = "http://testserver"


@pytest.fixture
def fleet(api, thermo):
    for identifier in ("d-1", "d-2", "d-3"):
        assert api.post("/api/v1/devices/", {"product": "thermo", "identifier": identifier},
                        format="json").status_code == 201
    return ["d-1", "d-2", "d-3"]


@pytest.fixture
def package(api, thermo):
    response = api.post("/api/v1/ota/packages/", {
        "product": "thermo", "name": "Thermo firmware", "package_type": "firmware",
        "version": "2.0.0", "description": "faster sampling",
        "file": SimpleUploadedFile("fw-2.0.0.bin", FIRMWARE)}, format="multipart")
    assert response.status_code == 201, response.json()
    return response.json()


def campaign(api, package, **body):
    response = api.post("/api/v1/ota/campaigns/", {"name": "rollout", "package": package["id"],
                                                   **body}, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


def ota_commands(edge):
    return [e for e in edge.take() if e["topic"].endswith("/topo/otaCommand")]


def report(edge, device, task_id, status, progress=0, **extra):
    edge.uplink({"t": "ota", "dev": device, "prod": "thermo", "op": "otaCommandResponse",
                 "ts": now_ms(), "body": {"deviceIdentification": device, "otaTaskId": task_id,
                                          "upgradeStatus": status, "progress": progress,
                                          **extra}})


def test_package_upload_records_size_and_checksums(api, package):
    """The upload's size, SHA-256 and MD5 are computed; a version exists once per product."""
    assert package["size"] == len(FIRMWARE)
    assert package["checksum"] == hashlib.sha256(FIRMWARE).hexdigest()
    assert package["md5"] == hashlib.md5(FIRMWARE).hexdigest()  # noqa: S324
    again = api.post("/api/v1/ota/packages/", {
        "product": "thermo", "name": "again", "package_type": "firmware", "version": "2.0.0",
        "file": SimpleUploadedFile("x.bin", b"x")}, format="multipart")
    assert again.status_code == 409 and again.json()["code"] == "duplicate"


def test_campaign_upgrades_devices_through_the_ota_topics(api, fleet, package, edge, client):
    """Online devices get the command with a signed link, download the package, report
    progress and success; the summary and the devices' versions follow."""
    edge.connect("d-1")
    edge.connect("d-2")
    edge.take()
    body = campaign(api, package, target_type="devices", devices=["d-1", "d-2", "d-3"])
    assert body["status"] == "running"
    sent = {e["dev"]: e["message"]["dataBody"] for e in ota_commands(edge)}
    assert set(sent) == {"d-1", "d-2"}  # d-3 is offline
    command = sent["d-1"]
    assert command["version"] == "2.0.0" and command["packageType"] == 1
    assert command["checksum"] == package["checksum"]
    assert command["fileSize"] == len(FIRMWARE)

    download = client.get(command["fileLocation"].removeprefix("http://testserver"))
    assert download.status_code == 200
    assert b"".join(download.streaming_content) == FIRMWARE
    assert download["X-Checksum-SHA256"] == package["checksum"]

    report(edge, "d-1", command["otaTaskId"], 1, progress=40)
    report(edge, "d-2", sent["d-2"]["otaTaskId"], 3, errorCode="E42",
           errorMessage="flash write failed")
    summary = api.get(f"/api/v1/ota/campaigns/{body['id']}/").json()["summary"]
    assert summary == {"pending": 1, "in_progress": 1, "succeeded": 0, "failed": 1,
                       "cancelled": 0, "total": 3}
    report(edge, "d-1", command["otaTaskId"], 2, progress=100)
    tasks = {t["device"]: t for t in api.get(
        f"/api/v1/ota/campaigns/{body['id']}/tasks/").json()["results"]}
    assert tasks["d-1"]["status"] == "succeeded" and tasks["d-1"]["progress"] == 100
    assert tasks["d-2"]["status"] == "failed" and tasks["d-2"]["error_code"] == "E42"
    assert "flash write failed" in tasks["d-2"]["error_message"]
    assert Device.objects.get(identifier="d-1").fw_version == "2.0.0"

    edge.connect("d-3")  # the offline device gets its upgrade when it connects
    [late] = ota_commands(edge)
    assert late["dev"] == "d-3"
    report(edge, "d-3", late["message"]["dataBody"]["otaTaskId"], 2, progress=100)
    final = api.get(f"/api/v1/ota/campaigns/{body['id']}/").json()
    assert final["status"] == "finished" and final["finished"]
    assert final["summary"]["succeeded"] == 2 and final["summary"]["failed"] == 1


def test_targets_by_product_and_group(api, fleet, package, edge):
    """A product campaign takes every device of the product, a group campaign its members of
    the product; devices of other products are refused in a list."""
    everyone = campaign(api, package, target_type="product", start=False)
    assert everyone["status"] == "draft" and everyone["summary"]["total"] == 3
    group = api.post("/api/v1/device-groups/", {"name": "pilot"}, format="json").json()
    api.post(f"/api/v1/device-groups/{group['id']}/devices/", {"add": ["d-2"]}, format="json")
    pilot = campaign(api, package, target_type="group", group=group["id"])
    assert pilot["summary"]["total"] == 1

    api.post("/api/v1/products/", {"identifier": "lamp", "name": "Lamp"}, format="json")
    api.post("/api/v1/devices/", {"product": "lamp", "identifier": "lamp-1"}, format="json")
    wrong = api.post("/api/v1/ota/campaigns/", {
        "name": "x", "package": package["id"], "target_type": "devices",
        "devices": ["d-1", "lamp-1", "ghost"]}, format="json")
    assert wrong.status_code == 400 and wrong.json()["code"] == "invalid_target"
    assert wrong.json()["devices"] == ["ghost", "lamp-1"]


def test_pull_report_and_read(api, fleet, package, edge):
    """otaPull answers with the latest package, otaReport and otaRead update the version and
    complete a matching upgrade."""
    edge.connect("d-1")
    edge.take()
    edge.uplink({"t": "ota", "dev": "d-1", "prod": "thermo", "op": "otaPull", "ts": now_ms(),
                 "mid": 8, "body": {"packageType": 1, "currentVersion": "1.0.0"}})
    [pulled] = edge.take()
    assert pulled["topic"] == "/v1/devices/d-1/topo/otaPullResponse"
    answer = pulled["message"]["dataBody"]
    assert answer["statusCode"] == 0 and answer["version"] == "2.0.0"
    assert answer["fileLocation"].startswith("http://testserver/api/v1/ota/download/")

    edge.uplink({"t": "ota", "dev": "d-1", "prod": "thermo", "op": "otaPull", "ts": now_ms(),
                 "body": {"packageType": 1, "currentVersion": "2.0.0"}})
    assert "already" in edge.take()[0]["message"]["dataBody"]["statusDesc"]
    edge.uplink({"t": "ota", "dev": "d-1", "prod": "thermo", "op": "otaPull", "ts": now_ms(),
                 "body": {"packageType": 0}})
    assert edge.take()[0]["message"]["dataBody"]["statusCode"] == 1  # no software package

    running = campaign(api, package, target_type="devices", devices=["d-1"])
    edge.take()
    edge.uplink({"t": "ota", "dev": "d-1", "prod": "thermo", "op": "otaReport", "ts": now_ms(),
                 "body": {"packageType": 1, "currentVersion": "2.0.0"}})
    [reply] = edge.take()
    assert reply["topic"].endswith("/topo/otaReportResponse")
    assert reply["message"]["dataBody"]["statusCode"] == 0
    assert Device.objects.get(identifier="d-1").fw_version == "2.0.0"
    assert api.get(f"/api/v1/ota/campaigns/{running['id']}/").json()["status"] == "finished"

    edge.uplink({"t": "ota", "dev": "d-1", "prod": "thermo", "op": "otaReport", "ts": now_ms(),
                 "body": {"currentVersion": "2.0.0"}})
    assert edge.take()[0]["message"]["dataBody"]["statusCode"] == 1

    response = api.post("/api/v1/ota/read-version/", {"device": "d-1",
                                                      "package_type": "software"},
                        format="json")
    assert response.status_code == 202
    [read] = edge.take()
    assert read["topic"] == "/v1/devices/d-1/topo/otaRead"
    assert read["message"]["dataBody"]["packageType"] == 0
    edge.uplink({"t": "ota", "dev": "d-1", "prod": "thermo", "op": "otaReadResponse",
                 "ts": now_ms(), "body": {"packageType": 0, "currentVersion": "5.1"}})
    assert Device.objects.get(identifier="d-1").sw_version == "5.1"
    offline = api.post("/api/v1/ota/read-version/", {"device": "d-2"}, format="json")
    assert offline.status_code == 409 and offline.json()["code"] == "device_offline"


def test_download_links_are_signed_and_expire(api, fleet, package, client, settings):
    """A forged link is refused; an expired one answers 410."""
    from webapp.ota.models import OtaPackage

    url = actions.download_url(OtaPackage.objects.get(), "d-1")
    path = url.removeprefix("http://testserver")
    assert client.get(path).status_code == 200
    assert client.get(path[:-3] + "xx/").status_code == 404
    settings.OTA_URL_TTL = 1
    time.sleep(2.1)
    expired = client.get(path)
    assert expired.status_code == 410 and expired.json()["code"] == "expired"


def test_sweep_fails_silent_devices_and_cancel(api, fleet, package, edge):
    """A device silent past the campaign's timeout fails; cancelling skips waiting devices."""
    edge.connect("d-1")
    body = campaign(api, package, target_type="devices", devices=["d-1", "d-2"],
                    task_timeout=1)
    OtaTask.objects.filter(device__identifier="d-1").update(
        updated=OtaTask.objects.get(device__identifier="d-1").updated.replace(year=2000))
    result = actions.advance()
    assert result["failed"] == 1
    task = OtaTask.objects.get(device__identifier="d-1")
    assert task.status == "failed" and task.error_code == "timeout"
    cancelled = api.post(f"/api/v1/ota/campaigns/{body['id']}/cancel/").json()
    assert cancelled["status"] == "cancelled"
    assert cancelled["summary"]["cancelled"] == 1
    again = api.post(f"/api/v1/ota/campaigns/{body['id']}/cancel/")
    assert again.status_code == 409


def test_gateway_upgrades_a_sub_device(api, thermo, gateway, package, edge):
    """A sub-device's upgrade travels through its gateway, which answers for it."""
    api.post("/api/v1/devices/", {"product": "thermo", "identifier": "s-1",
                                  "gateway": "gw-1"}, format="json")
    edge.connect("gw-1")
    edge.take()
    campaign(api, package, target_type="devices", devices=["s-1"])
    [entry] = ota_commands(edge)
    assert entry["topic"] == "/v1/devices/s-1/topo/otaCommand"
    task_id = entry["message"]["dataBody"]["otaTaskId"]
    edge.uplink({"t": "ota", "dev": "gw-1", "prod": "gw", "op": "otaCommandResponse",
                 "ts": now_ms(), "body": {"deviceIdentification": "s-1", "otaTaskId": task_id,
                                          "upgradeStatus": 2, "progress": 100}})
    assert OtaTask.objects.get(pk=task_id).status == "succeeded"
    assert Device.objects.get(identifier="s-1").fw_version == "2.0.0"
