"""Third review: menus (through the roles they belong to) and Django groups reach every
holder, and were checked only as a grant. Anyone allowed `system.change_menu` or
`auth.change_group` could switch off or strip a menu or group of the administrators (or of
another department's users). Like a role, a menu or group is now changed or deleted only by
someone none of its holders outranks (API, admin form, admin delete)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, Permission

from tests.security.rbac import org_fixture, own_cache_prefix  # noqa: F401
from tests.security.scoped_operator import jwt_client
from tests.system.conftest import PASSWORD
from webapp.system.models import Menu, Role

pytestmark = pytest.mark.django_db

MENU_EDITOR = ("system.view_menu", "system.change_menu", "system.add_menu",
               "system.delete_menu", "devices.view_device")
GROUP_EDITOR = ("auth.view_group", "auth.change_group", "auth.add_group", "auth.delete_group",
                "devices.view_device")


def _admin_menu(org):
    admin_role = Role.objects.get(code="administrator")
    menu = Menu.objects.create(name="Devices page", menu_type="page",
                               permission="devices.view_device")
    admin_role.menus.add(menu)
    org.user("chief", org.a, roles=[admin_role])
    return menu


def test_an_administrators_menu_cannot_be_switched_off_changed_or_deleted(org):
    menu = _admin_menu(org)
    client = jwt_client(org.user("menus", org.a, MENU_EDITOR, scope="department"))
    url = f"/api/v1/menus/{menu.pk}/"
    for change in ({"is_active": False}, {"permission": ""}, {"name": "x"}):
        refused = client.patch(url, change, format="json")
        assert refused.status_code == 403, (change, refused.content)
        assert refused.json()["code"] == "outranked"
    assert client.delete(url).status_code == 403
    menu.refresh_from_db()
    assert menu.is_active and menu.permission == "devices.view_device"


def test_a_menu_held_only_within_reach_is_editable(org):
    mine = org.role(["devices.view_device"], scope="department")
    menu = Menu.objects.create(name="Mine", menu_type="page", permission="devices.view_device")
    mine.menus.add(menu)
    org.user("annie", org.a, roles=[mine])
    client = jwt_client(org.user("menus", org.a, MENU_EDITOR, scope="department"))
    changed = client.patch(f"/api/v1/menus/{menu.pk}/", {"is_active": False}, format="json")
    assert changed.status_code == 200, changed.content
    assert client.delete(f"/api/v1/menus/{menu.pk}/").status_code == 204


def test_the_menu_admin_refuses_changing_and_deleting(org, client):
    from tests.security.rbac import admin_form, form_data

    menu = _admin_menu(org)
    org.user("menus", org.a, MENU_EDITOR, scope="department", staff=True)
    assert client.login(username="menus", password=PASSWORD)
    url = f"/admin/system/menu/{menu.pk}/change/"
    data = form_data(admin_form(client, url))
    data.pop("is_active", None)
    response = client.post(url, data)
    assert response.status_code == 200
    assert "This menu belongs to roles held by users who hold rights you do not hold: chief" \
        in response.content.decode()
    deleted = client.post(f"/admin/system/menu/{menu.pk}/delete/", {"post": "yes"})
    assert deleted.status_code == 403
    menu.refresh_from_db()
    assert menu.is_active


def test_a_group_of_a_superior_cannot_be_stripped_or_deleted(org, client):
    from tests.security.rbac import admin_form, form_data

    group = Group.objects.create(name="operators")
    group.permissions.add(Permission.objects.get(codename="view_device"))
    chief = org.user("chief", org.a)
    chief.is_superuser = True
    chief.save()
    chief.groups.add(group)
    org.user("groups", org.a, GROUP_EDITOR, scope="department", staff=True)
    assert client.login(username="groups", password=PASSWORD)
    url = f"/admin/auth/group/{group.pk}/change/"
    data = form_data(admin_form(client, url))
    data["permissions"] = []
    response = client.post(url, data)
    assert response.status_code == 200
    assert "This group has members who hold rights you do not hold: chief" in \
        response.content.decode()
    assert client.post(f"/admin/auth/group/{group.pk}/delete/",
                       {"post": "yes"}).status_code == 403
    assert group.permissions.exists() and Group.objects.filter(pk=group.pk).exists()

    own = Group.objects.create(name="mine")
    org.user("annie", org.a, scope="department").groups.add(own)
    response = client.post(f"/admin/auth/group/{own.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302, response.content.decode()[:3000]
    assert not Group.objects.filter(pk=own.pk).exists()
