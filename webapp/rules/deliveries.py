"""Delivering a notification or forwarding a message to a sink: one attempt, its outcome
recorded, and on failure the next attempt queued with exponential backoff (then, for a sink,
a dead letter).

The executors make the first attempt in the worker that runs the rule; the retry tasks
(webapp/rules/tasks.py) make the next ones. Both call these functions, and queue the retries
by task name, so that neither imports the other."""

from __future__ import annotations

from typing import Any

from webapp.rules import actions, notify, secrets, sinks
from webapp.rules.choices import ChannelType, DeliveryStatus
from webapp.rules.models import Notification, Rule, Sink
from webapp.rules.sinks.base import build_payload
from webapp.rules.taskqueue import enqueue

MAX_BACKOFF_S = 3600


def backoff(base: float, attempt: int) -> float:
    return float(min(MAX_BACKOFF_S, base * (2 ** max(0, attempt - 1))))


def send_notification(notification: Notification) -> None:
    """One delivery attempt; raises notify.DeliveryError on failure."""
    channel = notification.channel
    if notification.channel_type == ChannelType.EMAIL:
        notify.send_email(notification.title, notification.body, list(notification.recipients))
        return
    if channel is None and notification.target.get("url"):  # an inline webhook action
        rule = notification.rule
        index = int(notification.target.get("action", -1))
        action = rule.actions[index] if rule is not None and 0 <= index < len(
            rule.actions) else {}
        request = notify.webhook_request(notification.target["url"],
                                         secrets.action_secret(action),
                                         notification.target.get("payload"),
                                         headers=dict(action.get("headers") or {}))
        notify.send_http(request)
        return
    if channel is None:
        raise notify.DeliveryError("the channel was deleted")
    secret = secrets.channel_secret(channel)
    url = secrets.channel_url(channel)
    if channel.channel_type == ChannelType.WEBHOOK:
        notify.send_http(notify.webhook_request(url, secret, notification.target.get(
            "payload") or {"title": notification.title, "body": notification.body},
            headers=dict(channel.config.get("headers") or {})))
    else:
        notify.send_robot(channel.channel_type, url, secret, notification.title,
                          notification.body, channel.config)


def deliver_notification(notification_id: int) -> str:
    """One delivery attempt; on failure, queues the next one with exponential backoff.
    Returns the notification's status ("gone" when there is nothing left to deliver)."""
    notification = Notification.objects.select_related("channel", "rule").filter(
        pk=notification_id).first()
    if notification is None or notification.status in (DeliveryStatus.SENT,
                                                        DeliveryStatus.FAILED):
        return "gone"
    retries = notification.channel.max_retries if notification.channel else 3
    try:
        send_notification(notification)
    except Exception as exc:
        final = notification.attempts + 1 > retries
        actions.record_delivery(notification, ok=False, error=f"{type(exc).__name__}: {exc}",
                                final=final)
        if not final:
            enqueue("rules.deliver_notification", notification_id,
                    countdown=backoff(5, notification.attempts))
        return notification.status
    actions.record_delivery(notification, ok=True)
    return notification.status


def forward(sink_id: int, message: dict[str, Any], env: dict[str, Any],
            rule_id: int | None = None, attempt: int = 1) -> dict[str, Any]:
    """Deliver to a sink; on failure, queue the next attempt with backoff, and after the
    sink's retries keep the message as a dead letter."""
    sink = Sink.objects.filter(pk=sink_id).first()
    if sink is None:
        return {"ok": False, "error": "the sink was deleted"}
    if not sink.enabled:
        return {"skipped": "sink disabled"}
    try:
        body = sinks.deliver(sink, message, env)
    except sinks.SinkError as exc:
        error = str(exc)
        actions.record_sink_result(sink, ok=False, error=error)
        if attempt <= sink.max_retries:
            enqueue("rules.forward_message", sink_id, message, env, rule_id, attempt + 1,
                    countdown=backoff(sink.backoff, attempt))
            return {"ok": False, "retrying": True, "attempt": attempt, "error": error}
        known_rule = rule_id is not None and Rule.objects.filter(pk=rule_id).exists()
        letter = actions.record_dead_letter(
            sink=sink, rule_id=rule_id if known_rule else None,
            message=message, payload=build_payload(sink.payload_template, message, env).decode(
                errors="replace"), error=error, attempts=attempt)
        return {"ok": False, "dead_letter": letter.pk, "error": error}
    if body is None:
        return {"filtered": True}
    actions.record_sink_result(sink, ok=True)
    return {"ok": True, "bytes": len(body)}
