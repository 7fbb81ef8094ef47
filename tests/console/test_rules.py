"""Console rules: the list, the builder's save (as the API validates it, plus the thing
model), the rule page with its counters and traces, enabling again, the test with a sample
message, the data scope and hostile input."""

from __future__ import annotations

import json
from typing import Any

import pytest

RULE_PERMISSIONS = ("rules.view_rule", "rules.add_rule", "rules.change_rule")


def grant(user: Any, *codenames: str) -> Any:
    from django.contrib.auth.models import Permission

    for name in codenames:
        app, codename = name.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app,
                                                         codename=codename))
    from webapp.system.models import User

    return User.objects.get(pk=user.pk)


@pytest.fixture
def alice(world):
    return grant(world.alice, *RULE_PERMISSIONS)


@pytest.fixture
def bob(world):
    return grant(world.bob, *RULE_PERMISSIONS)


def hot(product: str = "thermo-a", **extra: Any) -> dict[str, Any]:
    rule = {"name": "hot", "enabled": True,
            "trigger": {"type": "property", "product": product, "service": "env",
                        "property": "temperature"},
            "condition": {"all": [{"service": "env", "property": "temperature", "op": ">",
                                   "value": 30}]},
            "actions": [{"type": "alarm", "severity": "major", "message": "too hot"}],
            "debounce": {}, "cooldown": 0, "fire_mode": "each", "auto_clear": True}
    rule.update(extra)
    return rule


def post_json(client: Any, url: str, body: Any) -> Any:
    return client.post(url, data=json.dumps(body) if not isinstance(body, str | bytes)
                       else body, content_type="application/json")


def make_rule(data: dict[str, Any]) -> Any:
    from webapp.rules import actions

    return actions.create_rule(acting_user=None, data=data)


def test_list_shows_rules_in_scope_with_status_counters_and_filters(world, alice, client_of,
                                                                    redis_client):
    from webapp.rules.keys import rule_keys

    mine = make_rule(hot(name="hot-a"))
    make_rule(hot("thermo-b", name="hot-b"))
    failed = make_rule(hot(name="broken-a"))
    failed.enabled = False
    failed.failed_at = failed.updated
    failed.failure_reason = "arithmetic overflow in x * 1e308"
    failed.save()
    redis_client.hset(rule_keys().stats(mine.pk), mapping={"evaluated": 12, "fired": 3})
    page = client_of(alice).get("/rules/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "hot-a" in text and "broken-a" in text and "hot-b" not in text
    assert "arithmetic overflow" in text
    assert ">12<" in text and ">3<" in text
    filtered = client_of(alice).get("/rules/?state=failed").content.decode()
    assert "broken-a" in filtered and "hot-a" not in filtered
    assert "hot-a" not in client_of(alice).get("/rules/?q=broken").content.decode()


def test_navigation_leads_to_the_console_page(world, alice, client_of):
    text = client_of(alice).get("/rules/").content.decode()
    assert 'href="/rules/"' in text
    assert "/admin/rules/rule/" not in text


def test_no_permission_is_403(world, client_of):
    assert client_of(world.nobody).get("/rules/").status_code == 403
    assert client_of(world.alice).get("/rules/new/").status_code == 403
    viewer = grant(world.alice, "rules.view_rule")
    rule = make_rule(hot())
    assert client_of(viewer).get(f"/rules/{rule.pk}/").status_code == 200
    assert post_json(client_of(viewer), f"/rules/{rule.pk}/", hot(name="x")).status_code == 403
    assert client_of(viewer).post(f"/rules/{rule.pk}/enabled/",
                                  {"enabled": "false"}).status_code == 403
    assert post_json(client_of(viewer), f"/rules/{rule.pk}/test/", {}).status_code == 403


def test_builder_page_and_model(world, alice, client_of):
    page = client_of(alice).get("/rules/new/")
    assert page.status_code == 200
    assert b"rule-builder-data" in page.content
    model = client_of(alice).get("/rules/model/thermo-a/").json()
    props = {p["code"]: p for p in model["services"][0]["properties"]}
    assert props["temperature"]["unit"] == "C" and props["mode"]["enum_values"] == ["eco",
                                                                                    "boost"]
    assert client_of(alice).get("/rules/model/thermo-b/").status_code == 404


def test_valid_rule_is_saved(world, alice, client_of):
    from webapp.rules.models import Rule

    answer = post_json(client_of(alice), "/rules/new/", hot())
    assert answer.status_code == 200, answer.content
    rule = Rule.objects.get(pk=answer.json()["id"])
    assert rule.product == world.product_a and rule.created_by == alice
    assert answer.json()["url"] == f"/rules/{rule.pk}/"
    changed = post_json(client_of(alice), f"/rules/{rule.pk}/", hot(name="hotter"))
    assert changed.status_code == 200
    rule.refresh_from_db()
    assert rule.name == "hotter"


def test_unknown_property_is_refused_with_the_reason_at_the_condition(world, alice, client_of):
    from webapp.rules.models import Rule

    body = hot(condition={"all": [{"service": "env", "property": "temperature", "op": ">",
                                   "value": 30},
                                  {"service": "env", "property": "pressure", "op": ">",
                                   "value": 1}]})
    answer = post_json(client_of(alice), "/rules/new/", body)
    assert answer.status_code == 400
    errors = answer.json()["errors"]
    assert errors == [{"path": "condition.all.1",
                       "message": "The service 'env' has no property 'pressure'."}]
    assert not Rule.objects.exists()


@pytest.mark.parametrize(("leaf", "words"), [
    ({"property": "mode", "op": "==", "value": 3}, "not a value of mode"),
    ({"property": "mode", "op": ">", "value": "eco"}, "does not apply to mode"),
    ({"property": "temperature", "op": ">", "value": "hot"}, "is a number"),
    ({"property": "humidity", "op": "<", "value": 10**12}, "outside the range"),
    ({"property": "temperature", "op": "between", "value": [1, "x"]}, "is a number"),
])
def test_type_mismatch_is_refused(world, alice, client_of, leaf, words):
    answer = post_json(client_of(alice), "/rules/new/",
                       hot(condition={"any": [{"service": "env", **leaf}]}))
    assert answer.status_code == 400
    (error,) = answer.json()["errors"]
    assert error["path"] == "condition.any.0" and words in error["message"]


def test_command_action_params_are_checked_against_the_model(world, alice, client_of):
    body = hot(actions=[{"type": "command", "service": "env", "command": "set_interval",
                         "params": {"seconds": 99999}}])
    answer = post_json(client_of(alice), "/rules/new/", body)
    assert answer.status_code == 400
    assert answer.json()["errors"][0]["path"] == "actions.0"
    assert "above max" in answer.json()["errors"][0]["message"]


def test_other_departments_product_device_channel_and_sink_are_refused(world, alice, client_of):
    from webapp.rules.models import NotificationChannel, Rule, Sink

    channel = NotificationChannel.objects.create(name="ops-b", channel_type="site",
                                                 department=world.org.b)
    sink = Sink.objects.create(name="kafka-b", sink_type="topic", department=world.org.b,
                               config={"topic": "x"})
    client = client_of(alice)
    answer = post_json(client, "/rules/new/", hot("thermo-b"))
    assert answer.status_code == 400 and "thermo-b" in answer.json()["errors"][0]["message"]
    for action in ({"type": "notify", "channel": channel.pk},
                   {"type": "forward", "sink": sink.name},
                   {"type": "command", "device": "dev-b1", "service": "env",
                    "command": "set_interval", "params": {"seconds": 5}}):
        answer = post_json(client, "/rules/new/", hot(actions=[action]))
        assert answer.status_code == 400, action
        assert "within your data scope" in json.dumps(answer.json()), action
    assert not Rule.objects.exists()
    model = client.get("/rules/model/thermo-a/").json()
    assert model["channels"] == [] and model["sinks"] == []
    assert model["devices"] == ["dev-a1"]


def test_other_departments_rule_is_404(world, alice, client_of):
    other = make_rule(hot("thermo-b", name="b-rule"))
    client = client_of(alice)
    assert client.get(f"/rules/{other.pk}/").status_code == 404
    assert post_json(client, f"/rules/{other.pk}/", hot()).status_code == 404
    assert client.post(f"/rules/{other.pk}/enabled/", {"enabled": "false"}).status_code == 404
    assert post_json(client, f"/rules/{other.pk}/test/", {"values": {}}).status_code == 404
    other.refresh_from_db()
    assert other.enabled and other.name == "b-rule"


def test_rule_page_shows_failure_counters_traces_and_reenables(world, alice, client_of,
                                                               redis_client):
    from webapp.rules import actions
    from webapp.rules.keys import rule_keys

    rule = make_rule(hot())
    rule.enabled = False
    rule.failed_at = rule.updated
    rule.failure_reason = "evaluation took 80 ms, over its budget"
    rule.save()
    redis_client.hset(rule_keys().stats(rule.pk), mapping={"evaluated": 7, "fired": 2})
    actions.record_trace(rule=rule, kind="fired", device="dev-a1", ts_ms=1_700_000_000_000,
                         message={"values": {"temperature": 35}}, conditions={"held": True},
                         results=[{"type": "alarm", "ok": True}])
    client = client_of(alice)
    text = client.get(f"/rules/{rule.pk}/").content.decode()
    assert "over its budget" in text and "Re-enable" in text
    assert "dev-a1" in text and "{&quot;temperature&quot;: 35}" in text and ">7<" in text
    answer = client.post(f"/rules/{rule.pk}/enabled/", {"enabled": "true"})
    assert answer.status_code == 302
    rule.refresh_from_db()
    assert rule.enabled and rule.failed_at is None and rule.failure_reason == ""
    client.post(f"/rules/{rule.pk}/enabled/", {"enabled": "false", "next": "list"})
    rule.refresh_from_db()
    assert not rule.enabled


def test_sample_message_gives_each_conditions_verdict_and_runs_nothing(world, alice,
                                                                       client_of):
    from webapp.rules.models import Alarm, RuleTrace

    rule = make_rule(hot(condition={"all": [
        {"service": "env", "property": "temperature", "op": ">", "value": 30},
        {"service": "env", "property": "humidity", "op": "<", "value": 50}]}))
    client = client_of(alice)
    answer = post_json(client, f"/rules/{rule.pk}/test/",
                       {"values": {"temperature": 35, "humidity": 20}})
    assert answer.status_code == 200
    body = answer.json()
    assert body["matched"] is True
    leaves = body["conditions"]["all"]
    assert [leaf["held"] for leaf in leaves] == [True, True]
    assert leaves[0]["actual"] == 35 and leaves[0]["source"] == "message"
    assert body["actions"][0]["type"] == "alarm"
    partial = post_json(client, f"/rules/{rule.pk}/test/", {"values": {"temperature": 35}})
    leaf = partial.json()["conditions"]["all"][1]
    assert partial.json()["matched"] is False and leaf["source"] is None  # unknown
    assert not Alarm.objects.exists() and not RuleTrace.objects.exists()


@pytest.mark.parametrize("body", [
    b"{not json", b"[" * 100_000 + b"]" * 100_000, b'{"name": ' + b"9" * 5000 + b"}",
    b"x" * (300 * 1024), b"[1, 2]",
])
def test_hostile_bodies_get_clear_errors(world, alice, client_of, body):
    client = client_of(alice)
    answer = client.post("/rules/new/", data=body, content_type="application/json")
    assert answer.status_code in (400, 413)
    assert answer.json()["detail"]
    rule = make_rule(hot())
    answer = client.post(f"/rules/{rule.pk}/test/", data=body,
                         content_type="application/json")
    assert answer.status_code in (400, 413)


def test_hostile_rules_get_clear_errors(world, alice, client_of):
    from webapp.rules.models import Rule

    client = client_of(alice)
    deep: Any = {"service": "env", "property": "temperature", "op": ">", "value": 1}
    for _ in range(200):
        deep = {"not": deep}
    cases = [
        hot(condition=deep),
        hot(condition={"service": "env", "property": "temperature", "op": ">",
                       "value": 1e308 * 10}),
        hot(condition={"service": "env", "property": "humidity", "op": ">",
                       "value": 10**200}),
        hot(name="n" * 5000),
        hot(actions=[{"type": "alarm", "severity": "major", "message": "m" * 200_000}]),
        hot(condition={"expr": "(" * 500 + "1" + ")" * 500}),
        hot(condition={"any": [{"service": "env", "property": "mode", "op": "in",
                                "value": ["eco"] * 5000}]}),
        hot(trigger="nope"), hot(actions="nope"), hot(debounce={"count": 10**30}),
    ]
    for case in cases:
        answer = post_json(client, "/rules/new/", case)
        assert answer.status_code in (400, 413), (answer.status_code, str(case)[:80])
        assert answer.json()["detail"]
    assert not Rule.objects.exists()
    rule = make_rule(hot())
    for sample in ({"values": {"temperature": 10**400}}, {"values": "x"},
                   {"values": {"temperature": "t" * 100_000}}, {"device": "d" * 10_000}):
        answer = post_json(client, f"/rules/{rule.pk}/test/", sample)
        assert answer.status_code in (200, 400, 413), sample


def test_xss_in_names_is_escaped(world, alice, client_of):
    make_rule(hot(name="<script>alert(1)</script>"))
    text = client_of(alice).get("/rules/").content.decode()
    assert "<script>alert(1)</script>" not in text


def test_own_departments_channel_sink_and_device_are_offered_and_accepted(world, alice,
                                                                          client_of, settings):
    from webapp.rules.models import NotificationChannel, Rule, Sink

    channel = NotificationChannel.objects.create(name="ops-a", channel_type="site",
                                                 department=world.org.a)
    Sink.objects.create(name="kafka-a", sink_type="topic", department=world.org.a,
                        config={"topic": "x"})
    settings.OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.0/8"]  # the webhook's receiver
    client = client_of(alice)
    model = client.get("/rules/model/thermo-a/").json()
    assert [c["name"] for c in model["channels"]] == ["ops-a"]
    assert [s["name"] for s in model["sinks"]] == ["kafka-a"]
    answer = post_json(client, "/rules/new/", hot(actions=[
        {"type": "notify", "channel": channel.pk}, {"type": "forward", "sink": "kafka-a"},
        {"type": "command", "device": "dev-a1", "service": "env", "command": "set_interval",
         "params": {"seconds": 5}},
        {"type": "webhook", "url": "http://127.0.0.1:9/hook", "secret": "s3cret"}]))
    assert answer.status_code == 200, answer.content
    rule = Rule.objects.get()
    assert "secret" not in rule.actions[3] and rule.actions[3]["secret_encrypted"]
    page = client.get(f"/rules/{rule.pk}/").content.decode()
    assert "s3cret" not in page and "secret_encrypted" not in page
    # saving again with the masked secret keeps it
    body = hot(actions=[*rule.actions[:3], {"type": "webhook",
                                            "url": "http://127.0.0.1:9/hook",
                                            "secret": "********"}])
    assert post_json(client, f"/rules/{rule.pk}/", body).status_code == 200
    rule.refresh_from_db()
    assert rule.actions[3]["secret_encrypted"]


def test_trigger_device_group_within_scope(world, alice, client_of):
    from webapp.devices.models import DeviceGroup
    from webapp.rules.models import Rule

    mine = DeviceGroup.objects.create(name="boilers-a", department=world.org.a)
    theirs = DeviceGroup.objects.create(name="boilers-b", department=world.org.b)
    client = client_of(alice)
    groups = client.get("/rules/model/thermo-a/").json()["groups"]
    assert groups == [{"id": mine.pk, "name": "boilers-a"}]
    refused = post_json(client, "/rules/new/", hot(trigger={
        "type": "property", "product": "thermo-a", "service": "env", "group": theirs.pk}))
    assert refused.status_code == 400 and not Rule.objects.exists()
    saved = post_json(client, "/rules/new/", hot(trigger={
        "type": "property", "product": "thermo-a", "service": "env", "group": mine.pk}))
    assert saved.status_code == 200, saved.content
    assert Rule.objects.get().trigger["group"] == mine.pk


def test_status_and_event_rules_are_tested_with_their_fields(world, alice, client_of):
    offline = make_rule({"name": "gone", "trigger": {"type": "status", "product": "thermo-a",
                                                     "status": "offline"},
                         "condition": {"property": "reason", "op": "contains",
                                       "value": "kick"},
                         "actions": [{"type": "alarm", "severity": "warning"}]})
    client = client_of(alice)
    page = client.get(f"/rules/{offline.pk}/").content.decode()
    assert 'name="value.status"' in page and 'name="value.reason"' in page
    answer = post_json(client, f"/rules/{offline.pk}/test/", {
        "status": "offline", "values": {"status": "offline", "reason": "kicked"}})
    assert answer.status_code == 200 and answer.json()["matched"] is True
    event = make_rule({"name": "heat", "trigger": {"type": "event", "product": "thermo-a",
                                                  "event": "overheat"},
                       "condition": {"property": "level", "op": ">=", "value": 2}})
    page = client.get(f"/rules/{event.pk}/").content.decode()
    assert 'name="value.level"' in page and 'data-event="overheat"' in page
    answer = post_json(client, f"/rules/{event.pk}/test/", {"event": "overheat",
                                                            "values": {"level": 3}})
    assert answer.json()["matched"] is True


def test_draft_is_tested_before_it_is_saved_within_the_scope(world, alice, client_of):
    from webapp.rules.models import Alarm, Rule, RuleTrace

    client = client_of(alice)
    answer = post_json(client, "/rules/test/", {"rule": hot(), "device": "dev-a1",
                                                "values": {"temperature": 35}})
    assert answer.status_code == 200, answer.content
    body = answer.json()
    assert body["matched"] is True and body["actions"][0]["type"] == "alarm"
    assert post_json(client, "/rules/test/", {"rule": hot(), "values": {"temperature": 3}}
                     ).json()["matched"] is False
    # The builder's page carries the draft test.
    page = client.get("/rules/new/").content.decode()
    assert 'data-testid="draft-test"' in page and "/rules/test/" in page
    # Another department's product: refused by the serializer, as when saving.
    refused = post_json(client, "/rules/test/", {"rule": hot("thermo-b"),
                                                 "values": {"temperature": 35}})
    assert refused.status_code == 400 and refused.json()["errors"]
    # An invalid draft names the part of the rule; hostile bodies get clear errors.
    bad = post_json(client, "/rules/test/", {"rule": hot(condition={"all": [
        {"service": "env", "property": "temperature", "op": "??", "value": 1}]}),
        "values": {}})
    assert bad.status_code == 400
    for hostile in (b"{not json", b"[1]", b'{"rule": []}', b"x" * (300 * 1024)):
        answer = client.post("/rules/test/", data=hostile, content_type="application/json")
        assert answer.status_code in (400, 413) and answer.json()["detail"]
    assert not Rule.objects.exists() and not Alarm.objects.exists()
    assert not RuleTrace.objects.exists()


def test_draft_test_needs_add_or_change(world, client_of):
    viewer = grant(world.alice, "rules.view_rule")
    answer = post_json(client_of(viewer), "/rules/test/", {"rule": hot(), "values": {}})
    assert answer.status_code == 403


def test_rule_is_deleted_from_its_page_and_logged(world, alice, client_of):
    from webapp.rules.models import Rule
    from webapp.system.models import OperationLog

    rule = make_rule(hot())
    client = client_of(alice)
    # Without rules.delete_rule: no button, and the POST is refused.
    assert 'data-testid="rule-delete"' not in client.get(f"/rules/{rule.pk}/").content.decode()
    assert client.post(f"/rules/{rule.pk}/delete/").status_code == 403
    deleter = grant(alice, "rules.delete_rule")
    client = client_of(deleter)
    assert 'data-testid="rule-delete"' in client.get(f"/rules/{rule.pk}/").content.decode()
    assert client.get(f"/rules/{rule.pk}/delete/").status_code == 405
    other = make_rule(hot("thermo-b"))
    assert client.post(f"/rules/{other.pk}/delete/").status_code == 404
    answer = client.post(f"/rules/{rule.pk}/delete/")
    assert answer.status_code == 302 and answer["Location"] == "/rules/"
    assert not Rule.objects.filter(pk=rule.pk).exists()
    assert Rule.objects.filter(pk=other.pk).exists()
    log = OperationLog.objects.get(action="delete", model="rule", object_id=str(rule.pk))
    assert log.username == deleter.username


def test_masked_webhook_secret_follows_its_action_when_reordered(world, alice, client_of):
    from webapp.rules import secrets
    from webapp.rules.models import Rule

    hooks = [{"type": "webhook", "url": "http://192.0.43.8:9/a", "secret": "alpha"},
             {"type": "webhook", "url": "http://192.0.43.8:9/b", "secret": "beta"}]
    rule = make_rule(hot(actions=hooks))
    client = client_of(alice)
    swapped = [{"type": "webhook", "url": "http://192.0.43.8:9/b", "secret": secrets.MASK},
               {"type": "alarm", "severity": "major", "message": "hot"},
               {"type": "webhook", "url": "http://192.0.43.8:9/a", "secret": secrets.MASK}]
    answer = post_json(client, f"/rules/{rule.pk}/", hot(actions=swapped))
    assert answer.status_code == 200, answer.content
    saved = Rule.objects.get(pk=rule.pk).actions
    assert secrets.action_secret(saved[0]) == "beta"
    assert not saved[1].get("secret_encrypted")
    assert secrets.action_secret(saved[2]) == "alpha"
    # A URL edited in place keeps the secret of the action at that place.
    moved = [dict(saved[0], url="http://192.0.43.8:9/c", secret=secrets.MASK)]
    moved[0].pop("secret_encrypted")
    post_json(client, f"/rules/{rule.pk}/", hot(actions=moved))
    assert secrets.action_secret(Rule.objects.get(pk=rule.pk).actions[0]) == "beta"
