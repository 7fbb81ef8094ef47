"""Known gap closed: operation log entries belonged to the actor's department. A user of A
whose data scope also reaches B changed B's device; the entry (with the device's before and
after values) went to A, so A's auditors read B's data in the operation log (API and admin),
and B's auditors did not see the change to their own device. An entry now belongs to the
changed record's department (the actor's for a record without one; the actor's department
is kept in `actor_department`)."""

from __future__ import annotations

import pytest

from tests.security.rbac import org_fixture, own_cache_prefix  # noqa: F401  (fixtures)
from tests.security.scoped_operator import jwt_client
from tests.system.conftest import PASSWORD, make_device, make_product
from webapp.system.models import OperationLog

pytestmark = pytest.mark.django_db

SECRET_NAME = "confidential pump 7"
AUDIT = ["system.view_operationlog"]


@pytest.fixture
def world(org):
    org.device_b = make_device("dev-b", make_product("p-b", org.b), org.b)
    reach_both = org.role(["devices.view_device", "devices.change_device",
                           "system.view_operationlog"], scope="custom",
                          departments=[org.a, org.b])
    org.alice = org.user("alice", org.a, roles=[reach_both], staff=True)
    org.auditor_a = org.user("auditor-a", org.a, AUDIT, scope="department", staff=True)
    org.auditor_b = org.user("auditor-b", org.b, AUDIT, scope="department", staff=True)
    return org


def _change_b_device(world) -> OperationLog:
    changed = jwt_client(world.alice).patch(f"/api/v1/devices/{world.device_b.identifier}/",
                                            {"name": SECRET_NAME}, format="json")
    assert changed.status_code == 200, changed.content
    entry = OperationLog.objects.get(model="device", object_id=str(world.device_b.pk),
                                     action="update")
    assert entry.after == {"name": SECRET_NAME}
    return entry


def _api_entries(user) -> list[dict]:
    answer = jwt_client(user).get("/api/v1/operation-logs/", {"page_size": 100})
    assert answer.status_code == 200, answer.content
    body = answer.json()
    return body["results"] if isinstance(body, dict) else body


def test_the_entry_belongs_to_the_changed_records_department(world):
    entry = _change_b_device(world)
    assert (entry.department_id, entry.actor_department_id) == (world.b.pk, world.a.pk)
    assert entry.user_id == world.alice.pk


def test_the_actors_auditors_do_not_read_the_other_departments_values(world):
    entry = _change_b_device(world)
    seen_by_a = _api_entries(world.auditor_a)
    assert entry.pk not in {e["id"] for e in seen_by_a}
    assert all(SECRET_NAME not in str(e) for e in seen_by_a)
    assert entry.pk in {e["id"] for e in _api_entries(world.auditor_b)}
    assert entry.pk in {e["id"] for e in _api_entries(world.alice)}


def test_the_admin_changelist_follows_the_records_department(world, client):
    entry = _change_b_device(world)
    for user, sees in ((world.auditor_a, False), (world.auditor_b, True)):
        client.logout()
        assert client.login(username=user.username, password=PASSWORD)
        page = client.get("/admin/system/operationlog/")
        assert page.status_code == 200, user
        assert (entry.pk in {e.pk for e in page.context["cl"].result_list}) is sees, user
        detail = client.get(f"/admin/system/operationlog/{entry.pk}/change/")
        assert (SECRET_NAME in detail.content.decode()) is sees, user


def test_a_record_without_a_department_stays_with_the_actor(world):
    """A menu has no department: the entry goes to the actor's, as before."""
    maker = world.user("menu-maker", world.a, ["system.add_menu", "system.view_menu"],
                       scope="all")
    made = jwt_client(maker).post("/api/v1/menus/", {"name": "Reports", "menu_type": "page",
                                                     "path": "/reports"}, format="json")
    assert made.status_code == 201, made.content
    entry = OperationLog.objects.get(model="menu", object_id=str(made.json()["id"]))
    assert entry.department_id == world.a.pk == entry.actor_department_id


def test_existing_entries_move_to_the_records_department(world):
    """The data migration (system.0006): old entries (filed under the actor's department)
    move to the changed record's department, from the record or, once it is deleted, from
    its logged snapshot; the actor's is kept in `actor_department`."""
    from django.apps import apps

    migration = __import__("webapp.system.migrations.0006_operationlog_record_department",
                           fromlist=["record_departments"])
    common = {"user": world.alice, "username": "alice", "source": "api", "app_label": "devices",
              "model": "device", "department": world.a}
    changed = OperationLog.objects.create(action="update", object_id=str(world.device_b.pk),
                                          after={"name": SECRET_NAME}, **common)
    deleted = OperationLog.objects.create(action="delete", object_id="999999",
                                          before={"id": 999999, "department_id": world.b.pk},
                                          **common)
    menu = OperationLog.objects.create(action="create", object_id="1", **{
        **common, "app_label": "system", "model": "menu"})
    migration.record_departments(apps, None)
    for entry, department in ((changed, world.b), (deleted, world.b), (menu, world.a)):
        entry.refresh_from_db()
        assert (entry.department_id, entry.actor_department_id) == (department.pk, world.a.pk)
