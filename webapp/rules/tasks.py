"""Celery tasks of the rule engine: firings, scheduled rules, deliveries with retries."""

from __future__ import annotations

import json
import logging
from typing import Any

from celery import shared_task
from celery.signals import worker_process_shutdown

from edge.clock import now_ms
from webapp.core.redis import get_redis, keys
from webapp.devices.models import Device
from webapp.rules import actions, deliveries, sinks
from webapp.rules.choices import TriggerType
from webapp.rules.compiler import compile_model, group_members
from webapp.rules.conditions import Message
from webapp.rules.engine import failure_reason, record_failures
from webapp.rules.executors import run_firing
from webapp.rules.expressions import ExpressionError
from webapp.rules.firings import open_sealed
from webapp.rules.keys import RESULT_TTL_S, rule_keys
from webapp.rules.models import DeadLetter, Rule, Sink

log = logging.getLogger(__name__)

DRAIN_CHUNK = 100


@shared_task(name="rules.drain_firings")
def drain_firings() -> int:
    """Run the firings the ingest path queued in Redis until the queue is empty.

    The pending flag is cleared first: a firing queued after that sends a new task, so none
    is left behind (the engine sends a task only when it sets the flag). Only entries the
    ingest path signed run (webapp/rules/firings.py)."""
    r = get_redis()
    rk = rule_keys()
    r.delete(rk.drain_pending)
    done = 0
    while True:
        raw = r.lpop(rk.firings, DRAIN_CHUNK)
        if not raw:
            return done
        done += run_firings([f for f in map(open_sealed, raw) if f is not None])


def run_firings(firings: list[dict[str, Any]]) -> int:
    """Run the actions of firings decided on the ingest path; returns how many ran. (Not a
    Celery task: a message on the broker cannot name firings to run.)"""
    done = 0
    for firing in firings:
        try:
            run_firing(firing)
            done += 1
        except Exception:
            log.exception("rule %s: firing failed", firing.get("rule"))
    return done


def _latest(device: str) -> dict[str, dict[str, Any]]:
    raw = get_redis().hgetall(keys().latest(device))
    return {svc.decode(): {p: e.get("value") for p, e in json.loads(v).items()}
            for svc, v in raw.items()}


@shared_task(name="rules.run_schedule")
def run_schedule(rule_id: int) -> int:
    """Evaluate a scheduled rule over its devices' latest values; returns the firings."""
    rule = Rule.objects.filter(pk=rule_id, enabled=True,
                               trigger_type=TriggerType.SCHEDULE).first()
    if rule is None:
        return 0
    try:
        compiled = compile_model(rule)
    except ExpressionError as exc:  # saved before a bound it breaks existed
        record_failures({rule.pk: failure_reason(exc)})
        return 0
    trigger = rule.trigger
    devices: list[str] = list(trigger.get("devices") or [])
    if trigger.get("group"):
        devices += group_members(trigger["group"])
    if not devices and rule.product_id:
        devices = list(Device.objects.filter(product=rule.product).values_list(
            "identifier", flat=True))
    service = str(trigger.get("service") or "")
    now = now_ms()
    fired = 0
    for device in devices or [""]:
        latest = _latest(device) if device else {}
        msg = Message(kind="schedule", device=device, product=rule.product.identifier
                      if rule.product else "", service=service, ts=now,
                      values=latest.get(service, {}), latest=latest)
        try:
            if not compiled.condition.holds(msg):
                continue
        except Exception as exc:  # an overflow on the data: the rule fails, not the task
            record_failures({rule.pk: failure_reason(exc)})
            return fired
        run_firing({"rule": rule.pk, "kind": "fired", "latest": latest, "message": {
            "kind": "schedule", "device": device, "product": msg.product, "service": service,
            "ts": now, "values": dict(msg.values)}})
        fired += 1
    return fired


@shared_task(name="rules.deliver_notification")
def deliver_notification(notification_id: int) -> str:
    """One delivery attempt; on failure, the next one is queued with exponential backoff."""
    return deliveries.deliver_notification(notification_id)


@shared_task(name="rules.forward_message")
def forward_message(sink_id: int, message: dict[str, Any], env: dict[str, Any],
                    rule_id: int | None = None, attempt: int = 1) -> dict[str, Any]:
    """Deliver to a sink; retried with backoff, then dead-lettered."""
    return deliveries.forward(sink_id, message, env, rule_id, attempt)


def sample_message(message: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """A sink test's message (the one given, or a sample) and the names its templates see."""
    message = message or {
        "kind": "property", "device": "test-device", "product": "test", "service": "env",
        "ts": now_ms(), "values": {"temperature": 25.0}}
    env = {**(message.get("values") or {}), **message, "params": message.get("values"),
           "value": None, "rule": "test"}
    return message, env


@shared_task(name="rules.try_sink")
def try_sink(sink_id: int, message: dict[str, Any], token: str) -> dict[str, Any]:
    """Deliver a sample message to a sink once (no retry, no dead letter), in a worker, and
    keep the outcome an hour under the API's `token`. The error says what failed in generic
    words (webapp/core/outbound.py), never what the destination answered."""
    sink = Sink.objects.filter(pk=sink_id).first()
    result: dict[str, Any]
    if sink is None:
        result = {"ok": False, "error": "the sink was deleted"}
    else:
        message, env = sample_message(message)
        try:
            body = sinks.deliver(sink, message, env)
        except sinks.SinkError as exc:
            actions.record_sink_result(sink, ok=False, error=str(exc))
            result = {"ok": False, "error": str(exc)}
        else:
            if body is None:
                result = {"ok": True, "filtered": True}
            else:
                actions.record_sink_result(sink, ok=True)
                result = {"ok": True, "payload": body.decode(errors="replace")}
    get_redis().set(rule_keys().sink_test(token), json.dumps(
        {"sink": sink_id, "status": "done", **result}), ex=RESULT_TTL_S)
    return result


@shared_task(name="rules.redeliver_dead_letter")
def redeliver_dead_letter(letter_id: int, token: str) -> dict[str, Any]:
    """Deliver a dead letter's message to its sink again (once), in a worker, and keep the
    outcome an hour under the API's `token`; marks the letter redelivered on success."""
    try:
        result = _redeliver(letter_id)
    except Exception:
        log.exception("redelivering dead letter %s failed", letter_id)
        result = {"ok": False, "error": "the redelivery failed"}
    r = get_redis()
    rk = rule_keys()
    r.set(rk.redeliver(token), json.dumps({"letter": letter_id, "status": "done", **result}),
          ex=RESULT_TTL_S)
    r.delete(rk.redeliver_lock(letter_id))
    return result


def _redeliver(letter_id: int) -> dict[str, Any]:
    letter = DeadLetter.objects.select_related("sink").filter(pk=letter_id).first()
    if letter is None or letter.sink is None:
        return {"ok": False, "error": "the dead letter or its sink was deleted"}
    env = {**(letter.message.get("values") or {}), **letter.message,
           "params": letter.message.get("values")}
    try:
        sinks.deliver(letter.sink, letter.message, env)
    except sinks.SinkError as exc:
        actions.record_sink_result(letter.sink, ok=False, error=str(exc))
        return {"ok": False, "error": str(exc)}
    actions.record_sink_result(letter.sink, ok=True)
    actions.mark_redelivered(letter=letter)
    return {"ok": True}


def close_sinks(**_kwargs: Any) -> None:
    """A prefork child ends without running atexit hooks: close its sink connections (a
    RocketMQ producer tells its proxy it ends) before it goes."""
    sinks.close_all()


worker_process_shutdown.connect(close_sinks, dispatch_uid="tl_rules_close_sinks", weak=False)
