"""In a browser: an operator builds a threshold rule (temperature > 30 on thermo-a with an
alarm), sees an unknown property refused next to its condition, saves, tests the rule with
a sample message (each condition's verdict, the alarm it would raise) and finds it in the
list; in English and in Simplified Chinese, with a screenshot of every step."""

from __future__ import annotations

import pytest

from tests.console.browsing import new_page, set_language, shoot, sign_in
from tests.console.conftest import OPERATOR_PERMISSIONS
from webapp.rules import actions
from webapp.rules.models import Alarm, Rule, RuleTrace

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

RULE_PERMISSIONS = ("rules.view_rule", "rules.add_rule", "rules.change_rule")
XSS = '<img src=x onerror="window.__pwned=1">'
WORDS = {
    "en": {"unknown": "The service 'env' has no property 'pressure'.",
           "fires": "The rule would fire.", "not_fires": "The rule would not fire.",
           "true": "true", "false": "false", "unknown_verdict": "unknown",
           "failed": "The rule failed at"},
    "zh-hans": {"unknown": "服务 'env' 没有属性 'pressure'。",
                "fires": "规则会触发。", "not_fires": "规则不会触发。",
                "true": "真", "false": "假", "unknown_verdict": "未知",
                "failed": "执行失败并已停用"},
}


@pytest.mark.parametrize("lang", ["en", "zh-hans"])
def test_build_refuse_save_test_and_list_a_threshold_rule(world, browser, live_server, lang):
    words = WORDS[lang]
    world.org.user("ruth", world.org.a, OPERATOR_PERMISSIONS + RULE_PERMISSIONS,
                   scope="department")
    page = new_page(browser)
    sign_in(page, live_server.url, "ruth", start="/rules/")
    set_language(page, lang)
    assert page.locator('[data-testid="rule-list"] tbody tr[data-rule]').count() == 0
    shoot(page, "rules-list-empty")

    with page.expect_navigation():
        page.click('[data-testid="rule-new"]')
    options = page.locator('[data-testid="rule-product"] option').all_inner_texts()
    assert any("thermo-a" in o for o in options) and not any("thermo-b" in o for o in options)
    page.select_option('[data-testid="rule-product"]', "thermo-a")
    page.wait_for_selector('[data-testid="trigger-property"]')
    page.select_option('[data-testid="trigger-property"]', "temperature")
    page.fill('[data-testid="rule-name"]', f"Too hot {XSS}")
    page.click('[data-testid="cond-add"]')
    leaf = page.locator('[data-testid="cond-leaf"]').nth(0)
    assert "temperature" in leaf.locator('[data-testid="cond-property"] option:checked') \
        .inner_text()
    leaf.locator('[data-testid="cond-op"]').select_option(">")
    leaf.locator('[data-testid="cond-value"]').fill("30")
    # enumerations offer only their values, and their operators only
    page.click('[data-testid="cond-add"]')
    second = page.locator('[data-testid="cond-leaf"]').nth(1)
    second.locator('[data-testid="cond-property"]').select_option(label="env · Mode [mode] (enum)")
    second = page.locator('[data-testid="cond-leaf"]').nth(1)
    assert ">" not in second.locator('[data-testid="cond-op"] option').all_inner_texts()
    assert second.locator('[data-testid="cond-value"] option').all_inner_texts() == [
        "—", "eco", "boost"]
    second.locator('[data-testid="cond-property"]').select_option("other")
    second = page.locator('[data-testid="cond-leaf"]').nth(1)
    second.locator('[data-testid="cond-custom"]').fill("pressure")
    second.locator('[data-testid="cond-value"]').fill("2")
    page.select_option('[data-testid="rule-action-type"]', "alarm")
    page.click('[data-testid="rule-add-action"]')
    page.select_option('[data-testid="action-severity"]', "critical")
    page.fill('[data-testid="action-message"]', "{{device}} is at {{value}} C")
    shoot(page, "rules-new-built")

    page.click('[data-testid="rule-save"]')
    error = page.locator('[data-testid="cond-error"]').nth(1)
    error.wait_for()
    assert error.inner_text() == words["unknown"]
    assert page.locator('[data-testid="cond-error"]').nth(0).inner_text() == ""
    assert not Rule.objects.exists()
    shoot(page, "rules-new-unknown-property")

    page.locator('[data-testid="cond-leaf"]').nth(1).locator(
        '[data-testid="cond-remove"]').click()
    # the draft is tested before it is saved
    page.click('[data-testid="draft-test"] summary')
    page.select_option('[data-testid="draft-device"]', "dev-a1")
    page.fill('[data-testid="draft-values"]', '{"temperature": 35}')
    page.click('[data-testid="draft-run"]')
    draft = page.locator('[data-testid="draft-result"] [data-testid="test-outcome"]')
    draft.wait_for()
    assert draft.inner_text() == words["fires"]
    assert not Rule.objects.exists()
    shoot(page, "rules-new-draft-test")
    with page.expect_navigation():
        page.click('[data-testid="rule-save"]')
    rule = Rule.objects.get()
    assert rule.name == f"Too hot {XSS}" and rule.product == world.product_a
    assert rule.trigger == {"type": "property", "product": "thermo-a", "service": "env",
                            "property": "temperature"}
    assert rule.condition == {"all": [{"service": "env", "property": "temperature",
                                       "op": ">", "value": 30}]}
    assert rule.actions == [{"type": "alarm", "severity": "critical",
                             "message": "{{device}} is at {{value}} C"}]
    assert page.url.endswith(f"/rules/{rule.pk}/")
    assert page.locator("h1").first.inner_text() == f"Too hot {XSS}"
    shoot(page, "rules-saved")

    page.select_option('[data-testid="test-device"]', "dev-a1")
    page.fill('input[name="value.temperature"]', "35")
    page.click('[data-testid="test-run"]')
    outcome = page.locator('[data-testid="test-outcome"]')
    outcome.wait_for()
    assert outcome.inner_text() == words["fires"]
    verdicts = page.locator('[data-testid="test-leaf"] [data-testid="verdict"]')
    assert verdicts.all_inner_texts() == [words["true"]]
    assert "35" in page.inner_text('[data-testid="test-leaf"]')
    assert "dev-a1 is at 35 C" in page.inner_text('[data-testid="test-actions"]')
    shoot(page, "rules-test-fires")

    page.fill('input[name="value.temperature"]', "")
    page.fill('input[name="value.humidity"]', "40")
    page.click('[data-testid="test-run"]')
    page.wait_for_function(
        "document.querySelector('[data-testid=test-outcome]') && "
        "!document.querySelector('[data-testid=test-actions]')")
    assert page.inner_text('[data-testid="test-outcome"]') == words["not_fires"]
    assert page.locator('[data-testid="test-leaf"] [data-testid="verdict"]') \
        .all_inner_texts() == [words["unknown_verdict"]]
    shoot(page, "rules-test-unknown")
    assert not Alarm.objects.exists() and not RuleTrace.objects.exists()

    # edit: a nested "any of" group (humidity < 20, or mode is eco) beside the threshold
    page.click('[data-testid="cond-add-group"]')
    group = page.locator('[data-testid="cond-group"]').nth(1)
    group.locator('[data-testid="cond-add"]').click()
    group = page.locator('[data-testid="cond-group"]').nth(1)
    group.locator('[data-testid="cond-add"]').click()
    first = page.locator('[data-testid="cond-group"]').nth(1).locator(
        '[data-testid="cond-leaf"]').nth(0)
    first.locator('[data-testid="cond-property"]').select_option("1")  # humidity
    first = page.locator('[data-testid="cond-group"]').nth(1).locator(
        '[data-testid="cond-leaf"]').nth(0)
    first.locator('[data-testid="cond-op"]').select_option("<")
    first = page.locator('[data-testid="cond-group"]').nth(1).locator(
        '[data-testid="cond-leaf"]').nth(0)
    first.locator('[data-testid="cond-value"]').fill("20")
    second = page.locator('[data-testid="cond-group"]').nth(1).locator(
        '[data-testid="cond-leaf"]').nth(1)
    second.locator('[data-testid="cond-property"]').select_option("2")  # mode
    second = page.locator('[data-testid="cond-group"]').nth(1).locator(
        '[data-testid="cond-leaf"]').nth(1)
    second.locator('[data-testid="cond-value"]').select_option(label="eco")
    shoot(page, "rules-edit-nested")
    with page.expect_navigation():
        page.click('[data-testid="rule-save"]')
    rule.refresh_from_db()
    assert rule.condition == {"all": [
        {"service": "env", "property": "temperature", "op": ">", "value": 30},
        {"any": [{"service": "env", "property": "humidity", "op": "<", "value": 20},
                 {"service": "env", "property": "mode", "op": "==", "value": "eco"}]}]}

    # the engine failed the rule after it fired once: its page says why and re-enables it
    actions.record_trace(rule=rule, kind="fired", device="dev-a1", ts_ms=1_760_000_000_000,
                         message={"values": {"temperature": 36}},
                         conditions={"held": True}, results=[{"type": "alarm", "ok": True}])
    Rule.objects.filter(pk=rule.pk).update(enabled=False, failed_at=rule.updated,
                                           failure_reason="evaluation took 80 ms")
    page.reload()
    failure = page.inner_text('[data-testid="rule-failure"]')
    assert words["failed"] in failure and "evaluation took 80 ms" in failure
    assert "dev-a1" in page.inner_text('[data-testid="rule-traces"]')
    shoot(page, "rules-failed-traces")
    with page.expect_navigation():
        page.click('[data-testid="rule-toggle"]')
    rule.refresh_from_db()
    assert rule.enabled and rule.failed_at is None
    assert page.locator('[data-testid="rule-failure"]').count() == 0

    with page.expect_navigation():
        page.click('.sidebar a[href="/rules/"]')
    row = page.locator(f'[data-testid="rule-list"] tr[data-rule="{rule.pk}"]')
    assert f"Too hot {XSS}" in row.inner_text()
    assert "thermo-a" in row.inner_text() or "Thermometer" in row.inner_text()
    shoot(page, "rules-list")
    assert page.evaluate("window.__pwned") is None
    assert page.js_errors == []


def test_an_api_made_rule_loads_into_the_builder_and_saves_unchanged(world, browser,
                                                                     live_server):
    """Groups, negations, expressions, lists and actions the builder does not edit survive
    a save from the builder (same meaning; leaves gain their service)."""
    world.org.user("ruth", world.org.a, OPERATOR_PERMISSIONS + RULE_PERMISSIONS,
                   scope="department")
    rule = actions.create_rule(acting_user=None, data={
        "name": "mixed", "trigger": {"type": "property", "product": "thermo-a",
                                     "service": "env", "property": "temperature"},
        "condition": {"any": [{"expr": "temperature > humidity"},
                              {"not": {"property": "mode", "op": "in", "value": ["eco"]}},
                              {"op": "between", "value": [10, 20]}]},
        "actions": [{"type": "shadow", "service": "env", "values": {"target": 21}},
                    {"type": "alarm", "severity": "minor", "message": "m"}],
        "debounce": {"count": 2, "window": 3}, "cooldown": 30, "fire_mode": "change"})
    from webapp.products.models import Product, Property

    Property.objects.filter(code="mode").update(name=XSS)  # names reach the builder's script
    Product.objects.filter(pk=world.product_a.pk).update(name=f"Thermo {XSS}")
    page = new_page(browser)
    sign_in(page, live_server.url, "ruth", start=f"/rules/{rule.pk}/")
    page.wait_for_selector('[data-testid="cond-leaf"]')
    labels = page.locator('[data-testid="cond-property"]').nth(1).locator(
        "option").all_inner_texts()
    assert f"env · {XSS} [mode] (enum)" in labels
    assert page.evaluate("window.__pwned") is None
    with page.expect_navigation():
        page.click('[data-testid="rule-save"]')
    saved = Rule.objects.get(pk=rule.pk)
    assert saved.condition == {"any": [
        {"expr": "temperature > humidity"},
        {"not": {"all": [{"service": "env", "property": "mode", "op": "in",
                          "value": ["eco"]}]}},
        {"service": "env", "property": "temperature", "op": "between", "value": [10, 20]}]}
    assert saved.actions == rule.actions
    assert (saved.debounce, saved.cooldown, saved.fire_mode) == (
        {"count": 2, "window": 3}, 30, "change")
    assert page.js_errors == []
