"""The acceptance path: a rule made through the API fires on real ingest and clears."""

import json

import pytest

from webapp.rules.models import RuleTrace

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commit_hooks")]


def test_rule_raises_alarm_calls_webhook_sends_command_then_clears(thermo, feed, receiver,
                                                                   redis_client, redis_prefix):
    """Hot reading → alarm + signed webhook + command downlink; cool reading → cleared."""
    api = thermo
    redis_client.hset(f"{redis_prefix}route", "dev-1", "node-a")
    body = {"name": "hot", "enabled": True,
            "trigger": {"type": "property", "product": "thermo", "service": "env",
                        "property": "temperature"},
            "condition": {"op": ">", "value": 30},
            "actions": [{"type": "alarm", "severity": "major", "message": "too hot"},
                        {"type": "webhook", "url": receiver.url + "/hook"},
                        {"type": "command", "service": "env", "command": "set_interval",
                         "params": {"seconds": 5}}]}
    created = api.post("/api/v1/rules/", body, format="json")
    assert created.status_code == 201, created.json()
    rule_id = created.json()["id"]

    feed.data(temperature=25.0)
    assert api.get("/api/v1/alarms/", {"device": "dev-1", "status": "active"}).json()[
        "count"] == 0
    feed.data(temperature=35.5)

    alarms = api.get("/api/v1/alarms/", {"device": "dev-1", "status": "active"}).json()
    assert alarms["count"] == 1
    alarm = alarms["results"][0]
    assert (alarm["severity"], alarm["message"], alarm["rule"]) == ("major", "too hot", rule_id)

    assert len(receiver.requests) == 1
    hook = receiver.json()
    assert receiver.requests[0]["path"] == "/hook"
    assert hook["message"]["values"] == {"temperature": 35.5} and hook["value"] == 35.5
    assert hook["alarm"]["id"] == alarm["id"]

    entries = redis_client.xrange(f"{redis_prefix}down:node-a")
    assert len(entries) == 1
    fields = entries[0][1]
    assert fields[b"topic"] == b"/v1/devices/dev-1/command"
    sent = json.loads(fields[b"payload"])["dataBody"]
    assert (sent["cmd"], sent["params"]) == ("set_interval", {"seconds": 5})

    feed.data(temperature=36.0)  # still hot: the same alarm is updated, not duplicated
    alarms = api.get("/api/v1/alarms/", {"device": "dev-1", "status": "open"}).json()
    assert alarms["count"] == 1 and alarms["results"][0]["count"] == 2

    feed.data(temperature=21.0)
    assert api.get("/api/v1/alarms/", {"device": "dev-1", "status": "active"}).json()[
        "count"] == 0
    cleared = api.get(f"/api/v1/alarms/{alarm['id']}/").json()
    assert cleared["status"] == "cleared" and cleared["cleared_at"]
    kinds = list(RuleTrace.objects.filter(rule_id=rule_id).order_by("created", "id")
                 .values_list("kind", flat=True))
    assert kinds == ["fired", "fired", "cleared"]
    stats = api.get(f"/api/v1/rules/{rule_id}/stats/").json()
    assert (stats["evaluated"], stats["held"], stats["fired"], stats["cleared"]) == (4, 2, 2, 1)
