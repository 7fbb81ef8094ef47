"""The console in a real browser: Debian's Chromium driven by Playwright.

One test runs against pytest-django's `live_server` (HTTP only): sign in, the device list, a
device page with its latest values and chart, a command sent from the generated form. The
other runs the real web process (Daphne, HTTP and WebSockets) on the test database and shows a
value arriving live after the real ingest worker stores a batch.

Playwright never downloads a browser here: it starts /usr/bin/chromium. Without it the tests
skip, or fail when CI_REQUIRE_SERVICES=1 (CI must not pass without them).
"""

from __future__ import annotations

import time

import pytest

from tests.console.browsing import sign_in
from tests.console.conftest import data_event, log_event, now_ms, status_event
from webapp.devices.models import DeviceCommand

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_sign_in_browse_devices_chart_and_send_a_command(world, ingest, browser, live_server):
    """Sign in, find the device in the list, see its latest value and chart, send a command
    from the form generated from the thing model and follow it until the device answers."""
    start = now_ms() - 120_000
    ingest.send(*[data_event("dev-a1", "thermo-a", {"temperature": 20.0 + n}, start + n * 10_000)
                  for n in range(6)],
                log_event("dev-a1", False, "temperature=500 is above max 125"))
    page = browser.new_page()
    sign_in(page, live_server.url, "alice")
    rows = page.locator('[data-testid="device-list"] tbody tr')
    assert rows.count() == 1 and "dev-a1" in rows.first.inner_text()
    page.fill('input[name="q"]', "nothing-like-this")
    page.click('[data-testid="device-filters"] button[type=submit]')
    page.wait_for_selector("text=No devices match.")
    page.goto(f"{live_server.url}/devices/")
    page.click("text=dev-a1")
    page.wait_for_url(f"{live_server.url}/devices/dev-a1/")
    assert page.inner_text('[data-testid="value-env.temperature"] .v') == "25.0"
    assert "above max 125" in page.inner_text('[data-testid="message-log"]')
    page.wait_for_selector('[data-testid="chart-status"][data-count="6"]')
    assert page.locator("#chart canvas").count() == 1
    form = page.locator('[data-testid="command-env.set_interval"]')
    form.locator('input[name="p.seconds"]').fill("15")
    form.locator("button[type=submit]").click()
    page.wait_for_selector('[data-testid="command-env.set_interval"] output[data-status]')
    assert form.locator("output").get_attribute("data-status") == "pending"
    command = DeviceCommand.objects.get()
    assert command.params == {"seconds": 15} and command.created_by == world.alice
    ingest.send({"t": "cmdrsp", "dev": "dev-a1", "mid": command.pk, "svc": "env",
                 "cmd": "set_interval", "err": 0, "params": {"result": "ok"}, "ts": now_ms()})
    page.wait_for_selector(
        '[data-testid="command-env.set_interval"] output[data-status="succeeded"]')
    assert '"result":"ok"' in form.locator("output").inner_text()
    page.select_option("#language-select", "zh-hans")
    page.wait_for_selector("text=消息日志")


def test_a_value_arrives_live_after_an_ingest_batch(world, ingest, browser, web_process):
    """With the device page open, a batch stored by the ingest worker shows up without a
    reload: the new value, the connection status and the log line."""
    page = browser.new_page()
    sign_in(page, web_process, "alice")
    page.goto(f"{web_process}/devices/dev-a1/")
    page.wait_for_selector('[data-testid="live-state"][data-state="live"]', timeout=15_000)
    assert page.inner_text('[data-testid="value-env.temperature"] .v') == "—"
    ts = now_ms()
    ingest.send(status_event("dev-a1", "online", ts - 5),
                data_event("dev-a1", "thermo-a", {"temperature": 27.25}, ts),
                log_event("dev-a1", False, "humidity=300 is above max 100", ts))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if page.inner_text('[data-testid="value-env.temperature"] .v') == "27.25":
            break
        page.wait_for_timeout(100)
    assert page.inner_text('[data-testid="value-env.temperature"] .v') == "27.25"
    assert page.inner_text('[data-testid="connect-status"]') == "Online"
    assert "humidity=300 is above max 100" in page.inner_text('[data-testid="message-log"]')
    assert page.goto(f"{web_process}/devices/dev-b1/").status == 404  # department B's
