"""M6: uploads have budgets, and each refusal says which one. A device import file over
`IMPORT_MAX_BYTES`, a workbook over `IMPORT_MAX_CELLS` (or one that places a cell a million
rows down, or a zip bomb, or an XML entity bomb), an OTA package over `OTA_MAX_BYTES` and a
product JSON over its limits are refused before they are read whole."""

from __future__ import annotations

import io
import json
import re
import time
import zipfile

import openpyxl
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.devices.conftest import csv_file
from tests.system.conftest import make_product
from webapp.devices.models import Device
from webapp.ota.models import OtaPackage

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commit_hooks")]

ROWS = [{"identifier": f"dev-{i:04d}", "product": "thermo", "name": "a device"}
        for i in range(100)]


@pytest.fixture
def thermo(redis_prefix):
    return make_product("thermo")


def workbook(rows: list[list[object]]) -> bytes:
    book = openpyxl.Workbook()
    sheet = book.active
    for row in rows:
        sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def rewritten(content: bytes, **parts: bytes) -> bytes:
    """The workbook ``content`` with some of its zip members replaced or added."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(content)) as source, \
            zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            if info.filename not in parts:
                target.writestr(info, source.read(info.filename))
        for name, data in parts.items():
            target.writestr(name, data)
    return out.getvalue()


def import_devices(api, content: bytes, name: str):
    return api.post("/api/v1/devices/import/", {"file": SimpleUploadedFile(name, content)},
                    format="multipart")


def test_oversized_csv_is_refused_with_the_limit(api, thermo, settings):
    """A CSV over IMPORT_MAX_BYTES: 413 naming the limit, nothing imported; a request whose
    Content-Length alone says it is too large is refused before it is parsed."""
    settings.IMPORT_MAX_BYTES = 2000
    big = csv_file(ROWS)
    assert big.size > 2000
    refused = api.post("/api/v1/devices/import/", {"file": big}, format="multipart")
    assert refused.status_code == 413, refused.json()
    assert refused.json()["code"] == "file_too_large"
    assert "at most 2000" in refused.json()["detail"]
    assert "IMPORT_MAX_BYTES" in refused.json()["detail"]

    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    early = api.post("/api/v1/devices/import/", {"file": csv_file(ROWS * 3)},
                     format="multipart")
    assert early.status_code == 413
    assert early.json()["detail"].startswith("the request has ")
    assert not Device.objects.exists()


def test_xlsx_over_the_cell_budget_is_refused(api, thermo, settings):
    """A workbook with more cells than IMPORT_MAX_CELLS: 413 too_many_cells."""
    settings.IMPORT_MAX_CELLS = 150
    rows = [["identifier", "product", "name"]] + [[r["identifier"], "thermo", "x"]
                                                  for r in ROWS]
    refused = import_devices(api, workbook(rows), "devices.xlsx")
    assert refused.status_code == 413, refused.json()
    assert refused.json()["code"] == "too_many_cells"
    assert "150 cells (IMPORT_MAX_CELLS)" in refused.json()["detail"]
    assert not Device.objects.exists()

    fits = import_devices(api, workbook(rows[:40]), "devices.xlsx")
    assert fits.status_code == 201, fits.json()
    assert Device.objects.count() == 39


def test_workbook_with_a_far_cell_or_a_huge_dimension_stops_early(api, thermo):
    """A few hundred bytes that place a cell at XFD1048576 and declare the whole sheet as
    its dimension are refused quickly at the row budget, not expanded to 10^10 cells."""
    content = workbook([["identifier", "product"], ["d-1", "thermo"]])
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        sheet = archive.read("xl/worksheets/sheet1.xml").decode()
    sheet = re.sub(r'<dimension ref="[^"]*" ?/>', '<dimension ref="A1:XFD1048576"/>', sheet)
    assert "XFD1048576" in sheet
    sheet = sheet.replace("</sheetData>",
                          '<row r="1048576"><c r="XFD1048576" t="n"><v>1</v></c></row>'
                          "</sheetData>")
    started = time.monotonic()
    refused = import_devices(api, rewritten(content, **{
        "xl/worksheets/sheet1.xml": sheet.encode()}), "devices.xlsx")
    assert refused.status_code == 413, refused.json()
    assert refused.json()["code"] in ("too_many_rows", "too_many_cells")
    assert time.monotonic() - started < 10


def test_zip_bomb_workbook_is_refused_from_its_expanded_size(api, thermo, settings):
    """Members that inflate past 10 times IMPORT_MAX_BYTES are refused before openpyxl opens
    the workbook."""
    settings.IMPORT_MAX_BYTES = 1_000_000
    bomb = rewritten(workbook([["identifier", "product"]]),
                     **{"xl/media/padding.bin": bytes(20_000_000)})
    assert len(bomb) < 1_000_000
    refused = import_devices(api, bomb, "devices.xlsx")
    assert refused.status_code == 413, refused.json()
    assert refused.json()["detail"].startswith("the workbook expands to ")


def test_xml_entities_in_a_workbook_are_refused(api, thermo):
    """openpyxl parses through defusedxml: an entity-expansion bomb is an unreadable file."""
    assert openpyxl.DEFUSEDXML is True
    content = workbook([["identifier", "product"], ["d-1", "thermo"]])
    entities = '<!ENTITY a "aaaaaaaaaa">' + "".join(
        f'<!ENTITY {n} "{("&" + p + ";") * 10}">'
        for p, n in zip("abcdefgh", "bcdefghi", strict=True))
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        sheet = archive.read("xl/worksheets/sheet1.xml").decode()
    laughs = (f"<!DOCTYPE worksheet [{entities}]>"
              + sheet.replace("<t>d-1</t>", "<t>&i;</t>"))
    assert "&i;" in laughs
    refused = import_devices(api, rewritten(content, **{
        "xl/worksheets/sheet1.xml": laughs.encode()}), "devices.xlsx")
    assert refused.status_code == 400, refused.json()
    assert refused.json()["code"] == "invalid_file"
    assert "EntitiesForbidden" in refused.json()["detail"]


def test_admin_import_refuses_oversized_and_overfull_files_with_the_reason(
        client, admin_user, thermo, settings):
    """The admin's import form names the budget a file passes."""
    client.force_login(admin_user)
    settings.IMPORT_MAX_BYTES = 2000
    page = client.post("/admin/devices/device/import/", {
        "resource": "0", "format": "0", "import_file": csv_file(ROWS)})
    assert page.status_code == 200
    assert "IMPORT_MAX_BYTES" in str(page.context["form"].errors["import_file"])

    settings.IMPORT_MAX_BYTES = 10 * 2**20
    settings.IMPORT_MAX_CELLS = 50
    page = client.post("/admin/devices/device/import/", {
        "resource": "0", "format": "0", "import_file": csv_file(ROWS)})
    assert page.status_code == 200
    assert "IMPORT_MAX_CELLS" in str(page.context["form"].errors["import_file"])
    assert not Device.objects.exists()


def test_oversized_ota_package_is_refused(api, thermo, settings, client, admin_user):
    """A package over OTA_MAX_BYTES: 413 through the API and a form error in the admin;
    nothing is stored."""
    settings.OTA_MAX_BYTES = 4096
    form = {"product": "thermo", "name": "fw", "package_type": "firmware", "version": "9.0"}
    refused = api.post("/api/v1/ota/packages/", {
        **form, "file": SimpleUploadedFile("fw.bin", bytes(5000))}, format="multipart")
    assert refused.status_code == 413, refused.json()
    assert refused.json()["code"] == "file_too_large"
    assert "OTA_MAX_BYTES" in refused.json()["detail"]

    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    early = api.post("/api/v1/ota/packages/", {
        **form, "file": SimpleUploadedFile("fw.bin", bytes(50_000))}, format="multipart")
    assert early.status_code == 413
    assert early.json()["detail"].startswith("the request has ")

    client.force_login(admin_user)
    from webapp.products.models import Product

    page = client.post("/admin/ota/otapackage/add/", {
        **form, "product": str(Product.objects.get(identifier="thermo").pk),
        "custom_info": "{}", "description": "",
        "file": SimpleUploadedFile("fw.bin", bytes(5000))})
    assert page.status_code == 200
    assert "OTA_MAX_BYTES" in str(page.context["adminform"].form.errors["file"])
    assert not OtaPackage.objects.exists()

    fits = api.post("/api/v1/ota/packages/", {
        **form, "file": SimpleUploadedFile("fw.bin", bytes(4096))}, format="multipart")
    assert fits.status_code == 201, fits.json()


def test_product_json_over_its_limits_is_refused(api, redis_prefix, thermo_payload, settings):
    """A product JSON file over IMPORT_MAX_BYTES, or a JSON body over
    DATA_UPLOAD_MAX_MEMORY_SIZE: 413 with the limit, no product."""
    thermo_payload["description"] = "x" * 3000
    body = json.dumps(thermo_payload).encode()
    settings.IMPORT_MAX_BYTES = 2000
    refused = api.post("/api/v1/products/import/", {
        "file": SimpleUploadedFile("thermo.json", body)}, format="multipart")
    assert refused.status_code == 413, refused.json()
    assert "IMPORT_MAX_BYTES" in refused.json()["detail"]

    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2000
    for url in ("/api/v1/products/import/", "/api/v1/products/"):
        too_big = api.post(url, thermo_payload, format="json")
        assert too_big.status_code == 413, too_big.json()
        assert too_big.json()["code"] == "body_too_large"
        assert "DATA_UPLOAD_MAX_MEMORY_SIZE" in too_big.json()["detail"]
    from webapp.products.models import Product

    assert not Product.objects.exists()
