"""Attacks on the console's pages added on 2026-12-06 (docs/security.md, "The console's pages"):
products/new and the thing-model editor, rules, dashboards (+ their data and WebSocket), the
map, the big screen, debugging (+ its WebSocket), alarms in bulk and one by one, OTA and the
profile.

Each test is an attempt through the real path (Django's test client, Channels'
WebsocketCommunicator on the real ASGI application) by a hostile scoped operator (alice of
department A, bob of B), a user without permissions (nobody) or an outsider (signed out,
another site's page). Each fails if the defence it names is removed.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone

from tests.console import conftest as console_fixtures

# The console's fixtures (tests/console/conftest.py): `world`, `client_of`, and its own Redis
# names and short-lived connections for every test here.
world = console_fixtures.world
client_of = console_fixtures.client_of
_own_redis_names = console_fixtures._own_redis_names
_no_persistent_connections = console_fixtures._no_persistent_connections

pytestmark = pytest.mark.django_db(transaction=True)

FIRMWARE = b"\x7fELF firmware " * 64
#: What alice and bob hold on top of the operator's permissions: every new page's.
ARMED = (
    "console.view_dashboard", "console.add_dashboard", "console.change_dashboard",
    "console.delete_dashboard", "rules.view_rule", "rules.add_rule", "rules.change_rule",
    "rules.delete_rule",
    "devices.debug_device", "telemetry.view_devicemessage", "ota.view_otapackage",
    "ota.add_otapackage", "ota.view_otacampaign", "ota.add_otacampaign",
    "ota.change_otacampaign", "ota.view_otatask", "products.add_product",
    "products.change_product",
)
XSS = '<script>alert(1)</script><img src=x onerror=alert(2)>'


class Arena:
    """The world, alice and bob armed, and one record of each kind in department B."""

    def __init__(self, world: Any) -> None:
        from webapp.console.models import Dashboard
        from webapp.devices import actions as device_actions
        from webapp.devices.models import DeviceGroup
        from webapp.ota import actions as ota_actions
        from webapp.rules import actions as rule_actions
        from webapp.rules.models import Alarm

        self.world = world
        for user in (world.alice, world.bob):
            user.roles.add(world.org.role(ARMED, "department"))
        now = timezone.now()
        self.group_b = DeviceGroup.objects.create(name="group of B", department=world.org.b)
        self.group_b.devices.add(world.device_b)
        self.group_a = DeviceGroup.objects.create(name="group of A", department=world.org.a)
        self.group_a.devices.add(world.device_a)
        self.dashboard_b = Dashboard.objects.create(name="board of B", department=world.org.b)
        self.dashboard_a = Dashboard.objects.create(name="board of A", department=world.org.a)
        self.alarm_b = Alarm.objects.create(name="alarm of B", device=world.device_b,
                                            product=world.product_b, severity="major",
                                            message="B", first_seen=now, last_seen=now)
        self.alarm_a = Alarm.objects.create(name="alarm of A", device=world.device_a,
                                            product=world.product_a, severity="major",
                                            message="A", first_seen=now, last_seen=now)
        self.rule_b = rule_actions.create_rule(acting_user=None, data=hot("thermo-b"))
        self.rule_a = rule_actions.create_rule(acting_user=None, data=hot("thermo-a"))
        self.package_b = ota_actions.create_package(
            acting_user=None, product=world.product_b, name="fw", version="1.0.0",
            package_type="firmware", upload=SimpleUploadedFile("fw.bin", FIRMWARE))
        self.package_a = ota_actions.create_package(
            acting_user=None, product=world.product_a, name="fw", version="1.0.0",
            package_type="firmware", upload=SimpleUploadedFile("fw.bin", FIRMWARE))
        self.campaign_b = ota_actions.create_campaign(
            acting_user=None, package=self.package_b, name="B roll", target_type="devices",
            devices=[world.device_b], start=False)
        self.campaign_a = ota_actions.create_campaign(
            acting_user=None, package=self.package_a, name="A roll", target_type="devices",
            devices=[world.device_a], start=False)
        self.command_b = device_actions.send_command(
            acting_user=None, device=world.device_b, service="env", command="set_interval",
            params={"seconds": 5})


def hot(product: str, **extra: Any) -> dict[str, Any]:
    rule = {"name": f"hot {product}", "enabled": True,
            "trigger": {"type": "property", "product": product, "service": "env",
                        "property": "temperature"},
            "condition": {"all": [{"service": "env", "property": "temperature", "op": ">",
                                   "value": 30}]},
            "actions": [{"type": "alarm", "severity": "major", "message": "too hot"}],
            "debounce": {}, "cooldown": 0, "fire_mode": "each", "auto_clear": True}
    rule.update(extra)
    return rule


@pytest.fixture
def arena(world):
    return Arena(world)


def post_json(client: Client, url: str, body: Any) -> Any:
    return client.post(url, data=body if isinstance(body, str | bytes) else json.dumps(body),
                       content_type="application/json")


# Every new endpoint ---------------------------------------------------------------------

NEW_PREFIXES = ("products/new/", "products/<str:identifier>/model/",
                "products/<str:identifier>/export/", "products/<str:identifier>/dashboard",
                "rules/", "dashboards/", "map/", "bigscreen/", "debug/", "alarms/bulk/",
                "alarms/<int:pk>/", "ota/", "profile/")


def console_routes() -> list[tuple[str, Any]]:
    resolver = get_resolver()
    found: list[tuple[str, Any]] = []

    def walk(patterns: list[Any], prefix: str) -> None:
        for p in patterns:
            if isinstance(p, URLResolver):
                walk(p.url_patterns, prefix + str(p.pattern))
            elif isinstance(p, URLPattern):
                found.append((prefix + str(p.pattern), p.callback))

    walk(resolver.url_patterns, "")
    return [(route, view) for route, view in found
            if route.lstrip("^").startswith(NEW_PREFIXES)]


def concrete(route: str, arena: Arena) -> str:
    """The route with department B's records in it."""
    url = "/" + route.lstrip("^")
    pk = arena.dashboard_b.pk
    if url.startswith("/rules/"):
        pk = arena.rule_b.pk
    elif url.startswith("/alarms/"):
        pk = arena.alarm_b.pk
    elif url.startswith("/ota/campaigns/"):
        pk = arena.campaign_b.pk
    return (url.replace("<int:pk>", str(pk)).replace("<str:identifier>.json", "dev-b1.json")
            .replace("/products/<str:identifier>/", "/products/thermo-b/")
            .replace("/rules/model/<str:identifier>/", "/rules/model/thermo-b/"))


def test_no_new_console_view_is_csrf_exempt():
    """The console relies on Django's CSRF middleware: an exempt view would take a POST of
    another site's page with the operator's cookies."""
    routes = console_routes()
    assert len(routes) >= 40
    for route, view in routes:
        assert not getattr(view, "csrf_exempt", False), route


def test_a_post_without_the_csrf_token_is_refused_everywhere(arena):
    """Signed in as root (who may do everything), every POST to a new page without the token
    is refused with 403 and changes nothing."""
    from webapp.console.models import Dashboard

    client = Client(enforce_csrf_checks=True)
    client.force_login(arena.world.root)
    for route, _view in console_routes():
        url = concrete(route, arena)
        answer = client.post(url, {"name": "x", "operation": "clear", "ids": [arena.alarm_b.pk],
                                   "device": "dev-b1", "text": "hi"})
        assert answer.status_code in (403, 405), (url, answer.status_code)
        answer = post_json(client, url, {"widgets": []})
        assert answer.status_code in (403, 405), (url, answer.status_code)
    arena.alarm_b.refresh_from_db()
    assert arena.alarm_b.status == "active"
    assert Dashboard.objects.count() == 2 and not arena.alarm_b.comments.exists()


@pytest.mark.parametrize("method", ["get", "post"])
def test_signed_out_gets_the_login_page_or_401_never_data(arena, method):
    client = Client()
    for route, _view in console_routes():
        url = concrete(route, arena)
        answer = getattr(client, method)(url)
        assert answer.status_code in (302, 401, 405), (url, answer.status_code)
        if answer.status_code == 302:
            assert answer["Location"].startswith("/login/?next="), url
        body = answer.content.decode()
        assert "dev-b1" not in body and "thermo-b" not in body.replace(url, ""), url


@pytest.mark.parametrize("method", ["get", "post"])
def test_a_user_without_permissions_gets_403_or_nothing(arena, client_of, method):
    """nobody (department A, no permission) gets 403 (or 401 JSON, or 405 for the wrong
    method) on every new page except their own profile."""
    client = client_of(arena.world.nobody)
    for route, _view in console_routes():
        url = concrete(route, arena).replace("thermo-b", "thermo-a").replace("dev-b1", "dev-a1")
        if url == "/profile/":
            continue
        answer = getattr(client, method)(url)
        assert answer.status_code in (403, 405), (url, answer.status_code)


@pytest.mark.parametrize("method", ["get", "post"])
def test_another_departments_ids_in_the_url_are_not_found(arena, client_of, method):
    """alice naming B's dashboard, rule, alarm, campaign, product or device in the URL gets
    404 (or a refusal), never B's data, and B's records stay as they were."""
    client = client_of(arena.world.alice)
    for route, _view in console_routes():
        url = concrete(route, arena)
        if not any(mark in url for mark in ("thermo-b", "dev-b1", f"/{arena.dashboard_b.pk}/",
                                            f"/{arena.rule_b.pk}/", f"/{arena.alarm_b.pk}/",
                                            f"/{arena.campaign_b.pk}/")):
            continue
        if "/rules/" in url and str(arena.rule_b.pk) not in url and "model" not in url:
            continue
        answer = getattr(client, method)(url, {"name": "mine now", "text": "x",
                                               "assignee": arena.world.alice.pk})
        assert answer.status_code in (404, 405), (url, answer.status_code)
    arena.dashboard_b.refresh_from_db()
    arena.rule_b.refresh_from_db()
    arena.campaign_b.refresh_from_db()
    arena.alarm_b.refresh_from_db()
    assert arena.dashboard_b.name == "board of B" and arena.rule_b.enabled
    assert arena.world.product_b.__class__.objects.filter(pk=arena.world.product_b.pk).exists()
    assert arena.campaign_b.status == "draft"
    assert arena.alarm_b.assignee is None and not arena.alarm_b.comments.exists()


def test_signed_out_and_other_departments_product_dashboard_device(arena, client_of):
    client = client_of(arena.world.alice)
    assert client.get("/products/thermo-a/dashboard/?device=dev-b1").status_code == 404
    assert client.get("/products/thermo-a/dashboard/counters/?device=dev-b1").status_code == 404


# Another department's ids in the body ---------------------------------------------------

def test_dashboard_layout_naming_another_departments_device_is_refused(arena, client_of):
    client = client_of(arena.world.alice)
    url = f"/dashboards/{arena.dashboard_a.pk}/layout/"
    for widget in (
            {"type": "value", "device": "dev-b1", "service": "env", "property": "temperature"},
            {"type": "map", "devices": ["dev-a1", "dev-b1"]},
            {"type": "table", "devices": ["dev-b1"]},
            {"type": "chart", "series": [{"device": "dev-b1", "service": "env",
                                          "property": "temperature"}]},
            {"type": "command", "device": "dev-b1", "service": "env",
             "command": "set_interval", "params": {"seconds": 5}}):
        answer = post_json(client, url, {"widgets": [{"id": "w1", "x": 0, "y": 0, "w": 4,
                                                      "h": 3, **widget}]})
        assert answer.status_code == 400, widget
        assert "dev-b1" in answer.json()["detail"]
    arena.dashboard_a.refresh_from_db()
    assert arena.dashboard_a.layout == {"widgets": []}


def test_a_command_widget_stored_by_root_does_not_reach_another_departments_device(
        arena, client_of):
    """A board of A whose command widget names dev-b1 (root may store it): alice pressing
    the button is refused, no command is queued."""
    from webapp.devices.models import DeviceCommand

    arena.dashboard_a.layout = {"widgets": [{"id": "w1", "type": "command", "device": "dev-b1",
                                             "service": "env", "command": "set_interval",
                                             "params": {"seconds": 5}, "x": 0, "y": 0, "w": 4,
                                             "h": 3}]}
    arena.dashboard_a.save()
    before = DeviceCommand.objects.count()
    answer = client_of(arena.world.alice).post(
        f"/dashboards/{arena.dashboard_a.pk}/command/", {"widget": "w1"})
    assert answer.status_code == 404 and answer.json()["code"] == "unknown_device"
    assert DeviceCommand.objects.count() == before
    page = client_of(arena.world.alice).get(f"/dashboards/{arena.dashboard_a.pk}/")
    assert page.status_code == 200 and "Boiler B" not in page.content.decode()


def test_widget_data_of_another_departments_devices_is_empty_or_refused(arena, client_of):
    client = client_of(arena.world.alice)
    assert client.get("/dashboards/data/series/?s=dev-b1:env.temperature&hours=1"
                      ).status_code == 400
    latest = client.get("/dashboards/data/latest/?d=dev-b1&d=dev-a1").json()
    assert "dev-b1" not in json.dumps(latest)
    positions = client.get("/dashboards/data/positions/?d=dev-b1").json()
    assert "dev-b1" not in json.dumps(positions)
    alarms = client.get("/dashboards/data/alarms/?d=dev-b1").json()
    assert alarms == {"alarms": []}
    alarms = client.get("/dashboards/data/alarms/").json()
    assert [a["name"] for a in alarms["alarms"]] == ["alarm of A"]


def test_a_dashboard_cannot_be_created_in_another_department(arena, client_of):
    from webapp.console.models import Dashboard

    client = client_of(arena.world.alice)
    client.post("/dashboards/new/", {"name": "planted", "department": arena.world.org.b.pk})
    client.post("/dashboards/new/", {"name": "planted2", "department": "²"})
    assert not Dashboard.objects.filter(name__startswith="planted",
                                        department=arena.world.org.b).exists()


def test_rule_body_naming_another_departments_records_is_refused(arena, client_of):
    from webapp.rules.models import NotificationChannel, Rule

    channel = NotificationChannel.objects.create(name="ops-b", channel_type="site",
                                                 department=arena.world.org.b)
    client = client_of(arena.world.alice)
    count = Rule.objects.count()
    for body in (hot("thermo-b"),
                 hot("thermo-a", actions=[{"type": "notify", "channel": channel.pk}]),
                 hot("thermo-a", actions=[{"type": "command", "device": "dev-b1",
                                           "service": "env", "command": "set_interval",
                                           "params": {"seconds": 5}}]),
                 hot("thermo-a", trigger={"type": "property", "product": "thermo-a",
                                          "service": "env", "property": "temperature",
                                          "group": arena.group_b.pk})):
        assert post_json(client, "/rules/new/", body).status_code == 400, body
    # moving one's own rule to B's product
    assert post_json(client, f"/rules/{arena.rule_a.pk}/", hot("thermo-b")).status_code == 400
    assert Rule.objects.count() == count
    arena.rule_a.refresh_from_db()
    assert arena.rule_a.product == arena.world.product_a


def test_rule_mass_assignment_of_department_owner_or_product_is_ignored(arena, client_of):
    from webapp.rules.models import Rule

    client = client_of(arena.world.alice)
    body = hot("thermo-a", name="sneaky")
    body.update(product=arena.world.product_b.pk, department=arena.world.org.b.pk,
                created_by=arena.world.bob.pk, id=arena.rule_b.pk,
                failed_at="2026-01-01T00:00:00Z")
    answer = post_json(client, "/rules/new/", body)
    assert answer.status_code == 200, answer.content
    rule = Rule.objects.get(name="sneaky")
    assert rule.pk != arena.rule_b.pk and rule.product == arena.world.product_a
    assert rule.failed_at is None
    arena.rule_b.refresh_from_db()
    assert arena.rule_b.name == "hot thermo-b"


def test_rule_test_with_another_departments_device_reads_nothing_of_it(arena, client_of,
                                                                      redis_client):
    """The test reads the latest values of the device it names: B's humidity (77.25) must
    not come back to alice as the value a condition compared."""
    from webapp.core.redis import keys

    redis_client.hset(keys().latest("dev-b1"), "env", json.dumps(
        {"humidity": {"value": 77.25, "ts": 1}}))
    redis_client.hset(keys().latest("dev-a1"), "env", json.dumps(
        {"humidity": {"value": 66.5, "ts": 1}}))
    rule = hot("thermo-a", name="humid", condition={"all": [
        {"service": "env", "property": "humidity", "op": ">", "value": 30}]})
    rule["trigger"] = {"type": "property", "product": "thermo-a", "service": "env",
                       "property": "temperature"}
    from webapp.rules import actions as rule_actions

    humid = rule_actions.create_rule(acting_user=None, data=rule)
    client = client_of(arena.world.alice)
    mine = post_json(client, f"/rules/{humid.pk}/test/",
                     {"device": "dev-a1", "values": {"temperature": 40}})
    assert mine.status_code == 200 and "66.5" in mine.content.decode()  # the probe works
    answer = post_json(client, f"/rules/{humid.pk}/test/",
                       {"device": "dev-b1", "values": {"temperature": 40}})
    assert "77.25" not in answer.content.decode()


def test_debug_actions_on_another_departments_devices_are_refused(arena, client_of):
    from webapp.devices.models import DeviceCommand

    client = client_of(arena.world.alice)
    for url in ("/debug/publish/", "/debug/simulate/", "/debug/disconnect/"):
        answer = client.post(url, {"device": "dev-b1", "suffix": "datas", "payload": "{}"})
        assert answer.status_code == 404, url
    before = DeviceCommand.objects.count()
    answer = client.post("/debug/broadcast/", {"product": "thermo-b", "service": "env",
                                               "command": "set_interval", "p.seconds": "5"})
    assert answer.status_code == 404
    answer = client.post("/debug/broadcast/", {"product": "thermo-a", "group": arena.group_b.pk,
                                               "service": "env", "command": "set_interval",
                                               "p.seconds": "5"})
    assert answer.status_code == 404
    assert DeviceCommand.objects.count() == before
    status = client.get(f"/debug/broadcast/status/?ids={arena.command_b.pk}").json()
    assert status == {"results": []}


def test_ota_bodies_naming_another_departments_records_are_refused(arena, client_of):
    from webapp.ota.models import OtaCampaign, OtaPackage

    client = client_of(arena.world.alice)
    answer = client.post("/ota/packages/upload/", {
        "product": "thermo-b", "name": "evil", "package_type": "firmware", "version": "6.6.6",
        "file": SimpleUploadedFile("fw.bin", FIRMWARE)})
    assert answer.status_code == 400
    assert not OtaPackage.objects.filter(version="6.6.6").exists()
    campaigns = OtaCampaign.objects.count()
    for body in ({"package": arena.package_b.pk, "target_type": "devices",
                  "devices": "dev-b1"},
                 {"package": arena.package_a.pk, "target_type": "devices",
                  "devices": "dev-a1 dev-b1"},
                 {"package": arena.package_a.pk, "target_type": "group",
                  "group": arena.group_b.pk}):
        answer = client.post("/ota/campaigns/new/", {"name": "evil", "task_timeout": 3600,
                                                     **body})
        assert answer.status_code == 400, body
    assert OtaCampaign.objects.count() == campaigns


def test_alarm_bodies_naming_another_departments_records_are_refused(arena, client_of):
    client = client_of(arena.world.alice)
    client.post("/alarms/bulk/", {"operation": "clear", "ids": [arena.alarm_b.pk]})
    client.post(f"/alarms/{arena.alarm_a.pk}/assign/", {"assignee": arena.world.bob.pk})
    arena.alarm_b.refresh_from_db()
    arena.alarm_a.refresh_from_db()
    assert arena.alarm_b.status == "active" and arena.alarm_a.assignee is None


def test_new_product_in_another_department_is_refused(arena, client_of):
    from webapp.products.models import Product

    client = client_of(arena.world.alice)
    answer = client.post("/products/new/", {
        "identifier": "planted", "name": "planted", "department": arena.world.org.b.pk,
        "product_type": "common", "protocol": "mqtt", "data_format": "json", "model": "[]"})
    assert answer.status_code == 400
    assert not Product.objects.filter(identifier="planted").exists()


def test_profile_post_sets_only_ones_own_settings(arena, client_of):
    from webapp.system.models import User

    client = client_of(arena.world.alice)
    answer = client.post("/profile/", {"nickname": "A", "is_superuser": "on", "is_staff": "on",
                                       "department": arena.world.org.b.pk,
                                       "username": "root2", "id": arena.world.bob.pk})
    assert answer.status_code == 302
    alice = User.objects.get(pk=arena.world.alice.pk)
    assert (alice.nickname, alice.is_superuser, alice.is_staff, alice.department_id,
            alice.username) == ("A", False, False, arena.world.org.a.pk, "alice")
    assert User.objects.get(pk=arena.world.bob.pk).nickname != "A"


def test_dashboard_layout_extra_fields_are_dropped(arena, client_of):
    client = client_of(arena.world.alice)
    answer = post_json(client, f"/dashboards/{arena.dashboard_a.pk}/layout/", {
        "department": arena.world.org.b.pk, "name": "x", "widgets": [
            {"id": "w1", "type": "value", "device": "dev-a1", "service": "env",
             "property": "temperature",
             "x": 0, "y": 0, "w": 4, "h": 3, "onclick": "alert(1)", "html": XSS}]})
    assert answer.status_code == 200, answer.content
    arena.dashboard_a.refresh_from_db()
    assert arena.dashboard_a.department == arena.world.org.a
    assert arena.dashboard_a.name == "board of A"
    [widget] = arena.dashboard_a.layout["widgets"]
    assert "onclick" not in widget and "html" not in widget
    assert set(arena.dashboard_a.layout) == {"widgets"}


# Open redirects -------------------------------------------------------------------------

@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/",
                                    "/\\evil.example/", "javascript:alert(1)"])
def test_next_never_leaves_the_site(arena, client_of, target):
    client = client_of(arena.world.alice)
    page = client.get("/password/", {"next": target}).content.decode()
    assert '<input type="hidden" name="next" value="">' in page
    for answer in (
            client.post("/alarms/bulk/", {"operation": "clear", "ids": [arena.alarm_a.pk],
                                          "next": target}),
            client.post(f"/alarms/{arena.alarm_a.pk}/acknowledge/", {"next": target}),
            client.post("/language/", {"language": "en", "next": target}),
            client.get("/login/", {"next": target}),
            client.post(f"/alarms/{arena.alarm_a.pk}/clear/", {"next": target})):
        assert answer.status_code == 302
        assert answer["Location"].startswith("/") and not answer["Location"].startswith("//")
        assert "evil" not in answer["Location"] and "javascript" not in answer["Location"]


# XSS ------------------------------------------------------------------------------------

def test_hostile_names_are_escaped_on_every_new_page(arena, client_of):
    """Names, titles, messages, comments and reasons with markup come back escaped in HTML
    (JSON for the scripts goes through json_script, and the scripts use textContent)."""
    from webapp.rules.models import AlarmComment

    world = arena.world
    world.device_a.name = XSS
    world.device_a.save()
    world.product_a.name = XSS
    world.product_a.save()
    arena.dashboard_a.name = XSS
    arena.dashboard_a.layout = {"widgets": [{"id": "w1", "type": "value", "device": "dev-a1",
                                             "service": "env", "property": "temperature",
                                             "title": XSS,
                                             "x": 0, "y": 0, "w": 4, "h": 3}]}
    arena.dashboard_a.save()
    arena.alarm_a.name = arena.alarm_a.message = XSS
    arena.alarm_a.save()
    AlarmComment.objects.create(alarm=arena.alarm_a, author=world.alice, text=XSS)
    arena.rule_a.name = arena.rule_a.description = XSS
    arena.rule_a.failure_reason = XSS
    arena.rule_a.save()
    client = client_of(world.alice)
    for url in ("/dashboards/", f"/dashboards/{arena.dashboard_a.pk}/",
                "/products/thermo-a/dashboard/", "/products/thermo-a/model/", "/map/",
                "/bigscreen/", "/debug/?product=thermo-a", "/alarms/",
                f"/alarms/{arena.alarm_a.pk}/", "/rules/", f"/rules/{arena.rule_a.pk}/",
                f"/rules/{arena.rule_a.pk}/", "/ota/", "/ota/campaigns/",
                f"/ota/campaigns/{arena.campaign_a.pk}/", "/ota/campaigns/new/"):
        answer = client.get(url)
        assert answer.status_code == 200, url
        body = answer.content.decode()
        assert "<script>alert" not in body and "<img src=x" not in body, url
    # a rejected model keeps what was typed, escaped
    answer = client.post("/products/new/", {"identifier": "x", "name": XSS, "model": json.dumps(
        [{"code": "env", "name": XSS, "properties": [{"code": XSS, "datatype": "int"}]}])})
    assert answer.status_code == 400
    assert "<script>alert" not in answer.content.decode()


def test_the_new_scripts_never_write_html_from_data():
    """The console's scripts build the DOM with textContent. Two HTML strings only: a
    Leaflet cluster count (a number), and the monitoring page's panels, which the server
    renders from its own template with Django's autoescaping exactly as on the page's first
    load (tests/console/test_monitoring.py: hostile names arrive escaped)."""
    import pathlib
    import re

    static = pathlib.Path(settings.BASE_DIR) / "webapp/console/static/console"
    sinks = re.compile(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|"
                       r"new Function|setAttribute\(\s*[\"']on")
    server_rendered = {("monitoring.js", "panels.innerHTML = body.html;")}
    for script in static.glob("*.js"):
        for number, line in enumerate(script.read_text().splitlines(), 1):
            if (script.name, line.strip()) in server_rendered:
                continue
            assert not sinks.search(line), f"{script.name}:{number}: {line.strip()}"
    assert "panels.innerHTML = body.html;" in (static / "monitoring.js").read_text()
    html_options = [line for line in (static / "map.js").read_text().splitlines()
                    if "html:" in line]
    assert len(html_options) == 1 and "children.length" in html_options[0]


# Malformed and oversized bodies ---------------------------------------------------------

DEEP = "[" * 100_000 + "]" * 100_000


def test_deeply_nested_json_is_refused_not_a_server_error(arena, client_of):
    client = client_of(arena.world.alice)
    client.raise_request_exception = False
    answers = {
        "model": client.post("/products/thermo-a/model/", {"model": DEEP[:200_000]}),
        "new": client.post("/products/new/", {"identifier": "deep", "name": "deep",
                                              "model": DEEP[:200_000]}),
        "import": client.post("/products/thermo-a/model/", {
            "action": "import", "import_file": SimpleUploadedFile("m.json", DEEP.encode()[
                :200_000])}),
        "import-new": client.post("/products/new/", {
            "action": "import", "import_file": SimpleUploadedFile("m.json", DEEP.encode()[
                :200_000])}),
        "publish": client.post("/debug/publish/", {"device": "dev-a1", "suffix": "datas",
                                                   "payload": DEEP[:60_000]}),
        "simulate": client.post("/debug/simulate/", {"device": "dev-a1", "suffix": "datas",
                                                     "payload": DEEP[:60_000]}),
        "layout": post_json(client, f"/dashboards/{arena.dashboard_a.pk}/layout/",
                            DEEP[:60_000]),
        "rule": post_json(client, "/rules/new/", DEEP[:200_000]),
        "test": post_json(client, f"/rules/{arena.rule_a.pk}/test/", DEEP[:200_000]),
    }
    simulated = answers.pop("simulate")  # handled as the edge would: rejected, not stored
    assert simulated.status_code == 200 and simulated.json()["accepted"] is False
    for name, answer in answers.items():
        assert answer.status_code in (400, 404, 409, 413), (name, answer.status_code)


@pytest.mark.parametrize("digit", ["²", "٣", "99999999999999999999999999"])
def test_odd_digits_in_ids_are_refused_not_a_server_error(arena, client_of, digit):
    """Unicode digits pass str.isdigit() but not int(); huge numbers overflow the database."""
    client = client_of(arena.world.alice)
    client.raise_request_exception = False
    answers = {
        "status": client.get(f"/debug/broadcast/status/?ids={digit}"),
        "broadcast": client.post("/debug/broadcast/", {
            "product": "thermo-a", "group": digit, "service": "env",
            "command": "set_interval", "p.seconds": "5"}),
        "bulk": client.post("/alarms/bulk/", {"operation": "clear", "ids": [digit]}),
        "assign": client.post(f"/alarms/{arena.alarm_a.pk}/assign/", {"assignee": digit}),
        "dashboard": client.post("/dashboards/new/", {"name": "d", "department": digit}),
        "counters": client.get(f"/products/thermo-a/dashboard/counters/?device=dev-a1"
                               f"&days={digit}"),
        "campaign": client.get(f"/ota/campaigns/new/?package={digit}"),
        "map": client.get(f"/map/devices.json?group={digit}"),
        "dashboard-pk": client.get(f"/dashboards/{digit}/"),
    }
    for name, answer in answers.items():
        assert answer.status_code < 500, (name, answer.status_code)


def test_oversized_bodies_are_refused(arena, client_of):
    client = client_of(arena.world.alice)
    big = "x" * (2 * 2**20)
    assert client.post("/products/thermo-a/model/", {"model": big}).status_code == 400
    assert post_json(client, f"/dashboards/{arena.dashboard_a.pk}/layout/",
                     json.dumps({"widgets": [], "pad": big})).status_code == 400
    assert post_json(client, "/rules/new/", json.dumps({"name": big})).status_code == 413
    assert client.post("/debug/publish/", {"device": "dev-a1", "suffix": "datas",
                                           "payload": big}).status_code == 400
    answer = client.post(f"/alarms/{arena.alarm_a.pk}/comment/", {"text": big[:5000]})
    assert answer.status_code == 302 and not arena.alarm_a.comments.exists()


# WebSockets -----------------------------------------------------------------------------

def headers_of(client: Client | None, origin: bytes = b"http://testserver"
               ) -> list[tuple[bytes, bytes]]:
    headers = [(b"origin", origin)]
    if client is not None:
        cookie = client.cookies[settings.SESSION_COOKIE_NAME].value
        headers.append((b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode()))
    return headers


async def connect(path: str, headers: list[tuple[bytes, bytes]]) -> tuple[Any, bool, Any]:
    from tests.console.test_live import open_socket

    return await open_socket(path, headers)


@pytest.mark.parametrize("who,path,origin", [
    (None, "/ws/debug/", b"http://testserver"),
    ("nobody", "/ws/debug/", b"http://testserver"),
    ("alice", "/ws/debug/", b"https://evil.example"),
    ("alice", "/ws/debug/", b"null"),
    (None, "/ws/dashboards/{a}/", b"http://testserver"),
    ("nobody", "/ws/dashboards/{a}/", b"http://testserver"),
    ("alice", "/ws/dashboards/{b}/", b"http://testserver"),
    ("alice", "/ws/dashboards/{a}/", b"https://evil.example"),
    ("alice", "/ws/dashboards/{a}/", b"http://testserver.evil.example"),
])
def test_sockets_refuse_outsiders_other_sites_and_other_departments(arena, client_of, who,
                                                                    path, origin):
    client = client_of(getattr(arena.world, who)) if who else None
    url = path.format(a=arena.dashboard_a.pk, b=arena.dashboard_b.pk)

    async def scenario() -> None:
        socket, connected, _code = await connect(url, headers_of(client, origin))
        assert not connected
        await socket.disconnect()

    async_to_sync(scenario)()


@pytest.mark.parametrize("path", ["/ws/debug/", "/ws/dashboards/{a}/"])
def test_a_socket_closes_when_its_user_loses_the_permission(arena, client_of, monkeypatch,
                                                            path):
    from channels.db import database_sync_to_async

    from webapp.console import live

    monkeypatch.setattr(live, "RENEW_S", 0.2)
    alice = arena.world.alice
    url = path.format(a=arena.dashboard_a.pk)
    headers = headers_of(client_of(alice))

    async def scenario() -> None:
        socket, connected, _code = await connect(url, headers)
        assert connected
        assert (await socket.receive_json_from(timeout=5))["type"] == "hello"
        await database_sync_to_async(lambda: alice.roles.clear())()
        closed = await socket.receive_output(timeout=5)
        assert closed == {"type": "websocket.close", "code": 4403}
        await socket.disconnect()

    async_to_sync(scenario)()


def test_a_dashboard_socket_closes_when_the_board_leaves_the_users_scope(arena, client_of,
                                                                        monkeypatch):
    from channels.db import database_sync_to_async

    from webapp.console import live

    monkeypatch.setattr(live, "RENEW_S", 0.2)
    headers = headers_of(client_of(arena.world.alice))

    async def scenario() -> None:
        socket, connected, _code = await connect(f"/ws/dashboards/{arena.dashboard_a.pk}/",
                                                 headers)
        assert connected
        await socket.receive_json_from(timeout=5)

        def move() -> None:
            arena.dashboard_a.department = arena.world.org.b
            arena.dashboard_a.save()

        await database_sync_to_async(move)()
        closed = await socket.receive_output(timeout=5)
        assert closed == {"type": "websocket.close", "code": 4403}
        await socket.disconnect()

    async_to_sync(scenario)()


# Bounded pages --------------------------------------------------------------------------

def test_pages_and_pickers_list_a_bounded_number_of_devices(arena, client_of, monkeypatch):
    """A product with very many devices: each page, picker and JSON lists at most its cap
    (lowered to 2 here, with 4 devices of thermo-a in alice's scope), and a broadcast that
    would reach more than its cap is refused."""
    from tests.console.conftest import create_device
    from webapp.console.views import dashboards as dashboard_views
    from webapp.console.views import debug as debug_views
    from webapp.console.views import device_map
    from webapp.console.views import rules as rule_views
    from webapp.devices.actions import debug as debug_actions
    from webapp.devices.models import DeviceCommand

    world = arena.world
    for n in (2, 3, 4):
        create_device(f"dev-a{n}", world.product_a, world.org.a, latitude="31.1",
                      longitude="121.1")
    for module, name in ((debug_views, "DEVICE_CHOICES"), (dashboard_views, "PICKER_LIMIT"),
                         (dashboard_views, "CATALOGUE_LIMIT"), (rule_views, "MAX_TARGETS"),
                         (device_map, "MAP_LIMIT"), (debug_actions, "MAX_BROADCAST_DEVICES")):
        monkeypatch.setattr(module, name, 2)
    client = client_of(world.alice)
    debug = client.get("/debug/").context
    assert len(debug["devices"]) == 2 and len(debug["page_config"]["devices"]) == 2
    product = client.get("/products/thermo-a/dashboard/").context
    assert len(product["choices"]) == 2 and product["truncated"]
    board = client.get(f"/dashboards/{arena.dashboard_a.pk}/").context["page_config"]
    assert len(board["catalogue"]["devices"]) == 2 and board["catalogue"]["truncated"]
    assert len(client.get("/rules/model/thermo-a/").json()["devices"]) == 2
    assert len(client.get(f"/rules/{arena.rule_a.pk}/").context["devices"]) == 2
    markers = client.get("/map/devices.json").json()
    assert len(markers["devices"]) == 2 and markers["truncated"]
    before = DeviceCommand.objects.count()
    answer = client.post("/debug/broadcast/", {"product": "thermo-a", "service": "env",
                                               "command": "set_interval", "p.seconds": "5"})
    assert answer.status_code == 400 and answer.json()["code"] == "too_many_devices"
    assert DeviceCommand.objects.count() == before


def test_the_alarm_page_shows_a_bounded_number_of_comments(arena, client_of, monkeypatch):
    from webapp.console.views import alarms
    from webapp.rules.models import AlarmComment

    monkeypatch.setattr(alarms, "COMMENTS_SHOWN", 3)
    for n in range(5):
        AlarmComment.objects.create(alarm=arena.alarm_a, author=arena.world.alice,
                                    text=f"note {n}")
    page = client_of(arena.world.alice).get(f"/alarms/{arena.alarm_a.pk}/")
    assert [c.text for c in page.context["comments"]] == ["note 2", "note 3", "note 4"]


@pytest.mark.parametrize("path", ["/ws/debug/", "/ws/dashboards/{a}/",
                                  "/ws/devices/dev-a1/"])
def test_malformed_frames_do_not_break_a_socket(arena, client_of, path):
    """Text that is not JSON, JSON that is not an object, a binary frame, huge filters: the
    socket answers the next ping (Channels' JSON consumer would end with an exception,
    leaving its renewing task and groups behind)."""
    headers = headers_of(client_of(arena.world.alice))
    url = path.format(a=arena.dashboard_a.pk)

    async def scenario() -> None:
        socket, connected, _code = await connect(url, headers)
        assert connected
        await socket.receive_json_from(timeout=5)
        for frame in ("{{{", "[]", "null", "1e999999", json.dumps(
                {"type": "filter", "device": "x" * 100_000, "product": ["thermo-b"]})):
            await socket.send_to(text_data=frame)
        await socket.send_to(bytes_data=b"\x00\xff")
        await socket.send_json_to({"type": "ping"})
        answers = []
        while True:
            answer = await socket.receive_json_from(timeout=5)
            answers.append(answer)
            if answer["type"] == "pong":
                break
        assert all(a.get("filters") == {} for a in answers if a["type"] == "filter")
        await socket.disconnect()

    async_to_sync(scenario)()


ODD = ["²", "99999999999999999999999999", "-1", "'\"<x>", "\x00", "a" * 5000, "2026-13-45",
       "nan", "1e999"]


@pytest.mark.parametrize("odd", ODD)
def test_odd_query_values_on_list_pages_are_no_server_error(arena, client_of, odd):
    from urllib.parse import quote

    client = client_of(arena.world.alice)
    client.raise_request_exception = False
    value = quote(odd)
    for url in ("/alarms/?assignee={v}&rule={v}&severity={v}&status={v}&start={v}&end={v}"
                "&page={v}&product={v}&device={v}&q={v}",
                "/rules/?product={v}&enabled={v}&trigger_type={v}&fire_mode={v}&state={v}"
                "&page={v}&q={v}",
                "/ota/?product={v}&page={v}", "/ota/campaigns/?status={v}&page={v}",
                "/ota/campaigns/new/?package={v}",
                "/map/?product={v}&status={v}&group={v}&q={v}",
                "/map/devices.json?product={v}&status={v}&group={v}&q={v}",
                "/debug/?product={v}", "/bigscreen/?refresh={v}", "/bigscreen/data.json",
                "/dashboards/data/series/?s={v}&hours={v}&start={v}&end={v}",
                "/dashboards/data/latest/?d={v}", "/dashboards/data/positions/?d={v}",
                "/dashboards/data/alarms/?d={v}",
                "/products/thermo-a/dashboard/?device={v}",
                "/products/thermo-a/dashboard/counters/?device=dev-a1&days={v}&tz={v}",
                "/products/thermo-a/export/?dialect={v}",
                "/debug/broadcast/status/?ids={v}",
                f"/dashboards/{arena.dashboard_a.pk}/?edit={{v}}"):
        answer = client.get(url.format(v=value))
        assert answer.status_code < 500, (url, answer.status_code)


def test_live_streams_carry_only_the_users_devices(arena, client_of):
    """The debug stream drops B's lines for alice (even when she filters on dev-b1), and a
    board of A naming dev-b1 (root may store it) does not follow dev-b1 for her."""
    from channels.layers import get_channel_layer

    from webapp.console import live

    arena.dashboard_a.layout = {"widgets": [
        {"id": "w1", "type": "table", "devices": ["dev-a1", "dev-b1"], "x": 0, "y": 0, "w": 4,
         "h": 3}]}
    arena.dashboard_a.save()
    headers = headers_of(client_of(arena.world.alice))

    def line(device: str) -> dict[str, Any]:
        return {"device": device, "direction": "up", "result": "accepted", "topic": "t",
                "payload": "{}", "ts": 1}

    async def scenario() -> None:
        layer = get_channel_layer()
        board, connected, _code = await connect(f"/ws/dashboards/{arena.dashboard_a.pk}/",
                                                headers)
        assert connected
        assert (await board.receive_json_from(timeout=5))["devices"] == ["dev-a1"]
        await layer.group_send(live.group_name("dev-b1"), {
            "type": "device.update", "data": {"device": "dev-b1", "points": []}})
        assert await board.receive_nothing(timeout=0.5)
        await board.disconnect()

        debug, connected, _code = await connect("/ws/debug/", headers)
        assert connected
        await debug.receive_json_from(timeout=5)
        await debug.send_json_to({"type": "filter", "device": "dev-b1"})
        await debug.receive_json_from(timeout=5)
        await layer.group_send(live.DEBUG_GROUP, {"type": "debug.lines",
                                                  "lines": [line("dev-b1")]})
        assert await debug.receive_nothing(timeout=0.5)
        await debug.send_json_to({"type": "filter"})
        await debug.receive_json_from(timeout=5)
        await layer.group_send(live.DEBUG_GROUP, {"type": "debug.lines",
                                                  "lines": [line("dev-b1"), line("dev-a1")]})
        lines = (await debug.receive_json_from(timeout=5))["lines"]
        assert [x["device"] for x in lines] == ["dev-a1"]
        await debug.disconnect()

    async_to_sync(scenario)()


def test_simulating_a_message_cannot_report_for_another_departments_device(
        arena, client_of, redis_client, redis_prefix):
    """alice simulates, from her dev-a1, a datas message naming dev-b1 (as a gateway would
    name its sub-devices), or publishes on a topic that climbs to dev-b1's: nothing is
    stored for dev-b1."""
    client = client_of(arena.world.alice)
    payload = json.dumps({"devices": [{"deviceId": "dev-b1", "services": [
        {"serviceCode": "env", "data": {"temperature": 99.5}}]}]})
    answer = client.post("/debug/simulate/", {"device": "dev-a1", "suffix": "datas",
                                              "payload": payload})
    assert answer.status_code == 200 and not answer.json()["landed"]
    stored = [fields for _id, fields in redis_client.xrange(f"{redis_prefix}uplink")]
    assert all(b"dev-b1" not in value for fields in stored for value in fields.values()
               if b'"t": "data"' in value or b'"t":"data"' in value), stored
    for suffix in ("../dev-b1/datas", "x/../../dev-b1/command", "#", "+/datas"):
        answer = client.post("/debug/publish/", {"device": "dev-a1", "suffix": suffix,
                                                 "payload": "{}", "format": "raw"})
        assert answer.status_code == 400, suffix
