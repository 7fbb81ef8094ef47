"""The admin in a real browser: Debian's headless Chromium driven by Playwright."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import missing
from tests.system.conftest import PASSWORD

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def browser_page(monkeypatch):
    if not CHROMIUM.exists():
        missing("Debian chromium is not installed (apt-get install -y chromium)")
    # Playwright's sync API runs an event loop; the ORM calls of this test happen outside it.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS,
                                             headless=True)
        page = browser.new_page(locale="en-US")
        page.set_default_timeout(15000)
        try:
            yield page
        finally:
            browser.close()


def test_admin_login_and_department_management(live_server, browser_page, redis_prefix,
                                               django_user_model):
    """Log in to the admin, find the grouped navigation and the theme, add a department and
    see it in the list, switch to Chinese."""
    django_user_model.objects.create_superuser("root", "root@example.com", PASSWORD)
    page = browser_page
    page.goto(f"{live_server.url}/admin/")
    assert "/admin/login/" in page.url
    page.fill("#id_username", "root")
    page.fill("#id_password", "wrong-password")
    page.click("input[type=submit]")
    assert page.locator(".errornote").is_visible()
    page.fill("#id_username", "root")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"{live_server.url}/admin/")
    assert page.locator("#site-name").inner_text().strip() == "ThingLinks"
    captions = page.locator("#content-main .module caption").all_inner_texts()
    assert [c.strip() for c in captions[:5]] == ["Monitoring", "Devices", "Products", "Rules",
                                                 "System"]
    header_bg = page.eval_on_selector("#header", "e => getComputedStyle(e).backgroundColor")
    assert header_bg == "rgb(11, 59, 56)", "the ThingLinks theme is loaded"

    page.goto(f"{live_server.url}/admin/system/department/add/")
    page.fill("#id_name", "Operations")
    page.fill("#id_leader", "Ann")
    page.click("input[name=_save]")
    page.wait_for_url(f"{live_server.url}/admin/system/department/")
    assert page.locator("#result_list").get_by_text("Operations").is_visible()

    with page.expect_navigation():  # the select submits the language form on change
        page.select_option("#tl-language-select", "zh-hans")
    page.wait_for_load_state()
    assert "部门" in page.locator("#content h1").inner_text()

    from webapp.system.models import Department, OperationLog

    department = Department.objects.get(name="Operations")
    log = OperationLog.objects.get(model="department", object_id=str(department.pk))
    assert (log.source, log.username) == ("admin", "root")
