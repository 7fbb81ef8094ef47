"""Dashboards in a real browser (Chromium under Playwright, Daphne serving HTTP and WebSockets):
the product dashboard of thermo-a/dev-a1 with stored values and a value arriving live, then a
custom dashboard built in the page (a chart with two series, a gauge, a value card, a map), one
widget moved and one resized with the pointer, saved, and kept after a reload. Every step is shot
in English and in Simplified Chinese."""

from __future__ import annotations

import time

import pytest

from tests.console.browsing import new_page, set_language, shoot, sign_in
from tests.console.conftest import data_event, now_ms
from webapp.console.models import Dashboard
from webapp.devices.models import DeviceCommand

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

BOARD_PERMISSIONS = ("console.view_dashboard", "console.add_dashboard",
                     "console.change_dashboard", "console.delete_dashboard")


def shoot_both(page, name: str, ready: str = "body", back: str = "en") -> None:
    """Shoot the page in English and in Simplified Chinese (once `ready` shows after the
    reload the switch makes), and come back to `back`."""
    for language in ("en", "zh-hans"):
        set_language(page, language)
        page.wait_for_selector(ready, timeout=15_000)
        page.wait_for_load_state("networkidle")
        shoot(page, name)
    set_language(page, back)


def wait_text(page, selector: str, text: str, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if page.locator(selector).first.inner_text().strip() == text:
            return
        page.wait_for_timeout(100)
    assert page.locator(selector).first.inner_text().strip() == text


def drag(page, handle, dx: float, dy: float) -> None:
    handle.scroll_into_view_if_needed()
    box = handle.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    for step in range(1, 6):
        page.mouse.move(x + dx * step / 5, y + dy * step / 5)
    page.mouse.up()


def test_product_dashboard_then_a_custom_dashboard_kept_after_reload(world, ingest, browser,
                                                                     web_process):
    world.alice.roles.add(world.org.role(BOARD_PERMISSIONS, scope="department"))
    start = now_ms() - 3_600_000
    ingest.send(*[data_event("dev-a1", "thermo-a",
                             {"temperature": 20.0 + n, "humidity": 40 + n, "target": 21.0,
                              "mode": "eco" if n < 4 else "boost"}, start + n * 600_000)
                  for n in range(6)])
    page = new_page(browser)
    sign_in(page, web_process, "alice", start="/products/thermo-a/dashboard/?device=dev-a1")

    # The product dashboard: gauges with the stored values, the mode's timeline, commands.
    page.wait_for_selector('[data-testid="live-state"][data-state="live"]', timeout=15_000)
    assert page.inner_text('[data-testid="gauge-env.temperature"] .v') == "25"
    assert page.locator('[data-testid="gauge-env.temperature"] path.gauge-fill').get_attribute(
        "data-fraction") == f"{(25 + 40) / 165:.3f}"
    page.wait_for_selector('[data-testid="timeline-env.mode"][data-count="6"]')
    assert page.locator('[data-testid="timeline-env.mode"] .segment').count() == 6
    assert page.locator('[data-testid="command-env.set_interval"]').count() == 1
    # Sending the command from the dashboard (the console's shared command form, followed
    # until the device answers).
    form = page.locator('[data-testid="command-env.set_interval"]')
    form.locator('input[name="p.seconds"]').fill("15")
    form.locator("button[type=submit]").click()
    page.wait_for_selector(
        '[data-testid="command-env.set_interval"] output[data-status="pending"]')
    command = DeviceCommand.objects.get()
    assert command.params == {"seconds": 15}
    ingest.send({"t": "cmdrsp", "dev": "dev-a1", "mid": command.pk, "svc": "env",
                 "cmd": "set_interval", "err": 0, "params": {"result": "ok"}, "ts": now_ms()})
    page.wait_for_selector(
        '[data-testid="command-env.set_interval"] output[data-status="succeeded"]')
    ingest.send(data_event("dev-a1", "thermo-a", {"temperature": 30.5}))
    wait_text(page, '[data-testid="gauge-env.temperature"] .v', "30.5")
    shoot_both(page, "dashboards-product", '[data-testid="timeline-env.mode"][data-count]')

    # A custom dashboard: create it, add a chart with two series, a gauge and a value card.
    page.goto(f"{web_process}/dashboards/")
    page.fill('[data-testid="dashboard-create"] input[name="name"]', "Boiler room")
    page.click('[data-testid="dashboard-create"] button[type=submit]')
    page.wait_for_selector('[data-testid="widget-form"]:not([hidden])')
    board = Dashboard.objects.get(name="Boiler room")
    form = page.locator('[data-testid="widget-form"]')
    form.locator('[data-testid="widget-type"]').select_option("chart")
    form.locator('[data-testid="widget-title"]').fill("Climate")
    form.locator('[data-testid="widget-device"]').select_option("dev-a1")
    form.locator('[data-testid="widget-property"]').select_option("env.temperature")
    page.click('[data-testid="add-series"]')
    form.locator('[data-testid="widget-property"]').select_option("env.humidity")
    page.click('[data-testid="add-series"]')
    form.locator('[data-testid="widget-hours"]').fill("3")
    page.click('[data-testid="widget-add"]')
    form.locator('[data-testid="widget-type"]').select_option("gauge")
    form.locator('[data-testid="widget-property"]').select_option("env.temperature")
    page.click('[data-testid="widget-add"]')
    form.locator('[data-testid="widget-type"]').select_option("value")
    form.locator('[data-testid="widget-property"]').select_option("env.mode")
    page.click('[data-testid="widget-add"]')
    form.locator('[data-testid="widget-type"]').select_option("map")
    form.locator('[data-testid="widget-devices"]').select_option(["dev-a1"])
    page.click('[data-testid="widget-add"]')
    page.wait_for_selector(".widget-chart[data-series='2']")
    page.wait_for_selector('.widget-map[data-loaded="1"] .leaflet-marker-icon, '
                           '.widget-map[data-loaded="1"] .marker-cluster')
    assert page.locator("#board .widget").count() == 4
    assert page.locator(".widget-chart canvas").count() == 1
    gauge = page.locator('.widget[data-type="gauge"]')
    value = page.locator('.widget[data-type="value"]')
    wait_text(page, '.widget[data-type="gauge"] .v', "30.5")
    wait_text(page, '.widget[data-type="value"] .v', "boost")

    # Move the gauge to the right of the chart, make the value card wider and taller.
    assert (gauge.get_attribute("data-x"), gauge.get_attribute("data-y")) == ("0", "4")
    cell = page.locator("#board").bounding_box()["width"] / 12
    drag(page, gauge.locator(".widget-title"), cell * 6, -(80 + 12) * 4)  # by its header
    assert (gauge.get_attribute("data-x"), gauge.get_attribute("data-y")) == ("6", "0")
    drag(page, value.locator(".widget-resize"), cell * 2, 92)
    assert (value.get_attribute("data-w"), value.get_attribute("data-h")) == ("5", "3")
    page.click('[data-testid="save-layout"]')
    page.wait_for_selector('[data-testid="board-status"][data-kind="saved"]')
    board.refresh_from_db()
    stored = {w["type"]: w for w in board.layout["widgets"]}
    assert (stored["gauge"]["x"], stored["gauge"]["y"]) == (6, 0)
    assert (stored["value"]["w"], stored["value"]["h"]) == (5, 3)
    # The value card floated up under the chart; the map was pushed below the value card.
    assert (stored["value"]["x"], stored["value"]["y"]) == (0, 4)
    assert (stored["map"]["x"], stored["map"]["y"]) == (0, 7)
    assert [s["property"] for s in stored["chart"]["series"]] == ["temperature", "humidity"]
    assert stored["chart"]["window"] == {"hours": 3}

    # Reload: the layout is kept, and values arrive live over the dashboard's socket.
    page.goto(f"{web_process}/dashboards/{board.pk}/")
    page.wait_for_selector('[data-testid="live-state"][data-state="live"]', timeout=15_000)
    gauge = page.locator('.widget[data-type="gauge"]')
    assert (gauge.get_attribute("data-x"), gauge.get_attribute("data-y")) == ("6", "0")
    value = page.locator('.widget[data-type="value"]')
    assert (value.get_attribute("data-w"), value.get_attribute("data-h")) == ("5", "3")
    page.wait_for_selector(".widget-chart[data-series='2'] canvas")
    ingest.send(data_event("dev-a1", "thermo-a", {"temperature": 31.0, "mode": "eco"}))
    wait_text(page, '.widget[data-type="gauge"] .v', "31")
    wait_text(page, '.widget[data-type="value"] .v', "eco")
    shoot_both(page, "dashboards-custom", '[data-testid="live-state"][data-state="live"]')
    page.goto(f"{web_process}/dashboards/{board.pk}/?edit=1")
    # Edit the chart in place: its title, its series and its window; it keeps its id and place.
    chart_id = stored["chart"]["id"]
    page.click(f'[data-testid="edit-{chart_id}"]')
    form = page.locator('[data-testid="widget-form"]')
    assert form.locator('[data-testid="widget-type"]').is_disabled()
    assert form.locator('[data-testid="widget-title"]').input_value() == "Climate"
    assert form.locator('[data-testid="series-list"] li').count() == 2
    form.locator('[data-testid="widget-title"]').fill("Temperature, 6 h")
    form.locator('[data-testid="series-list"] li').nth(1).locator("button").click()
    form.locator('[data-testid="widget-hours"]').fill("6")
    shoot(page, "dashboards-widget-edit")
    page.click('[data-testid="widget-add"]')
    page.wait_for_selector(".widget-chart[data-series='1'] canvas")
    assert page.locator("#board .widget").count() == 4
    assert page.inner_text(f'[data-testid="widget-{chart_id}"] .widget-title') == \
        "Temperature, 6 h"
    page.click('[data-testid="save-layout"]')
    page.wait_for_selector('[data-testid="board-status"][data-kind="saved"]')
    board.refresh_from_db()
    chart = next(w for w in board.layout["widgets"] if w["type"] == "chart")
    assert chart["id"] == chart_id and (chart["x"], chart["y"]) == (0, 0)
    assert chart["title"] == "Temperature, 6 h" and chart["window"] == {"hours": 6}
    assert [s["property"] for s in chart["series"]] == ["temperature"]
    shoot_both(page, "dashboards-custom-edit", '.widget-chart[data-series="1"] canvas')
    page.goto(f"{web_process}/dashboards/")
    assert "Boiler room" in page.inner_text('[data-testid="dashboard-list"]')
    shoot_both(page, "dashboards-list")
    assert page.js_errors == []
