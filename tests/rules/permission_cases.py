"""Permission cases of the rules API for the matrix in tests/system/test_permissions.py
(401 without credentials, 403 without the permission, success with it)."""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from tests.system.permission_cases import ANY_USER, Case


def _rule(ctx: Any) -> Any:
    from webapp.rules.models import Rule

    return ctx.once("rule", lambda: Rule.objects.create(
        name="hot", trigger_type="property", product=ctx.product(),
        trigger={"type": "property", "product": ctx.product().identifier, "service": "env",
                 "property": "temperature"},
        condition={"op": ">", "value": 30},
        actions=[{"type": "alarm", "severity": "major"}]))


def _alarm(ctx: Any) -> Any:
    from webapp.rules.models import Alarm

    now = timezone.now()
    return ctx.once("alarm", lambda: Alarm.objects.create(
        name="hot", device=ctx.device(), product=ctx.product(), first_seen=now,
        last_seen=now))


def _channel(ctx: Any) -> Any:
    from webapp.rules.models import NotificationChannel

    return ctx.once("channel", lambda: NotificationChannel.objects.create(
        name="inbox", channel_type="insite"))


def _sink(ctx: Any) -> Any:
    from webapp.rules.models import Sink

    return ctx.once("sink", lambda: Sink.objects.create(
        name="hook", sink_type="http", config={"url": "http://192.0.43.8:9/"}))


def _dead_letter(ctx: Any) -> Any:
    from webapp.rules.models import DeadLetter

    return ctx.once("dead", lambda: DeadLetter.objects.create(sink=_sink(ctx), error="down"))


def _notification(ctx: Any) -> Any:
    from webapp.rules.models import Notification

    return ctx.once("notification", lambda: Notification.objects.create(
        channel_type="insite", user=ctx.actor, title="t"))


RULE = {"name": "hot", "trigger": {"type": "property", "product": "thermo", "service": "env",
                                   "property": "temperature"},
        "condition": {"op": ">", "value": 30},
        "actions": [{"type": "alarm", "severity": "major", "message": "hot"}]}
CHANGE_OR_INVALID = (200, 400)
QUEUED_OR_INVALID = (202, 400)  # test endpoints: a Celery worker delivers


def _pk(make: Any, body: Any = None) -> Any:
    return lambda ctx: ({"pk": make(ctx).pk}, body)


CASES: list[Case] = [
    Case("rule-list", "get", ("rules.view_rule",), (200,)),
    Case("rule-list", "post", ("rules.add_rule",), (201,), lambda ctx: (
        {}, {**RULE, "trigger": {**RULE["trigger"], "product": ctx.product().identifier}})),
    Case("rule-detail", "get", ("rules.view_rule",), (200,), _pk(_rule)),
    Case("rule-detail", "patch", ("rules.change_rule",), CHANGE_OR_INVALID,
         _pk(_rule, {"description": "x"})),
    Case("rule-detail", "put", ("rules.change_rule",), CHANGE_OR_INVALID,
         lambda ctx: ({"pk": _rule(ctx).pk}, {**RULE, "trigger": {
             **RULE["trigger"], "product": ctx.product().identifier}})),
    Case("rule-detail", "delete", ("rules.delete_rule",), (204,), _pk(_rule)),
    Case("rule-test", "post", ("rules.change_rule",), CHANGE_OR_INVALID,
         _pk(_rule, {"values": {"temperature": 35}, "latest": {}})),
    Case("rule-test-draft", "post", ("rules.add_rule",), CHANGE_OR_INVALID, lambda ctx: (
        {}, {"rule": {**RULE, "trigger": {**RULE["trigger"],
                                          "product": ctx.product().identifier}},
             "values": {"temperature": 5}, "latest": {}})),
    Case("rule-traces", "get", ("rules.view_rule",), (200,), _pk(_rule)),
    Case("rule-stats", "get", ("rules.view_rule",), (200,), _pk(_rule)),
    Case("rule-trace-list", "get", ("rules.view_ruletrace",), (200,)),
    Case("rule-trace-detail", "get", ("rules.view_ruletrace",), (200,), lambda ctx: (
        {"pk": ctx.once("trace", lambda: _rule(ctx).traces.create(
            kind="fired", ts=timezone.now())).pk}, None)),
    Case("alarm-list", "get", ("rules.view_alarm",), (200,)),
    Case("alarm-counts", "get", ("rules.view_alarm",), (200,)),
    Case("alarm-detail", "get", ("rules.view_alarm",), (200,), _pk(_alarm)),
    Case("alarm-acknowledge", "post", ("rules.change_alarm",), CHANGE_OR_INVALID,
         _pk(_alarm, {})),
    Case("alarm-clear", "post", ("rules.change_alarm",), CHANGE_OR_INVALID, _pk(_alarm, {})),
    Case("alarm-assign", "post", ("rules.change_alarm",), CHANGE_OR_INVALID,
         lambda ctx: ({"pk": _alarm(ctx).pk}, {"user": ctx.actor.pk})),
    Case("alarm-comments", "get", ("rules.view_alarm",), (200,), _pk(_alarm)),
    Case("alarm-comments", "post", ("rules.change_alarm",), (200, 201),
         _pk(_alarm, {"text": "looking"})),
    Case("alarm-history", "get", ("rules.view_alarm",), (200,), _pk(_alarm)),
    Case("notification-channel-list", "get", ("rules.view_notificationchannel",), (200,)),
    Case("notification-channel-list", "post", ("rules.add_notificationchannel",), (201,),
         lambda ctx: ({}, {"name": "ops", "channel_type": "insite"})),
    Case("notification-channel-detail", "get", ("rules.view_notificationchannel",), (200,),
         _pk(_channel)),
    Case("notification-channel-detail", "patch", ("rules.change_notificationchannel",),
         (200,), _pk(_channel, {"enabled": False})),
    Case("notification-channel-detail", "put", ("rules.change_notificationchannel",),
         (200,), _pk(_channel, {"name": "inbox", "channel_type": "insite"})),
    Case("notification-channel-detail", "delete", ("rules.delete_notificationchannel",),
         (204,), _pk(_channel)),
    Case("notification-channel-test", "post", ("rules.change_notificationchannel",),
         QUEUED_OR_INVALID, _pk(_channel, {})),
    Case("notification-list", "get", ("rules.view_notification",), (200,)),
    Case("notification-detail", "get", ("rules.view_notification",), (200,),
         _pk(_notification)),
    Case("notification-mark-read", "post", ANY_USER, (200,), lambda ctx: ({}, {})),
    Case("sink-list", "get", ("rules.view_sink",), (200,)),
    Case("sink-list", "post", ("rules.add_sink",), (201,), lambda ctx: (
        {}, {"name": "out", "sink_type": "http", "config": {"url": "http://192.0.43.8:9/"}})),
    Case("sink-detail", "get", ("rules.view_sink",), (200,), _pk(_sink)),
    Case("sink-detail", "patch", ("rules.change_sink",), (200,), _pk(_sink, {"enabled": False})),
    Case("sink-detail", "put", ("rules.change_sink",), CHANGE_OR_INVALID, _pk(_sink, {
        "name": "hook", "sink_type": "http", "config": {"url": "http://192.0.43.8:9/"}})),
    Case("sink-detail", "delete", ("rules.delete_sink",), (204,), _pk(_sink)),
    Case("sink-test", "post", ("rules.change_sink",), QUEUED_OR_INVALID, _pk(_sink, {})),
    Case("sink-test", "get", ("rules.view_sink",), (200,), _pk(_sink)),
    Case("dead-letter-list", "get", ("rules.view_deadletter",), (200,)),
    Case("dead-letter-detail", "get", ("rules.view_deadletter",), (200,), _pk(_dead_letter)),
    Case("dead-letter-detail", "delete", ("rules.delete_deadletter",), (204,),
         _pk(_dead_letter)),
    Case("dead-letter-redeliver", "post", ("rules.change_deadletter",), QUEUED_OR_INVALID,
         _pk(_dead_letter, {})),
    Case("dead-letter-redeliver", "get", ("rules.view_deadletter",), (200,),
         _pk(_dead_letter)),
]
