"""Data scope of the rule engine's configuration: a user of department A reaches A's
notification channels, sinks, dead letters and notifications only — in lists, details,
writes, the test / redeliver actions, rule actions and the admin."""

from __future__ import annotations

from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from tests.system.conftest import PASSWORD, Org, make_product

pytestmark = pytest.mark.django_db

PERMS = [f"rules.{verb}_{model}"
         for model in ("notificationchannel", "sink", "deadletter", "notification", "rule")
         for verb in ("view", "add", "change", "delete")] + ["products.view_product"]


@pytest.fixture
def org(db):
    return Org()


class World:
    """In A and in B each: a product, a rule, a channel, a sink, a dead letter, a notification
    of the rule and one of an alarm; plus a notification of B's rule sent to A's user."""

    def __init__(self, org: Org) -> None:
        from webapp.rules.models import (
            Alarm,
            DeadLetter,
            Notification,
            NotificationChannel,
            Rule,
            Sink,
        )

        self.org = org
        self.alice = org.user("alice", org.a, PERMS, scope="department")
        now = timezone.now()
        self.product: dict[str, Any] = {}
        self.rule: dict[str, Any] = {}
        self.channel: dict[str, Any] = {}
        self.sink: dict[str, Any] = {}
        self.letter: dict[str, Any] = {}
        self.note: dict[str, Any] = {}
        for key in ("a", "b"):
            department = getattr(org, key)
            product = self.product[key] = make_product(f"p-{key}", department)
            rule = self.rule[key] = Rule.objects.create(
                name=f"rule-{key}", trigger_type="property", product=product,
                trigger={"type": "property", "product": product.identifier,
                         "service": "env", "property": "temperature"})
            self.channel[key] = NotificationChannel.objects.create(
                name=f"ch-{key}", channel_type="insite", department=department)
            self.sink[key] = Sink.objects.create(name=f"sk-{key}", sink_type="log",
                                                 department=department)
            self.letter[key] = DeadLetter.objects.create(sink=self.sink[key], rule=rule,
                                                         message={"device": "d"},
                                                         error=f"down-{key}")
            self.note[key] = Notification.objects.create(
                channel=self.channel[key], channel_type="insite", rule=rule,
                title=f"note-{key}")
            alarm = Alarm.objects.create(name=f"alarm-{key}", product=product,
                                         first_seen=now, last_seen=now)
            self.note[f"alarm-{key}"] = Notification.objects.create(
                channel_type="insite", alarm=alarm, title=f"note-alarm-{key}")
            self.note[f"test-{key}"] = Notification.objects.create(
                channel=self.channel[key], channel_type="insite", title=f"note-test-{key}")
        self.note["to-alice"] = Notification.objects.create(
            channel=self.channel["b"], channel_type="insite", rule=self.rule["b"],
            user=self.alice, title="note-to-alice")


@pytest.fixture
def world(org, redis_prefix):
    return World(org)


def client_for(user: Any) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def names(client: APIClient, url: str, field: str = "name") -> set[Any]:
    response = client.get(url)
    assert response.status_code == 200, response.content
    return {row[field] for row in response.json()["results"]}


def test_lists_stop_at_the_department(world):
    """A's user lists A's channels, sinks, dead letters and notifications — plus the
    notification B's rule sent to them; `?mine=true` is exactly theirs."""
    client = client_for(world.alice)
    assert names(client, "/api/v1/notification-channels/") == {"ch-a"}
    assert names(client, "/api/v1/sinks/") == {"sk-a"}
    assert names(client, "/api/v1/dead-letters/", "error") == {"down-a"}
    assert names(client, "/api/v1/notifications/", "title") == {
        "note-a", "note-alarm-a", "note-test-a", "note-to-alice"}
    assert names(client, "/api/v1/notifications/?mine=true", "title") == {"note-to-alice"}
    assert client.get(f"/api/v1/notifications/{world.note['to-alice'].pk}/").status_code == 200


def test_department_and_below_reaches_the_sub_department(world):
    """Scope "own department and below" reaches A1's sink too, not B's."""
    from webapp.rules.models import Sink

    Sink.objects.create(name="sk-a1", sink_type="log", department=world.org.a1)
    user = world.org.user("bob", world.org.a, PERMS, scope="department_and_below")
    assert names(client_for(user), "/api/v1/sinks/") == {"sk-a", "sk-a1"}


def test_other_department_is_404(world):
    """B's records answer 404 to A's user for detail, update, delete, test and redeliver,
    and stay as they were."""
    from webapp.rules.models import DeadLetter, Notification, NotificationChannel, Sink

    client = client_for(world.alice)
    channel, sink, letter = world.channel["b"].pk, world.sink["b"].pk, world.letter["b"].pk
    requests = [
        ("get", f"/api/v1/notification-channels/{channel}/", None),
        ("patch", f"/api/v1/notification-channels/{channel}/", {"enabled": False}),
        ("put", f"/api/v1/notification-channels/{channel}/",
         {"name": "ch-b", "channel_type": "insite", "enabled": False}),
        ("delete", f"/api/v1/notification-channels/{channel}/", None),
        ("post", f"/api/v1/notification-channels/{channel}/test/", {}),
        ("get", f"/api/v1/sinks/{sink}/", None),
        ("patch", f"/api/v1/sinks/{sink}/", {"enabled": False}),
        ("put", f"/api/v1/sinks/{sink}/", {"name": "sk-b", "sink_type": "log",
                                           "enabled": False}),
        ("delete", f"/api/v1/sinks/{sink}/", None),
        ("post", f"/api/v1/sinks/{sink}/test/", {}),
        ("get", f"/api/v1/dead-letters/{letter}/", None),
        ("delete", f"/api/v1/dead-letters/{letter}/", None),
        ("post", f"/api/v1/dead-letters/{letter}/redeliver/", {}),
        ("get", f"/api/v1/notifications/{world.note['b'].pk}/", None),
        ("get", f"/api/v1/notifications/{world.note['alarm-b'].pk}/", None),
        ("get", f"/api/v1/notifications/{world.note['test-b'].pk}/", None),
    ]
    for method, url, body in requests:
        response = getattr(client, method)(url, body, format="json")
        assert response.status_code == 404, (method, url, response.content)
    assert NotificationChannel.objects.get(pk=channel).enabled
    assert Sink.objects.get(pk=sink).enabled
    assert Sink.objects.get(pk=sink).delivered == 0  # the test did not deliver
    assert not DeadLetter.objects.get(pk=letter).redelivered
    assert not Notification.objects.filter(channel_id=channel, rule=None, alarm=None)\
        .exclude(pk=world.note["test-b"].pk).exists()  # the channel test sent nothing


def test_own_department_actions_work(world):
    """The same calls on A's records succeed (so the 404s above are the scope's)."""
    from webapp.rules.models import DeadLetter

    client = client_for(world.alice)
    assert client.post(f"/api/v1/notification-channels/{world.channel['a'].pk}/test/", {},
                       format="json").status_code == 202
    tested = client.post(f"/api/v1/sinks/{world.sink['a'].pk}/test/", {}, format="json")
    assert tested.status_code == 202 and tested.json()["ok"], tested.content
    letter = world.letter["a"].pk
    redelivered = client.post(f"/api/v1/dead-letters/{letter}/redeliver/", {}, format="json")
    assert redelivered.status_code == 202 and redelivered.json()["ok"], redelivered.content
    assert DeadLetter.objects.get(pk=letter).redelivered
    assert client.patch(f"/api/v1/sinks/{world.sink['a'].pk}/", {"enabled": False},
                        format="json").status_code == 200


def test_filters_do_not_tell_other_departments_records_exist(world):
    """Filtering on B's sink is refused like filtering on a sink that does not exist."""
    client = client_for(world.alice)
    assert client.get(f"/api/v1/dead-letters/?sink={world.sink['a'].pk}").status_code == 200
    other = client.get(f"/api/v1/dead-letters/?sink={world.sink['b'].pk}")
    missing = client.get("/api/v1/dead-letters/?sink=999999")
    assert other.status_code == missing.status_code == 400
    assert client.get(f"/api/v1/notifications/?channel={world.channel['b'].pk}")\
        .status_code == 400


@pytest.mark.parametrize(("url", "body"), [
    ("/api/v1/notification-channels/", {"name": "new", "channel_type": "insite"}),
    ("/api/v1/sinks/", {"name": "new", "sink_type": "log"}),
])
def test_creates_land_in_own_department_and_cannot_leave_it(world, url, body):
    """A new channel or sink defaults to the user's department and records its maker;
    another department is a 400, on create and on update."""
    client = client_for(world.alice)
    to_b = client.post(url, {**body, "department": world.org.b.pk}, format="json")
    assert to_b.status_code == 400, to_b.content
    assert "department" in to_b.json()["errors"]
    assert "outside your data scope" in to_b.content.decode()
    created = client.post(url, body, format="json")
    assert created.status_code == 201, created.content
    assert created.json()["department"] == world.org.a.pk
    assert created.json()["created_by"] == "alice"
    moved = client.patch(f"{url}{created.json()['id']}/", {"department": world.org.b.pk},
                         format="json")
    assert moved.status_code == 400, moved.content
    sub = client.post(url, {**body, "name": "new-a1", "department": world.org.a1.pk},
                      format="json")
    assert sub.status_code == 400  # "own department" does not reach A1
    numeric = client.post(url, {**body, "name": "12345"}, format="json")
    assert numeric.status_code == 400 and "name" in numeric.json()["errors"]


def _rule(product: str, *actions: dict[str, Any]) -> dict[str, Any]:
    return {"name": "hot", "trigger": {"type": "property", "product": product,
                                       "service": "env", "property": "temperature"},
            "condition": {"op": ">", "value": 30},
            "actions": [{"type": "alarm", "severity": "major"}, *actions]}


def test_rule_actions_reach_only_channels_and_sinks_in_scope(world):
    """A rule naming B's channel (by name) or B's sink (by id) is refused with a 400 naming
    the action — on create, update and the draft test; A's are accepted."""
    client = client_for(world.alice)
    by_name = client.post("/api/v1/rules/", _rule("p-a", {"type": "notify",
                                                          "channel": "ch-b"}), format="json")
    assert by_name.status_code == 400, by_name.content
    assert "Action 2 (notify)" in by_name.content.decode()
    assert "actions" in by_name.json()["errors"]
    by_id = client.post("/api/v1/rules/", _rule("p-a", {"type": "forward",
                                                        "sink": world.sink["b"].pk}),
                        format="json")
    assert by_id.status_code == 400 and "Action 2 (forward)" in by_id.content.decode()
    unknown = client.post("/api/v1/rules/", _rule("p-a", {"type": "forward",
                                                          "sink": "nowhere"}), format="json")
    assert unknown.status_code == 400  # the same answer as for B's sink
    draft = client.post("/api/v1/rules/test/", {
        "rule": _rule("p-a", {"type": "notify", "channel": world.channel["b"].pk}),
        "values": {"temperature": 35}, "latest": {}}, format="json")
    assert draft.status_code == 400 and "Action 2 (notify)" in draft.content.decode()

    ok = client.post("/api/v1/rules/", _rule(
        "p-a", {"type": "notify", "channel": "ch-a"},
        {"type": "forward", "sink": world.sink["a"].pk}), format="json")
    assert ok.status_code == 201, ok.content
    rule = ok.json()["id"]
    changed = client.patch(f"/api/v1/rules/{rule}/", {"actions": [
        {"type": "notify", "channel": "ch-a"}, {"type": "forward", "sink": "sk-b"}]},
        format="json")
    assert changed.status_code == 400 and "Action 2 (forward)" in changed.content.decode()


def test_rule_triggers_watch_only_products_and_devices_in_scope(world):
    """A rule on B's product, or listing B's device, is refused: it would send B's messages
    through A's channels."""
    from tests.system.conftest import make_device

    make_device("dev-a", world.product["a"], world.org.a)
    make_device("dev-b", world.product["b"], world.org.b)
    client = client_for(world.alice)
    on_b = client.post("/api/v1/rules/", _rule("p-b", {"type": "notify", "channel": "ch-a"}),
                       format="json")
    missing = client.post("/api/v1/rules/", _rule("p-none"), format="json")
    assert on_b.status_code == missing.status_code == 404, on_b.content
    assert on_b.json()["code"] == missing.json()["code"] == "unknown_product"
    listed = _rule("p-a")
    listed["trigger"]["devices"] = ["dev-a", "dev-b"]
    refused = client.post("/api/v1/rules/", listed, format="json")
    assert refused.status_code == 400 and "dev-b" in refused.json()["detail"]
    listed["trigger"]["devices"] = ["dev-a", "dev-later"]  # could be made in B later
    assert client.post("/api/v1/rules/", listed, format="json").status_code == 400
    listed["trigger"]["devices"] = ["dev-a"]
    assert client.post("/api/v1/rules/", listed, format="json").status_code == 201
    from webapp.rules.models import Rule

    assert not Rule.objects.filter(product=world.product["b"]).exclude(
        pk=world.rule["b"].pk).exists()


def test_a_reference_the_rule_already_had_is_kept(world):
    """An administrator connected A's rule to B's sink: A's user can still edit the rule
    (keeping that action), but cannot add another of B's records."""
    from webapp.rules import actions

    rule = actions.update_rule(rule=world.rule["a"], data={
        "actions": [{"type": "forward", "sink": "sk-b"}]})
    client = client_for(world.alice)
    kept = client.patch(f"/api/v1/rules/{rule.pk}/", {
        "description": "x", "actions": [{"type": "forward", "sink": "sk-b"},
                                        {"type": "forward", "sink": "sk-a"}]}, format="json")
    assert kept.status_code == 200, kept.content
    added = client.patch(f"/api/v1/rules/{rule.pk}/", {"actions": [
        {"type": "forward", "sink": "sk-b"}, {"type": "notify", "channel": "ch-b"}]},
        format="json")
    assert added.status_code == 400 and "Action 2 (notify)" in added.content.decode()


def test_superuser_sees_everything(world):
    from django.contrib.auth import get_user_model

    root = get_user_model().objects.create_superuser("root", "r@example.com", PASSWORD)
    client = client_for(root)
    assert names(client, "/api/v1/notification-channels/") == {"ch-a", "ch-b"}
    assert names(client, "/api/v1/sinks/") == {"sk-a", "sk-b"}
    assert names(client, "/api/v1/dead-letters/", "error") == {"down-a", "down-b"}
    assert len(names(client, "/api/v1/notifications/", "title")) == 7
    assert client.post("/api/v1/notification-channels/", {
        "name": "anywhere", "channel_type": "insite", "department": world.org.b.pk},
        format="json").status_code == 201


def test_admin_is_scoped(world, client):
    """The admin lists, change pages, department choices and rule form stop at the scope."""
    from webapp.rules.models import Rule, Sink

    world.alice.is_staff = True
    world.alice.save(update_fields=["is_staff"])
    client.force_login(world.alice)
    for path, mine, other in [("notificationchannel", "ch-a", "ch-b"),
                              ("sink", "sk-a", "sk-b"),
                              ("deadletter", "down-a", "down-b"),
                              ("notification", "note-a", "note-b")]:
        page = client.get(f"/admin/rules/{path}/")
        assert page.status_code == 200, path
        body = page.content.decode()
        assert mine in body and other not in body, path
    assert client.get(f"/admin/rules/sink/{world.sink['a'].pk}/change/").status_code == 200
    assert client.get(f"/admin/rules/sink/{world.sink['b'].pk}/change/").status_code == 302
    assert client.get(f"/admin/rules/notificationchannel/{world.channel['b'].pk}/change/")\
        .status_code == 302
    add = client.get("/admin/rules/notificationchannel/add/").content.decode()
    assert "Dept A" in add and "Dept B" not in add
    refused = client.post("/admin/rules/sink/add/", {
        "name": "admin-sink", "sink_type": "log", "enabled": "on",
        "department": world.org.b.pk, "config": "{}", "payload_template": "null",
        "max_retries": 3, "backoff": 2.0})
    assert refused.status_code == 200  # the form again, with the error
    assert not Sink.objects.filter(name="admin-sink").exists()
    accepted = client.post("/admin/rules/sink/add/", {
        "name": "admin-sink", "sink_type": "log", "enabled": "on",
        "department": world.org.a.pk, "config": "{}", "payload_template": "null",
        "max_retries": 3, "backoff": 2.0})
    assert accepted.status_code == 302, accepted.content.decode()[-3000:]
    made = Sink.objects.get(name="admin-sink")
    assert made.department == world.org.a and made.created_by == world.alice
    rule = client.post("/admin/rules/rule/add/", {
        "name": "admin-rule", "enabled": "on", "fire_mode": "each", "auto_clear": "on",
        "cooldown": 0, "trigger": '{"type": "property", "product": "p-a", "service": "env",'
                                  ' "property": "temperature"}',
        "condition": "{}", "debounce": "{}",
        "actions": '[{"type": "forward", "sink": "sk-b"}]'})
    assert rule.status_code == 200 and "Action 1 (forward)" in rule.content.decode()
    assert not Rule.objects.filter(name="admin-rule").exists()


def _command(device: Any = None, **extra: Any) -> dict[str, Any]:
    action = {"type": "command", "service": "env", "command": "set_interval",
              "params": {"seconds": 5}, **extra}
    if device is not None:
        action["device"] = device
    return action


def test_command_shadow_and_publish_targets_stop_at_the_scope(world, client):
    """A command, a desired shadow value or a publish on a device topic aimed at B's device
    (or at any device through a template) is refused with a 400 naming the action — on
    create, update, the draft test and the admin form; A's device, the device that fired
    (no `device`, or `{{device}}`) and topics of no device are accepted; a superuser may
    aim anywhere; a target the rule already had is kept."""
    from tests.system.conftest import make_device
    from webapp.rules import actions
    from webapp.rules.models import Rule

    make_device("dev-a", world.product["a"], world.org.a)
    make_device("dev-b", world.product["b"], world.org.b)
    api = client_for(world.alice)
    refused = {
        "Action 2 (command): there is no device 'dev-b' within your data scope.":
            _command("dev-b"),
        "Action 2 (shadow): there is no device 'dev-b' within your data scope.":
            {"type": "shadow", "device": "dev-b", "service": "env", "values": {"t": 1}},
        "Action 2 (command): there is no device 'dev-none' within your data scope.":
            _command("dev-none"),
        "Action 2 (publish): there is no device 'dev-b' within your data scope.":
            {"type": "publish", "topic": "/v1/devices/dev-b/command"},
        "Action 2 (command): the device '{{values.target}}' is a template":
            _command("{{values.target}}"),
        "Action 2 (shadow): the device 'x-{{device}}' is a template":
            {"type": "shadow", "device": "x-{{device}}", "service": "env", "values": {"t": 1}},
        "Action 2 (publish): the topic '{{values.topic}}' is a template":
            {"type": "publish", "topic": "{{values.topic}}"},
        "Action 2 (publish): the topic '/v1/devices/{{device}}x/command' is a template":
            {"type": "publish", "topic": "/v1/devices/{{device}}x/command"},
    }
    for message, action in refused.items():
        response = api.post("/api/v1/rules/", _rule("p-a", action), format="json")
        assert response.status_code == 400, (action, response.content)
        assert message in response.json()["errors"]["actions"][0], response.json()
        draft = api.post("/api/v1/rules/test/", {"rule": _rule("p-a", action),
                                                 "values": {"temperature": 35}, "latest": {}},
                         format="json")
        assert draft.status_code == 400 and message in draft.content.decode(), action
    malformed = api.post("/api/v1/rules/", _rule("p-a", {"type": ["command"]}), format="json")
    assert malformed.status_code == 400, malformed.content  # the compiler's answer, no crash
    accepted = api.post("/api/v1/rules/", _rule(
        "p-a", _command("dev-a"), _command(), _command("{{ device }}"),
        {"type": "shadow", "device": "dev-a", "service": "env", "values": {"t": 1}},
        {"type": "publish", "topic": "/v1/devices/dev-a/command"},
        {"type": "publish", "topic": "/v1/devices/{{device}}/x/{{value}}"},
        {"type": "publish", "topic": "alerts/{{values.site}}"}), format="json")
    assert accepted.status_code == 201, accepted.content
    rule = accepted.json()["id"]
    changed = api.patch(f"/api/v1/rules/{rule}/", {"actions": [
        _command("dev-a"), {"type": "shadow", "device": "dev-b", "service": "env",
                            "values": {"t": 1}}]}, format="json")
    assert changed.status_code == 400
    assert "Action 2 (shadow): there is no device 'dev-b'" in changed.content.decode()

    root = world.org.user("root", None, staff=True, is_superuser=True)
    anywhere = client_for(root).post("/api/v1/rules/", _rule(
        "p-a", _command("dev-b"), _command("{{values.target}}"),
        {"type": "publish", "topic": "/v1/devices/dev-b/command"}), format="json")
    assert anywhere.status_code == 201, anywhere.content
    actions.update_rule(rule=Rule.objects.get(pk=rule), data={
        "actions": [_command("dev-b"), {"type": "publish", "topic": "{{values.topic}}"}]})
    kept = api.patch(f"/api/v1/rules/{rule}/", {"description": "x", "actions": [
        _command("dev-b"), {"type": "publish", "topic": "{{values.topic}}"},
        _command("dev-a")]}, format="json")
    assert kept.status_code == 200, kept.content
    added = api.patch(f"/api/v1/rules/{rule}/", {"actions": [
        _command("dev-b"), _command("{{values.other}}")]}, format="json")
    assert added.status_code == 400 and "Action 2 (command)" in added.content.decode()

    world.alice.is_staff = True
    world.alice.save(update_fields=["is_staff"])
    client.force_login(world.alice)
    form = {"name": "admin-rule", "enabled": "on", "fire_mode": "each", "auto_clear": "on",
            "cooldown": 0, "trigger": '{"type": "property", "product": "p-a", "service": "env",'
                                      ' "property": "temperature"}',
            "condition": "{}", "debounce": "{}"}
    page = client.post("/admin/rules/rule/add/", {
        **form, "actions": '[{"type": "command", "device": "dev-b", "service": "env", '
                           '"command": "set_interval"}]'})
    assert page.status_code == 200
    assert "Action 1 (command): there is no device" in page.content.decode()
    assert not Rule.objects.filter(name="admin-rule").exists()
    saved = client.post("/admin/rules/rule/add/", {
        **form, "actions": '[{"type": "command", "device": "dev-a", "service": "env", '
                           '"command": "set_interval"}]'})
    assert saved.status_code == 302, saved.content.decode()[-2000:]


def _run(rule: Any, device: str = "dev-a") -> list[dict[str, Any]]:
    from webapp.rules import executors

    msg = executors.message_from({"kind": "property", "device": device,
                                  "product": rule.product.identifier if rule.product else "",
                                  "service": "env", "ts": 1_700_000_000_000,
                                  "values": {"temperature": 35}})
    rule = type(rule).objects.select_related("product").get(pk=rule.pk)
    return executors.run_actions(rule, msg, executors.template_env(rule, msg))


def test_actions_resolve_channels_and_sinks_in_the_rules_department(world):
    """When the rule runs, a channel or sink is found only in the department of the rule's
    product (or among those of no department): B's sink wired by an administrator is not
    used, nor A's sink once it moved to B; a rule without a product uses any."""
    from webapp.rules import actions
    from webapp.rules.models import Rule, Sink

    root = world.org.user("root", None, staff=True, is_superuser=True)
    legacy = Sink.objects.create(name="sk-legacy", sink_type="log")
    rule = actions.update_rule(rule=world.rule["a"], data={"actions": [
        {"type": "forward", "sink": "sk-a"}, {"type": "forward", "sink": "sk-b"},
        {"type": "forward", "sink": world.sink["b"].pk}, {"type": "notify", "channel": "ch-b"},
        {"type": "notify", "channel": "ch-a"}, {"type": "forward", "sink": legacy.pk}]})
    results = _run(rule)
    assert [r["ok"] for r in results] == [True, False, False, False, True, True], results
    assert "department" in results[1]["error"]
    assert Sink.objects.get(pk=world.sink["b"].pk).delivered == 0
    assert Sink.objects.get(pk=world.sink["a"].pk).delivered == 1

    Sink.objects.filter(pk=world.sink["a"].pk).update(department=world.org.b)
    assert _run(rule)[0]["ok"] is False  # A's sink moved to B: A's data no longer goes there
    assert Sink.objects.get(pk=world.sink["a"].pk).delivered == 1

    anywhere = actions.create_rule(acting_user=root, data={
        "name": "every-minute", "trigger": {"type": "schedule", "cron": "* * * * *",
                                            "devices": ["dev-x"]},
        "actions": [{"type": "forward", "sink": "sk-b"}]})
    assert anywhere.product is None
    assert [r["ok"] for r in _run(anywhere, "dev-x")] == [True]
    assert Rule.objects.filter(pk=anywhere.pk).exists()


def test_a_number_reference_prefers_the_id(world):
    """"12" names the sink with id 12 even when an older sink is called "12"; a reference of
    non-ASCII digits ("²") is a name, not a crash."""
    from webapp.rules import executors, references
    from webapp.rules.models import Sink

    target = world.sink["a"]
    Sink.objects.create(name=str(target.pk), sink_type="log", department=world.org.a)
    Sink.objects.create(name="0" + str(target.pk), sink_type="log", department=world.org.a)
    assert executors._by_id_or_name(Sink, str(target.pk)) == target
    assert executors._by_id_or_name(Sink, target.pk) == target
    with pytest.raises(LookupError):
        executors._by_id_or_name(Sink, "²")
    with pytest.raises(LookupError):
        executors._by_id_or_name(Sink, "9" * 30)
    assert not references.is_number_reference("²") and not references.is_number_reference("١٢")
    client = client_for(world.alice)
    refused = client.post("/api/v1/rules/", _rule("p-a", {"type": "forward", "sink": "²"}),
                          format="json")
    assert refused.status_code == 400 and "Action 2 (forward)" in refused.content.decode()


def test_rule_actions_use_channels_and_sinks_of_the_products_department(world):
    """A user reaching A and A1 cannot connect a rule on A's product to A1's sink: the rule
    would not find it when it runs (400 naming the action); A's is fine."""
    from webapp.rules.models import Sink

    Sink.objects.create(name="sk-a1", sink_type="log", department=world.org.a1)
    bob = world.org.user("bob", world.org.a, PERMS, scope="department_and_below")
    client = client_for(bob)
    refused = client.post("/api/v1/rules/", _rule("p-a", {"type": "forward", "sink": "sk-a1"}),
                          format="json")
    assert refused.status_code == 400, refused.content
    assert "Action 2 (forward): the sink 'sk-a1' belongs to another department" in \
        refused.json()["errors"]["actions"][0]
    assert client.post("/api/v1/rules/", _rule("p-a", {"type": "forward", "sink": "sk-a"}),
                       format="json").status_code == 201
