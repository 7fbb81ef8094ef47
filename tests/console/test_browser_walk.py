"""Every console page in a real browser, in English and in 简体中文, as a reviewer would look.

A superuser starts at the dashboard and follows every console link the pages show (breadth
first, the console's own paths only: not the admin, the API, static files or signing out),
each path once. Every page must load without an HTTP error or a JavaScript error, and is saved
as a 1440x900 screenshot under var/screenshots/<language>/walk-<path>.png. The flows' own
browser tests (tests/console/test_browser_*.py) shoot the pages in the states they create.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.console.browsing import new_page, set_language, shoot, sign_in
from tests.console.conftest import data_event, log_event, now_ms, status_event

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SKIPPED = ("/admin/", "/api/", "/static/", "/media/", "/ws/", "/logout/", "/language/",
           "/metrics")
MAX_PAGES = 80


def _walkable(path: str) -> bool:
    return path.startswith("/") and not path.startswith(SKIPPED) and not \
        re.search(r"\.(json|csv|xlsx|txt|bin|png|svg)$", path)


def _name(path: str) -> str:
    return "walk-" + (re.sub(r"[^A-Za-z0-9]+", "-", path).strip("-") or "dashboard")


def _links(page: Any) -> list[str]:
    hrefs = page.eval_on_selector_all("a[href]", "els => els.map(e => e.getAttribute('href'))")
    return [href for href in hrefs if href]


def walk(page: Any, base: str) -> list[str]:
    """Open every console page reachable by links from the dashboard; return their paths."""
    seen: list[str] = []
    queue = ["/"]
    while queue and len(seen) < MAX_PAGES:
        path = queue.pop(0)
        if path in seen:
            continue
        seen.append(path)
        # Downloads (exports, files) are checked for their status only: a browser does not
        # render them.
        head = page.request.get(f"{base}{path}")
        assert head.status < 400, (path, head.status)
        if "text/html" not in head.headers.get("content-type", ""):
            continue
        response = page.goto(f"{base}{path}")
        assert response is not None and response.status < 400, (path, response and
                                                                 response.status)
        page.wait_for_load_state("networkidle")
        assert page.js_errors == [], (path, page.js_errors)
        shoot(page, _name(path))
        for href in _links(page):
            parts = urlsplit(href)
            if parts.netloc and parts.netloc != urlsplit(base).netloc:
                continue
            if _walkable(parts.path) and parts.path not in seen and parts.path not in queue:
                queue.append(parts.path)
    return seen


def test_every_console_page_in_both_languages(world, ingest, browser, live_server):
    start = now_ms() - 600_000
    values = [data_event("dev-a1", "thermo-a", {"temperature": 20.0 + n % 7},
                         start + n * 20_000) for n in range(30)]
    ingest.send(status_event("dev-a1", "online", start), *values, log_event("dev-a1", True),
                log_event("dev-a1", False, "temperature=500 is above max 125"))
    page = new_page(browser)
    sign_in(page, live_server.url, "root", start="/")
    english = walk(page, live_server.url)
    assert {"/", "/products/", "/devices/", "/alarms/"} <= set(english)
    set_language(page, "zh-hans")
    chinese = walk(page, live_server.url)
    assert set(chinese) == set(english)
    assert page.locator("html").get_attribute("lang") == "zh-hans"


def test_times_follow_the_users_own_zone_after_the_page_script_runs(world, browser,
                                                                     live_server):
    """The page script rewrites every time for the viewer: in the zone of My settings, not the
    browser's (headless Chromium runs in UTC here)."""
    from datetime import UTC, datetime

    from webapp.devices.models import Device

    Device.objects.filter(pk=world.device_a.pk).update(
        last_seen=datetime(2026, 1, 1, 0, 0, tzinfo=UTC))
    page = new_page(browser)
    sign_in(page, live_server.url, "alice", start="/profile/")
    page.fill('[data-testid="time-zone"]', "Asia/Shanghai")
    page.click('[data-testid="profile"] button[type=submit]')
    page.wait_for_url(f"{live_server.url}/profile/")
    shoot(page, "profile")
    page.goto(f"{live_server.url}/devices/dev-a1/")
    assert page.inner_text("#last-seen time") == "2026-01-01 08:00:00"
    assert page.js_errors == []
