"""Second review: roles are shared by every department, and a role change was checked only
as a grant (what it adds). A department manager holding `system.change_role` could switch
off the built-in administrator role (every administrator lost their rights), strip it, or
change the roles another department's users hold. A role is now changed, deactivated or
deleted only by someone none of its holders outranks (as for changing a user)."""

from __future__ import annotations

import pytest

from tests.security.rbac import org_fixture, own_cache_prefix  # noqa: F401
from tests.security.scoped_operator import jwt_client
from webapp.system.models import Role

pytestmark = pytest.mark.django_db

ROLE_EDITOR = ("system.view_role", "system.change_role", "system.add_role",
               "system.delete_role", "devices.view_device")


@pytest.fixture
def editor(org):
    return org.user("roles", org.a, ROLE_EDITOR, scope="department")


def test_the_administrator_role_cannot_be_switched_off_or_stripped(org, editor):
    admin_role = Role.objects.get(code="administrator")
    org.user("chief", org.a, roles=[admin_role])
    client = jwt_client(editor)
    url = f"/api/v1/roles/{admin_role.pk}/"
    for change in ({"is_active": False}, {"data_scope": "self"}, {"permissions": []}):
        refused = client.patch(url, change, format="json")
        assert refused.status_code == 403, (change, refused.content)
        assert refused.json()["code"] == "outranked"
    admin_role.refresh_from_db()
    assert admin_role.is_active and admin_role.data_scope == "all"
    assert admin_role.permissions.exists()


def test_another_departments_role_cannot_be_changed_or_deleted(org, editor):
    theirs = org.role(["devices.view_device"], scope="department")
    org.user("bruno", org.b, roles=[theirs])
    client = jwt_client(editor)
    url = f"/api/v1/roles/{theirs.pk}/"
    assert client.patch(url, {"is_active": False}, format="json").status_code == 403
    assert client.patch(url, {"permissions": []}, format="json").status_code == 403
    assert client.delete(url).status_code == 403
    theirs.refresh_from_db()
    assert theirs.is_active and theirs.permissions.exists()


def test_a_role_held_only_within_reach_is_still_editable(org, editor):
    mine = org.role(["devices.view_device"], scope="department")
    org.user("annie", org.a, roles=[mine])
    client = jwt_client(editor)
    changed = client.patch(f"/api/v1/roles/{mine.pk}/", {"name": "Renamed",
                                                          "is_active": False}, format="json")
    assert changed.status_code == 200, changed.content
    unheld = org.role(["devices.view_device"], scope="department")
    assert client.delete(f"/api/v1/roles/{unheld.pk}/").status_code == 204


def test_the_admin_form_refuses_switching_off_the_administrator_role(org, client):
    from tests.security.rbac import admin_form, form_data
    from tests.system.conftest import PASSWORD

    admin_role = Role.objects.get(code="administrator")
    org.user("chief", org.a, roles=[admin_role])
    org.user("roles", org.a, ROLE_EDITOR, scope="department", staff=True)
    assert client.login(username="roles", password=PASSWORD)
    url = f"/admin/system/role/{admin_role.pk}/change/"
    data = form_data(admin_form(client, url))
    data.pop("is_active", None)
    response = client.post(url, data)
    assert response.status_code == 200
    assert "This role is held by users who hold rights you do not hold: chief" in \
        response.content.decode()
    admin_role.refresh_from_db()
    assert admin_role.is_active
