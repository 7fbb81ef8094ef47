"""H2, H3, H4 through the admin, as a department-scoped staff operator signed in with
Django's test client: the user change form (superuser flag, extra permissions, groups), the
user and role imports, role custom departments, menu codes, and the password pages and
actions of users who hold more than the operator."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.test import RequestFactory

from tests.security.rbac import (  # noqa: F401  (fixtures)
    admin_form,
    csv_upload,
    form_data,
    org_fixture,
    own_cache_prefix,
    rights,
)
from tests.system.conftest import PASSWORD, perms
from webapp.system.models import Menu, Role, User

pytestmark = pytest.mark.django_db

OPERATOR_PERMS = ("system.view_user", "system.change_user", "system.add_user",
                  "system.view_role", "system.change_role", "system.add_role",
                  "system.view_menu", "system.change_menu", "system.add_menu",
                  "system.view_apikey", "system.add_apikey", "auth.view_group")


@pytest.fixture
def ops(org):
    """A staff user manager of department A (scope: own department)."""
    return org.user("ops", org.a, OPERATOR_PERMS, scope="department", staff=True)


@pytest.fixture
def ops_client(client, ops):
    assert client.login(username="ops", password=PASSWORD)
    return client


@pytest.fixture
def boss(org):
    """A superuser who happens to sit in department A (within the operator's scope)."""
    user = User.objects.create_superuser("boss", "boss@example.com", PASSWORD)
    user.department = org.a
    user.save(update_fields=["department"])
    return user


# H2: the user change form ------------------------------------------------------------------

def test_user_form_offers_no_superuser_flag_and_ignores_a_forged_tick(ops_client, ops):
    """The review's exploit: ticking "superuser" (and adding permissions or a group) on
    one's own change page. The fields are not in the form and a forged POST changes
    nothing."""
    url = f"/admin/system/user/{ops.pk}/change/"
    form = admin_form(ops_client, url)
    assert not {"is_superuser", "user_permissions", "groups"} & set(form.fields)
    group = Group.objects.create(name="all-deletes")
    group.permissions.set(perms("system.delete_user", "devices.delete_device"))
    before = rights(ops)
    data = form_data(form)
    data.update({"is_superuser": "on", "groups": [str(group.pk)],
                 "user_permissions": [str(p.pk) for p in perms("system.delete_user")]})
    ops_client.post(url, data)
    ops.refresh_from_db()
    assert not ops.is_superuser
    assert not ops.groups.exists() and not ops.user_permissions.exists()
    assert rights(ops) == before


def test_user_form_checks_the_superuser_fields_server_side(ops, org):
    """Were the fields shown (a customised admin, a superuser-only fieldset leaking), the
    form itself refuses them for an operator."""
    from django.contrib import admin

    request = RequestFactory().post("/")
    request.user = ops
    model_admin = admin.site._registry[User]
    form_class = model_admin.get_form(request, ops, fields=[
        "username", "is_superuser", "user_permissions", "groups", "roles"])
    group = Group.objects.create(name="all-deletes")
    group.permissions.set(perms("system.delete_user"))
    for escalation in ({"is_superuser": "on"},
                       {"user_permissions": [str(perms("system.delete_user")[0].pk)]},
                       {"groups": [str(group.pk)]}):
        data = {"username": "ops", "roles": [str(r.pk) for r in ops.roles.all()],
                **escalation}
        form = form_class(data, instance=User.objects.get(pk=ops.pk))
        assert not form.is_valid(), escalation
        assert "You cannot grant what you do not hold" in str(form.non_field_errors())


def test_user_form_refuses_changing_a_user_who_holds_more(ops_client, boss):
    """A superuser in the operator's department: their e-mail (the way to a reset link) and
    status cannot be changed by the operator."""
    url = f"/admin/system/user/{boss.pk}/change/"
    data = form_data(admin_form(ops_client, url))
    data["email"] = "attacker@example.com"
    response = ops_client.post(url, data)
    assert response.status_code == 200
    assert "This user holds rights you do not hold" in response.content.decode()
    boss.refresh_from_db()
    assert boss.email == "boss@example.com"


# H2: the user import -----------------------------------------------------------------------

def _import(client, model, rows):
    return client.post(f"/admin/system/{model}/import/", {
        "resource": "0", "format": "0", "import_file": csv_upload(rows)})


def _refused_preview(page) -> str:
    assert page.status_code == 200
    assert page.context.get("confirm_form") is None
    assert page.context["result"].has_validation_errors()
    return page.content.decode()


def test_user_import_cannot_give_the_administrator_role(ops_client, ops):
    """The review's exploit: `username=<me>,roles=administrator` in a CSV."""
    before = rights(ops)
    page = _import(ops_client, "user", [{"username": "ops", "roles": "administrator"}])
    assert "You cannot grant what you do not hold" in _refused_preview(page)
    assert not ops.roles.filter(code="administrator").exists()
    assert rights(ops) == before


def test_user_import_write_step_checks_too(ops, ops_client):
    """The checks run where rows are written (the confirmation step), not only in the
    preview: a file already in the import storage is refused the same way."""
    from django.contrib import admin

    model_admin = admin.site._registry[User]
    storage = model_admin.get_tmp_storage_class()(encoding="utf-8-sig", read_mode="r",
                                                  **model_admin.get_tmp_storage_class_kwargs())
    storage.save(b"username,roles,is_staff\r\nops,administrator,1\r\n")
    before = rights(ops)
    ops_client.post("/admin/system/user/process_import/", {
        "import_file_name": storage.name, "original_file_name": "x.csv", "format": "0",
        "resource": "0"})
    assert not ops.roles.filter(code="administrator").exists()
    assert rights(ops) == before


def test_user_import_refuses_users_out_of_scope_or_above(ops_client, org, boss):
    """Rows match users by username: one of department B, or a superuser in scope, is
    refused, so nobody is disabled or re-addressed across departments."""
    bruno = org.user("bruno", org.b)
    page = _import(ops_client, "user", [
        {"username": "bruno", "email": "bruno@example.com", "is_active": "0"},
        {"username": "boss", "email": "attacker@example.com", "is_active": "1"}])
    body = _refused_preview(page)
    assert "bruno: this user is not in your data scope" in body
    assert "This user holds rights you do not hold" in body
    bruno.refresh_from_db()
    boss.refresh_from_db()
    assert bruno.is_active and boss.email == "boss@example.com"


def test_user_import_departments_are_scoped(ops_client, org):
    """A new user cannot be placed in a department out of the importer's scope."""
    page = _import(ops_client, "user", [{"username": "newbie", "department": "Dept B"}])
    assert "Unknown department (or not in your data scope): Dept B" in _refused_preview(page)
    assert not User.objects.filter(username="newbie").exists()


def test_user_import_within_rights_still_works(ops_client, ops, org):
    """A row within the operator's rights previews cleanly and imports."""
    page = _import(ops_client, "user", [{"username": "newbie", "department": "Dept A",
                                         "roles": ops.roles.get().code, "is_active": "1"}])
    assert page.status_code == 200 and page.context.get("confirm_form") is not None
    confirm = page.context["confirm_form"]
    done = ops_client.post("/admin/system/user/process_import/", {
        name: confirm[name].value() for name in confirm.fields})
    assert done.status_code == 302
    newbie = User.objects.get(username="newbie")
    assert newbie.department == org.a and not newbie.has_usable_password()


# H2: roles: custom departments and the import ---------------------------------------------

def test_role_form_custom_departments_stay_in_scope(ops_client, ops, org):
    """The review's exploit: setting one's own role to `custom` covering every department.
    Department B is not offered and a forged choice is refused; A (in scope) is fine."""
    role = ops.roles.get()
    url = f"/admin/system/role/{role.pk}/change/"
    form = admin_form(ops_client, url)
    offered = set(form.fields["departments"].queryset.values_list("pk", flat=True))
    assert org.b.pk not in offered and org.a.pk in offered
    before = rights(ops)
    data = form_data(form)
    data.update({"data_scope": "custom", "departments": [str(org.a.pk), str(org.b.pk)]})
    refused = ops_client.post(url, data)
    assert refused.status_code == 200
    role.refresh_from_db()
    assert role.data_scope == "department" and not role.departments.exists()
    assert rights(ops) == before
    data["departments"] = [str(org.a.pk)]
    assert ops_client.post(url, data).status_code == 302
    assert list(role.departments.all()) == [org.a]


def test_role_import_cannot_widen_the_data_scope(ops_client, ops):
    """The review's exploit: importing one's own role code with `data_scope=all`."""
    role = ops.roles.get()
    before = rights(ops)
    page = _import(ops_client, "role", [{"code": role.code, "name": role.name,
                                         "data_scope": "all", "is_active": "1"}])
    assert "data_scope:all" in _refused_preview(page)
    role.refresh_from_db()
    assert role.data_scope == "department"
    assert rights(ops) == before


# H3: menu codes in the admin --------------------------------------------------------------

def test_menu_admin_refuses_a_code_the_operator_lacks(ops_client, ops):
    """A menu of the operator's own role cannot be given a permission code they lack."""
    menu = Menu.objects.create(name="Mine", menu_type="button")
    ops.roles.get().menus.add(menu)
    url = f"/admin/system/menu/{menu.pk}/change/"
    data = form_data(admin_form(ops_client, url))
    data["permission"] = "system.delete_user"
    response = ops_client.post(url, data)
    assert response.status_code == 200
    assert "You cannot grant what you do not hold: system.delete_user" in \
        response.content.decode()
    assert not User.objects.get(pk=ops.pk).has_perm("system.delete_user")


# H4: passwords and keys of users who hold more --------------------------------------------

def test_admin_password_page_of_a_superuser_is_refused(ops_client, boss):
    """The per-user password form of a superuser in scope answers 403, GET and POST."""
    url = f"/admin/system/user/{boss.pk}/password/"
    assert ops_client.get(url).status_code == 403
    response = ops_client.post(url, {"password1": "Taken-over-2468",
                                     "password2": "Taken-over-2468"})
    assert response.status_code == 403
    boss.refresh_from_db()
    assert boss.check_password(PASSWORD)


def test_admin_reset_passwords_action_skips_users_who_hold_more(ops_client, org, boss):
    """The bulk action resets the users within the operator's rights and refuses the
    others with a message; no password of theirs is shown."""
    from webapp.system.models import Role as RoleModel

    admin_in_a = org.user("admin-a", org.a, roles=[RoleModel.objects.get(
        code="administrator")])
    clerk = org.user("clerk", org.a, ["system.view_user"], scope="department")
    response = ops_client.post("/admin/system/user/", {
        "action": "reset_passwords",
        "_selected_action": [str(boss.pk), str(admin_in_a.pk), str(clerk.pk)]}, follow=True)
    texts = [str(m) for m in response.context["messages"]]
    assert any(t.startswith("New password of clerk") for t in texts)
    assert not any("New password of boss" in t or "New password of admin-a" in t
                   for t in texts)
    assert any(t.startswith("boss:") for t in texts)
    for user in (boss, admin_in_a):
        user.refresh_from_db()
        assert user.check_password(PASSWORD) and not user.must_change_password


def test_admin_api_key_for_a_user_who_holds_more_is_refused(ops_client, boss):
    """An API key made for someone else is a way to act as them: not for a superuser."""
    from webapp.system.models import ApiKey

    response = ops_client.post("/admin/system/apikey/add/", {"user": str(boss.pk),
                                                             "name": "mine now"})
    assert response.status_code == 200
    assert "This user holds rights you do not hold" in response.content.decode()
    assert not ApiKey.objects.filter(user=boss).exists()


def test_role_activation_is_a_grant(ops_client, ops):
    """Activating a role is a grant too: the operator cannot get the rights of an inactive
    role they hold by ticking "active"."""
    dormant = Role.objects.create(code="dormant", name="Dormant", data_scope="all",
                                  is_active=False)
    dormant.permissions.set(perms("system.delete_user"))
    ops.roles.add(dormant)
    before = rights(ops)
    url = f"/admin/system/role/{dormant.pk}/change/"
    data = form_data(admin_form(ops_client, url))
    data["is_active"] = "on"
    response = ops_client.post(url, data)
    assert response.status_code == 200
    assert "You cannot grant what you do not hold" in response.content.decode()
    assert rights(ops) == before
