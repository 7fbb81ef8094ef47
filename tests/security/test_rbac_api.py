"""H3 and H4 through the REST API, as department-scoped operators holding a JWT: menu
codes are grants, and a user who holds more than the operator cannot have their password
reset, their account changed or deleted by them."""

from __future__ import annotations

import pytest

from tests.security.rbac import org_fixture, own_cache_prefix, rights  # noqa: F401
from tests.security.scoped_operator import jwt_client
from tests.system.conftest import PASSWORD, login
from webapp.system.models import Menu, Role, User

pytestmark = pytest.mark.django_db


def fresh(user):
    return User.objects.get(pk=user.pk)


# H3 ------------------------------------------------------------------------------------------

@pytest.fixture
def menu_editor(org):
    """An operator of department A who may edit menus, holding a menu through their role."""
    user = org.user("menus", org.a, ["system.view_menu", "system.change_menu",
                                     "system.add_menu", "devices.view_device"],
                    scope="department")
    page = Menu.objects.create(name="My page", menu_type="page")
    user.roles.get().menus.add(page)
    user.page = page
    return user


def test_menu_patch_cannot_grant_a_permission(menu_editor):
    """The review's exploit: PATCH a menu of one's own role to `system.change_user`."""
    client = jwt_client(menu_editor)
    url = f"/api/v1/menus/{menu_editor.page.pk}/"
    before = rights(menu_editor)
    for code in ("system.change_user", "devices:debug"):
        refused = client.patch(url, {"permission": code}, format="json")
        assert refused.status_code == 403, refused.content
        assert refused.json()["code"] == "grant_refused"
        assert refused.json()["missing"] == [code]
    assert not fresh(menu_editor).has_perm("system.change_user")
    assert rights(menu_editor) == before
    menu_editor.page.refresh_from_db()
    assert menu_editor.page.permission == ""


def test_menu_create_and_activation_are_grants(menu_editor):
    """A new menu with a code the operator lacks, or re-activating a dormant menu that
    carries one, is refused the same way; a code they hold is fine."""
    client = jwt_client(menu_editor)
    created = client.post("/api/v1/menus/", {"name": "X", "menu_type": "button",
                                             "permission": "system.delete_user"},
                          format="json")
    assert created.status_code == 403 and created.json()["code"] == "grant_refused"
    sleeper = Menu.objects.create(name="Sleeper", menu_type="button",
                                  permission="system.delete_user", is_active=False)
    menu_editor.roles.get().menus.add(sleeper)
    woken = client.patch(f"/api/v1/menus/{sleeper.pk}/", {"is_active": True}, format="json")
    assert woken.status_code == 403
    assert not fresh(menu_editor).has_perm("system.delete_user")
    held = client.patch(f"/api/v1/menus/{menu_editor.page.pk}/",
                        {"permission": "devices.view_device"}, format="json")
    assert held.status_code == 200, held.content


# H4 ------------------------------------------------------------------------------------------

@pytest.fixture
def user_admin(org):
    """A department user manager (scope: own department A)."""
    return org.user("usradmin", org.a, ["system.view_user", "system.change_user",
                                        "system.delete_user", "system.view_apikey",
                                        "system.add_apikey"], scope="department")


@pytest.fixture
def superiors(org):
    """Users in department A who hold more than the user manager: a superuser, an
    administrator (all scope), one with a permission the manager lacks, one whose custom
    scope reaches department B, and a disabled administrator."""
    boss = User.objects.create_superuser("boss", "boss@example.com", PASSWORD)
    boss.department = org.a
    boss.save(update_fields=["department"])
    administrator = Role.objects.get(code="administrator")
    return [
        boss,
        org.user("admin-a", org.a, roles=[administrator]),
        org.user("deleter", org.a, ["devices.delete_device"], scope="department"),
        org.user("wide", org.a, roles=[org.role([], scope="custom",
                                                departments=[org.a, org.b])]),
        org.user("sleeping", org.a, roles=[administrator], is_active=False),
    ]


def test_reset_password_of_a_user_who_holds_more_is_refused(user_admin, superiors):
    """The review's exploit: a department user admin resets a superuser's (or an
    administrator's) password and would log in as them."""
    client = jwt_client(user_admin)
    for target in superiors:
        response = client.post(f"/api/v1/users/{target.pk}/reset-password/",
                               {"password": "Taken-over-2468"}, format="json")
        assert response.status_code == 403, (target.username, response.content)
        assert response.json()["code"] == "outranked"
        assert "password" not in response.json()
        target.refresh_from_db()
        assert target.check_password(PASSWORD) and not target.must_change_password
    assert login(client, "boss", "Taken-over-2468").status_code == 401


def test_update_of_a_user_who_holds_more_is_refused(user_admin, superiors, org):
    """E-mail (the reset link), status and department of such users stay as they are; so
    does the account itself."""
    client = jwt_client(user_admin)
    for target in superiors:
        state = (target.email, target.is_active, target.department_id)
        for change in ({"email": "attacker@example.com"}, {"is_active": False},
                       {"department": None}):
            response = client.patch(f"/api/v1/users/{target.pk}/", change, format="json")
            assert response.status_code == 403, (target.username, change, response.content)
            assert response.json()["code"] == "outranked"
        assert client.delete(f"/api/v1/users/{target.pk}/").status_code == 403
        target = fresh(target)
        assert (target.email, target.is_active, target.department_id) == state


def test_users_within_the_managers_rights_are_still_managed(user_admin, org):
    """A user who holds no more than the manager gets a new password, a new e-mail and is
    disabled, as before."""
    clerk = org.user("clerk", org.a, ["system.view_user"], scope="department")
    client = jwt_client(user_admin)
    reset = client.post(f"/api/v1/users/{clerk.pk}/reset-password/", {}, format="json")
    assert reset.status_code == 200
    assert login(client, "clerk", reset.json()["password"]).status_code == 200
    assert client.patch(f"/api/v1/users/{clerk.pk}/", {"email": "c@example.com",
                                                       "is_active": False},
                        format="json").status_code == 200


def test_a_change_that_makes_a_user_outrank_is_rolled_back(org):
    """Each step is allowed (the user is within the manager's rights, department A is in
    the manager's scope) but the result is not: moved from A1 up to A, the user's
    `department and below` role reaches A2, which the manager's custom scope (A, A1) does
    not. The change is refused and nothing of it stays."""
    from webapp.system.models import Department

    Department.objects.create(name="Dept A2", parent=org.a)
    manager = org.user("mgr", org.a, roles=[org.role(
        ["system.view_user", "system.change_user"], scope="custom",
        departments=[org.a, org.a1])])
    climber = org.user("climber", org.a1, scope="department_and_below")
    client = jwt_client(manager)
    assert client.patch(f"/api/v1/users/{climber.pk}/", {"nickname": "ok"},
                        format="json").status_code == 200
    response = client.patch(f"/api/v1/users/{climber.pk}/",
                            {"department": org.a.pk, "nickname": "moved"}, format="json")
    assert response.status_code == 403, response.content
    assert response.json()["missing"] == ["department:Dept A2"]
    climber = fresh(climber)
    assert (climber.department_id, climber.nickname) == (org.a1.pk, "ok")


def test_operator_cannot_make_himself_staff(org):
    """The staff flag opens the admin: only staff may give it, themselves included."""
    manager = org.user("mgr", org.a, ["system.view_user", "system.change_user"],
                       scope="department")
    client = jwt_client(manager)
    response = client.patch(f"/api/v1/users/{manager.pk}/", {"is_staff": True},
                            format="json")
    assert response.status_code == 403 and response.json()["missing"] == ["is_staff"]
    assert not fresh(manager).is_staff
