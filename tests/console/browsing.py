"""What the console's browser tests share: Debian's Chromium under Playwright, signing in, and
screenshots a reviewer can look at.

Playwright never downloads a browser here: it starts /usr/bin/chromium. Without it the tests
skip, or fail when CI_REQUIRE_SERVICES=1 (CI must not pass without them).

`shoot(page, name)` saves the page at 1440x900 as `var/screenshots/<language>/<name>.png`
(the language of the page's `<html lang>`), so every flow leaves pictures of what it showed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection, connections

from tests.conftest import missing
from tests.support.platform import ROOT, database_url, free_port
from tests.support.waiting import wait_for_port
from tests.system.conftest import PASSWORD

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
VIEWPORT = {"width": 1440, "height": 900}
SCREENSHOTS = Path(os.environ.get("SCREENSHOTS_DIR", ROOT / "var" / "screenshots"))


@pytest.fixture
def browser(monkeypatch) -> Iterator[Any]:
    # Playwright's sync API keeps an event loop in this thread; the test's own database
    # calls are synchronous all the same (Django's documented setting for this case).
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        missing(f"{CHROMIUM} is missing (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()
            # The test's database calls ran beside Playwright's event loop, on a connection
            # of their own context: close it, or PostgreSQL's test database stays busy.
            connections.close_all()


@pytest.fixture
def web_process(transactional_db, redis_prefix) -> Iterator[str]:
    """Daphne serving the console (HTTP and WebSockets) on the test database, with this
    test's Redis prefix so that its Channels layer is the one ingest pushes to."""
    env = {**os.environ, "DATABASE_URL": database_url(connection.settings_dict),
           "REDIS_PREFIX": redis_prefix, "PYTHONUNBUFFERED": "1"}
    daphne = str(Path(sys.executable).parent / "daphne")
    for attempt in range(3):
        # Another test may take the free port before Daphne binds it: try another one.
        port = free_port()
        process = subprocess.Popen([daphne, "-b", "127.0.0.1", "-p", str(port),
                                    "config.asgi:application"], cwd=ROOT, env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            wait_for_port(port, process)
            break
        except RuntimeError:
            if attempt == 2:
                raise
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        output = process.stdout.read().decode(errors="replace") if process.stdout else ""
        print(f"----- daphne -----\n{output[-4000:]}")


def new_page(browser: Any) -> Any:
    """A page at the screenshots' size that fails the test on a JavaScript error."""
    page = browser.new_page(viewport=VIEWPORT)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.js_errors = errors
    return page


def sign_in(page: Any, base_url: str, username: str, start: str = "/devices/") -> None:
    """Sign in through the login form, starting from `start` (which redirects there)."""
    page.goto(f"{base_url}{start}")
    assert "/login/" in page.url
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base_url}{start}")


def set_language(page: Any, code: str) -> None:
    """Switch the console's language with the selector in the header (`en` or `zh-hans`)."""
    if page.locator("html").get_attribute("lang") == code:
        return
    with page.expect_navigation():
        page.select_option("#language-select", code)


def shoot(page: Any, name: str) -> Path:
    """Save the whole page as var/screenshots/<lang>/<name>.png and return the path."""
    lang = page.locator("html").get_attribute("lang") or "en"
    path = SCREENSHOTS / lang / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    return path
