"""The admin: every page renders, the ThingLinks navigation, the language switch, scoped
exports and the operation log of admin changes."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.urls import reverse

from tests.system.conftest import PASSWORD

pytestmark = pytest.mark.django_db


@pytest.fixture
def root(db, django_user_model):
    return django_user_model.objects.create_superuser("root", "root@example.com", PASSWORD)


@pytest.mark.parametrize("model", sorted(admin.site._registry, key=lambda m: m._meta.label),
                         ids=lambda m: m._meta.label)
def test_every_admin_page_renders(client, root, model):
    """The change list and the add page of every registered model render."""
    client.force_login(root)
    info = (model._meta.app_label, model._meta.model_name)
    changelist = client.get(reverse("admin:{}_{}_changelist".format(*info)))
    assert changelist.status_code == 200
    model_admin = admin.site._registry[model]
    request = changelist.wsgi_request
    if model_admin.has_add_permission(request):
        assert client.get(reverse("admin:{}_{}_add".format(*info))).status_code == 200


def test_index_groups_the_thinglinks_way(client, root):
    """The index and sidebar group models into system, devices, products, rules, monitoring."""
    client.force_login(root)
    response = client.get("/admin/")
    names = [group["name"] for group in response.context["app_list"]]
    assert names[:5] == ["Monitoring", "Devices", "Products", "Rules", "System"]
    monitoring = {m["object_name"] for m in response.context["app_list"][0]["models"]}
    assert {"LoginSession", "OperationLog", "LoginLog", "TaskRun", "PeriodicTask"} <= monitoring
    assert "thinglinks/admin.css" in response.content.decode()


def test_language_switch_is_saved_per_user(client, root):
    """Choosing 中文 in the header stores it on the user and the admin speaks it."""
    client.force_login(root)
    response = client.post("/admin/language/", {"language": "zh-hans", "next": "/admin/"})
    assert response.status_code == 302
    root.refresh_from_db()
    assert root.language == "zh-hans"
    page = client.get("/admin/", HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert "控制台" in page and "系统管理" in page
    client.post("/admin/language/", {"language": "en", "next": "https://evil.example/"})
    root.refresh_from_db()
    assert root.language == "en"


def test_admin_export_is_scoped(client, org):
    """Exporting users from the admin gives only users in the exporter's scope."""
    from tests.system.conftest import perms

    exporter = org.user("alice", org.a, ["system.view_user", "system.change_user"],
                        scope="department", staff=True)
    org.user("bella", org.a)
    org.user("bruno", org.b)
    exporter.user_permissions.set(perms("system.view_user"))
    client.force_login(exporter)
    response = client.post("/admin/system/user/export/", {
        "format": "0", "resource": "0", "export_items": [],
        **{f"userresource_{f}": "on" for f in ("username", "department")}})
    assert response.status_code == 200, response.content[:500]
    body = response.content.decode()
    assert "alice" in body and "bella" in body and "bruno" not in body


def test_admin_changes_are_logged_with_source_admin(client, root):
    """A change in the admin lands in the operation log with source `admin`."""
    from webapp.system.models import OperationLog, Position

    client.force_login(root)
    response = client.post("/admin/system/position/add/", {"code": "eng", "name": "Engineer",
                                                           "order": 0, "is_active": "on"})
    assert response.status_code == 302
    position = Position.objects.get(code="eng")
    log = OperationLog.objects.get(model="position", object_id=str(position.pk))
    assert (log.source, log.action, log.username) == ("admin", "create", "root")
    assert log.after["name"] == "Engineer"


def test_periodic_task_shows_run_history(client, root):
    """A schedule's change page lists its recent runs."""
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    from webapp.system.models import TaskRun

    every = IntervalSchedule.objects.create(every=10, period="seconds")
    task = PeriodicTask.objects.create(name="sweep", task="devices.sweep_offline",
                                       interval=every)
    TaskRun.objects.create(task_id="r1", task_name="devices.sweep_offline",
                           periodic_task_name="sweep", status="success", runtime=0.25)
    client.force_login(root)
    page = client.get(f"/admin/django_celery_beat/periodictask/{task.pk}/change/")
    assert page.status_code == 200
    assert "0.25" in page.content.decode()


def test_admin_refuses_granting_more_than_held(client, org):
    """In the admin too, a user manager cannot give a role with permissions they lack."""
    from webapp.system.models import Role

    manager = org.user("manager", org.a, ["system.view_user", "system.change_user"],
                       scope="department", staff=True)
    target = org.user("target", org.a, scope="department")  # no more than the manager
    operator = Role.objects.get(code="operator")
    client.force_login(manager)
    page = client.get(f"/admin/system/user/{target.pk}/change/")
    form = page.context["adminform"].form
    data = {name: form[name].value() for name in form.fields
            if form[name].value() is not None and name not in ("password", "avatar")}
    data.update({"roles": [operator.pk], "positions": [], "groups": [],
                 "user_permissions": []})
    data = {k: v for k, v in data.items() if v not in (None, False)}
    response = client.post(f"/admin/system/user/{target.pk}/change/", data)
    assert response.status_code == 200
    assert "You cannot grant what you do not hold" in response.content.decode()
    assert not target.roles.filter(code="operator").exists()


def test_admin_import_needs_add_and_export_needs_view(client, org):
    """django-import-export in the admin: importing needs the model's add permission,
    exporting its view permission (settings IMPORT_EXPORT_*_PERMISSION_CODE); reaching the
    change list is not enough."""
    from tests.system.conftest import perms

    viewer = org.user("viewer", org.a, ["system.view_position"], staff=True)
    client.force_login(viewer)
    assert client.get("/admin/system/position/").status_code == 200
    assert client.get("/admin/system/position/import/").status_code == 403
    assert client.get("/admin/system/position/export/").status_code == 200

    editor = org.user("editor", org.a, ["system.change_position"], staff=True)
    client.force_login(editor)
    assert client.get("/admin/system/position/").status_code == 200  # change implies seeing
    assert client.get("/admin/system/position/export/").status_code == 403
    assert client.get("/admin/system/position/import/").status_code == 403

    editor.roles.first().permissions.add(*perms("system.add_position"))
    client.force_login(editor)
    assert client.get("/admin/system/position/import/").status_code == 200
