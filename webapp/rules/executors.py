"""Running a rule's actions for one firing, in a Celery worker, and tracing it.

Each action reports a result (`ok`, what it did or why it failed) that goes into the rule's
trace with the message, the latest values and the explanation of every condition. A failing
action does not stop the next one. Deliveries that can be retried (notifications, webhooks,
sinks) are tried once here and, on failure, handed to a retry task with backoff.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Q

from webapp.core import metrics
from webapp.rules import actions, deliveries, notify, references
from webapp.rules.choices import ActionType, ChannelType, DeliveryStatus, TraceKind
from webapp.rules.compiler import compile_model
from webapp.rules.conditions import Message
from webapp.rules.downlink import publish_topic, send_command, set_desired
from webapp.rules.expressions import Template, render_structure
from webapp.rules.models import NotificationChannel, Rule, Sink
from webapp.rules.sinks.base import build_payload
from webapp.rules.taskqueue import enqueue
from webapp.system import scope
from webapp.system.actions import send_message

log = logging.getLogger(__name__)

DEFAULT_ALARM_MESSAGE = "{{rule}}: {{property}} = {{value}}"


def message_from(data: dict[str, Any], latest: Any = None, prev: Any = None) -> Message:
    return Message(kind=data.get("kind", ""), device=data.get("device", ""),
                   product=data.get("product", ""), service=data.get("service", ""),
                   ts=int(data.get("ts") or 0), values=data.get("values") or {},
                   event=data.get("event", ""), command=data.get("command", ""),
                   status=data.get("status", ""), err=data.get("err"),
                   latest=latest or {}, prev=prev or {})


def _trigger_property(rule: Rule) -> str:
    prop = rule.trigger.get("property")
    if prop:
        return str(prop)
    stack = [rule.condition]
    while stack:
        node = stack.pop(0)
        if isinstance(node, dict):
            if node.get("property"):
                return str(node["property"])
            for key in ("all", "any"):
                stack.extend(node.get(key) or [])
            if "not" in node:
                stack.append(node["not"])
    return ""


def template_env(rule: Rule, msg: Message) -> dict[str, Any]:
    env = msg.template_env()
    prop = _trigger_property(rule)
    value = msg.values.get(prop) if prop else None
    if value is None and prop and msg.service:
        value = msg.latest.get(msg.service, {}).get(prop)
    env.update(property=prop, value=value, rule=rule.name, message="", severity="",
               time=datetime.fromtimestamp(msg.ts / 1000, tz=UTC).isoformat().replace(
                   "+00:00", "Z") if msg.ts else "",
               alarm={})
    return env


def _text(source: Any, env: dict[str, Any], default: str = "") -> str:
    return Template(str(source if source not in (None, "") else default)).render(env)


# --- the actions -------------------------------------------------------------------------


def do_alarm(rule: Rule, action: dict[str, Any], msg: Message, env: dict[str, Any]
             ) -> dict[str, Any]:
    severity = str(action.get("severity") or "major")
    message = _text(action.get("message"), env, DEFAULT_ALARM_MESSAGE)
    name = _text(action.get("name"), env, rule.name)
    alarm, raised = actions.raise_alarm(
        rule=rule, device=msg.device, severity=severity, name=name, message=message,
        details={"message": msg.as_json(), "value": env.get("value"),
                 "property": env.get("property")},
        at=datetime.fromtimestamp(msg.ts / 1000, tz=UTC) if msg.ts else None)
    env.update(severity=severity, message=message, alarm={
        "id": alarm.pk, "name": alarm.name, "severity": alarm.severity, "status": alarm.status,
        "message": alarm.message, "count": alarm.count, "device": msg.device})
    return {"alarm": alarm.pk, "raised": raised, "count": alarm.count}


def do_clear_alarm(rule: Rule, action: dict[str, Any], msg: Message, env: dict[str, Any]
                   ) -> dict[str, Any]:
    target = Rule.objects.filter(pk=action["rule"]).first() if action.get("rule") else rule
    alarm = actions.clear_rule_alarm(rule=target, device=msg.device,
                                     reason=f"cleared by rule {rule.pk}")
    return {"alarm": alarm.pk if alarm else None}


def _by_id_or_name(model: Any, ref: Any, rule: Rule | None = None) -> Any:
    """The channel or sink an action names: by id when the reference is a number (ASCII
    digits; a channel or sink named like another's id is not taken for it), else by name.
    For a rule on a product, only among those of the product's department or of none
    (`references.department_filter`): moving the product or the sink to another department
    stops the rule sending there."""
    queryset = model.objects.all()
    product = rule.product if rule is not None and rule.product_id is not None else None
    if product is not None:
        queryset = queryset.filter(references.department_filter(product.department_id))
    found = None
    if references.is_number_reference(ref):
        found = queryset.filter(pk=int(ref)).first()
    if found is None:
        found = queryset.filter(name=str(ref)).first()
    if found is None:
        where = " in the department of the rule's product" if product is not None else ""
        raise LookupError(f"no {model._meta.verbose_name} {ref!r}{where}")
    return found


def _role_reach(channel: NotificationChannel) -> Q | None:
    """Where the members of a channel's roles are looked for: the channel's department and
    below; without a department, its maker's data scope (None: everywhere). A role code
    names users in every department: unbounded, a channel would reach (and its deliveries
    would list) another department's people."""
    if channel.department_id is not None and channel.department is not None:
        return Q(department__path__startswith=channel.department.path)
    maker = channel.created_by
    if maker is None or scope.user_scope(maker).everything:
        return None
    return Q(pk__in=scope.restrict(get_user_model().objects.all(), maker).values("pk"))


def recipients(channel: NotificationChannel) -> list[Any]:
    """The channel's users, the members of its roles (system roles by code, or Django groups
    by name) within the channel's department and below (`_role_reach`), and the users of
    its departments; active users only. (Users and departments are checked against the
    editor's scope when the channel is saved.)"""
    user_model = get_user_model()
    roles = [str(r) for r in channel.roles or []]
    query = Q(pk__in=channel.users.all()) | Q(department__in=channel.departments.all())
    if roles:
        members = Q(groups__name__in=roles)
        if any(f.name == "roles" for f in user_model._meta.get_fields()):
            members |= Q(roles__code__in=roles)
        reach = _role_reach(channel)
        query |= members if reach is None else members & reach
    return list(user_model.objects.filter(query, is_active=True).distinct())


def send_insite(users: list[Any], title: str, body: str) -> None:
    """In-site messages, through the system app's messages."""
    send_message(recipients=users, title=title, body=body,
                 category="alarm")


def do_notify(rule: Rule, action: dict[str, Any], msg: Message, env: dict[str, Any]
              ) -> dict[str, Any]:
    channel = _by_id_or_name(NotificationChannel, action["channel"], rule)
    if not channel.enabled:
        return {"channel": channel.pk, "skipped": "channel disabled"}
    title = _text(action.get("title") or channel.title_template, env)
    body = _text(action.get("body") or channel.body_template, env)
    alarm_id = (env.get("alarm") or {}).get("id")
    return {"channel": channel.pk,
            "notifications": send_channel(channel, title, body, rule=rule, alarm_id=alarm_id,
                                          data=env)}


def send_channel(channel: NotificationChannel, title: str, body: str, *, rule: Rule | None,
                 alarm_id: int | None, data: dict[str, Any], queue: bool = False) -> list[int]:
    """Create the deliveries of one notification and try each once (then retries); with
    `queue`, a Celery worker makes the first try too (off the web process)."""
    users = recipients(channel)
    common = {"channel": channel, "channel_type": channel.channel_type, "rule": rule,
              "alarm_id": alarm_id, "title": title[:500], "body": body}
    if channel.channel_type == ChannelType.INSITE:
        send_insite(users, title, body)
        created = [actions.create_notification(**common, user=user,
                                               recipients=[user.get_username()],
                                               status=DeliveryStatus.SENT) for user in users]
        return [n.pk for n in created]
    if channel.channel_type == ChannelType.EMAIL:
        addresses = sorted({u.email for u in users if u.email} | set(channel.emails or []))
        target: dict[str, Any] = {}
    else:
        addresses = [notify.split_url_token(channel.channel_type,
                                            str(channel.config.get("url", "")))[0]]
        target = {"payload": {"title": title, "body": body, "data": data}} if \
            channel.channel_type == ChannelType.WEBHOOK else {}
    notification = actions.create_notification(**common, recipients=addresses, target=target)
    if queue:
        pk = notification.pk
        transaction.on_commit(lambda: enqueue("rules.deliver_notification", pk))
    else:
        deliveries.deliver_notification(notification.pk)
    return [notification.pk]


def do_webhook(rule: Rule, action: dict[str, Any], msg: Message, env: dict[str, Any]
               ) -> dict[str, Any]:
    index = next(i for i, a in enumerate(rule.actions) if a is action)
    if action.get("body") is not None:
        payload = render_structure(action["body"], env)
    else:
        payload = {"rule": {"id": rule.pk, "name": rule.name}, "message": msg.as_json(),
                   "value": env.get("value"), "property": env.get("property"),
                   "alarm": env.get("alarm") or None, "time": env.get("time")}
    url = _text(action["url"], env)
    notification = actions.create_notification(
        channel=None, channel_type=ChannelType.WEBHOOK, rule=rule,
        alarm_id=(env.get("alarm") or {}).get("id"), recipients=[url],
        target={"url": url, "action": index, "payload": payload},
        title=f"webhook {url}"[:500], body="")
    deliveries.deliver_notification(notification.pk)
    notification.refresh_from_db()
    return {"notification": notification.pk, "status": notification.status,
            "error": notification.last_error or None}


def do_command(rule: Rule, action: dict[str, Any], msg: Message, env: dict[str, Any]
               ) -> dict[str, Any]:
    device = _text(action.get("device"), env, msg.device)
    params = render_structure(action.get("params") or {}, env)
    record = send_command(device, action["service"], action["command"], params)
    record.refresh_from_db()
    return {"device": device, "command": record.pk, "status": record.status}


def do_shadow(rule: Rule, action: dict[str, Any], msg: Message, env: dict[str, Any]
              ) -> dict[str, Any]:
    device = _text(action.get("device"), env, msg.device)
    values = render_structure(action["values"], env)
    version = set_desired(device, action["service"], values)
    return {"device": device, "version": version}


def do_forward(rule: Rule, action: dict[str, Any], msg: Message, env: dict[str, Any]
               ) -> dict[str, Any]:
    sink = _by_id_or_name(Sink, action["sink"], rule)
    return {"sink": sink.pk, **deliveries.forward(sink.pk, msg.as_json(), env, rule.pk)}


def do_publish(rule: Rule, action: dict[str, Any], msg: Message, env: dict[str, Any]
               ) -> dict[str, Any]:
    topic = _text(action["topic"], env)
    body = build_payload(action.get("payload"), msg.as_json(), env)
    nodes = publish_topic(topic, body, qos=int(action.get("qos", 0)),
                          retain=bool(action.get("retain", False)))
    return {"topic": topic, "nodes": nodes}


EXECUTORS: dict[str, Callable[[Rule, dict[str, Any], Message, dict[str, Any]],
                              dict[str, Any]]] = {
    ActionType.ALARM: do_alarm,
    ActionType.CLEAR_ALARM: do_clear_alarm,
    ActionType.NOTIFY: do_notify,
    ActionType.WEBHOOK: do_webhook,
    ActionType.COMMAND: do_command,
    ActionType.SHADOW: do_shadow,
    ActionType.FORWARD: do_forward,
    ActionType.PUBLISH: do_publish,
}


def run_actions(rule: Rule, msg: Message, env: dict[str, Any]) -> list[dict[str, Any]]:
    results = []
    for action in rule.actions:
        kind = action.get("type", "")
        try:
            result = {"type": kind, "ok": True, **EXECUTORS[kind](rule, action, msg, env)}
            if result.get("status") == DeliveryStatus.FAILED or result.get("error"):
                result["ok"] = False
        except Exception as exc:
            log.warning("rule %s: action %s failed: %s", rule.pk, kind, exc)
            detail = getattr(exc, "detail", None) or str(exc)
            result = {"type": kind, "ok": False, "error": f"{type(exc).__name__}: {detail}"}
        if not result["ok"]:
            metrics.RULE_FAILED.labels(str(rule.pk), "action").inc()
        results.append(result)
    return results


def run_firing(firing: dict[str, Any]) -> None:
    rule = Rule.objects.select_related("product").filter(pk=firing["rule"]).first()
    if rule is None:
        return
    msg = message_from(firing["message"], firing.get("latest"), firing.get("prev"))
    try:
        conditions = compile_model(rule).condition.explain(msg)
    except Exception as exc:  # the rule changed into something invalid meanwhile
        conditions = {"error": str(exc)}
    env = template_env(rule, msg)
    if firing["kind"] == "cleared":
        alarm = actions.clear_rule_alarm(rule=rule, device=msg.device,
                                         reason="the condition no longer holds")
        results = [{"type": "clear_alarm", "ok": True, "alarm": alarm.pk if alarm else None}]
        kind = TraceKind.CLEARED
    else:
        results = run_actions(rule, msg, env)
        kind = TraceKind.SCHEDULED if msg.kind == "schedule" else TraceKind.FIRED
    actions.record_trace(rule=rule, kind=kind, device=msg.device, ts_ms=msg.ts or int(
        datetime.now(tz=UTC).timestamp() * 1000), message={
            **msg.as_json(), "latest": dict(msg.latest), "previous": dict(msg.prev)},
        conditions=conditions, results=results)
