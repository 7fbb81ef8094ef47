"""Device debugging in Chromium against Daphne, fed by the real ingest worker: a message
arrives live, the filter hides what does not match, a simulated message from dev-a1 appears in
the stream (accepted, then rejected out of range), a message is published to it, and a command
broadcast to the thermo-a product shows each device's result — in English and 简体中文."""

from __future__ import annotations

import time

import pytest

from tests.console.browsing import new_page, set_language, shoot, sign_in
from tests.console.conftest import log_event, now_ms

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

STREAM_ROWS = '[data-testid="debug-stream"] tbody tr.line'


def wait_until(page, check, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        page.wait_for_timeout(100)
    assert check()


def rows(page, **attributes: str) -> int:
    selector = STREAM_ROWS + "".join(f'[data-{k}="{v}"]' for k, v in attributes.items())
    return page.locator(selector + ":visible").count()


def walk(page, lang: str, base: str, ingest, redis_client, redis_prefix) -> None:
    """One pass of the flow in `lang`, shooting each step."""
    from webapp.devices.models import DeviceCommand

    set_language(page, lang)
    page.wait_for_selector('[data-testid="live-state"][data-state="live"]',
                           timeout=15_000)

    # 1. a message arrives live (dev-b1's, another department's, never shows)
    # (a hostile payload and reason are shown as text)
    ts = now_ms()
    hostile = {**log_event("dev-a1", False, "<b>bold</b><img src=x onerror=window.xss=1>",
                           ts=ts), "payload": "<img src=x onerror=window.xss=2>"}
    ingest.send(hostile, log_event("dev-b1", True, ts=ts))
    wait_until(page, lambda: rows(page, device="dev-a1") == 1)
    assert rows(page, device="dev-b1") == 0
    stream = page.locator('[data-testid="debug-stream"]')
    assert "<img src=x onerror=window.xss=2>" in stream.inner_text()
    assert stream.locator("img, b").count() == 0
    assert page.evaluate("window.xss") is None
    shoot(page, "debug-stream")

    # 2. filter: rejected only
    page.select_option('[data-testid="filter-result"]', "rejected")
    assert rows(page) == 1  # the hostile line is the rejected one
    page.wait_for_timeout(300)  # the socket has the filter
    ingest.send(log_event("dev-a1", True, ts=ts + 1),
                log_event("dev-a1", False, "temperature=500 is above max 125", ts=ts + 2))
    wait_until(page, lambda: rows(page, result="rejected") == 2)  # the hostile one too
    assert rows(page, result="accepted") == 0
    assert "above max 125" in page.inner_text('[data-testid="debug-stream"]')
    shoot(page, "debug-filtered")
    page.select_option('[data-testid="filter-result"]', "")
    page.click('[data-testid="clear"]')
    assert rows(page) == 0

    # 3. simulate a message from dev-a1: accepted, then out of range and rejected
    form = page.locator('[data-testid="simulate-form"]')
    form.locator('input[name="device"]').fill("dev-a1")
    page.click('[data-testid="example"]')
    assert '"deviceId": "dev-a1"' in form.locator("textarea").input_value()
    form.locator('button[type="submit"]').click()
    output = form.locator('[data-testid="simulate-result"]')
    wait_until(page, lambda: output.get_attribute("data-result") == "accepted")
    ingest.run()
    wait_until(page, lambda: rows(page, device="dev-a1", result="accepted") == 1)
    form.locator("textarea").fill(
        '{"devices": [{"deviceId": "dev-a1", "services": [{"serviceCode": "env", '
        '"data": {"temperature": 500}}]}]}')
    form.locator('button[type="submit"]').click()
    wait_until(page, lambda: output.get_attribute("data-result") == "rejected")
    assert "125" in output.inner_text()
    ingest.run()
    wait_until(page, lambda: rows(page, device="dev-a1", result="rejected") == 1)
    shoot(page, "debug-simulate")

    # 4. publish to dev-a1 (the edge node holding it gets it on its downlink stream)
    before = redis_client.xlen(f"{redis_prefix}down:node-x")
    publish = page.locator('[data-testid="publish-form"]')
    publish.locator('input[name="device"]').fill("dev-a1")
    publish.locator('input[name="suffix"]').fill("debug/ping")
    publish.locator("textarea").fill('{"ping": 1}')
    publish.locator('button[type="submit"]').click()
    result = publish.locator('[data-testid="publish-result"]')
    wait_until(page, lambda: "/v1/devices/dev-a1/debug/ping" in result.inner_text())
    assert redis_client.xlen(f"{redis_prefix}down:node-x") == before + 1
    shoot(page, "debug-publish")

    # 5. broadcast a command to the thermo-a product, results per device
    page.goto(f"{base}/debug/?product=thermo-a#broadcast")
    command = page.locator('[data-testid="broadcast-env.set_interval"]')
    command.locator('input[name="p.seconds"]').fill("30")
    command.locator('button[type="submit"]').click()
    status = page.locator('[data-testid="broadcast-results"] tr[data-device="dev-a1"] '
                          '[data-status]')
    wait_until(page, lambda: status.count() == 1
               and status.get_attribute("data-status") in ("pending", "sent"))
    record = DeviceCommand.objects.filter(device__identifier="dev-a1").latest("id")
    assert record.params == {"seconds": 30}
    DeviceCommand.objects.filter(pk=record.pk).update(status="succeeded",
                                                      response={"result": "ok"})
    wait_until(page, lambda: status.get_attribute("data-status") == "succeeded")
    page.wait_for_selector('[data-testid="broadcast-env.set_interval"] output[data-done]')
    assert "set_interval" not in DeviceCommand.objects.filter(
        device__identifier="dev-b1").values_list("command", flat=True)
    shoot(page, "debug-broadcast")
    page.goto(f"{base}/debug/")


def test_debugging_a_device_live(world, ingest, browser, web_process, redis_client,
                                 redis_prefix):
    world.alice.roles.add(world.org.role(
        ("telemetry.view_devicemessage", "devices.debug_device"), "department"))
    redis_client.hset(f"{redis_prefix}route", "dev-a1", "node-x")  # dev-a1 is connected
    page = new_page(browser)
    sign_in(page, web_process, "alice", start="/debug/")

    for lang in ("en", "zh-hans"):
        walk(page, lang, web_process, ingest, redis_client, redis_prefix)
    assert page.js_errors == []
