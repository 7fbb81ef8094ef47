"""Rules: created, changed, switched on and off, deleted (with their Celery beat entry for a
schedule trigger), and their traces. Every change bumps the index version after commit, so
that every ingest worker recompiles its in-memory index before the next batch."""

from __future__ import annotations

import json
import zoneinfo
from datetime import UTC, datetime
from typing import Any

from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from webapp.core.errors import NotFound
from webapp.core.types import Actor
from webapp.products.models import Product
from webapp.rules.actions.validation import RuleInvalid, check_webhook_destinations, validate_rule
from webapp.rules.choices import TriggerType
from webapp.rules.expressions import MAX_STRING
from webapp.rules.keys import bump_version
from webapp.rules.modelcheck import model_problems
from webapp.rules.models import Rule, RuleTrace
from webapp.rules.secrets import seal_action_secrets
from webapp.system.actors import recorded_user

# What is checked against the product's thing model (webapp/rules/modelcheck.py).
_MODELLED = ("trigger", "condition", "actions")
RULE_FIELDS = ("name", "description", "enabled", "trigger", "condition", "actions", "debounce",
               "cooldown", "fire_mode", "auto_clear")


def _longest_text(value: Any) -> int:
    """The length of the longest string in a JSON structure (iteratively: any depth)."""
    longest, stack = 0, [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            longest = max(longest, len(item))
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return longest


def check_text_sizes(actions: Any) -> None:
    """Refuse an action holding a text longer than a template may render (MAX_STRING):
    a message, body or payload that large is no notification."""
    if not isinstance(actions, list) or not all(isinstance(a, dict) for a in actions):
        raise RuleInvalid(_("'actions' is a list of objects, each with a 'type'."))
    for position, action in enumerate(actions, start=1):
        if _longest_text(action) > MAX_STRING:
            raise RuleInvalid(_("Action {n}: a text is longer than {max} characters.").format(
                n=position, max=MAX_STRING))


def _apply(rule: Rule, data: dict[str, Any]) -> None:
    """Copy `data` onto the rule, secrets sealed, and refuse it unless it compiles and its
    webhooks reach allowed destinations."""
    previous = rule.actions if rule.pk else None
    before = {name: getattr(rule, name) for name in _MODELLED} if rule.pk else None
    for name in RULE_FIELDS:
        if name in data:
            setattr(rule, name, data[name])
    check_text_sizes(rule.actions or [])
    rule.actions = seal_action_secrets(list(rule.actions or []), previous)
    validate_rule({name: getattr(rule, name) for name in RULE_FIELDS})
    check_webhook_destinations(rule.actions, previous)
    rule.trigger_type = rule.trigger["type"]
    identifier = rule.trigger.get("product")
    if identifier:
        product = Product.objects.filter(identifier=identifier).first()
        if product is None:
            raise NotFound(_("There is no product {identifier!r}.").format(
                identifier=identifier), code="unknown_product")
        rule.product = product
    else:
        rule.product = None
    if rule.product is not None and before != {name: getattr(rule, name) for name in _MODELLED}:
        # Only what changed is checked: disabling a rule whose model changed since is allowed.
        problems = model_problems(rule.trigger, rule.condition, rule.actions, rule.product)
        if problems:
            raise RuleInvalid(" ".join(f"{p.path}: {p.message}" for p in problems),
                              code="model_mismatch",
                              extra={"problems": [p.as_dict() for p in problems]})


def _sync_schedule(rule: Rule) -> None:
    """Keep the rule's Celery beat entry in step with its schedule trigger."""
    from django_celery_beat.models import CrontabSchedule, PeriodicTask

    if rule.trigger_type != TriggerType.SCHEDULE:
        if rule.periodic_task_id:
            PeriodicTask.objects.filter(pk=rule.periodic_task_id).delete()
            rule.periodic_task = None
            rule.save(update_fields=["periodic_task"])
        return
    minute, hour, day, month, weekday = rule.trigger["cron"].split()
    tz_name = rule.trigger.get("timezone") or timezone.get_current_timezone_name()
    try:
        tz = zoneinfo.ZoneInfo(tz_name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise RuleInvalid(_("Unknown time zone {tz!r}.").format(tz=tz_name)) from exc
    crontab, _created = CrontabSchedule.objects.get_or_create(
        minute=minute, hour=hour, day_of_month=day, month_of_year=month, day_of_week=weekday,
        timezone=tz)
    fields = {"crontab": crontab, "task": "rules.run_schedule", "args": json.dumps([rule.pk]),
              "enabled": rule.enabled, "name": f"rule {rule.pk}: {rule.name}"[:200]}
    if rule.periodic_task_id:
        PeriodicTask.objects.filter(pk=rule.periodic_task_id).update(**fields)
        PeriodicTask.objects.get(pk=rule.periodic_task_id).save()  # bumps beat's change flag
    else:
        rule.periodic_task = PeriodicTask.objects.create(**fields)
        rule.save(update_fields=["periodic_task"])


@transaction.atomic
def create_rule(*, acting_user: Actor, data: dict[str, Any]) -> Rule:
    rule = Rule(created_by=recorded_user(acting_user))
    _apply(rule, data)
    rule.save()
    _sync_schedule(rule)
    transaction.on_commit(bump_version)
    return rule


@transaction.atomic
def update_rule(*, rule: Rule, data: dict[str, Any]) -> Rule:
    _apply(rule, data)
    if rule.enabled and rule.failed_at is not None:  # enabled again after it failed
        rule.failed_at = None
        rule.failure_reason = ""
    rule.save()
    _sync_schedule(rule)
    transaction.on_commit(bump_version)
    return rule


@transaction.atomic
def set_rule_enabled(*, rule: Rule, enabled: bool) -> Rule:
    return update_rule(rule=rule, data={"enabled": enabled})


@transaction.atomic
def delete_rule(*, rule: Rule) -> None:
    from django_celery_beat.models import PeriodicTask

    if rule.periodic_task_id:
        PeriodicTask.objects.filter(pk=rule.periodic_task_id).delete()
    rule.delete()
    transaction.on_commit(bump_version)


def record_trace(*, rule: Rule, kind: str, device: str, ts_ms: int, message: dict[str, Any],
                 conditions: dict[str, Any], results: list[dict[str, Any]]) -> RuleTrace:
    return RuleTrace.objects.create(
        rule=rule, kind=kind, device=device[:64],
        ts=datetime.fromtimestamp(ts_ms / 1000, tz=UTC), message=message,
        conditions=conditions, results=results, ok=all(r.get("ok", True) for r in results))
