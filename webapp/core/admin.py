"""ModelAdmin mixins: data scope on every admin page and export (see `webapp.core.scope`)."""

from __future__ import annotations

from typing import Any

from webapp.core import scope


class ScopedAdminMixin:
    """Limits the change list, the change/delete pages, exports and foreign-key choices to the
    user's data scope; a new record starts in the user's department."""

    def get_queryset(self, request: Any) -> Any:
        return scope.restrict(super().get_queryset(request), request.user)  # type: ignore[misc]

    def formfield_for_foreignkey(self, db_field: Any, request: Any, **kwargs: Any) -> Any:
        from webapp.system.models import Department

        related = db_field.related_model
        if "queryset" not in kwargs and related is not None:
            if related is Department:
                allowed = scope.department_queryset(request.user)
                if request.user.department_id:
                    allowed = allowed | Department.objects.filter(pk=request.user.department_id)
                kwargs["queryset"] = allowed
            elif scope.scope_fields(related) is not None:
                kwargs["queryset"] = scope.restrict(related._default_manager.all(),
                                                    request.user)
        return super().formfield_for_foreignkey(  # type: ignore[misc]
            db_field, request, **kwargs)

    def get_changeform_initial_data(self, request: Any) -> dict[str, Any]:
        initial = super().get_changeform_initial_data(request)  # type: ignore[misc]
        fields = scope.scope_fields(self.model)  # type: ignore[attr-defined]
        if fields and "department" in fields.departments and request.user.department_id:
            initial.setdefault("department", request.user.department_id)
        return initial
