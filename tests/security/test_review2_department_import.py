"""Second review: the admin's department import wrote any department by id (unscoped), so a
department manager of A could move department B below A (and reach all of B's data) or
rename and disable it; rows now reach only departments of the importer's scope, and a
parent must be one of them too."""

from __future__ import annotations

import pytest

from tests.security.rbac import (  # noqa: F401  (fixtures)
    csv_upload,
    org_fixture,
    own_cache_prefix,
    rights,
)
from tests.system.conftest import PASSWORD
from webapp.system.models import Department

pytestmark = pytest.mark.django_db

MANAGER_PERMS = ("system.view_department", "system.add_department",
                 "system.change_department")


@pytest.fixture
def manager_client(client, org):
    """A staff department manager of A (scope: A and below)."""
    org.user("deptops", org.a, MANAGER_PERMS, scope="department_and_below", staff=True)
    assert client.login(username="deptops", password=PASSWORD)
    return client


def _import(client, rows):
    page = client.post("/admin/system/department/import/", {
        "resource": "0", "format": "0", "import_file": csv_upload(rows)})
    assert page.status_code == 200
    confirm = page.context.get("confirm_form")
    if confirm is not None:  # what the browser would confirm
        client.post("/admin/system/department/process_import/", {
            name: confirm[name].value() for name in confirm.fields})
    return page


def test_import_cannot_move_another_department_below_ones_own(manager_client, org):
    """The exploit: a row with B's id and parent A puts B (and everything in it) in the
    importer's scope."""
    from webapp.system.models import User

    manager = User.objects.get(username="deptops")
    before = rights(manager)
    page = _import(manager_client, [{"id": org.b.pk, "name": "Dept B", "parent": "Dept A",
                                     "is_active": "1"}])
    org.b.refresh_from_db()
    assert org.b.parent_id is None and org.b.path == f"/{org.b.pk}/"
    assert rights(manager) == before
    assert page.context.get("confirm_form") is None
    assert "not in your data scope" in page.content.decode()


def test_import_cannot_rename_or_disable_another_department(manager_client, org):
    _import(manager_client, [{"id": org.b.pk, "name": "owned", "is_active": "0"}])
    org.b.refresh_from_db()
    assert org.b.name == "Dept B" and org.b.is_active


def test_import_cannot_place_a_department_below_another_departments(manager_client, org):
    """A new department, or one of the importer's, under B: refused (the API offers only
    parents within the scope)."""
    page = _import(manager_client, [{"id": "", "name": "spy", "parent": "Dept B"},
                                    {"id": org.a1.pk, "name": "Dept A1", "parent": "Dept B"}])
    assert page.context.get("confirm_form") is None
    assert not Department.objects.filter(name="spy").exists()
    org.a1.refresh_from_db()
    assert org.a1.parent_id == org.a.pk


def test_import_within_the_scope_still_works(manager_client, org):
    _import(manager_client, [{"id": "", "name": "Dept A2", "parent": "Dept A"},
                             {"id": org.a1.pk, "name": "Dept A1 renamed", "parent": "Dept A"}])
    created = Department.objects.get(name="Dept A2")
    assert created.parent_id == org.a.pk
    org.a1.refresh_from_db()
    assert org.a1.name == "Dept A1 renamed"
