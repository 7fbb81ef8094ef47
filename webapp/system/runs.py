"""Who sees which scheduled tasks and task runs.

Beat schedules and their runs are shared by the whole platform, and a scheduled rule's
schedule and runs (arguments, results, errors) belong to the rule's department. Someone
whose data scope is everything sees them all; anyone else sees the schedules of the records
within their data scope that own one (the rules: `webapp.rules` declares them with
`owned_schedules`, as this app sits below it) and those schedules' runs only."""

from __future__ import annotations

import operator
from functools import reduce
from typing import Any

from django.db import models
from django.db.models import Q, QuerySet

from webapp.system.scope import restrict, user_scope

_owners: list[tuple[type[models.Model], str]] = []


def owned_schedules(model: type[models.Model], field: str) -> None:
    """Declare that the beat schedule named by `model.field` (a foreign key to a periodic
    task) belongs where the `model` row belongs (its data scope)."""
    _owners.append((model, field))


def _sees_everything(user: Any) -> bool:
    return bool(getattr(user, "is_superuser", False)) or user_scope(user).everything


def scoped_periodic_tasks(queryset: QuerySet, user: Any) -> QuerySet:
    """Beat schedules `user` may see: those of the records (rules) in their data scope."""
    if _sees_everything(user):
        return queryset
    owned = [Q(pk__in=restrict(model._default_manager.all(), user)
               .exclude(**{field: None}).values(field)) for model, field in _owners]
    if not owned:
        return queryset.none()
    return queryset.filter(reduce(operator.or_, owned))


def scoped_task_runs(queryset: QuerySet, user: Any) -> QuerySet:
    """Task runs `user` may see: the runs of the schedules `scoped_periodic_tasks` shows."""
    if _sees_everything(user):
        return queryset
    from django_celery_beat.models import PeriodicTask

    names = scoped_periodic_tasks(PeriodicTask.objects.all(), user).values("name")
    return queryset.filter(periodic_task_name__in=names)
