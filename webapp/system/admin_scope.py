"""ModelAdmin mixins: data scope on every admin page and export (see `webapp.system.scope`)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin

from webapp.core.admin import EmptyJSONAdminMixin
from webapp.system import scope
from webapp.system.models import Department


def scoped_choices(related: Any, request: Any) -> Any:
    """The rows of `related` a form field or list filter of `request`'s user may offer: the
    departments within their scope (and their own), the records of a scoped model within
    their scope; None for a model without scope (all its rows)."""
    if related is Department:
        allowed = scope.department_queryset(request.user)
        if request.user.department_id:
            allowed = allowed | Department.objects.filter(pk=request.user.department_id)
        return allowed
    if scope.scope_fields(related) is not None:
        return scope.restrict(related._default_manager.all(), request.user)
    return None


def _scoped_queryset(db_field: Any, request: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """A relation field's choices limited to the user's data scope (unless the caller chose)."""
    related = db_field.related_model
    if "queryset" not in kwargs and related is not None:
        allowed = scoped_choices(related, request)
        if allowed is not None:
            kwargs["queryset"] = allowed
    return kwargs


class ScopedAdminMixin(EmptyJSONAdminMixin):
    """Limits the change list, the change/delete pages, exports and foreign-key choices to the
    user's data scope; a new record starts in the user's department. (Empty JSON boxes read
    as their default: `EmptyJSONAdminMixin`.)"""

    def get_queryset(self, request: Any) -> Any:
        return scope.restrict(super().get_queryset(request), request.user)  # type: ignore[misc]

    def formfield_for_foreignkey(self, db_field: Any, request: Any, **kwargs: Any) -> Any:
        return super().formfield_for_foreignkey(  # type: ignore[misc]
            db_field, request, **_scoped_queryset(db_field, request, kwargs))

    def get_changeform_initial_data(self, request: Any) -> dict[str, Any]:
        initial = super().get_changeform_initial_data(request)  # type: ignore[misc]
        fields = scope.scope_fields(self.model)  # type: ignore[attr-defined]
        if fields and "department" in fields.departments and request.user.department_id:
            initial.setdefault("department", request.user.department_id)
        return initial


class ScopedChoicesMixin(ScopedAdminMixin):
    """ScopedAdminMixin, and many-to-many choices (a channel's recipient users and
    departments, a device's groups) limited to the user's data scope as well."""

    def formfield_for_manytomany(self, db_field: Any, request: Any, **kwargs: Any) -> Any:
        return super().formfield_for_manytomany(  # type: ignore[misc]
            db_field, request, **_scoped_queryset(db_field, request, kwargs))


class ScopedRelatedFieldListFilter(admin.RelatedFieldListFilter):
    """A sidebar filter on a foreign key or many-to-many field that lists only the related
    records within the user's data scope (the plain filter lists every department's).
    Use as `list_filter = (("product", ScopedRelatedFieldListFilter),)`."""

    def field_choices(self, field: Any, request: Any, model_admin: Any) -> Any:
        allowed = scoped_choices(field.related_model, request)
        if allowed is None:
            return super().field_choices(field, request, model_admin)
        ordering = self.field_admin_ordering(field, request, model_admin)
        return field.get_choices(include_blank=False, ordering=ordering,
                                 limit_choices_to={"pk__in": allowed.values("pk")})
