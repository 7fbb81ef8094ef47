"""Base ViewSets: data scope on every queryset, department choices limited to the scope.

Subclass `ScopedModelViewSet` (or add `ScopedViewSetMixin` first in the bases). A subclass's
own `get_queryset` is wrapped automatically, so no view can forget the restriction.
"""

from __future__ import annotations

import functools
from typing import Any

from rest_framework import mixins, serializers, viewsets
from rest_framework.permissions import SAFE_METHODS

from webapp.core.export import ExportMixin
from webapp.system import scope


def _scoped(get_queryset: Any) -> Any:
    @functools.wraps(get_queryset)
    def wrapper(self: Any) -> Any:
        return scope.restrict(get_queryset(self), self.request.user)

    wrapper._tl_scoped = True  # type: ignore[attr-defined]
    return wrapper


class ScopedViewSetMixin:
    """Restricts `get_queryset` to the caller's data scope and checks departments on writes."""

    request: Any

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("get_queryset")
        if own is not None and not getattr(own, "_tl_scoped", False):
            cls.get_queryset = _scoped(own)  # type: ignore[method-assign]

    @_scoped
    def get_queryset(self) -> Any:
        return super().get_queryset()  # type: ignore[misc]

    def get_serializer(self, *args: Any, **kwargs: Any) -> Any:
        serializer = super().get_serializer(*args, **kwargs)  # type: ignore[misc]
        request = getattr(self, "request", None)
        if (request is None or request.method in SAFE_METHODS
                or not isinstance(serializer, serializers.Serializer)
                # The API schema describes the API, not the caller's scope: a default of
                # their department would be a model instance in the schema (a 500).
                or getattr(self, "swagger_fake_view", False)):
            return serializer
        limit_related(serializer, request.user)
        return serializer


def limit_related(serializer: serializers.Serializer, user: Any) -> None:
    """Writable relations accept only records in the user's data scope (a device cannot be
    put under another department's product); a `department` field accepts the departments
    in scope plus the user's own, and defaults to the user's own on create."""
    from webapp.system.models import Department

    department_id = getattr(user, "department_id", None)
    for name, field in serializer.fields.items():
        if field.read_only:
            continue
        target: Any = field.child_relation if isinstance(
            field, serializers.ManyRelatedField) else field
        queryset: Any = getattr(target, "queryset", None)
        if not isinstance(target, serializers.RelatedField) or queryset is None:
            continue
        model = queryset.model
        if model is Department:
            allowed = scope.department_queryset(user)
            if department_id is not None:
                allowed = allowed | Department.objects.filter(pk=department_id)
            setattr(target, "queryset", allowed)  # noqa: B010
            if (name == "department" and target is field and serializer.instance is None
                    and department_id is not None):
                field.default = Department(pk=department_id)
        elif scope.scope_fields(model) is not None:
            setattr(target, "queryset", scope.restrict(queryset.all(), user))  # noqa: B010


class ScopedModelViewSet(ScopedViewSetMixin, ExportMixin, viewsets.ModelViewSet):
    pass


class ScopedReadOnlyModelViewSet(ScopedViewSetMixin, ExportMixin, viewsets.ReadOnlyModelViewSet):
    pass


class ScopedListDestroyViewSet(ScopedViewSetMixin, ExportMixin, mixins.ListModelMixin,
                               mixins.RetrieveModelMixin, mixins.DestroyModelMixin,
                               viewsets.GenericViewSet):
    pass
