"""The monitoring page in a real browser, in English and in 简体中文.

Root opens /monitoring/: the host's figures, a process that reported itself (a snapshot
written as the processes write theirs), an edge node's heartbeat and the uplink stream's
consumer group. Entries added to the stream show up as lag on the next refresh without a
reload; while data.json cannot be fetched the figures stay, marked stale, until it answers
again; once the session has ended it stops and links to the login page. No JavaScript error
on the way.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest

from edge.bus.keys import UPLINK_GROUP
from edge.snapshot import write_snapshot
from tests.console.browsing import new_page, set_language, shoot, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

LAG = "[data-testid=group-ingest] [data-testid=lag]"


def report(r: Any, prefix: str) -> None:
    """An ingest process and an edge node as they report themselves (fresh each call)."""
    write_snapshot(r, prefix, "ingest", "", started=time.time() - 300, restarts=1,
                   host="box", pid=4242)
    now = int(time.time() * 1000)
    r.hset(f"{prefix}nodes", "box-0", json.dumps(
        {"pid": 4301, "started": now - 60_000, "conns": 17, "ts": now}))


def flow(page: Any, r: Any, prefix: str, lang: str, base: str) -> None:
    report(r, prefix)
    page.goto(f"{base}/monitoring/")
    page.wait_for_load_state("networkidle")
    assert page.get_attribute("[data-testid=live-state]", "data-state") == "live"
    cpu = page.inner_text("[data-testid=cpu-percent]")
    assert re.fullmatch(r"\d+(\.\d)?", cpu) and 0 <= float(cpu) <= 100
    assert re.fullmatch(r"\d+(\.\d)?", page.inner_text("[data-testid=memory-percent]"))
    memory = page.inner_text("[data-testid=host-memory]")
    assert re.search(r"\d+(\.\d+)?\s?(GB|MB)", memory), memory
    assert re.fullmatch(r"[\d.]+ · [\d.]+ · [\d.]+", page.inner_text("[data-testid=load]"))
    row = page.locator("[data-testid=process-ingest]")
    assert "box" in row.inner_text() and "4242" in row.inner_text()
    assert row.locator("[data-testid=restarts]").inner_text() == "1"
    assert ("Reporting" if lang == "en" else "正常上报") in row.inner_text()
    node = page.locator("[data-testid=node-box-0]")
    assert node.locator("[data-testid=connections]").inner_text() == "17"
    assert page.inner_text("[data-testid=db-size]").strip() != ""
    if lang == "en":
        assert "Platform monitoring" in page.inner_text("h1")
        assert "Memory" in page.inner_text("[data-testid=host-memory]")
    else:
        assert "平台监控" in page.inner_text("h1")
        assert "内存" in page.inner_text("[data-testid=host-memory]")
        assert "数据库" in page.inner_text("[data-testid=database]")
    before = int(page.inner_text(LAG))
    shoot(page, "monitoring")

    # Three entries the ingest group has not read: the next refresh shows them as lag.
    for n in range(3):
        r.xadd(f"{prefix}uplink", {"b": json.dumps([{"n": n}])})
    page.wait_for_function(
        "([selector, want]) => { const el = document.querySelector(selector);"
        " return el && el.textContent.trim() === want; }",
        arg=[LAG, str(before + 3)], timeout=15_000)
    assert page.inner_text("[data-testid=refreshed]").strip() != ""

    # The server is away: the figures stay, marked stale; then it answers again.
    page.route("**/monitoring/data.json", lambda route: route.abort())
    page.wait_for_selector("#monitoring-panels.stale", timeout=15_000)
    assert page.get_attribute("[data-testid=live-state]", "data-state") == "stale"
    assert page.inner_text(LAG) == str(before + 3)
    shoot(page, "monitoring-stale")
    page.unroute("**/monitoring/data.json")
    page.wait_for_selector("#monitoring-panels:not(.stale)", timeout=15_000)
    assert page.get_attribute("[data-testid=live-state]", "data-state") == "live"
    assert page.js_errors == []


def test_monitoring_page_live(world, redis_client, redis_prefix, browser, live_server):
    redis_client.xgroup_create(f"{redis_prefix}uplink", UPLINK_GROUP, id="$", mkstream=True)
    page = new_page(browser)
    sign_in(page, live_server.url, "root", start="/monitoring/")
    # The console's navigation leads to it.
    assert page.locator("nav a[href='/monitoring/']").count() == 1
    flow(page, redis_client, redis_prefix, "en", live_server.url)
    set_language(page, "zh-hans")
    flow(page, redis_client, redis_prefix, "zh-hans", live_server.url)
    # Signed out elsewhere: the page stops asking, says so and links to the login page.
    page.context.clear_cookies()
    page.wait_for_selector("[data-testid=live-state][data-state=refused]", timeout=15_000)
    assert "重新登录" in page.inner_text("[data-testid=refreshed]")
    assert page.get_attribute("[data-testid=refreshed] a", "href") == \
        "/login/?next=%2Fmonitoring%2F"
    shoot(page, "monitoring-ended")
    assert page.js_errors == []
