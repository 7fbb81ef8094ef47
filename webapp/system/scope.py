"""Data scope, enforced in one place: which records of a department-owned model a user reaches.

A role's data scope is one of all / custom departments / own department / own department and
below / only own records (`webapp.system.choices.DataScope`); a user's scope is the union of
the scopes of their active roles. `restrict(queryset, user)` applies it to any queryset whose
model has a department and/or an owner field. Every API view (`webapp.system.viewsets`), every
admin page (`webapp.system.admin_scope.ScopedAdminMixin`) and every export go through it.

Models are found automatically when they have a `department` foreign key to
`system.Department` and/or a `created_by` foreign key to the user model, or else a required
foreign key to such a model (a command belongs where its device belongs). Other models say how
they are owned with `register(model, department="device__department", owner="created_by")`.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from functools import reduce
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import models
from django.db.models import Q, QuerySet

from webapp.system.choices import DataScope

if TYPE_CHECKING:
    from webapp.system.models import Department


@dataclass(frozen=True)
class ScopeFields:
    """The lookups that tie a model's rows to a department and to an owner (a user).

    `department` may name several lookups (an alarm belongs to its device's department, or
    to its product's when it has no device): a row is reached through any of them.
    """

    department: str | tuple[str, ...] | None = None
    owner: str | None = None

    @property
    def departments(self) -> tuple[str, ...]:
        if self.department is None:
            return ()
        return (self.department,) if isinstance(self.department, str) else self.department


_registry: dict[type[models.Model], ScopeFields | None] = {}


def register(model: type[models.Model], *, department: str | tuple[str, ...] | None = None,
             owner: str | None = None) -> None:
    """Declare how `model` is owned (lookups relative to the model, e.g. `device__department`)."""
    _registry[model] = ScopeFields(department=department, owner=owner)


def scope_fields(model: type[models.Model]) -> ScopeFields | None:
    """How `model` is owned, or None when it is not data-scoped.

    Found in this order: `register()`; a `department` foreign key to `system.Department`
    and/or a `created_by` foreign key to the user model; else the owner of the first required
    foreign key to a scoped model (a device command belongs where its device belongs).
    """
    if model in _registry:
        return _registry[model]
    fields = _detect(model, depth=0)
    _registry[model] = fields
    return fields


def _detect(model: type[models.Model], depth: int) -> ScopeFields | None:
    department: str | tuple[str, ...] | None = None
    owner = None
    parents = []
    for field in model._meta.get_fields():
        if not isinstance(field, models.ForeignKey) or field.related_model is None:
            continue
        related = field.related_model
        label = related._meta.label if not isinstance(related, str) else related
        if field.name == "department" and label == "system.Department":
            department = "department"
        elif field.name == "created_by" and label == settings.AUTH_USER_MODEL:
            owner = "created_by"
        elif not field.null and related is not model:
            parents.append(field)
    if department is None and depth < 3:
        for field in parents:
            inherited = (_registry.get(field.related_model)
                         if field.related_model in _registry
                         else _detect(field.related_model, depth + 1))
            if inherited is not None and inherited.department:
                department = tuple(f"{field.name}__{lookup}"
                                   for lookup in inherited.departments)
                if len(department) == 1:
                    department = department[0]
                if owner is None and inherited.owner:
                    owner = f"{field.name}__{inherited.owner}"
                break
    return ScopeFields(department, owner) if department or owner else None


@dataclass(frozen=True)
class UserScope:
    """What a user reaches: everything, or some departments and/or their own records."""

    everything: bool = False
    departments: Q | None = None  # a condition on Department; None = no department
    own_records: bool = False


NOTHING = UserScope()


def default_scope() -> str:
    """The scope of a user who has no role (settings.DATA_SCOPE_DEFAULT, `self` by default)."""
    return getattr(settings, "DATA_SCOPE_DEFAULT", DataScope.SELF)


def user_scope(user: Any) -> UserScope:
    """The union of the data scopes of the user's active roles (cached on the user object)."""
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return NOTHING
    cached = getattr(user, "_tl_scope", None)
    if cached is not None:
        return cached
    if user.is_superuser:
        scope = UserScope(everything=True)
    else:
        roles = list(user.roles.filter(is_active=True).values_list("id", "data_scope"))
        kinds = {kind for _, kind in roles} or {default_scope()}
        if DataScope.ALL in kinds:
            scope = UserScope(everything=True)
        else:
            conditions = []
            if DataScope.CUSTOM in kinds:
                conditions.append(Q(roles__id__in=[pk for pk, kind in roles
                                                   if kind == DataScope.CUSTOM]))
            if user.department_id and DataScope.DEPARTMENT in kinds:
                conditions.append(Q(pk=user.department_id))
            if user.department_id and DataScope.DEPARTMENT_AND_BELOW in kinds:
                conditions.append(Q(path__contains=f"/{user.department_id}/"))
            scope = UserScope(
                departments=reduce(operator.or_, conditions) if conditions else None,
                own_records=DataScope.SELF in kinds)
    user._tl_scope = scope
    return scope


def forget(user: Any) -> None:
    """Drop the scope cached on a user object (after their roles or department changed)."""
    user.__dict__.pop("_tl_scope", None)


def department_queryset(user: Any) -> QuerySet[Department]:
    """The departments the user's scope reaches."""
    from webapp.system.models import Department

    scope = user_scope(user)
    if scope.everything:
        return Department.objects.all()
    if scope.departments is None:
        return Department.objects.none()
    return Department.objects.filter(pk__in=Department.objects.filter(
        scope.departments).values("pk"))


def restrict(queryset: QuerySet, user: Any) -> QuerySet:
    """`queryset` limited to the rows `user` may see; unchanged for models without scope."""
    fields = scope_fields(queryset.model)
    if fields is None:
        return queryset
    scope = user_scope(user)
    if scope.everything:
        return queryset
    conditions: list[Q] = []
    if fields.department and scope.departments is not None:
        from webapp.system.models import Department

        reached = Department.objects.filter(scope.departments).values("pk")
        conditions.extend(Q(**{f"{lookup}__in": reached}) for lookup in fields.departments)
    if fields.owner and scope.own_records and getattr(user, "pk", None) is not None:
        conditions.append(Q(**{fields.owner: user.pk}))
    if not conditions:
        return queryset.none()
    return queryset.filter(reduce(operator.or_, conditions))


def can_assign(user: Any, department: Department | None) -> bool:
    """May `user` give a record to `department` (None: no department, always allowed)?"""
    if department is None:
        return True
    scope = user_scope(user)
    if scope.everything or department.pk == getattr(user, "department_id", None):
        return True
    return department_queryset(user).filter(pk=department.pk).exists()
