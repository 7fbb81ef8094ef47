"""The console's pages: sign-in, permissions, data scope, lists, details and the forms that go
through the other apps' actions."""

from __future__ import annotations

import pytest
from django.test import Client
from django.utils import timezone

from tests.console.conftest import (
    PASSWORD,
    create_device,
    data_event,
    log_event,
    status_event,
)
from webapp.devices.models import DeviceCommand, DeviceShadow
from webapp.rules.models import Alarm

pytestmark = pytest.mark.django_db

PAGES = ["/", "/products/", "/products/thermo-a/", "/devices/", "/devices/dev-a1/", "/map/",
         "/alarms/", "/password/"]
# Pages that need a permission (the dashboard and one's own password need none).
GUARDED = ["/products/", "/products/thermo-a/", "/devices/", "/devices/dev-a1/", "/map/",
           "/alarms/"]


def make_alarm(device, name="Too hot", severity="major"):
    now = timezone.now()
    return Alarm.objects.create(name=name, device=device, product=device.product,
                                severity=severity, message=f"{name} on {device.identifier}",
                                first_seen=now, last_seen=now)


def text(response) -> str:
    return response.content.decode()


@pytest.mark.parametrize("path", PAGES)
def test_anonymous_users_are_sent_to_the_login_page(world, path):
    """Every console page redirects an anonymous visitor to the console's login page."""
    response = Client().get(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/login/?next=")


@pytest.mark.parametrize("path", ["/devices/dev-a1/commands/", "/devices/dev-a1/desired/",
                                  "/alarms/1/acknowledge/", "/alarms/1/clear/"])
def test_anonymous_posts_change_nothing(world, path):
    """The forms' endpoints redirect anonymous posts to the login page."""
    response = Client().post(path, {"service": "env", "command": "set_interval",
                                    "p.seconds": "5"})
    assert response.status_code == 302 and response["Location"].startswith("/login/")
    assert not DeviceCommand.objects.exists()


def test_login_page_signs_in_and_lands_on_the_dashboard(world):
    """The console's own login page signs a user in (login log and session included)."""
    from webapp.system.models import LoginLog, LoginSession

    client = Client()
    page = client.get("/login/")
    assert page.status_code == 200 and 'name="password"' in text(page)
    assert 'href="/admin/password_reset/"' in text(page)
    refused = client.post("/login/", {"username": "alice", "password": "wrong"})
    assert refused.status_code == 200 and 'role="alert"' in text(refused)
    response = client.post("/login/?next=/devices/", {"username": "alice",
                                                      "password": PASSWORD,
                                                      "next": "/devices/"})
    assert response.status_code == 302 and response["Location"] == "/devices/"
    assert "dev-a1" in text(client.get("/devices/"))
    assert LoginLog.objects.filter(username="alice", result="success").exists()
    assert LoginSession.objects.filter(user=world.alice, revoked__isnull=True).exists()
    client.post("/logout/")
    assert client.get("/").status_code == 302


def test_forced_logout_ends_the_console_session(world):
    """An administrator's forced logout ends the user's console session at the next page."""
    from webapp.system import actions
    from webapp.system.models import LoginSession

    client = Client()
    client.post("/login/", {"username": "alice", "password": PASSWORD})
    assert client.get("/devices/").status_code == 200
    session = LoginSession.objects.get(user=world.alice, revoked__isnull=True)
    actions.force_logout(acting_user=world.root, session=session)
    assert client.get("/devices/").status_code == 302


@pytest.mark.parametrize("path", GUARDED)
def test_users_without_permission_get_403(world, client_of, path):
    """A signed-in user whose roles lack the page's permission gets a 403 page."""
    response = client_of(world.nobody).get(path)
    assert response.status_code == 403
    assert "may not open this page" in text(response)


def test_forms_without_permission_get_403(world, client_of):
    """Commands, the desired state and alarm changes need their permissions."""
    from webapp.system.models import Role

    viewer = world.org.user("viewer", world.org.a, ("devices.view_device", "rules.view_alarm"),
                            scope="department")
    assert Role.objects.filter(users=viewer).exists()
    alarm = make_alarm(world.device_a)
    client = client_of(viewer)
    assert client.post("/devices/dev-a1/commands/", {
        "service": "env", "command": "set_interval", "p.seconds": "5"}).status_code == 403
    assert client.post("/devices/dev-a1/desired/", {"version": "0"}).status_code == 403
    assert client.post(f"/alarms/{alarm.pk}/acknowledge/").status_code == 403
    assert not DeviceCommand.objects.exists()
    alarm.refresh_from_db()
    assert alarm.status == "active"
    page = text(client.get("/devices/dev-a1/"))
    assert "command-form" not in page and "shadow-form" not in page


def test_dashboard_without_permissions_shows_no_records(world, client_of):
    """A user without permissions may open the dashboard but sees no figures."""
    page = text(client_of(world.nobody).get("/"))
    assert 'data-testid="stat-devices"' not in page
    assert 'data-testid="stat-products"' not in page
    assert "grant no access" in page


def test_department_a_never_sees_department_b(world, client_of, ingest):
    """Alice (department A) sees A's product, device, alarm and messages and none of B's,
    on every page; B's records answer 404."""
    make_alarm(world.device_a, name="Alarm of A")
    alarm_b = make_alarm(world.device_b, name="Alarm of B")
    ingest.send(log_event("dev-a1", False, "reason-of-a"), log_event("dev-b1", False,
                                                                      "reason-of-b"))
    client = client_of(world.alice)
    for path in PAGES:
        page = text(client.get(path))
        assert "dev-b1" not in page and "thermo-b" not in page, path
        assert "Alarm of B" not in page and "reason-of-b" not in page, path
    dashboard = text(client.get("/"))
    assert "reason-of-a" in dashboard
    assert 'data-testid="devices-unconnected">1<' in dashboard
    assert "dev-a1" in text(client.get("/devices/"))
    assert "dev-a1" in text(client.get("/map/devices.json"))
    assert "Alarm of A" in text(client.get("/alarms/"))
    for path in ["/devices/dev-b1/", "/products/thermo-b/"]:
        assert client.get(path).status_code == 404
    assert "No devices match" in text(client.get("/devices/?q=dev-b1"))
    assert client.post("/devices/dev-b1/commands/", {
        "service": "env", "command": "set_interval", "p.seconds": "5"}).status_code == 404
    assert client.post("/devices/dev-b1/desired/", {"version": "0"}).status_code == 404
    assert client.post(f"/alarms/{alarm_b.pk}/acknowledge/").status_code == 404
    assert client.post(f"/alarms/{alarm_b.pk}/clear/").status_code == 404
    alarm_b.refresh_from_db()
    assert alarm_b.status == "active"
    assert not DeviceCommand.objects.exists()


def test_superuser_sees_both_departments(world, client_of):
    """The superuser's data scope is everything."""
    page = text(client_of(world.root).get("/devices/"))
    assert "dev-a1" in page and "dev-b1" in page


def test_device_list_filters_and_pages(world, client_of):
    """Product, connection and search filters (the devices FilterSet) and pagination."""
    for n in range(30):
        create_device(f"bulk-{n:02d}", world.product_a, world.org.a)
    client = client_of(world.alice)
    first = text(client.get("/devices/"))
    assert "bulk-00" in first and "bulk-24" in first and "bulk-25" not in first
    assert "Page 1 of 2" in first and "31 records" in first
    second = text(client.get("/devices/?page=2"))
    assert "bulk-25" in second and "dev-a1" in second and "bulk-00" not in second
    found = text(client.get("/devices/?q=bulk-07"))
    assert "bulk-07" in found and "bulk-08" not in found and "1 record" in found
    world.device_a.connect_status = "online"
    world.device_a.save(update_fields=["connect_status"])
    online = text(client.get("/devices/?connect_status=online"))
    assert "dev-a1" in online and "bulk-00" not in online
    assert "bulk-01" in text(client.get("/devices/?product=thermo-a&q=bulk-01"))
    assert "No devices match" in text(client.get("/devices/?product=thermo-b"))
    assert "not valid" in text(client.get("/devices/?connect_status=bogus"))


def test_list_pages_keep_a_query_budget(world, client_of, django_assert_max_num_queries):
    """Lists, the dashboard and the detail pages cost the same few queries however many
    rows there are."""
    for n in range(25):
        device = create_device(f"bulk-{n:02d}", world.product_a, world.org.a)
        make_alarm(device)
    client = client_of(world.alice)
    # About 7 of these are the session, the user, their permissions and data scope.
    budgets = {"/devices/": 12, "/products/": 12, "/alarms/": 11, "/map/": 11, "/": 14,
               "/devices/dev-a1/": 20, "/products/thermo-a/": 17}
    for path, budget in budgets.items():
        client.get(path)  # warm caches (parameters, permissions of the session)
        with django_assert_max_num_queries(budget):
            assert client.get(path).status_code == 200, path


def test_product_page_renders_the_thing_model(world, client_of):
    """Services, properties with datatypes, ranges, units and access, commands with their
    parameters and events; staff with change permission get a link to the admin."""
    page = text(client_of(world.alice).get("/products/thermo-a/"))
    assert 'data-testid="service-env"' in page
    assert "temperature" in page and "Decimal" in page and "-40 … 125" in page
    assert "<td>C</td>" in page
    assert "Read, reported on change" in page
    assert "set_interval" in page and "1 … 3600" in page and "Request parameters" in page
    assert "overheat" in page and "eco, boost" in page
    assert "edit-in-admin" not in page  # alice is not staff
    staff_page = text(client_of(world.root).get("/products/thermo-a/"))
    assert f"/admin/products/product/{world.product_a.pk}/change/" in staff_page
    listing = text(client_of(world.alice).get("/products/"))
    assert "thermo-a" in listing and "?product=thermo-a" in listing


def test_device_page_shows_latest_values_and_the_message_log(world, client_of, ingest):
    """Latest values come from the shadow (Redis latest values); the log shows reasons."""
    ingest.send(data_event("dev-a1", "thermo-a", {"temperature": 23.5, "humidity": 40}),
                log_event("dev-a1", True),
                log_event("dev-a1", False, "temperature=500 is above max 125"))
    client = client_of(world.alice)
    page = text(client.get("/devices/dev-a1/"))
    assert 'data-testid="value-env.temperature"><span class="v">23.5</span>' in page
    assert 'data-testid="value-env.humidity"><span class="v">40</span>' in page
    assert "temperature=500 is above max 125" in page
    assert "/ws/devices/dev-a1/" in page
    assert "/api/v1/devices/dev-a1/telemetry/" in page
    rejected_only = text(client.get("/devices/dev-a1/?log=rejected"))
    assert rejected_only.count('<tr class="accepted">') == 0
    assert rejected_only.count('<tr class="rejected">') == 1
    accepted_only = text(client.get("/devices/dev-a1/?log=accepted"))
    assert accepted_only.count('<tr class="rejected">') == 0


def test_command_form_sends_typed_parameters_through_the_action(world, client_of):
    """The form's text becomes the thing model's types; the devices action stores it."""
    client = client_of(world.alice)
    page = text(client.get("/devices/dev-a1/"))
    assert 'data-testid="command-env.set_interval"' in page
    assert 'name="p.seconds"' in page and 'min="1" max="3600"' in page
    response = client.post("/devices/dev-a1/commands/", {
        "service": "env", "command": "set_interval", "p.seconds": "10"},
        HTTP_ACCEPT="application/json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "pending"
    command = DeviceCommand.objects.get(pk=body["id"])
    assert command.params == {"seconds": 10} and command.created_by == world.alice
    assert body["url"] == f"/api/v1/commands/{command.pk}/"
    out_of_range = client.post("/devices/dev-a1/commands/", {
        "service": "env", "command": "set_interval", "p.seconds": "99999"},
        HTTP_ACCEPT="application/json")
    assert out_of_range.status_code == 400
    assert out_of_range.json()["code"] == "invalid_command"
    not_a_number = client.post("/devices/dev-a1/commands/", {
        "service": "env", "command": "set_interval", "p.seconds": "ten"},
        HTTP_ACCEPT="application/json")
    assert not_a_number.status_code == 400 and "seconds" in not_a_number.json()["errors"]
    unknown = client.post("/devices/dev-a1/commands/", {"service": "env", "command": "nope"},
                          HTTP_ACCEPT="application/json")
    assert unknown.status_code == 400
    assert DeviceCommand.objects.count() == 1
    without_js = client.post("/devices/dev-a1/commands/", {
        "service": "env", "command": "set_interval", "p.seconds": "20"})
    assert without_js.status_code == 302
    assert "queued" in text(client.get("/devices/dev-a1/"))


def test_desired_state_editor_checks_the_version(world, client_of):
    """The editor sets desired values of writable properties at the version it read; a stale
    version is refused."""
    client = client_of(world.alice)
    page = text(client.get("/devices/dev-a1/"))
    assert 'name="d.env.target"' in page and 'name="d.env.mode"' in page
    assert 'name="d.env.temperature"' not in page  # read-only property
    response = client.post("/devices/dev-a1/desired/", {
        "version": "0", "d.env.target": "21.5", "d.env.mode": '"eco"'},
        HTTP_ACCEPT="application/json")
    assert response.status_code == 200, response.content
    assert response.json() == {"desired": {"env": {"target": 21.5, "mode": "eco"}},
                               "version": 1}
    shadow = DeviceShadow.objects.get(device=world.device_a)
    assert shadow.desired == {"env": {"target": 21.5, "mode": "eco"}} and shadow.version == 1
    stale = client.post("/devices/dev-a1/desired/", {"version": "0", "d.env.target": "22"},
                        HTTP_ACCEPT="application/json")
    assert stale.status_code == 409 and stale.json()["code"] == "version_conflict"
    out_of_range = client.post("/devices/dev-a1/desired/", {"version": "1",
                                                            "d.env.target": "99"},
                               HTTP_ACCEPT="application/json")
    assert out_of_range.status_code == 400
    page = text(client.get("/devices/dev-a1/"))
    assert "version 1" in page and 'value="21.5"' in page
    assert "selected>eco<" in page


def test_alarms_page_acknowledges_and_clears(world, client_of):
    """Open alarms are listed; acknowledge and clear go through the rules actions."""
    alarm = make_alarm(world.device_a, severity="critical")
    client = client_of(world.alice)
    page = text(client.get("/alarms/"))
    assert "Too hot" in page and "severity-critical" in page
    assert client.post(f"/alarms/{alarm.pk}/acknowledge/",
                       {"next": "/alarms/"}).status_code == 302
    alarm.refresh_from_db()
    assert alarm.status == "acknowledged" and alarm.acknowledged_by == world.alice
    client.post(f"/alarms/{alarm.pk}/clear/", {"reason": "fixed the valve"})
    alarm.refresh_from_db()
    assert alarm.status == "cleared" and alarm.cleared_by == world.alice
    assert f'data-alarm="{alarm.pk}"' not in text(client.get("/alarms/"))
    assert f'data-alarm="{alarm.pk}"' in text(client.get("/alarms/?status=cleared"))
    again = client.post(f"/alarms/{alarm.pk}/clear/")
    assert again.status_code == 302  # refused by the action, shown as a message
    assert "already cleared" in text(client.get("/alarms/?status=cleared"))


def test_navigation_follows_permissions_and_the_menu_tree(world, client_of):
    """Console sections follow permissions; staff get the admin pages of their menu tree."""
    alice_page = text(client_of(world.alice).get("/"))
    assert 'href="/devices/"' in alice_page and 'href="/alarms/"' in alice_page
    assert "/admin/system/user/" not in alice_page
    nobody_page = text(client_of(world.nobody).get("/"))
    assert 'href="/devices/"' not in nobody_page and 'href="/products/"' not in nobody_page
    root_page = text(client_of(world.root).get("/"))
    assert "/admin/system/user/" in root_page and "/admin/system/loginsession/" in root_page
    # rules have their console page now (tests/console/test_rules.py), not the admin's
    assert 'href="/rules/"' in root_page and "/admin/rules/rule/" not in root_page
    assert "/admin/rules/notificationchannel/" in root_page and "/admin/rules/sink/" in root_page


def test_language_switch_translates_the_console(world, client_of):
    """Switching to Simplified Chinese stores the user's language and translates pages."""
    client = client_of(world.alice)
    response = client.post("/language/", {"language": "zh-hans", "next": "/devices/"})
    assert response.status_code == 302 and response["Location"] == "/devices/"
    world.alice.refresh_from_db()
    assert world.alice.language == "zh-hans"
    page = text(client.get("/devices/"))
    assert "设备" in page and "退出登录" in page
    client.post("/language/", {"language": "en"})
    assert "Sign out" in text(client.get("/devices/"))
    anonymous = Client()
    anonymous.post("/language/", {"language": "zh-hans"})
    assert "登录" in text(anonymous.get("/login/"))


def test_password_page_changes_the_password_and_keeps_the_session(world):
    """The password page goes through the system action (policy, old password)."""
    client = Client()
    client.post("/login/", {"username": "alice", "password": PASSWORD})
    wrong = client.post("/password/", {"old_password": "nope", "new_password": "Aa-3456789x",
                                       "new_password_again": "Aa-3456789x"})
    assert "current password is wrong" in text(wrong)
    done = client.post("/password/", {"old_password": PASSWORD,
                                      "new_password": "Aa-3456789x",
                                      "new_password_again": "Aa-3456789x"})
    assert done.status_code == 302
    assert client.get("/devices/").status_code == 200
    world.alice.refresh_from_db()
    assert world.alice.check_password("Aa-3456789x")


def test_a_reset_password_must_be_changed_first(world, client_of):
    """A user whose password an administrator reset is sent to the password page."""
    world.alice.must_change_password = True
    world.alice.save(update_fields=["must_change_password"])
    response = client_of(world.alice).get("/devices/")
    assert response.status_code == 302 and response["Location"].startswith("/password/")


def test_dashboard_counts_devices_messages_and_alarms(world, client_of, ingest):
    """The dashboard counts devices by connection, the last hour's messages by result (kept
    by the ingest hook for the whole platform, read from the log for a department) and open
    alarms by severity, and lists the latest rejections."""
    make_alarm(world.device_a, severity="critical")
    make_alarm(world.device_b, name="Cold", severity="minor")
    ingest.send(status_event("dev-a1", "online"), log_event("dev-a1", True),
                log_event("dev-a1", False, "humidity=200 is above max 100"),
                log_event("dev-b1", False, "unknown service 'power'"))
    root = text(client_of(world.root).get("/"))
    assert 'data-testid="devices-online">1<' in root
    assert 'data-testid="devices-unconnected">1<' in root
    assert 'data-testid="messages-accepted">1<' in root
    assert 'data-testid="messages-rejected">2<' in root
    assert 'data-testid="alarms-critical">1<' in root and 'data-testid="alarms-minor">1<' in root
    assert "humidity=200 is above max 100" in root and "unknown service" in root
    assert 'data-testid="stat-products"' in root
    assert 'class="flash"' not in root  # the counts are not mistaken for flash messages
    alice = text(client_of(world.alice).get("/"))
    assert 'data-testid="messages-accepted">1<' in alice
    assert 'data-testid="messages-rejected">1<' in alice
    assert 'data-testid="alarms-critical">1<' in alice and 'data-testid="alarms-minor">0<' in alice
    assert "unknown service" not in alice


def test_connection_history_says_why_in_words(world, client_of):
    from django.utils import timezone

    from webapp.devices.models import DeviceConnection

    DeviceConnection.objects.create(device=world.device_a, event="offline", at=timezone.now(),
                                    reason="kicked", transport="mqtt", node="n1")
    DeviceConnection.objects.create(device=world.device_a, event="offline", at=timezone.now(),
                                    reason="something-new", transport="mqtt", node="n1")
    page = client_of(world.alice).get("/devices/dev-a1/").content.decode()
    assert "disconnected by an operator" in page and "something-new" in page
