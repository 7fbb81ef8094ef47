"""Login, lockout per (username, address), logout, forced logout, refresh, API keys, /me."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from tests.system.conftest import PASSWORD, login

pytestmark = pytest.mark.django_db

A1, A2 = {"REMOTE_ADDR": "10.0.0.1"}, {"REMOTE_ADDR": "10.0.0.2"}


def test_login_returns_a_session_bound_pair_and_logs_it(org):
    """A login gives access+refresh tokens, an online session and a login-log line."""
    from webapp.system.models import LoginLog, LoginSession

    user = org.user("alice", org.a)
    response = login(APIClient(), "alice", **A1)
    assert response.status_code == 200 and {"access", "refresh"} <= response.json().keys()
    session = LoginSession.objects.get(user=user)
    assert session.channel == "api" and str(session.address) == "10.0.0.1"
    log = LoginLog.objects.get(username="alice")
    assert log.result == "success" and log.user == user and log.address == "10.0.0.1"
    user.refresh_from_db()
    assert user.last_login is not None


def test_lockout_is_per_username_and_address(org, settings):
    """5 failures lock alice from that address only: her other address and other users
    behind the same address still log in."""
    org.user("alice", org.a)
    org.user("bob", org.a)
    client = APIClient()
    for _ in range(4):
        assert login(client, "alice", "wrong", **A1).status_code == 401
    fifth = login(client, "alice", "wrong", **A1)
    assert fifth.status_code == 429 and fifth.json()["code"] == "login_locked"
    locked = login(client, "alice", PASSWORD, **A1)
    assert locked.status_code == 429, "the right password does not help while locked"
    assert login(client, "alice", PASSWORD, **A2).status_code == 200
    assert login(client, "bob", PASSWORD, **A1).status_code == 200

    from webapp.system.models import LoginLog

    results = list(LoginLog.objects.filter(username="alice", address="10.0.0.1")
                   .order_by("time", "id").values_list("result", flat=True))
    assert results == ["bad_credentials"] * 5 + ["locked"]


def test_success_resets_the_counter(org):
    """Failures below the limit are forgotten after a successful login."""
    org.user("alice", org.a)
    client = APIClient()
    for _ in range(4):
        login(client, "alice", "wrong", **A1)
    assert login(client, "alice", PASSWORD, **A1).status_code == 200
    for _ in range(4):
        assert login(client, "alice", "wrong", **A1).status_code == 401


def test_unlock_lifts_a_lockout(org, api_as):
    """POST /login-logs/unlock/ by an administrator clears the counter."""
    org.user("alice", org.a)
    for _ in range(5):
        login(APIClient(), "alice", "wrong", **A1)
    assert login(APIClient(), "alice", PASSWORD, **A1).status_code == 429
    admin = api_as(org.user("admin", org.a, ["system.unlock_login"]))
    assert admin.post("/api/v1/login-logs/unlock/", {"username": "alice"},
                      format="json").status_code == 204
    assert login(APIClient(), "alice", PASSWORD, **A1).status_code == 200


def test_admin_login_is_locked_out_too(org, client):
    """The admin login form counts failures and refuses a locked pair with a message."""
    org.user("alice", org.a, staff=True)
    for _ in range(5):
        client.post("/admin/login/", {"username": "alice", "password": "wrong"}, **A1)
    page = client.post("/admin/login/", {"username": "alice", "password": PASSWORD}, **A1)
    assert page.status_code == 200 and "Too many failed logins" in page.content.decode()
    assert client.post("/admin/login/", {"username": "alice", "password": PASSWORD},
                       **A2).status_code == 302


def test_logout_revokes_access_and_refresh(org, api_as):
    """After /auth/logout/ neither the access nor the refresh token works."""
    client = api_as(org.user("alice", org.a, ["system.view_user"]))
    assert client.get("/api/v1/auth/me/").status_code == 200
    assert client.post("/api/v1/auth/logout/").status_code == 204
    again = client.get("/api/v1/auth/me/")
    assert again.status_code == 401 and again.json()["code"] == "authentication_failed"
    refreshed = APIClient().post("/api/v1/auth/token/refresh/",
                                 {"refresh": client.tokens["refresh"]}, format="json")
    assert refreshed.status_code == 401


def test_refresh_keeps_the_session(org, api_as):
    """A refreshed access token belongs to the same session and works."""
    client = api_as(org.user("alice", org.a))
    body = APIClient().post("/api/v1/auth/token/refresh/",
                            {"refresh": client.tokens["refresh"]}, format="json").json()
    fresh = APIClient()
    fresh.credentials(HTTP_AUTHORIZATION=f"Bearer {body['access']}")
    assert fresh.get("/api/v1/auth/me/").status_code == 200


def test_forced_logout_ends_jwt_and_admin_sessions(org, api_as, client):
    """An administrator lists online users and forces a logout: tokens and the admin
    session of that login stop working at once."""
    victim = org.user("victim", org.a, ["system.view_user"], staff=True)
    jwt_client = api_as(victim)
    client.post("/admin/login/", {"username": "victim", "password": PASSWORD})
    assert client.get("/admin/").status_code == 200
    # (Holding what the victim holds: the logins of someone who holds more are not ended.)
    admin = api_as(org.user("boss", org.a, ["system.view_loginsession",
                                             "system.logout_loginsession", "system.view_user"],
                            staff=True))
    online = admin.get("/api/v1/online-users/", {"user": victim.pk}).json()["results"]
    assert {row["channel"] for row in online} == {"api", "admin"}
    for row in online:
        assert admin.delete(f"/api/v1/online-users/{row['id']}/").status_code == 204
    assert jwt_client.get("/api/v1/auth/me/").status_code == 401
    assert client.get("/admin/").status_code == 302
    assert admin.get("/api/v1/online-users/", {"user": victim.pk}).json()["count"] == 0


def test_disabling_a_user_ends_their_logins(org, api_as):
    """Deactivating a user revokes their sessions."""
    victim = org.user("victim", org.a)
    victim_client = api_as(victim)
    admin = api_as(org.user("boss", org.a, ["system.change_user", "system.view_user"]))
    assert admin.patch(f"/api/v1/users/{victim.pk}/", {"is_active": False},
                       format="json").status_code == 200
    assert victim_client.get("/api/v1/auth/me/").status_code == 401


def test_api_key_is_shown_once_stored_hashed_and_authenticates(org, api_as):
    """Create a key (shown once), use it with `Authorization: Api-Key`, revoke it."""
    from webapp.system.models import ApiKey

    user = org.user("robot", org.a, ["system.view_apikey", "system.add_apikey",
                                     "system.delete_apikey", "devices.view_device"])
    created = api_as(user).post("/api/v1/api-keys/", {"name": "ci"}, format="json")
    assert created.status_code == 201
    key = created.json()["key"]
    stored = ApiKey.objects.get(pk=created.json()["id"])
    assert key not in stored.key_hash and stored.prefix in key
    listed = api_as(user).get("/api/v1/api-keys/").json()["results"]
    assert "key" not in listed[0]

    machine = APIClient()
    machine.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    assert machine.get("/api/v1/devices/").status_code == 200
    assert machine.get("/api/v1/users/").status_code == 403, "the key has its user's rights"
    by_header = APIClient()
    by_header.credentials(HTTP_X_API_KEY=key)
    assert by_header.get("/api/v1/devices/").status_code == 200

    assert api_as(user).delete(f"/api/v1/api-keys/{stored.pk}/").status_code == 204
    refused = machine.get("/api/v1/devices/")
    assert refused.status_code == 401 and refused.json()["code"] == "authentication_failed"
    wrong = APIClient()
    wrong.credentials(HTTP_AUTHORIZATION=f"Api-Key {key[:-2]}xx")
    assert wrong.get("/api/v1/devices/").status_code == 401


def test_me_has_permissions_menus_and_scope(org, api_as):
    """/auth/me/ gives the user's permissions (roles and menu codes) and menu tree."""
    from webapp.system.models import Menu, Role

    operator = Role.objects.get(code="operator")
    user = org.user("op", org.a, roles=[operator])
    body = api_as(user).get("/api/v1/auth/me/").json()
    assert body["roles"] == ["operator"]
    assert "devices.add_device" in body["permissions"]
    assert "system.add_user" not in body["permissions"]
    assert "devices:debug" in body["permissions"], "a menu code is a permission"
    top = [m["name"] for m in body["menus"]]
    assert {"Devices", "Products", "System", "Monitoring"} <= set(top)
    assert body["data_scope"] == "department_and_below"
    assert all(m["menu_type"] != "button" for m in body["menus"])
    assert Menu.objects.filter(menu_type="button").exists()


def test_builtin_roles_exist_with_sensible_permissions(db):
    """The data migration creates administrator, operator and viewer."""
    from webapp.system.models import Role

    roles = {r.code: r for r in Role.objects.filter(is_builtin=True)}
    assert set(roles) == {"administrator", "operator", "viewer"}
    assert roles["administrator"].data_scope == "all"

    def codes(role):
        return {f"{p.content_type.app_label}.{p.codename}"
                for p in role.permissions.select_related("content_type")}

    viewer, operator = codes(roles["viewer"]), codes(roles["operator"])
    assert "devices.view_device" in viewer and "devices.change_device" not in viewer
    assert "devices.change_device" in operator and "system.change_user" not in operator
    assert "system.view_user" in operator


def test_password_policy_and_change(org, api_as):
    """A weak password is refused with the policy's reasons; the own password changes with
    the old one; the new one logs in."""
    client = api_as(org.user("alice", org.a))
    weak = client.post("/api/v1/auth/password/", {"old_password": PASSWORD,
                                                  "password": "abcdefgh"}, format="json")
    assert weak.status_code == 400 and weak.json()["code"] == "weak_password"
    wrong = client.post("/api/v1/auth/password/", {"old_password": "nope",
                                                   "password": "Str0ng-enough"}, format="json")
    assert wrong.json()["code"] == "wrong_password"
    assert client.post("/api/v1/auth/password/", {"old_password": PASSWORD,
                                                  "password": "Str0ng-enough"},
                       format="json").status_code == 204
    assert login(APIClient(), "alice", "Str0ng-enough").status_code == 200


def test_admin_reset_password(org, api_as):
    """A reset returns a one-time password, forces a change and ends the user's logins."""
    victim = org.user("victim", org.a)
    victim_client = api_as(victim)
    admin = api_as(org.user("boss", org.a, ["system.change_user", "system.view_user"]))
    body = admin.post(f"/api/v1/users/{victim.pk}/reset-password/", {}, format="json").json()
    assert victim_client.get("/api/v1/auth/me/").status_code == 401
    fresh = login(APIClient(), "victim", body["password"])
    assert fresh.status_code == 200
    victim.refresh_from_db()
    assert victim.must_change_password


def test_user_language_is_used(org, api_as):
    """A user's language choice translates API messages."""
    user = org.user("li", org.a, language="zh-hans")
    response = api_as(user).get("/api/v1/users/")
    assert response.status_code == 403
    assert response["Content-Language"] == "zh-hans"


def test_reset_password_must_be_changed_before_anything_else(org, api_as, client):
    """After a reset the API refuses work (403 password_change_required) until the user
    changes the password; the admin sends them to the password change page."""
    from webapp.system import actions

    victim = org.user("victim", org.a, ["devices.view_device"], staff=True)
    password = actions.reset_password(acting_user=None, user=victim)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION="Bearer " + login(api, "victim", password).json()[
        "access"])
    refused = api.get("/api/v1/devices/")
    assert refused.status_code == 403 and refused.json()["code"] == "password_change_required"
    assert api.get("/api/v1/auth/me/").json()["must_change_password"] is True
    assert api.post("/api/v1/auth/password/", {"old_password": password,
                                               "password": "Brand-new-2468"},
                    format="json").status_code == 204
    assert api.get("/api/v1/devices/").status_code == 200

    actions.reset_password(acting_user=None, user=victim, password="Temp-pass-1357")
    client.post("/admin/login/", {"username": "victim", "password": "Temp-pass-1357"})
    page = client.get("/admin/devices/device/")
    assert page.status_code == 302 and page["Location"] == "/admin/password_change/"


def test_passwords_expire_with_the_parameter(org, api_as):
    """`security.password.max_age_days` forces a change of old passwords."""
    from datetime import timedelta

    from django.utils import timezone

    from webapp.system.models import Parameter, User

    user = org.user("old", org.a, ["devices.view_device"])
    client = api_as(user)
    assert client.get("/api/v1/devices/").status_code == 200
    from webapp.system import actions

    actions.save(acting_user=None, model=Parameter, instance=None, data={
        "key": "security.password.max_age_days", "name": "x", "value": "90",
        "value_type": "integer"})
    User.objects.filter(pk=user.pk).update(password_changed=timezone.now() - timedelta(days=91))
    assert client.get("/api/v1/devices/").json()["code"] == "password_change_required"


def test_nobody_grants_more_than_they_hold(org, api_as):
    """A user manager without device permissions cannot give a role that has them, nor
    build such a role; a superuser can."""
    from webapp.system.models import Role

    manager = org.user("manager", org.a, ["system.view_user", "system.change_user",
                                          "system.add_role", "system.view_role",
                                          "system.change_role"], scope="department")
    target = org.user("target", org.a, scope="department")  # no more than the manager
    client = api_as(manager)
    operator = Role.objects.get(code="operator")
    refused = client.patch(f"/api/v1/users/{target.pk}/", {"roles": [operator.pk]},
                           format="json")
    assert refused.status_code == 403 and refused.json()["code"] == "grant_refused"
    assert "devices.add_device" in refused.json()["missing"]
    built = client.post("/api/v1/roles/", {"code": "sneaky", "name": "Sneaky",
                                           "permissions": ["devices.delete_device"]},
                        format="json")
    assert built.status_code == 403
    everything = client.post("/api/v1/roles/", {"code": "wide", "name": "Wide",
                                                "data_scope": "all"}, format="json")
    assert everything.status_code == 403 and "data_scope:all" in everything.json()["missing"]
    own = client.post("/api/v1/roles/", {"code": "ok", "name": "Ok",
                                         "permissions": ["system.view_user"],
                                         "data_scope": "department"}, format="json")
    assert own.status_code == 201


def test_password_reset_by_email(org, client, api_as, mailoutbox):
    """The admin's "forgotten your password" sends a link; the new password must meet the
    policy, works, and ends the user's other logins."""
    import re

    user = org.user("alice", org.a, staff=True)
    other_login = api_as(user)
    assert "/admin/password_reset/" in client.get("/admin/login/").content.decode()
    client.post("/admin/password_reset/", {"email": "alice@example.com"})
    assert len(mailoutbox) == 1
    link = re.search(r"/reset/[^/\s]+/[^/\s]+/", mailoutbox[0].body).group(0)
    form_page = client.get(link, follow=True)
    action = form_page.redirect_chain[-1][0] if form_page.redirect_chain else link
    weak = client.post(action, {"new_password1": "password", "new_password2": "password"})
    assert weak.status_code == 200 and weak.context["form"].errors
    done = client.post(action, {"new_password1": "Fresh-pass-8642",
                                "new_password2": "Fresh-pass-8642"})
    assert done.status_code == 302 and done["Location"] == "/reset/done/"
    assert login(APIClient(), "alice", "Fresh-pass-8642").status_code == 200
    assert other_login.get("/api/v1/auth/me/").status_code == 401
