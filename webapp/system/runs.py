"""Who sees which scheduled tasks and task runs.

Beat schedules and their runs are shared by the whole platform, and a scheduled rule's
schedule and runs (arguments, results, errors) belong to the rule's department. Someone
whose data scope is everything sees them all; anyone else sees the schedules of the rules
within their data scope and those schedules' runs only."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from webapp.system.scope import restrict, user_scope


def _sees_everything(user: Any) -> bool:
    return bool(getattr(user, "is_superuser", False)) or user_scope(user).everything


def scoped_periodic_tasks(queryset: QuerySet, user: Any) -> QuerySet:
    """Beat schedules `user` may see: those of the rules in their data scope."""
    if _sees_everything(user):
        return queryset
    from webapp.rules.models import Rule

    rules = restrict(Rule.objects.all(), user).exclude(periodic_task=None)
    return queryset.filter(pk__in=rules.values("periodic_task"))


def scoped_task_runs(queryset: QuerySet, user: Any) -> QuerySet:
    """Task runs `user` may see: the runs of the schedules `scoped_periodic_tasks` shows."""
    if _sees_everything(user):
        return queryset
    from django_celery_beat.models import PeriodicTask

    names = scoped_periodic_tasks(PeriodicTask.objects.all(), user).values("name")
    return queryset.filter(periodic_task_name__in=names)
