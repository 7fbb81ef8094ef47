"""The big screen: its page (no console chrome, refresh bounds, permissions) and the figures
its script polls, each through the user's data scope."""

from __future__ import annotations

import pytest
from django.test import Client
from django.utils import timezone

from tests.console.conftest import log_event

pytestmark = pytest.mark.django_db

XSS = '<img src=x onerror="alert(1)">'


def make_alarm(device, name="Too hot", severity="major"):
    from webapp.rules.models import Alarm

    now = timezone.now()
    return Alarm.objects.create(name=name, device=device, product=device.product,
                                severity=severity, message=f"{name} on {device.identifier}",
                                first_seen=now, last_seen=now)


def figures(client: Client) -> dict:
    response = client.get("/bigscreen/data.json")
    assert response.status_code == 200, response.content[:300]
    assert response["Cache-Control"] == "no-store"
    return response.json()


def test_figures_follow_the_data_scope(world, client_of, ingest):
    from webapp.devices.models import Device

    Device.objects.filter(identifier="dev-b1").update(connect_status="online")
    make_alarm(world.device_a, "Alarm of A", "critical")
    make_alarm(world.device_b, "Alarm of B", "minor")
    ingest.send(log_event("dev-a1", True), log_event("dev-a1", False, "bad"),
                log_event("dev-b1", True))
    alice = figures(client_of(world.alice))
    assert alice["products"] == 1
    assert alice["devices"] == {"total": 1, "online": 0, "offline": 0, "unconnected": 1}
    assert alice["messages"]["accepted"] == 1 and alice["messages"]["rejected"] == 1
    assert alice["messages"]["per_minute"] == pytest.approx(2 / 60, abs=0.05)
    assert len(alice["messages"]["series"]) == 30 and sum(alice["messages"]["series"]) == 2
    assert alice["messages"]["series"][-1] + alice["messages"]["series"][-2] == 2
    assert alice["alarms"]["total"] == 1
    assert [a["name"] for a in alice["alarms"]["latest"]] == ["Alarm of A"]
    assert {a["severity"]: a["count"] for a in alice["alarms"]["levels"]}["critical"] == 1
    assert alice["top_products"] == [{"id": "thermo-a", "name": "Thermometer thermo-a",
                                      "devices": 1, "online": 0}]
    bob = figures(client_of(world.bob))
    assert bob["devices"]["online"] == 1 and bob["devices"]["total"] == 1
    assert [a["name"] for a in bob["alarms"]["latest"]] == ["Alarm of B"]
    assert "dev-a1" not in str(bob) and "Alarm of A" not in str(bob)
    root = figures(client_of(world.root))
    assert root["products"] == 2 and root["devices"]["total"] == 2
    assert root["alarms"]["total"] == 2
    assert len(root["messages"]["series"]) == 30 and sum(root["messages"]["series"]) == 3


def test_message_series_counts_each_minute_of_the_log(world, client_of, ingest):
    """A scoped user's series comes from the log: a message 10 minutes ago lands 10 bars
    before the current one, one older than the series is left out."""
    from tests.console.conftest import now_ms

    now = now_ms()
    ingest.send(log_event("dev-a1", True, ts=now - 10 * 60_000),
                log_event("dev-a1", True, ts=now - 10 * 60_000),
                log_event("dev-a1", True, ts=now - 45 * 60_000),
                log_event("dev-b1", True, ts=now))
    series = figures(client_of(world.alice))["messages"]["series"]
    assert sum(series) == 2 and 2 in (series[-11], series[-12])


def test_cleared_alarms_are_not_shown(world, client_of):
    alarm = make_alarm(world.device_a)
    alarm.status = "cleared"
    alarm.save(update_fields=["status"])
    assert figures(client_of(world.alice))["alarms"]["total"] == 0


def test_sections_follow_permissions(world, client_of):
    only_devices = world.org.user("viewer", world.org.a, ("devices.view_device",),
                                  scope="department")
    answer = figures(client_of(only_devices))
    assert answer["products"] is None and answer["alarms"] is None
    page = client_of(only_devices).get("/bigscreen/").content.decode()
    assert 'data-testid="bs-alarms"' not in page and 'data-testid="bs-products"' not in page


def test_page_and_data_need_the_permission(world, client_of):
    nobody = client_of(world.nobody)
    assert nobody.get("/bigscreen/").status_code == 403
    assert nobody.get("/bigscreen/data.json").status_code == 403
    assert Client().get("/bigscreen/").status_code == 302
    ended = Client().get("/bigscreen/data.json")
    assert ended.status_code == 401 and ended.json() == {"error": "signed_out"}


def test_page_is_full_screen_without_the_console_chrome(world, client_of):
    page = client_of(world.alice).get("/bigscreen/").content.decode()
    assert 'class="bigscreen"' in page and 'class="sidebar"' not in page
    assert "data-bs-fullscreen" in page and "console/bigscreen.js" in page
    assert 'data-url="/bigscreen/data.json"' in page and 'data-url="/map/devices.json"' in page
    assert 'data-testid="bs-devices">1<' in page
    assert 'data-refresh="30"' in page


@pytest.mark.parametrize(("given", "used"), [("10", 10), ("1", 5), ("0", 5), ("-5", 5),
                                             ("100000", 300), ("abc", 30), ("", 30)])
def test_refresh_is_bounded(world, client_of, given, used):
    page = client_of(world.alice).get(f"/bigscreen/?refresh={given}").content.decode()
    assert f'data-refresh="{used}"' in page


def test_hostile_names_stay_text(world, client_of):
    from webapp.products.models import Product

    make_alarm(world.device_a, XSS)
    Product.objects.filter(identifier="thermo-a").update(name=XSS)
    client = client_of(world.alice)
    answer = figures(client)
    assert answer["alarms"]["latest"][0]["name"] == XSS
    assert answer["top_products"][0]["name"] == XSS
    page = client.get("/bigscreen/").content.decode()
    assert "<img src=x" not in page
    from pathlib import Path

    script = (Path(__file__).resolve().parents[2]
              / "webapp/console/static/console/bigscreen.js").read_text()
    assert "innerHTML" not in script and "insertAdjacentHTML" not in script


def test_navigation_offers_the_big_screen(world, client_of):
    assert 'href="/bigscreen/"' in client_of(world.alice).get("/").content.decode()
    assert 'href="/bigscreen/"' not in client_of(world.nobody).get("/").content.decode()
