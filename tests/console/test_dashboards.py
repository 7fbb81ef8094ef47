"""Dashboards in the console: the product dashboard generated from the thing model, custom
dashboards (pages, layout validation, scope, permissions), the widgets' JSON and the
dashboard WebSocket."""

from __future__ import annotations

import json
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async

from tests.console.conftest import OPERATOR_PERMISSIONS, create_device, data_event, now_ms
from tests.console.test_live import headers_of, open_socket
from webapp.console import live
from webapp.console.models import Dashboard

pytestmark = pytest.mark.django_db

BOARD_PERMISSIONS = ("console.view_dashboard", "console.add_dashboard",
                     "console.change_dashboard", "console.delete_dashboard")


@pytest.fixture
def boards(world):
    """alice (A) and bob (B) may use dashboards; `viewer` of A may only look at them."""
    role = world.org.role(BOARD_PERMISSIONS, scope="department")
    world.alice.roles.add(role)
    world.bob.roles.add(role)
    world.viewer = world.org.user("viewer", world.org.a,
                                  (*OPERATOR_PERMISSIONS, "console.view_dashboard"),
                                  scope="department")
    world.board_a = Dashboard.objects.create(name="Boilers of A", department=world.org.a,
                                             created_by=world.alice)
    return world


def chart(*series: tuple[str, str], **extra: Any) -> dict[str, Any]:
    return {"id": "c1", "type": "chart", "x": 0, "y": 0, "w": 6, "h": 4,
            "series": [{"device": d, "service": "env", "property": p} for d, p in series],
            "window": {"hours": 6}, **extra}


def save(client, pk: int, layout: Any) -> Any:
    body = layout if isinstance(layout, str | bytes) else json.dumps(layout)
    return client.post(f"/dashboards/{pk}/layout/", body, content_type="application/json")


# The product dashboard ---------------------------------------------------------------------

def test_product_dashboard_shows_gauges_states_commands_and_alarms(world, client_of, ingest):
    from django.utils import timezone

    from webapp.rules.models import Alarm

    ingest.send(data_event("dev-a1", "thermo-a", {"temperature": 21.5, "humidity": 40,
                                                  "mode": "eco"}))
    now = timezone.now()
    Alarm.objects.create(name="Too hot", device=world.device_a, product=world.product_a,
                         severity="major", status="active", message="above 30",
                         first_seen=now, last_seen=now)
    response = client_of(world.alice).get("/products/thermo-a/dashboard/?device=dev-a1")
    assert response.status_code == 200
    html = response.content.decode()
    # temperature (-40…125) and target (5…30) are gauges; humidity (0…100) too; mode a state.
    for key in ("env.temperature", "env.target", "env.humidity"):
        assert f'data-testid="gauge-{key}"' in html
    assert 'data-testid="timeline-env.mode"' in html
    assert 'data-testid="command-env.set_interval"' in html
    assert "Too hot" in html
    config = response.context["page_config"]
    assert config["latest"]["env"]["temperature"]["value"] == 21.5
    assert config["ws"] == "/ws/devices/dev-a1/"


def test_product_dashboard_scope_and_permissions(world, client_of):
    bob = client_of(world.bob)
    assert bob.get("/products/thermo-a/dashboard/").status_code == 404
    assert bob.get("/products/thermo-b/dashboard/?device=dev-a1").status_code == 404
    assert client_of(world.nobody).get("/products/thermo-a/dashboard/").status_code == 403
    # Without a device chosen: the first of the product's devices in scope.
    response = client_of(world.alice).get("/products/thermo-a/dashboard/")
    assert response.context["device"].identifier == "dev-a1"


def test_the_device_page_links_its_product_dashboard_for_that_device(world, client_of):
    page = client_of(world.alice).get("/devices/dev-a1/").content.decode()
    assert 'href="/products/thermo-a/dashboard/?device=dev-a1"' in page
    assert client_of(world.alice).get("/products/thermo-a/dashboard/?device=dev-a1"
                                      ).context["device"].identifier == "dev-a1"


def test_counters_are_daily_increases_in_the_viewers_time_zone(world, client_of, ingest):
    """Integer properties named as totals are counters: the page shows their increase per
    local day (maximum minus minimum of the day, in the zone the browser sends)."""
    from zoneinfo import ZoneInfo

    from webapp.products import actions

    payload = {"identifier": "meter", "name": "Meter", "product_type": "common",
               "protocol": "mqtt", "services": [{"code": "env", "name": "Env", "properties": [
                   {"code": "energy_total", "datatype": "int", "unit": "Wh"},
                   {"code": "power", "datatype": "decimal", "unit": "W"}],
                   "commands": [], "events": []}]}
    product = actions.create_product(acting_user=None, data=payload)
    product.department = world.org.a
    product.save(update_fields=["department"])
    create_device("meter-1", product, world.org.a)
    zone = ZoneInfo("Asia/Shanghai")
    from datetime import datetime, timedelta
    today = datetime.now(zone).replace(hour=0, minute=0, second=0, microsecond=0)
    ms = [int((today + timedelta(hours=h)).timestamp() * 1000) for h in (-20, -10, 0.5, 0.75)]
    ms = [m for m in ms if m < now_ms()]
    values = [100, 160, 170, 200][:len(ms)]
    ingest.send(*[{**data_event("meter-1", "meter", {"energy_total": v}, t), "svc": "env"}
                  for v, t in zip(values, ms)])
    alice = client_of(world.alice)
    page = alice.get("/products/meter/dashboard/?device=meter-1")
    assert 'data-testid="counter-env.energy_total"' in page.content.decode()
    assert 'data-testid="gauge-env.power"' not in page.content.decode()  # no range: a reading
    response = alice.get("/products/meter/dashboard/counters/",
                         {"device": "meter-1", "days": "3", "tz": "Asia/Shanghai"})
    assert response.status_code == 200, response.content
    [result] = response.json()["results"]
    days = {d["day"]: d["delta"] for d in result["days"]}
    assert days[(today - timedelta(days=1)).date().isoformat()] == 60
    if len(ms) == 4:
        assert days[today.date().isoformat()] == 30
    assert alice.get("/products/meter/dashboard/counters/",
                     {"device": "meter-1", "tz": "Mars/Olympus"}).status_code == 400
    assert alice.get("/products/meter/dashboard/counters/",
                     {"device": "meter-1", "days": "400"}).status_code == 400
    assert client_of(world.bob).get("/products/meter/dashboard/counters/",
                                    {"device": "meter-1"}).status_code == 404


# Custom dashboards: pages and changes -------------------------------------------------------

def test_list_create_rename_delete(boards, client_of):
    alice = client_of(boards.alice)
    response = alice.get("/dashboards/")
    assert response.status_code == 200 and "Boilers of A" in response.content.decode()
    response = alice.post("/dashboards/new/", {"name": "Heating", "department": boards.org.a.pk})
    board = Dashboard.objects.get(name="Heating")
    assert response.status_code == 302 and response["Location"] == f"/dashboards/{board.pk}/?edit=1"
    assert board.department == boards.org.a and board.created_by == boards.alice
    assert alice.post(f"/dashboards/{board.pk}/rename/", {"name": "Heating 2"}).status_code == 302
    board.refresh_from_db()
    assert board.name == "Heating 2"
    alice.post(f"/dashboards/{board.pk}/rename/", {"name": ""})
    board.refresh_from_db()
    assert board.name == "Heating 2"
    assert alice.get(f"/dashboards/{board.pk}/").status_code == 200
    assert alice.post(f"/dashboards/{board.pk}/delete/").status_code == 302
    assert not Dashboard.objects.filter(pk=board.pk).exists()


def test_a_dashboard_cannot_be_given_to_a_department_out_of_scope(boards, client_of):
    client_of(boards.alice).post("/dashboards/new/", {"name": "Sneaky",
                                                      "department": boards.org.b.pk})
    client_of(boards.alice).post("/dashboards/new/", {"name": "Sneaky", "department": "x"})
    assert not Dashboard.objects.filter(name="Sneaky").exists()


def test_bob_cannot_see_or_change_a_dashboard_of_a(boards, client_of):
    bob = client_of(boards.bob)
    pk = boards.board_a.pk
    assert "Boilers of A" not in bob.get("/dashboards/").content.decode()
    assert bob.get(f"/dashboards/{pk}/").status_code == 404
    assert bob.post(f"/dashboards/{pk}/rename/", {"name": "Mine"}).status_code == 404
    assert save(bob, pk, {"widgets": []}).status_code == 404
    assert bob.post(f"/dashboards/{pk}/delete/").status_code == 404
    assert bob.post(f"/dashboards/{pk}/command/", {"widget": "x"}).status_code == 404
    assert Dashboard.objects.filter(pk=pk, name="Boilers of A").exists()


def test_permissions(boards, client_of):
    viewer = client_of(boards.viewer)
    pk = boards.board_a.pk
    assert viewer.get(f"/dashboards/{pk}/").status_code == 200  # shared in the department
    assert viewer.post("/dashboards/new/", {"name": "x"}).status_code == 403
    assert viewer.post(f"/dashboards/{pk}/rename/", {"name": "x"}).status_code == 403
    assert save(viewer, pk, {"widgets": []}).status_code == 403
    assert viewer.post(f"/dashboards/{pk}/delete/").status_code == 403
    nobody = client_of(boards.nobody)
    assert nobody.get("/dashboards/").status_code == 403
    assert nobody.get("/dashboards/data/series/?s=dev-a1:env.temperature").status_code == 403
    assert client_of(boards.alice).get("/dashboards/").status_code == 200


# Layouts ------------------------------------------------------------------------------------

def test_a_layout_with_every_widget_is_saved_cleaned(boards, client_of):
    layout = {"widgets": [
        chart(("dev-a1", "temperature"), ("dev-a1", "humidity"), title="Climate"),
        {"id": "g1", "type": "gauge", "x": 6, "y": 0, "w": 3, "h": 3, "device": "dev-a1",
         "service": "env", "property": "temperature", "extra": "dropped"},
        {"id": "v1", "type": "value", "x": 9, "y": 0, "w": 3, "h": 2, "device": "dev-a1",
         "service": "env", "property": "mode"},
        {"id": "m1", "type": "map", "x": 0, "y": 4, "w": 4, "h": 3, "devices": ["dev-a1"]},
        {"id": "a1", "type": "alarms", "x": 4, "y": 4, "w": 4, "h": 3, "devices": []},
        {"id": "t1", "type": "table", "x": 8, "y": 4, "w": 4, "h": 3, "devices": ["dev-a1"],
         "properties": ["env.temperature", "env.mode"]},
        {"id": "b1", "type": "command", "x": 0, "y": 7, "w": 3, "h": 2, "device": "dev-a1",
         "service": "env", "command": "set_interval", "params": {"seconds": 30}},
        {"id": "c2", "type": "chart", "x": 3, "y": 7, "w": 6, "h": 3,
         "series": [{"device": "dev-a1", "service": "env", "property": "temperature"}],
         "window": {"from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z"}},
    ]}
    response = save(client_of(boards.alice), boards.board_a.pk, layout)
    assert response.status_code == 200, response.content
    boards.board_a.refresh_from_db()
    stored = boards.board_a.layout["widgets"]
    assert [w["id"] for w in stored] == ["c1", "g1", "v1", "m1", "a1", "t1", "b1", "c2"]
    assert "extra" not in stored[1]
    assert stored[0]["title"] == "Climate" and len(stored[0]["series"]) == 2
    assert stored[7]["window"]["from"].startswith("2026-01-01T00:00:00")


@pytest.mark.parametrize(("layout", "problem"), [
    ("{not json", "not valid JSON"),
    ("[]", "list of widgets"),
    ({"widgets": [chart(("dev-b1", "temperature"))]}, "dev-b1 does not exist or is outside"),
    ({"widgets": [chart(("no-such", "temperature"))]}, "no-such does not exist"),
    ({"widgets": [chart(("dev-a1", "pressure"))]}, "has no property env.pressure"),
    ({"widgets": [{"id": "g", "type": "gauge", "device": "dev-a1", "service": "env",
                   "property": "mode"}]}, "is not a number"),
    ({"widgets": [{"id": "x", "type": "iframe"}]}, "Unknown widget type"),
    ({"widgets": [{**chart(("dev-a1", "temperature")), "x": 10, "w": 6}]}, "x must be"),
    ({"widgets": [{**chart(("dev-a1", "temperature")), "h": 10 ** 9}]}, "h must be"),
    ({"widgets": [chart(*[("dev-a1", "temperature")] * 9)]}, "from 1 to 8 series"),
    ({"widgets": [chart(("dev-a1", "temperature"), window={"hours": 100000})]}, "hours"),
    ({"widgets": [chart(("dev-a1", "temperature"), window={
        "from": "2026-01-01T00:00:00Z", "to": "2026-03-01T00:00:00Z"})]}, "at most 31 days"),
    ({"widgets": [chart(("dev-a1", "temperature")), chart(("dev-a1", "humidity"))]},
     "id of its own"),
    ({"widgets": [{"id": "t", "type": "table", "devices": ["dev-a1", "dev-b1"],
                   "properties": ["env.temperature"]}]}, "dev-b1 does not exist"),
    ({"widgets": [{"id": "m", "type": "map", "devices": ["dev-b1"]}]}, "dev-b1"),
    ({"widgets": [{"id": "b", "type": "command", "device": "dev-a1", "service": "env",
                   "command": "reboot"}]}, "Command env.reboot"),
    ({"widgets": [{"id": "b", "type": "command", "device": "dev-a1", "service": "env",
                   "command": "set_interval", "params": {"seconds": 99999}}]},
     "Command env.set_interval"),
    ({"widgets": [{**chart(("dev-a1", "temperature")), "title": "x" * 101}]}, "title"),
    ({"widgets": [chart(("dev-a1", "temperature")),
                  {"id": "g", "type": "gauge", "x": 5, "y": 3, "w": 3, "h": 3,
                   "device": "dev-a1", "service": "env", "property": "temperature"}]},
     "Widgets c1 and g overlap"),
    ({"widgets": [{"id": "b", "type": "command", "device": "dev-a1", "service": "env",
                   "command": "set_interval", "params": "{seconds: 1"}]}, "JSON object"),
    ({"widgets": [{"id": f"w{n}", "type": "value", "device": "dev-a1", "service": "env",
                   "property": "mode", "y": n} for n in range(25)]}, "at most 24 widgets"),
    ("x" * 70_000, "larger than"),
    ({"widgets": [{"id": "<script>", "type": "value", "device": "dev-a1", "service": "env",
                   "property": "mode"}]}, "id of its own"),
])
def test_bad_layouts_are_refused(boards, client_of, layout, problem):
    response = save(client_of(boards.alice), boards.board_a.pk, layout)
    assert response.status_code == 400, response.content
    assert problem in response.json()["detail"]
    boards.board_a.refresh_from_db()
    assert boards.board_a.layout == {"widgets": []}


def test_the_command_button_sends_its_configured_command(boards, client_of):
    from webapp.devices.models import DeviceCommand

    boards.board_a.layout = {"widgets": [{"id": "b1", "type": "command", "device": "dev-a1",
                                          "service": "env", "command": "set_interval",
                                          "params": {"seconds": 30}, "x": 0, "y": 0, "w": 3,
                                          "h": 2}]}
    boards.board_a.save()
    response = client_of(boards.alice).post(f"/dashboards/{boards.board_a.pk}/command/",
                                            {"widget": "b1"})
    assert response.status_code == 201, response.content
    command = DeviceCommand.objects.get()
    assert command.params == {"seconds": 30} and command.created_by == boards.alice
    assert client_of(boards.alice).post(f"/dashboards/{boards.board_a.pk}/command/",
                                        {"widget": "nope"}).status_code == 404
    # A viewer of the dashboard without devices.add_devicecommand.
    role = boards.org.role(("devices.view_device", "console.view_dashboard"),
                           scope="department")
    looker = boards.org.user("looker", boards.org.a, roles=[role])
    assert client_of(looker).post(f"/dashboards/{boards.board_a.pk}/command/",
                                  {"widget": "b1"}).status_code == 403
    assert DeviceCommand.objects.count() == 1


# Widget data --------------------------------------------------------------------------------

def test_series_latest_and_alarms_read_through_the_scope(boards, client_of, ingest):
    start = now_ms() - 600_000
    ingest.send(*[data_event("dev-a1", "thermo-a", {"temperature": 20.0 + n, "humidity": 40 + n,
                                                    "mode": "eco" if n % 2 else "boost"},
                             start + n * 60_000) for n in range(5)],
                data_event("dev-a1", "thermo-a", {"temperature": 24.0}, start + 5 * 60_000),
                data_event("dev-b1", "thermo-b", {"temperature": 99.0}))
    alice = client_of(boards.alice)
    response = alice.get("/dashboards/data/series/", {
        "s": ["dev-a1:env.temperature", "dev-a1:env.humidity", "dev-a1:env.mode"],
        "hours": "1"})
    assert response.status_code == 200, response.content
    temperature, humidity, mode = response.json()["series"]
    assert [p[1] for p in temperature["points"]] == [20.0, 21.0, 22.0, 23.0, 24.0, 24.0]
    assert temperature["unit"] == "C" and temperature["interval"] == 8  # 3600 s / 500
    assert len(humidity["points"]) == 5
    # The report of the temperature alone is no state of the mode.
    assert [p[1] for p in mode["points"]] == ["boost", "eco", "boost", "eco", "boost"]
    for query in ({"s": "dev-b1:env.temperature"}, {"s": "dev-a1:env.pressure"}):
        assert alice.get("/dashboards/data/series/", query).status_code == 400
    for query in ({"s": "dev-a1:env.temperature", "hours": "100000"},
                  {"s": "dev-a1:env.temperature", "start": "2026-01-01T00:00:00Z",
                   "end": "2026-06-01T00:00:00Z"},
                  {"s": ["dev-a1:env.temperature"] * 9}, {"s": "../../etc"}, {}):
        assert alice.get("/dashboards/data/series/", query).status_code == 400, query
    latest = alice.get("/dashboards/data/latest/", {"d": ["dev-a1", "dev-b1"]}).json()
    assert [d["device"] for d in latest["devices"]] == ["dev-a1"]
    assert latest["devices"][0]["values"]["env"]["temperature"]["value"] == 24.0
    assert latest["devices"][0]["lat"] == pytest.approx(31.2304)
    assert alice.get("/dashboards/data/alarms/").json() == {"alarms": []}
    positions = alice.get("/dashboards/data/positions/", {"d": ["dev-a1", "dev-b1"]}).json()
    assert [(d["id"], d["lat"]) for d in positions["devices"]] == [("dev-a1", 31.2304)]
    assert positions["unplaced"] == []


def test_the_dashboard_page_carries_only_devices_in_scope(boards, client_of):
    boards.board_a.layout = {"widgets": [chart(("dev-a1", "temperature"))]}
    boards.board_a.save()
    response = client_of(boards.alice).get(f"/dashboards/{boards.board_a.pk}/")
    config = response.context["page_config"]
    assert set(config["meta"]) == {"dev-a1"}
    assert [d["id"] for d in config["catalogue"]["devices"]] == ["dev-a1"]
    assert "catalogue" not in client_of(boards.viewer).get(
        f"/dashboards/{boards.board_a.pk}/").context["page_config"]


def test_navigation_lists_dashboards_by_permission(boards, client_of):
    assert 'href="/dashboards/"' in client_of(boards.alice).get("/").content.decode()
    assert 'href="/dashboards/"' not in client_of(boards.nobody).get("/").content.decode()


# The dashboard WebSocket -------------------------------------------------------------------

pytestmark_transactional = pytest.mark.django_db(transaction=True)


@pytestmark_transactional
def test_a_dashboard_socket_receives_values_of_its_devices(boards, client_of, ingest):
    boards.board_a.layout = {"widgets": [chart(("dev-a1", "temperature"))]}
    boards.board_a.save()
    headers = headers_of(client_of(boards.alice))
    path = f"/ws/dashboards/{boards.board_a.pk}/"

    async def scenario() -> None:
        socket, connected, _code = await open_socket(path, headers)
        assert connected
        assert await socket.receive_json_from(timeout=5) == {
            "type": "hello", "dashboard": boards.board_a.pk, "devices": ["dev-a1"]}
        ts = now_ms()
        await database_sync_to_async(ingest.send)(
            data_event("dev-a1", "thermo-a", {"temperature": 23.5}, ts))
        update = await socket.receive_json_from(timeout=10)
        assert update["type"] == "update" and update["device"] == "dev-a1"
        assert update["points"] == [{"service": "env", "ts": ts,
                                     "values": {"temperature": 23.5}}]
        await socket.disconnect()

    async_to_sync(scenario)()


@pytestmark_transactional
@pytest.mark.parametrize(("who", "code"), [(None, 4401), ("nobody", 4403), ("bob", 4403)])
def test_a_dashboard_socket_refuses_outsiders(boards, client_of, who, code):
    boards.board_a.layout = {"widgets": [chart(("dev-a1", "temperature"))]}
    boards.board_a.save()
    headers = headers_of(client_of(getattr(boards, who)) if who else None)

    async def scenario() -> None:
        _socket, connected, close_code = await open_socket(
            f"/ws/dashboards/{boards.board_a.pk}/", headers)
        assert not connected and close_code == code

    async_to_sync(scenario)()
    assert not live.watched(["dev-a1"])


@pytestmark_transactional
def test_a_dashboard_socket_follows_layout_changes_and_watches_only_devices_in_scope(
        boards, client_of, monkeypatch):
    """A layout naming a device the viewer does not reach (saved by someone who does) never
    lets the viewer watch it; an edited layout is followed at the next check."""
    monkeypatch.setattr(live, "RENEW_S", 0.2)
    boards.board_a.layout = {"widgets": [chart(("dev-a1", "temperature"),
                                               ("dev-b1", "temperature"))]}
    boards.board_a.save()
    headers = headers_of(client_of(boards.alice))

    async def scenario() -> None:
        socket, connected, _code = await open_socket(f"/ws/dashboards/{boards.board_a.pk}/",
                                                     headers)
        assert connected
        hello = await socket.receive_json_from(timeout=5)
        assert hello["devices"] == ["dev-a1"]
        await database_sync_to_async(Dashboard.objects.filter(pk=boards.board_a.pk).update)(
            department=boards.org.b)
        closed = await socket.receive_output(timeout=5)
        assert closed == {"type": "websocket.close", "code": 4403}

    async_to_sync(scenario)()
    assert live.watched(["dev-a1", "dev-b1"]) == ["dev-a1"]


def test_names_reach_the_page_as_json_never_as_markup(boards, client_of):
    """A hostile title or device name is data for the script (json_script escapes it; the
    script writes it with textContent)."""
    boards.device_a.name = "<img src=x onerror=alert(1)>"
    boards.device_a.save(update_fields=["name"])
    layout = {"widgets": [{**chart(("dev-a1", "temperature")),
                           "title": "<script>alert(1)</script>"}]}
    assert save(client_of(boards.alice), boards.board_a.pk, layout).status_code == 200
    html = client_of(boards.alice).get(f"/dashboards/{boards.board_a.pk}/").content.decode()
    assert "<script>alert(1)</script>" not in html
    assert "<img src=x onerror" not in html
    assert "\\u003Cscript\\u003Ealert(1)\\u003C/script\\u003E" in html
