"""Alarms: raised and cleared by rules, acknowledged, cleared, assigned and commented on by
people; every change leaves an entry in the alarm's history with who made it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from webapp.core.errors import DomainError
from webapp.core.types import Actor
from webapp.devices.models import Device
from webapp.rules.choices import OPEN_ALARM_STATUSES, AlarmEventKind, AlarmStatus
from webapp.rules.models import Alarm, AlarmComment, AlarmEvent, Rule
from webapp.system.actors import recorded_user


def _history(alarm: Alarm, kind: str, actor: Actor = None, **detail: Any) -> None:
    """An alarm's history: what happened to it, by whom (None: the platform)."""
    AlarmEvent.objects.create(alarm=alarm, kind=kind, actor=recorded_user(actor),
                              detail=detail)


@transaction.atomic
def raise_alarm(*, rule: Rule | None, device: str, severity: str, name: str, message: str,
                details: dict[str, Any], at: datetime | None = None) -> tuple[Alarm, bool]:
    """Open the alarm of (rule, device), or update the open one; returns (alarm, raised)."""
    at = at or timezone.now()
    device_obj = Device.objects.select_related("product").filter(identifier=device).first()
    existing = Alarm.objects.select_for_update().filter(
        rule=rule, device=device_obj, status__in=OPEN_ALARM_STATUSES).first()
    if existing is not None:
        changed = existing.severity != severity
        existing.severity = severity
        existing.message = message
        existing.details = details
        existing.count = F("count") + 1
        existing.last_seen = max(at, existing.last_seen)
        existing.save(update_fields=["severity", "message", "details", "count", "last_seen",
                                     "updated"])
        existing.refresh_from_db(fields=["count"])
        if changed:
            _history(existing, AlarmEventKind.UPDATED, severity=severity)
        return existing, False
    try:
        with transaction.atomic():
            alarm = Alarm.objects.create(
                rule=rule, name=name[:100], device=device_obj,
                product=device_obj.product if device_obj else rule.product if rule else None,
                severity=severity, message=message, details=details, first_seen=at,
                last_seen=at)
    except IntegrityError:
        # Another worker opened it a moment ago: update that one instead.
        return raise_alarm(rule=rule, device=device, severity=severity, name=name,
                           message=message, details=details, at=at)
    _history(alarm, AlarmEventKind.RAISED, severity=severity, message=message)
    return alarm, True


@transaction.atomic
def acknowledge_alarm(*, acting_user: Actor, alarm: Alarm) -> Alarm:
    alarm = Alarm.objects.select_for_update().get(pk=alarm.pk)
    if alarm.status != AlarmStatus.ACTIVE:
        raise DomainError(_("Only an active alarm can be acknowledged."), code="alarm_not_active")
    alarm.status = AlarmStatus.ACKNOWLEDGED
    alarm.acknowledged_at = timezone.now()
    alarm.acknowledged_by = recorded_user(acting_user)
    alarm.save(update_fields=["status", "acknowledged_at", "acknowledged_by", "updated"])
    _history(alarm, AlarmEventKind.ACKNOWLEDGED, acting_user)
    return alarm


@transaction.atomic
def clear_alarm(*, acting_user: Actor, alarm: Alarm, reason: str = "") -> Alarm:
    alarm = Alarm.objects.select_for_update().get(pk=alarm.pk)
    if alarm.status == AlarmStatus.CLEARED:
        raise DomainError(_("The alarm is already cleared."), code="alarm_cleared")
    alarm.status = AlarmStatus.CLEARED
    alarm.cleared_at = timezone.now()
    alarm.cleared_by = recorded_user(acting_user)
    alarm.save(update_fields=["status", "cleared_at", "cleared_by", "updated"])
    _history(alarm, AlarmEventKind.CLEARED, acting_user, reason=reason)
    return alarm


def clear_rule_alarm(*, rule: Rule | None, device: str, reason: str) -> Alarm | None:
    """Clear the open alarm of (rule, device), if there is one (auto-clear)."""
    alarm = Alarm.objects.filter(rule=rule, device__identifier=device,
                                 status__in=OPEN_ALARM_STATUSES).first()
    if alarm is None:
        return None
    return clear_alarm(acting_user=None, alarm=alarm, reason=reason)


@transaction.atomic
def assign_alarm(*, acting_user: Actor, alarm: Alarm, assignee: Any) -> Alarm:
    alarm.assignee = assignee
    alarm.save(update_fields=["assignee", "updated"])
    _history(alarm, AlarmEventKind.ASSIGNED, acting_user,
             assignee=assignee.get_username() if assignee else None)
    return alarm


@transaction.atomic
def comment_alarm(*, acting_user: Actor, alarm: Alarm, text: str) -> AlarmComment:
    if not text.strip():
        raise DomainError(_("A comment has text."), code="empty_comment")
    comment = AlarmComment.objects.create(alarm=alarm, author=recorded_user(acting_user),
                                          text=text)
    _history(alarm, AlarmEventKind.COMMENTED, acting_user, comment=comment.pk)
    return comment
