"""The system admins' imports (users, departments, positions, roles, dictionaries, parameters)
within the upload budgets, as the device import: a file over IMPORT_MAX_BYTES or
IMPORT_MAX_CELLS is refused by the import form with the reason, and only the formats read
within the budgets (CSV, XLSX) are offered; tablib reads XLS, ODS, TSV, JSON and YAML whole."""

from __future__ import annotations

import pytest
from django.contrib import admin
from import_export.admin import ImportMixin

from tests.security.rbac import csv_upload
from webapp.core import spreadsheet
from webapp.core.admin import BoundedImportMixin
from webapp.system.models import User

pytestmark = pytest.mark.django_db

ROWS = [{"username": f"imported{n:03d}", "nickname": f"Imported user {n}",
         "email": f"imported{n:03d}@example.com"} for n in range(60)]


def _import(client, rows, format_index: str = "0", **headers):
    return client.post("/admin/system/user/import/", {
        "resource": "0", "format": format_index, "import_file": csv_upload(rows)}, **headers)


def test_oversized_user_import_is_refused_with_the_reason(client, admin_user, settings):
    """A CSV over IMPORT_MAX_BYTES to the user import page as a superuser: the form names the
    limit and no user is created; one over IMPORT_MAX_CELLS likewise."""
    client.force_login(admin_user)
    settings.IMPORT_MAX_BYTES = 2000
    page = _import(client, ROWS)
    assert page.status_code == 200
    errors = str(page.context["form"].errors["import_file"])
    assert "IMPORT_MAX_BYTES" in errors and "at most 2000" in errors
    assert page.context.get("confirm_form") is None
    chinese = _import(client, ROWS, HTTP_ACCEPT_LANGUAGE="zh-hans")
    assert "最多接受 2000 字节（IMPORT_MAX_BYTES）" in str(chinese.context["form"].errors)  # noqa: RUF001

    settings.IMPORT_MAX_BYTES = 10 * 2**20
    settings.IMPORT_MAX_CELLS = 50
    page = _import(client, ROWS)
    assert page.status_code == 200
    assert "IMPORT_MAX_CELLS" in str(page.context["form"].errors["import_file"])
    assert not User.objects.filter(username__startswith="imported").exists()


def test_user_import_within_the_budgets_still_works(client, admin_user):
    client.force_login(admin_user)
    page = _import(client, ROWS[:3])
    assert page.status_code == 200
    assert page.context.get("confirm_form") is not None, page.context["form"].errors
    assert not page.context["result"].has_errors()


def test_user_import_offers_only_csv_and_xlsx(client, admin_user):
    """The format choices of the import page, and a forged index of another format."""
    client.force_login(admin_user)
    form = client.get("/admin/system/user/import/").context["form"]
    labels = [label for value, label in form.fields["format"].choices if value != ""]
    assert labels == ["csv", "xlsx"]
    page = _import(client, ROWS[:3], format_index="2")
    assert "format" in page.context["form"].errors


def test_every_admin_import_is_bounded():
    """Every registered admin that imports (now and in future) reads within the budgets."""
    importing = [model_admin for model_admin in admin.site._registry.values()
                 if isinstance(model_admin, ImportMixin)]
    assert len(importing) >= 8
    for model_admin in importing:
        assert isinstance(model_admin, BoundedImportMixin), type(model_admin).__name__
        assert model_admin.get_import_formats() == [spreadsheet.CSV, spreadsheet.XLSX], \
            type(model_admin).__name__
