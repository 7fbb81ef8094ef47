"""Bulk import and export of devices (CSV, XLSX) in the API and the admin: all or nothing,
errors per row, secrets downloadable once, 10,000 rows in one import."""

from __future__ import annotations

import csv
import io
import re
import time

import pytest
import tablib
from django.core.files.uploadedfile import SimpleUploadedFile

from edge.crypto import decrypt_secret
from tests.devices.conftest import csv_file
from webapp.devices.models import Device, DeviceGroup, DeviceShadow

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commit_hooks")]


def upload(api, file, **extra):
    return api.post("/api/v1/devices/import/", {"file": file, **extra}, format="multipart")


def download_secrets(api, url: str) -> dict[str, str]:
    response = api.get(url)
    assert response.status_code == 200, response.content[:200]
    assert response["Cache-Control"] == "no-store"
    return {row["identifier"]: row["secret"]
            for row in csv.DictReader(io.StringIO(response.content.decode()))}


def test_import_creates_devices_and_secrets_download_once(api, thermo, redis_client,
                                                         redis_prefix):
    """New devices are created with secrets that the importer can download exactly once."""
    response = upload(api, csv_file([
        {"identifier": "imp-1", "product": "thermo", "name": "one", "tags": '{"floor": "2"}',
         "groups": "north,roof"},
        {"identifier": "imp-2", "product": "thermo", "name": "two", "tags": "", "groups": ""},
    ]))
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["totals"]["new"] == 2 and body["secrets"]["count"] == 2
    secrets = download_secrets(api, body["secrets"]["url"])
    assert set(secrets) == {"imp-1", "imp-2"}
    stored = redis_client.hget(f"{redis_prefix}dev:imp-1", "secret").decode()
    assert decrypt_secret(stored) == secrets["imp-1"]
    assert secrets["imp-1"] not in Device.objects.get(identifier="imp-1").secret_encrypted
    again = api.get(body["secrets"]["url"])
    assert again.status_code == 404 and again.json()["code"] == "gone"

    device = Device.objects.get(identifier="imp-1")
    assert device.tags == {"floor": "2"} and device.status == "unactivated"
    assert sorted(g.name for g in device.groups.all()) == ["north", "roof"]
    assert DeviceShadow.objects.filter(device__identifier__in=["imp-1", "imp-2"]).count() == 2
    assert api.get("/api/v1/devices/?group=roof").json()["count"] == 1
    assert api.get("/api/v1/devices/?tag=floor:2").json()["count"] == 1


def test_another_user_cannot_take_the_secrets(api, thermo, django_user_model):
    """The download link works only for the user who imported."""
    from rest_framework.test import APIClient

    body = upload(api, csv_file([{"identifier": "imp-1", "product": "thermo"}])).json()
    other = django_user_model.objects.create_superuser("other", "", "pw-other-123")
    client = APIClient()
    client.force_authenticate(other)
    assert client.get(body["secrets"]["url"]).status_code == 404
    assert len(download_secrets(api, body["secrets"]["url"])) == 1


def test_errors_are_reported_per_row_and_nothing_is_imported(api, thermo):
    """One file with several bad rows: every error with its row, and no device created."""
    response = upload(api, csv_file([
        {"identifier": "good-1", "product": "thermo", "tags": "", "secret": ""},
        {"identifier": "bad id", "product": "thermo", "tags": "", "secret": ""},
        {"identifier": "bad-2", "product": "nope", "tags": "", "secret": ""},
        {"identifier": "good-1", "product": "thermo", "tags": "", "secret": ""},
        {"identifier": "bad-4", "product": "thermo", "tags": "{oops", "secret": ""},
        {"identifier": "bad-5", "product": "thermo", "tags": "", "secret": "short"},
    ]))
    assert response.status_code == 400, response.json()
    body = response.json()
    assert body["code"] == "import_invalid" and "nothing was imported" in body["detail"]
    by_row = {e["row"]: e for e in body["errors"]}
    assert set(by_row) == {2, 3, 4, 5, 6}
    assert "identifier" in by_row[2]["errors"]
    assert "unknown product 'nope'" in by_row[3]["errors"]["product"][0]
    assert "twice" in by_row[4]["errors"]["identifier"][0]
    assert "JSON" in by_row[5]["errors"]["tags"][0]
    assert "8 characters" in by_row[6]["errors"]["secret"][0]
    assert by_row[3]["identifier"] == "bad-2"
    assert not Device.objects.exists()


def test_ten_thousand_devices_in_one_import(api, thermo, redis_client, redis_prefix):
    """10,000 rows import in one request, every device published and its secret exportable."""
    rows = [{"identifier": f"bulk-{i:05d}", "product": "thermo", "name": f"bulk {i}"}
            for i in range(10_000)]
    started = time.monotonic()
    response = upload(api, csv_file(rows))
    elapsed = time.monotonic() - started
    assert response.status_code == 201, response.json()
    assert response.json()["totals"]["new"] == 10_000
    assert Device.objects.count() == 10_000
    assert DeviceShadow.objects.count() == 10_000
    pipe = redis_client.pipeline()
    for row in rows:
        pipe.exists(f"{redis_prefix}dev:{row['identifier']}")
    assert sum(pipe.execute()) == 10_000
    secrets = download_secrets(api, response.json()["secrets"]["url"])
    assert len(secrets) == 10_000
    sample = rows[4321]["identifier"]
    assert decrypt_secret(redis_client.hget(f"{redis_prefix}dev:{sample}", "secret").decode()) \
        == secrets[sample]
    print(f"10,000-device import: {elapsed:.1f} s")
    assert elapsed < 180  # a per-row query would take far longer; see bench for figures


def test_update_by_import_keeps_secrets_and_product(api, thermo, device, redis_client,
                                                    redis_prefix):
    """Existing devices are updated in place; their secret stays; a product change is refused."""
    before = Device.objects.get(identifier="dev-1").secret_encrypted
    response = upload(api, csv_file([{"identifier": "dev-1", "product": "thermo",
                                      "name": "renamed", "groups": "east"}]))
    assert response.status_code == 201, response.json()
    assert response.json()["totals"]["update"] == 1 and response.json()["secrets"] is None
    device.refresh_from_db()
    assert device.name == "renamed" and device.secret_encrypted == before
    assert [g.name for g in device.groups.all()] == ["east"]

    api.post("/api/v1/products/", {"identifier": "other", "name": "Other"}, format="json")
    moved = upload(api, csv_file([{"identifier": "dev-1", "product": "other"}]))
    assert moved.status_code == 400
    assert "another product" in moved.json()["errors"][0]["errors"]["product"][0]
    given = upload(api, csv_file([{"identifier": "dev-1", "product": "thermo",
                                   "secret": "a-new-secret"}]))
    assert given.status_code == 400
    assert "rotate" in given.json()["errors"][0]["errors"]["secret"][0]


def test_export_round_trips_through_xlsx(api, thermo, device):
    """The XLSX export re-imports unchanged (a dry run reports one update and saves nothing)."""
    DeviceGroup.objects.create(name="lab")
    api.patch("/api/v1/devices/dev-1/", {"tags": {"room": "7"},
                                        "groups": [DeviceGroup.objects.get().pk]},
              format="json")
    exported = api.get("/api/v1/devices/export/?file_format=xlsx")
    assert exported.status_code == 200
    assert exported["Content-Disposition"].endswith('devices.xlsx"')
    data = tablib.Dataset().load(io.BytesIO(exported.content), format="xlsx")
    assert data.headers[:3] == ["identifier", "name", "product"]
    assert data.dict[0]["groups"] == "lab" and data.dict[0]["tags"] == '{"room":"7"}'
    assert "secret" not in data.headers

    checked = upload(api, SimpleUploadedFile("devices.xlsx", exported.content), dry_run=True)
    assert checked.status_code == 200, checked.json()
    assert checked.json()["dry_run"] is True and checked.json()["totals"]["update"] == 1

    text = api.get("/api/v1/devices/export/?file_format=csv&product=thermo").content.decode()
    assert text.splitlines()[1].startswith("dev-1,")


def test_dry_run_saves_nothing(api, thermo):
    """A dry run checks every row and reports, without saving or generating secrets."""
    response = upload(api, csv_file([{"identifier": "d-1", "product": "thermo"}]), dry_run=True)
    assert response.status_code == 200
    assert response.json()["totals"]["new"] == 1 and response.json()["secrets"] is None
    assert not Device.objects.exists()


def test_unreadable_files(api, thermo):
    """A file that is not CSV/XLSX, or lacks the required columns, is refused clearly."""
    broken = upload(api, SimpleUploadedFile("x.xlsx", b"not a workbook"))
    assert broken.status_code == 400 and broken.json()["code"] == "invalid_file"
    no_product = upload(api, csv_file([{"identifier": "d-1", "name": "x"}]))
    assert no_product.status_code == 400
    assert "product" in no_product.json()["errors"][0]["errors"]["__all__"][0]


def test_device_groups_api(api, thermo, device):
    """Groups are created, filled and emptied by device identifier; unknown devices are named."""
    group = api.post("/api/v1/device-groups/", {"name": "north"}, format="json").json()
    added = api.post(f"/api/v1/device-groups/{group['id']}/devices/", {"add": ["dev-1"]},
                     format="json")
    assert added.status_code == 200 and added.json()["device_count"] == 1
    members = api.get(f"/api/v1/device-groups/{group['id']}/devices/").json()
    assert [d["identifier"] for d in members["results"]] == ["dev-1"]
    unknown = api.post(f"/api/v1/device-groups/{group['id']}/devices/", {"add": ["ghost"]},
                       format="json")
    assert unknown.status_code == 404 and unknown.json()["unknown"] == ["ghost"]
    removed = api.post(f"/api/v1/device-groups/{group['id']}/devices/",
                       {"remove": ["dev-1"]}, format="json").json()
    assert removed["device_count"] == 0
    duplicate = api.post("/api/v1/device-groups/", {"name": "north"}, format="json")
    assert duplicate.status_code in (400, 409)


def test_admin_import_confirms_then_offers_the_secrets_once(client, admin_user, thermo):
    """The admin's two-step import creates the devices and links the secrets download once."""
    client.force_login(admin_user)
    page = client.post("/admin/devices/device/import/", {
        "resource": "0", "format": "0",
        "import_file": csv_file([{"identifier": "adm-1", "product": "thermo"}]),
    })
    assert page.status_code == 200
    confirm = page.context["confirm_form"]
    assert confirm is not None, page.content[:2000]
    done = client.post("/admin/devices/device/process_import/", confirm.initial, follow=True)
    assert done.status_code == 200
    assert Device.objects.filter(identifier="adm-1").exists()
    html = done.content.decode()
    url = re.search(r'href="(/admin/devices/device/import-secrets/[^"]+)"', html).group(1)
    secrets = client.get(url)
    assert secrets.status_code == 200 and b"adm-1," in secrets.content
    assert client.get(url).status_code == 404
