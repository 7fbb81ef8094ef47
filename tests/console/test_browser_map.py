"""The device map and the big screen in a real browser, in English and in 简体中文.

Root opens /map/: clustered markers of `world`'s devices (and two neighbours of dev-a1), a
popup with dev-a1's latest values and units, then the status filter. Then /bigscreen/ with a
5 s refresh: the totals, a change of data picked up by the next poll without reloading, the
stale marker while the data cannot be fetched, and the message once the session has ended.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.console.browsing import new_page, set_language, shoot, sign_in
from tests.console.conftest import create_device, data_event, log_event, now_ms, status_event

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

LOADED = "[data-testid=device-map][data-loaded]"
XSS = '<img src=x onerror="alert(1)"><b>bold</b>'


def open_map(page: Any, base: str, query: str = "") -> None:
    page.goto(f"{base}/map/{query}")
    page.wait_for_selector(LOADED)
    page.wait_for_load_state("networkidle")


def map_flow(page: Any, base: str, lang: str, online: int) -> None:
    open_map(page, base)
    count = page.get_attribute(LOADED, "data-loaded")
    assert count == "4"
    # dev-a1 and its two neighbours in one cluster near Shanghai, dev-b1 alone in Beijing.
    cluster = page.locator(".tl-cluster")
    assert cluster.count() == 1 and cluster.inner_text().strip() == "3"
    assert page.locator(".tl-marker[title='Boiler B · dev-b1']").count() == 1
    assert "tl-marker-offline" in (page.get_attribute(
        ".tl-marker[title='Boiler B · dev-b1']", "class") or "")
    assert page.locator(".tl-map-note").is_visible()  # no MAP_TILE_URL in tests
    shoot(page, "map")

    cluster.click()  # zooms in until the three separate
    marker = page.locator(".tl-marker[title='Boiler A · dev-a1']")
    marker.wait_for(state="visible")
    page.wait_for_timeout(400)  # the zoom animation
    marker.click()
    popup = page.locator(".leaflet-popup .tl-popup[data-device='dev-a1']")
    popup.locator(".tl-popup-table").wait_for()
    text = popup.inner_text()
    assert "Boiler A" in text and "dev-a1" in text and "Thermometer thermo-a" in text
    assert "21.5" in text and "C" in text
    assert ("Temperature" in text) and ("humidity" in text and "40" in text)
    assert ("Online" in text) if lang == "en" else ("在线" in text)
    assert popup.locator("a.tl-popup-link").get_attribute("href") == "/devices/dev-a1/"
    page.wait_for_timeout(400)  # the popup's fade-in
    shoot(page, "map-popup")
    # The markers refresh every 30 s while the tab is visible (TLMap's reload, the same call
    # the timer makes): the open popup and the zoom are kept.
    assert page.get_attribute(LOADED, "data-refresh-every") == "30"
    assert page.get_attribute(LOADED, "data-refresh-state") == "on"
    zoom = page.evaluate("window.TLMap.page.map.getZoom()")
    page.evaluate("window.TLMap.page.reload().then(() => null)")
    assert popup.is_visible()
    assert page.evaluate("window.TLMap.page.map.getZoom()") == zoom
    # A hidden tab stops polling; shown again, it reloads at once and polls again.
    visibility = """state => {
      Object.defineProperty(document, "visibilityState", {configurable: true, get: () => state});
      document.dispatchEvent(new Event("visibilitychange")); }"""
    page.evaluate(visibility, "hidden")
    assert page.get_attribute(LOADED, "data-refresh-state") == "paused"
    page.evaluate(visibility, "visible")
    assert page.get_attribute(LOADED, "data-refresh-state") == "on"
    page.wait_for_load_state("networkidle")
    assert popup.is_visible()

    with page.expect_navigation():
        page.select_option("select[name=status]", "online")
        page.click("[data-testid=map-filters] button[type=submit]")
    page.wait_for_selector(LOADED)
    assert "status=online" in page.url
    assert page.get_attribute(LOADED, "data-loaded") == str(online)
    assert page.locator(".tl-marker[title='Boiler B · dev-b1']").count() == 0
    shoot(page, "map-filtered")
    assert page.js_errors == []


def bigscreen_flow(page: Any, base: str, ingest: Any, online_after: int) -> None:
    page.goto(f"{base}/bigscreen/?refresh=5")
    page.wait_for_load_state("networkidle")
    assert page.locator(".sidebar").count() == 0
    assert page.inner_text("[data-testid=bs-devices]") == "4"
    assert page.inner_text("[data-testid=bs-products]") == "2"
    assert page.inner_text("[data-testid=bs-alarms-total]") == "2"
    assert "Boiler overheating" in page.inner_text("[data-testid=bs-alarms]")
    assert page.locator("[data-testid=bs-spark] span").count() == 30
    assert page.inner_text("[data-testid=bs-rejected]") == "3"
    assert page.locator("[data-testid=bigscreen-map] .tl-marker, "
                        "[data-testid=bigscreen-map] .tl-cluster").count() >= 2
    # Another device comes online: the next poll shows it, without reloading the page.
    page.evaluate("window.__marker = 1")
    ingest.send(status_event(f"dev-a{online_after}", "online"))
    page.wait_for_function(
        f"document.querySelector('[data-testid=bs-online]').textContent === '{online_after}'",
        timeout=15_000)
    assert page.evaluate("window.__marker") == 1  # same page, no reload
    assert int(page.get_attribute("[data-testid=bigscreen]", "data-polls") or 0) >= 1
    shoot(page, "bigscreen")

    # The server is away: the last figures stay, marked stale; then it comes back.
    page.route("**/bigscreen/data.json", lambda route: route.abort())
    page.wait_for_selector("[data-testid=bigscreen].stale", timeout=15_000)
    assert page.inner_text("[data-testid=bs-online]") == str(online_after)
    assert page.inner_text("[data-testid=bigscreen-state]").strip() != ""
    shoot(page, "bigscreen-stale")
    page.unroute("**/bigscreen/data.json")
    page.wait_for_selector("[data-testid=bigscreen]:not(.stale)", timeout=15_000)
    assert page.js_errors == []


def test_map_and_big_screen(world, ingest, browser, live_server):
    create_device("dev-a2", world.product_a, world.org.a, name="Pump A2",
                  latitude="31.2404", longitude="121.4837")
    create_device("dev-a3", world.product_a, world.org.a, name="Pump A3",
                  latitude="31.2204", longitude="121.4637")
    start = now_ms() - 60_000
    ingest.send(status_event("dev-a1", "online", start), status_event("dev-b1", "online", start))
    ingest.send(status_event("dev-b1", "offline", start + 1000),
                data_event("dev-a1", "thermo-a", {"temperature": 21.5, "humidity": 40}))
    from django.utils import timezone

    from webapp.rules.models import Alarm

    now = timezone.now()
    for name, severity, device in [("Boiler overheating", "critical", world.device_a),
                                   ("Pressure low", "minor", world.device_b)]:
        Alarm.objects.create(name=name, device=device, product=device.product,
                             severity=severity, message=name, first_seen=now, last_seen=now)
    ingest.send(*[log_event("dev-a1", n % 5 != 0) for n in range(12)])
    base = live_server.url
    page = new_page(browser)
    sign_in(page, base, "root", start="/map/")

    map_flow(page, base, "en", online=1)
    bigscreen_flow(page, base, ingest, online_after=2)

    set_language(page, "zh-hans")
    assert page.locator("html").get_attribute("lang") == "zh-hans"
    map_flow(page, base, "zh-hans", online=2)
    bigscreen_flow(page, base, ingest, online_after=3)
    assert "运维总览" in page.inner_text("h1")

    # The session ends (signed out elsewhere): the screen says so instead of breaking.
    page.context.clear_cookies()
    page.wait_for_selector("[data-testid=bigscreen-alert]:not([hidden])", timeout=15_000)
    assert page.inner_text("[data-testid=bs-online]") == "3"  # the last figures stay
    assert page.locator("[data-bs-login]").get_attribute("href").startswith("/login/?next=")
    shoot(page, "bigscreen-signed-out")
    assert page.js_errors == []


def test_map_draws_the_configured_tiles(world, browser, live_server, settings):
    """With MAP_TILE_URL set, the map loads its tiles from there (answered here by the test:
    no internet) and shows the attribution; the big screen darkens them."""
    from tests.support.platform import ROOT
    from webapp.devices.models import Device

    settings.MAP_TILE_URL = "https://tiles.example.invalid/{z}/{x}/{y}.png"
    settings.MAP_TILE_ATTRIBUTION = "© Example tiles"
    tile = (ROOT / "webapp/console/static/console/vendor/leaflet/images/layers.png").read_bytes()
    requested: list[str] = []

    def answer(route: Any) -> None:
        requested.append(route.request.url)
        route.fulfill(status=200, content_type="image/png", body=tile)

    page = new_page(browser)
    page.route("https://tiles.example.invalid/**", answer)
    sign_in(page, live_server.url, "alice", start="/map/")
    page.wait_for_selector(LOADED)
    page.wait_for_selector("img.leaflet-tile-loaded")
    assert requested and all(u.startswith("https://tiles.example.invalid/") for u in requested)
    assert "© Example tiles" in page.inner_text(".leaflet-control-attribution")
    assert page.locator(".tl-map-note").count() == 0
    assert page.get_attribute(LOADED, "data-loaded") == "1"  # alice: dev-a1 only
    # A hostile name is shown as text in the marker's popup, never run.
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    Device.objects.filter(identifier="dev-a1").update(name=XSS)
    page.reload()
    page.wait_for_selector(LOADED)
    page.locator(".tl-marker").click()
    popup = page.locator(".leaflet-popup .tl-popup[data-device='dev-a1']")
    popup.locator(".tl-popup-values p").wait_for()
    assert popup.locator(".tl-popup-name").inner_text() == XSS
    assert page.locator(".leaflet-popup img").count() == 0
    page.wait_for_timeout(300)
    assert dialogs == []
    page.goto(f"{live_server.url}/bigscreen/")
    page.wait_for_selector("[data-testid=bigscreen-map] img.leaflet-tile-loaded")
    assert page.js_errors == []
