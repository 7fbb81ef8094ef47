"""Notifications: the deliveries of a channel or a webhook action and their attempts, and
which of them a user reaches or has read."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from webapp.core.types import Actor
from webapp.rules.choices import DeliveryStatus
from webapp.rules.models import Notification, NotificationChannel
from webapp.system import scope
from webapp.system.actors import recorded_user


def visible_notifications(queryset: QuerySet[Notification], user: Any
                          ) -> QuerySet[Notification]:
    """The notifications `user` reaches: those of rules and alarms in their data scope, the
    test notifications of channels in their scope, and always the ones sent to them."""
    if scope.user_scope(user).everything:
        return queryset
    reached = scope.restrict(queryset, user)
    channels = scope.restrict(NotificationChannel.objects.all(), user).values("pk")
    reached = reached | queryset.filter(rule=None, alarm=None, channel__in=channels)
    if getattr(user, "pk", None) is not None:
        reached = reached | queryset.filter(user=user.pk)
    return reached


def create_notification(**fields: Any) -> Notification:
    return Notification.objects.create(**fields)


def record_delivery(notification: Notification, *, ok: bool, error: str = "",
                    final: bool = False) -> None:
    notification.attempts += 1
    if ok:
        notification.status = DeliveryStatus.SENT
        notification.sent_at = timezone.now()
        notification.last_error = ""
    else:
        notification.status = DeliveryStatus.FAILED if final else DeliveryStatus.RETRYING
        notification.last_error = error[:2000]
    notification.save(update_fields=["attempts", "status", "sent_at", "last_error"])


@transaction.atomic
def mark_notifications_read(*, acting_user: Actor, ids: list[int]) -> int:
    return Notification.objects.filter(user=recorded_user(acting_user), pk__in=ids).update(
        read=True)
