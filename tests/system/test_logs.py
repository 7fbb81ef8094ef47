"""The operation log (API, admin, tasks; before/after; secrets masked) and task runs."""

from __future__ import annotations

import pytest
from celery import shared_task

from tests.system.conftest import make_product

pytestmark = pytest.mark.django_db


@shared_task(name="tests.system.rename_department")
def rename_department(pk: int, name: str) -> str:
    from webapp.system.models import Department

    department = Department.objects.get(pk=pk)
    department.name = name
    department.save()
    return name


@shared_task(name="tests.system.explode", track_runs=True)
def explode() -> None:
    raise RuntimeError("boom")


def test_api_changes_are_logged_with_before_and_after(org, api_as):
    """Create, update and delete through the API: who, from where, before/after."""
    from webapp.system.models import OperationLog

    user = org.user("alice", org.a, ["system.add_position", "system.change_position",
                                     "system.delete_position", "system.view_position"])
    client = api_as(user)
    created = client.post("/api/v1/positions/", {"code": "eng", "name": "Engineer"},
                          format="json", REMOTE_ADDR="10.1.2.3").json()
    client.patch(f"/api/v1/positions/{created['id']}/", {"name": "Lead"}, format="json")
    client.delete(f"/api/v1/positions/{created['id']}/")
    logs = list(OperationLog.objects.filter(model="position").order_by("id"))
    assert [log.action for log in logs] == ["create", "update", "delete"]
    assert {log.source for log in logs} == {"api"} and {log.user for log in logs} == {user}
    assert logs[0].address == "10.1.2.3" and logs[0].path == "/api/v1/positions/"
    assert logs[0].after["name"] == "Engineer"
    assert logs[1].before == {"name": "Engineer"} and logs[1].after == {"name": "Lead"}
    assert logs[2].before["code"] == "eng" and logs[2].after is None


def test_other_apps_are_logged_without_code_of_their_own(org, api_as):
    """A device created through the devices API is logged; its secret is not."""
    from webapp.system.models import OperationLog

    make_product("thermo", org.a)
    client = api_as(org.user("alice", org.a, ["devices.add_device", "devices.change_device",
                                              "devices.view_device"]))
    created = client.post("/api/v1/devices/", {"product": "thermo", "identifier": "d1",
                                               "secret": "my-very-own-secret"},
                          format="json").json()
    client.post("/api/v1/devices/d1/rotate-secret/")
    logs = OperationLog.objects.filter(app_label="devices", model="device")
    create = logs.get(action="create")
    assert create.after["identifier"] == "d1" and create.after["secret_encrypted"] == "***"
    rotate = logs.get(action="update")
    assert rotate.before == {"secret_encrypted": "***"} == rotate.after
    everything = str(list(OperationLog.objects.values_list("before", "after")))
    assert "my-very-own-secret" not in everything and created["secret"] not in everything


def test_password_changes_are_logged_masked(org, api_as):
    """A password change shows as a change of `password` without any hash."""
    from webapp.system.models import OperationLog

    user = org.user("alice", org.a)
    api_as(user).post("/api/v1/auth/password/", {"old_password": "Pw-test-2468",
                                                 "password": "Other-pass-97"}, format="json")
    log = OperationLog.objects.filter(model="user", action="update").last()
    assert log.after["password"] == "***" and "md5$" not in str(log.before)


def test_task_changes_are_logged_with_source_task(org):
    """A Celery task's changes are logged with source `task` and the task name."""
    from webapp.system.models import OperationLog

    rename_department.apply(args=(org.b.pk, "Dept B renamed"))
    log = OperationLog.objects.get(model="department", action="update")
    assert (log.source, log.task) == ("task", "tests.system.rename_department")
    assert log.before == {"name": "Dept B"} and log.after == {"name": "Dept B renamed"}
    assert log.user is None


def test_changes_outside_any_context_are_not_logged(org):
    """The ingest worker and migrations change data outside a context: no log lines."""
    from webapp.system.models import OperationLog

    org.b.name = "quiet"
    org.b.save()
    assert not OperationLog.objects.exists()


def test_role_permission_changes_are_logged(org, api_as):
    """Many-to-many changes (a role's permissions) are logged as updates."""
    from webapp.system.models import OperationLog

    role = org.role(["devices.view_device"])
    client = api_as(org.user("boss", org.a, ["system.change_role", "system.view_role",
                                             "devices.view_device", "devices.add_device"]))
    response = client.patch(f"/api/v1/roles/{role.pk}/", {
        "permissions": ["devices.view_device", "devices.add_device"]}, format="json")
    assert response.status_code == 200, response.content
    log = OperationLog.objects.filter(model="role", action="update").last()
    assert len(log.after["permissions"]) == 2 and len(log.before["permissions"]) == 1


def test_scheduled_runs_are_recorded(db):
    """A run started by beat (periodic_task_name) is kept with status and runtime;
    a failing tracked task keeps its error."""
    from webapp.system.models import TaskRun

    rename_department.apply(args=(0, "x"), headers={"periodic_task_name": "nightly"})
    run = TaskRun.objects.get(periodic_task_name="nightly")
    assert run.task_name == "tests.system.rename_department"
    assert run.status == "failure" and "DoesNotExist" in run.error
    explode.apply()
    failed = TaskRun.objects.get(task_name="tests.system.explode")
    assert failed.status == "failure" and "boom" in failed.error and failed.runtime >= 0


def test_untracked_tasks_keep_no_history(org):
    """Ordinary task calls (not beat, not tracked) leave no run rows."""
    from webapp.system.models import TaskRun

    rename_department.apply(args=(org.a.pk, "A"))
    assert not TaskRun.objects.exists()


def test_purge_logs_respects_retention(org):
    """`system.purge_logs` deletes what is older than `log.retention_days`."""
    from datetime import timedelta

    from django.utils import timezone

    from webapp.system.models import LoginLog, Parameter
    from webapp.system.tasks import purge_logs

    Parameter.objects.filter(key="log.retention_days").update(value="30")
    LoginLog.objects.create(username="old", channel="api", result="success",
                            time=timezone.now() - timedelta(days=31))
    LoginLog.objects.create(username="new", channel="api", result="success")
    assert purge_logs.apply().get()["login_logs"] == 1
    assert list(LoginLog.objects.values_list("username", flat=True)) == ["new"]


def test_operation_logs_are_scoped(org, api_as):
    """A department-scoped auditor sees the operations of their department's users only."""
    from webapp.system.models import OperationLog

    a_user, b_user = org.user("ann", org.a), org.user("ben", org.b)
    for user in (a_user, b_user):
        OperationLog.objects.create(user=user, username=user.username,
                                    department=user.department, source="api",
                                    action="create", app_label="x", model="y")
    auditor = api_as(org.user("audit", org.a, ["system.view_operationlog"],
                              scope="department"))
    names = {row["username"] for row in auditor.get("/api/v1/operation-logs/").json()["results"]}
    assert names == {"ann"}
