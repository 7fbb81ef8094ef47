"""In a browser: bulk-acknowledge two alarms, open one, comment on it and assign it; upload an
OTA package, start a campaign for dev-a1 and watch its progress row refresh; in English and
in Simplified Chinese, with a screenshot of every step."""

from __future__ import annotations

import pytest

from tests.console.browsing import new_page, set_language, shoot, sign_in
from tests.console.conftest import OPERATOR_PERMISSIONS
from tests.console.test_ota_console import FIRMWARE, OTA_PERMISSIONS
from tests.console.test_pages import make_alarm
from webapp.ota.models import OtaCampaign, OtaPackage, OtaTask
from webapp.rules.models import Alarm, AlarmComment

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

XSS = '<img src=x onerror="window.__pwned=1">'


@pytest.fixture(autouse=True)
def _media(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)


@pytest.mark.parametrize("lang", ["en", "zh-hans"])
def test_alarms_bulk_comment_assign_and_an_ota_campaign(world, browser, live_server, lang):
    world.org.user("otto", world.org.a, OPERATOR_PERMISSIONS + OTA_PERMISSIONS,
                   scope="department")
    carol = world.org.user("carol", world.org.a, OPERATOR_PERMISSIONS, scope="department")
    hot = make_alarm(world.device_a, "Too hot", severity="critical")
    dry = make_alarm(world.device_a, "Too dry", severity="minor")
    untouched = make_alarm(world.device_a, "Door open", severity="warning")
    make_alarm(world.device_b, "Alarm of B")

    page = new_page(browser)
    sign_in(page, live_server.url, "otto", start="/alarms/")
    set_language(page, lang)
    rows = page.locator('[data-testid="alarm-list"] tbody tr[data-alarm]')
    assert rows.count() == 3
    assert "Alarm of B" not in page.inner_text('[data-testid="alarm-list"]')
    page.check(f'input[name=ids][value="{hot.pk}"]')
    page.check(f'input[name=ids][value="{dry.pk}"]')
    assert page.inner_text("[data-bulk-count]") == "2"
    shoot(page, "alarms-list-selected")

    with page.expect_navigation():
        page.click('button[name=operation][value=acknowledge]')
    flash = page.inner_text(".flash")
    if lang == "en":
        assert "2 acknowledged" in flash
    else:
        assert "2 已确认" in flash
    assert {a.name: a.status for a in Alarm.objects.filter(device=world.device_a)} == {
        "Too hot": "acknowledged", "Too dry": "acknowledged", "Door open": "active"}
    assert Alarm.objects.get(pk=untouched.pk).status == "active"
    shoot(page, "alarms-bulk-acknowledged")

    with page.expect_navigation():
        page.click(f'tr[data-alarm="{hot.pk}"] td a[href="/alarms/{hot.pk}/"]')
    assert page.locator('[data-testid="alarm-detail"]').is_visible()
    assert page.locator('[data-testid="alarm-history"] tr[data-event="acknowledged"]').count() == 1
    shoot(page, "alarm-detail")

    page.fill("#comment-text", f"Valve replaced {XSS}")
    with page.expect_navigation():
        page.click('[data-testid="comment-form"] button[type=submit]')
    comment = page.locator('[data-testid="alarm-comments"] .comment-text')
    assert comment.inner_text() == f"Valve replaced {XSS}"
    assert page.evaluate("window.__pwned") is None
    page.select_option("#assignee", label="carol")
    with page.expect_navigation():
        page.click('[data-testid="assign-form"] button[type=submit]')
    assert page.inner_text('[data-testid="alarm-assignee"]') == "carol"
    assert page.locator('[data-testid="alarm-history"] tr[data-event="assigned"]').count() == 1
    stored = Alarm.objects.get(pk=hot.pk)
    assert stored.assignee == carol
    assert AlarmComment.objects.get(alarm=stored).text == f"Valve replaced {XSS}"
    shoot(page, "alarm-commented-assigned")

    # OTA: upload a package, then a campaign for dev-a1
    page.goto(f"{live_server.url}/ota/")
    page.select_option("#id_product", "thermo-a")
    page.fill("#id_name", "Main firmware")
    page.fill("#id_version", "2.0.0")
    page.set_input_files("#id_file", files=[{"name": "fw.bin", "mimeType":
                                             "application/octet-stream", "buffer": FIRMWARE}])
    shoot(page, "ota-upload")
    with page.expect_navigation():
        page.click('[data-testid="package-form"] button[type=submit]')
    package = OtaPackage.objects.get()
    assert package.size == len(FIRMWARE) and package.version == "2.0.0"
    assert page.locator(f'tr[data-package="{package.pk}"]').is_visible()
    shoot(page, "ota-packages")

    with page.expect_navigation():
        page.click(f'tr[data-package="{package.pk}"] a.button')
    page.fill("#id_name", "Roll out 2.0")
    page.check('input[name=target_type][value=devices]')
    page.fill("#id_devices", "dev-a1")
    shoot(page, "ota-campaign-new")
    with page.expect_navigation():
        page.click('[data-testid="campaign-form"] button[type=submit]')
    campaign = OtaCampaign.objects.get()
    task = OtaTask.objects.get(campaign=campaign)
    assert page.url == f"{live_server.url}/ota/campaigns/{campaign.pk}/"
    row = page.locator(f'tr[data-task="{task.pk}"]')
    assert "dev-a1" in row.inner_text()
    assert page.inner_text('[data-total="total"]') == "1"
    shoot(page, "ota-campaign")

    # the device reports progress: the row refreshes from the progress JSON
    OtaTask.objects.filter(pk=task.pk).update(status="in_progress", progress=40, attempts=1)
    page.wait_for_function(
        f"document.querySelector('tr[data-task=\"{task.pk}\"] [data-progress-text]')"
        ".textContent.trim() === '40 %'", timeout=15_000)
    assert page.inner_text('[data-total="in_progress"]') == "1"
    shoot(page, "ota-campaign-progress")
    assert page.js_errors == []
