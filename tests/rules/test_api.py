"""The rules and alarms API: validation, secrets, the test endpoint, alarm lifecycle."""

import pytest
from django_celery_beat.models import PeriodicTask
from rest_framework.test import APIClient

from webapp.rules import secrets
from webapp.rules.models import Alarm, Rule

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commit_hooks")]

HOT = {"name": "hot", "trigger": {"type": "property", "product": "thermo", "service": "env",
                                  "property": "temperature"},
       "condition": {"op": ">", "value": 30},
       "actions": [{"type": "alarm", "severity": "major", "message": "too hot {{value}}"}]}


@pytest.mark.parametrize(("change", "fragment"), [
    ({"condition": {"op": "~", "value": 1}}, "Unknown operator"),
    ({"trigger": {"type": "nope"}}, "trigger type"),
    ({"trigger": {"type": "property", "product": "ghost", "service": "env",
                  "property": "t"}}, "ghost"),
    ({"actions": [{"type": "alarm", "severity": "apocalyptic"}]}, "severity"),
    ({"actions": [{"type": "webhook", "url": "ftp://x"}]}, "http"),
    ({"actions": [{"type": "alarm", "message": "{{ __import__('os') }}"}]}, "Unknown"),
    ({"condition": {"expr": "temperature >"}}, "Unexpected"),
    ({"debounce": {"count": 5, "window": 2}}, "count"),
    ({"trigger": {"type": "schedule", "cron": "every minute"}}, "cron"),
])
def test_invalid_rules_are_refused_with_a_reason(thermo, change, fragment):
    """A bad rule is a 400 with a stable code and a message naming the fault."""
    response = thermo.post("/api/v1/rules/", {**HOT, **change}, format="json")
    assert response.status_code in (400, 404), response.json()
    assert fragment in str(response.json()["detail"])


def test_webhook_secret_is_encrypted_and_masked(thermo):
    """An action's secret is stored as a Fernet token and shown masked."""
    body = {**HOT, "actions": [{"type": "webhook", "url": "http://127.0.0.1:9/x",
                                "secret": "s3cr3t-value"}]}
    created = thermo.post("/api/v1/rules/", body, format="json").json()
    assert created["actions"][0]["secret"] == "********"
    stored = Rule.objects.get(pk=created["id"]).actions[0]
    assert "secret" not in stored and "s3cr3t" not in str(stored)
    assert secrets.action_secret(stored) == "s3cr3t-value"
    thermo.patch(f"/api/v1/rules/{created['id']}/", {"actions": created["actions"]},
                 format="json")
    assert secrets.action_secret(Rule.objects.get(pk=created["id"]).actions[0]) == \
        "s3cr3t-value"


def test_rule_test_endpoint_explains(thermo, redis_client, redis_prefix):
    """POST /rules/{id}/test/ says which conditions held, with values and sources."""
    rule = thermo.post("/api/v1/rules/", {**HOT, "condition": {"all": [
        {"op": ">", "value": 30}, {"property": "humidity", "op": "<", "value": 50}]}},
        format="json").json()
    redis_client.hset(f"{redis_prefix}latest:dev-1", "env",
                      '{"humidity": {"value": 70, "ts": 1}}')
    out = thermo.post(f"/api/v1/rules/{rule['id']}/test/",
                      {"device": "dev-1", "values": {"temperature": 35}}, format="json").json()
    assert out["matched"] is False
    temp, hum = out["conditions"]["all"]
    assert (temp["held"], temp["actual"], temp["source"]) == (True, 35, "message")
    assert (hum["held"], hum["actual"], hum["source"]) == (False, 70, "latest")
    assert out["actions"][0]["message"] == "too hot 35"
    out = thermo.post(f"/api/v1/rules/{rule['id']}/test/",
                      {"values": {"temperature": 35}, "latest": {"env": {"humidity": 10}}},
                      format="json").json()
    assert out["matched"] is True
    draft = thermo.post("/api/v1/rules/test/", {"rule": HOT, "values": {"temperature": 5}},
                        format="json").json()
    assert draft["matched"] is False and "does not hold" in draft["conditions"]["reason"]


def test_alarm_lifecycle_over_the_api(thermo, feed, admin_user):
    """Acknowledge, assign, comment, history, counts, then a manual clear."""
    thermo.post("/api/v1/rules/", HOT, format="json")
    feed.data(device="dev-1", temperature=40)
    feed.data(device="dev-2", temperature=41)
    alarm = thermo.get("/api/v1/alarms/", {"device": "dev-1"}).json()["results"][0]
    url = f"/api/v1/alarms/{alarm['id']}/"
    acked = thermo.post(url + "acknowledge/").json()
    assert acked["status"] == "acknowledged" and acked["acknowledged_by"] == "root"
    assert thermo.post(url + "acknowledge/").json()["code"] == "alarm_not_active"
    assert thermo.post(url + "assign/", {"assignee": "root"}, format="json").json()[
        "assignee"] == "root"
    assert thermo.post(url + "comments/", {"text": "on my way"}, format="json").status_code == 201
    assert [c["text"] for c in thermo.get(url + "comments/").json()] == ["on my way"]
    counts = thermo.get("/api/v1/alarms/counts/", {"product": "thermo"}).json()
    assert counts["total"] == 2 and counts["by_status"] == {"acknowledged": 1, "active": 1}
    assert counts["by_severity"] == {"major": 2}
    assert [(d["device"], d["open"]) for d in counts["by_device"]] == [("dev-1", 1),
                                                                       ("dev-2", 1)]
    assert counts["by_product"] == [{"product": "thermo", "total": 2, "open": 2}]
    feed.data(device="dev-1", temperature=42)  # an acknowledged alarm is still the open one
    assert Alarm.objects.filter(device__identifier="dev-1").count() == 1
    cleared = thermo.post(url + "clear/", {"reason": "fixed the fan"}, format="json").json()
    assert cleared["status"] == "cleared" and cleared["cleared_by"] == "root"
    kinds = [h["kind"] for h in thermo.get(url + "history/").json()]
    assert kinds == ["raised", "acknowledged", "assigned", "commented", "cleared"]
    feed.data(device="dev-1", temperature=43)  # holds again: a new alarm is raised
    assert thermo.get("/api/v1/alarms/", {"device": "dev-1", "status": "open"}).json()[
        "count"] == 1
    assert Alarm.objects.filter(device__identifier="dev-1").count() == 2
    traces = thermo.get("/api/v1/rule-traces/", {"device": "dev-1"}).json()
    assert traces["count"] == 3 and traces["results"][0]["conditions"]["held"] is True


def test_permissions_are_checked(thermo, django_user_model):
    """A user without rule or alarm permissions is refused."""
    django_user_model.objects.create_user("plain", password="Pw-plain-12345!")
    client = APIClient()
    client.force_authenticate(django_user_model.objects.get(username="plain"))
    assert client.get("/api/v1/rules/").status_code == 403
    assert client.post("/api/v1/rules/", HOT, format="json").status_code == 403
    assert client.get("/api/v1/alarms/").status_code == 403
    assert client.get("/api/v1/sinks/").status_code == 403


def test_scheduled_rule_runs_over_latest_values(thermo, redis_client, redis_prefix):
    """A cron rule gets a beat entry and, when run, checks each device's latest values."""
    body = {**HOT, "name": "nightly", "trigger": {"type": "schedule", "cron": "0 2 * * *",
                                                  "product": "thermo", "service": "env"},
            "condition": {"property": "temperature", "op": ">", "value": 30}}
    rule = thermo.post("/api/v1/rules/", body, format="json").json()
    task = PeriodicTask.objects.get(task="rules.run_schedule")
    assert task.args == f"[{rule['id']}]" and task.crontab.hour == "2" and task.enabled
    redis_client.hset(f"{redis_prefix}latest:dev-2", "env",
                      '{"temperature": {"value": 33, "ts": 1}}')
    from webapp.rules.tasks import run_schedule

    assert run_schedule(rule["id"]) == 1
    assert Alarm.objects.get().device.identifier == "dev-2"
    thermo.patch(f"/api/v1/rules/{rule['id']}/", {"enabled": False}, format="json")
    assert not PeriodicTask.objects.get(pk=task.pk).enabled
    thermo.delete(f"/api/v1/rules/{rule['id']}/")
    assert not PeriodicTask.objects.filter(pk=task.pk).exists()
