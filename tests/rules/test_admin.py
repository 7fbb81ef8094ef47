"""The admin: rules are created through the actions, traces and alarms render and export."""

import json

import pytest

from webapp.rules.models import Rule, RuleTrace

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commit_hooks")]


def test_admin_creates_rules_and_shows_traces_and_alarms(thermo, feed, client, admin_user):
    """A rule saved in the admin is validated and live; its trace and alarm pages render."""
    client.force_login(admin_user)
    form = {"name": "admin-hot", "description": "", "enabled": "on",
            "trigger": json.dumps({"type": "property", "product": "thermo", "service": "env",
                                   "property": "temperature"}),
            "condition": json.dumps({"op": ">", "value": 30}),
            "actions": json.dumps([{"type": "alarm", "severity": "minor"}]),
            "debounce": "{}", "cooldown": "0", "fire_mode": "each", "auto_clear": "on"}
    bad = client.post("/admin/rules/rule/add/", {**form, "condition": '{"op": "~"}'})
    assert bad.status_code == 200 and "Unknown operator" in bad.content.decode()
    assert client.post("/admin/rules/rule/add/", form).status_code == 302
    rule = Rule.objects.get(name="admin-hot")
    assert rule.trigger_type == "property" and rule.product.identifier == "thermo"
    feed.data(temperature=33)
    trace = RuleTrace.objects.get(rule=rule)
    page = client.get(f"/admin/rules/ruletrace/{trace.pk}/change/").content.decode()
    assert "33" in page and "holds" in page
    assert client.get("/admin/rules/alarm/").status_code == 200
    assert "admin-hot" in client.get("/admin/rules/alarm/").content.decode()
    from webapp.rules.resources import AlarmResource

    exported = AlarmResource().export().csv
    assert "admin-hot" in exported and "dev-1" in exported and "minor" in exported
