"""Import/export (django-import-export) of system records; passwords and key hashes never
leave or enter through a file."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _
from import_export import fields, resources, widgets

from webapp.system import scope
from webapp.system.actors import recorded_user
from webapp.system.models import (
    Department,
    DictItem,
    DictType,
    LoginLog,
    OperationLog,
    Parameter,
    Position,
    Role,
    User,
)


class PositionResource(resources.ModelResource):
    class Meta:
        model = Position
        import_id_fields = ("code",)
        fields = ("code", "name", "order", "is_active", "remark")


class ScopedDepartmentWidget(widgets.ForeignKeyWidget):
    """A department by name, among those the importing user may assign (their scope and
    their own department)."""

    def __init__(self) -> None:
        super().__init__(Department, "name")
        self.acting_user: Any = None

    def get_queryset(self, value: Any, row: Any, *args: Any, **kwargs: Any) -> Any:
        user = recorded_user(self.acting_user)
        if user is None or user.is_superuser:
            return Department.objects.all()
        allowed = scope.department_queryset(user)
        if user.department_id:
            allowed = allowed | Department.objects.filter(pk=user.department_id)
        return allowed

    def clean(self, value: Any, row: Any = None, **kwargs: Any) -> Any:
        try:
            return super().clean(value, row, **kwargs)
        except (Department.DoesNotExist, Department.MultipleObjectsReturned) as exc:
            raise ValueError(_("Unknown department (or not in your data scope): {name}")
                             .format(name=value)) from exc


class GrantCheckedResource(resources.ModelResource):
    """An import that runs the same grant and scope checks as the admin form and the API,
    per row, as the importing user (`acting_user`, or the `user` the admin passes to
    `import_data`); a refused row is a validation error and nothing is imported."""

    def __init__(self, acting_user: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.acting_user = acting_user

    def before_import(self, dataset: Any, **kwargs: Any) -> None:
        if self.acting_user is None:
            self.acting_user = kwargs.get("user")
        super().before_import(dataset, **kwargs)

    @staticmethod
    def refused(exc: Any) -> ValidationError:
        from webapp.system import actions

        return ValidationError(actions.refusal(exc), code=exc.code)


class DepartmentResource(GrantCheckedResource):
    """Departments by id. As through the API, rows change only departments within the
    importer's scope, and a parent is one the importer may assign (their scope and their own
    department): moving another department below one's own would put all of it in one's
    scope."""

    parent = fields.Field(attribute="parent", column_name="parent",
                          widget=ScopedDepartmentWidget())

    class Meta:
        model = Department
        fields = ("id", "name", "parent", "order", "leader", "phone", "email", "is_active",
                  "remark")

    def before_import(self, dataset: Any, **kwargs: Any) -> None:
        super().before_import(dataset, **kwargs)
        self.fields["parent"].widget.acting_user = self.acting_user

    def after_init_instance(self, instance: Any, new: bool, row: Any, **kwargs: Any) -> None:
        super().after_init_instance(instance, new, row, **kwargs)
        if new or self.acting_user is None:
            return
        reached = scope.restrict(Department.objects.filter(pk=instance.pk), self.acting_user)
        if not reached.exists():
            raise ValidationError(_("{name}: this department is not in your data scope.")
                                  .format(name=instance.name), code="out_of_scope")


class UserResource(GrantCheckedResource):
    """Bulk users: imported users have no usable password until reset. Rows name users
    within the importer's scope, who hold no more than the importer, and give only roles,
    departments and the staff flag the importer may give."""

    department = fields.Field(attribute="department", column_name="department",
                              widget=ScopedDepartmentWidget())
    roles = fields.Field(attribute="roles", column_name="roles",
                         widget=widgets.ManyToManyWidget(Role, field="code", separator="|"))
    positions = fields.Field(attribute="positions", column_name="positions",
                             widget=widgets.ManyToManyWidget(Position, field="code",
                                                             separator="|"))

    class Meta:
        model = User
        import_id_fields = ("username",)
        fields = ("username", "nickname", "first_name", "last_name", "email", "phone",
                  "gender", "language", "time_zone", "department", "roles", "positions",
                  "is_active", "is_staff", "remark")

    def before_import(self, dataset: Any, **kwargs: Any) -> None:
        super().before_import(dataset, **kwargs)
        self.fields["department"].widget.acting_user = self.acting_user

    def after_init_instance(self, instance: Any, new: bool, row: Any, **kwargs: Any) -> None:
        super().after_init_instance(instance, new, row, **kwargs)
        if new or self.acting_user is None:
            return
        reached = scope.restrict(User.objects.filter(pk=instance.pk), self.acting_user)
        if not reached.exists():
            raise ValidationError(_("{username}: this user is not in your data scope.")
                                  .format(username=instance.username), code="out_of_scope")

    def before_save_instance(self, instance: Any, row: Any, **kwargs: Any) -> None:
        from webapp.system import actions

        changes: dict[str, Any] = {"is_staff": instance.is_staff,
                                   "department": instance.department}
        if self.fields["roles"].column_name in row:
            changes["roles"] = list(self.fields["roles"].clean(row))
        try:
            actions.check_user_change(self.acting_user, instance if instance.pk else None,
                                      changes)
        except (actions.GrantRefused, actions.Outranked) as exc:
            raise self.refused(exc) from exc
        if not instance.pk:
            instance.created_by = recorded_user(self.acting_user)
            if not instance.password:
                instance.set_unusable_password()


class RoleResource(GrantCheckedResource):
    """Roles by code; a row that widens a role's data scope or activates it beyond what the
    importer holds is refused."""

    class Meta:
        model = Role
        import_id_fields = ("code",)
        fields = ("code", "name", "order", "data_scope", "is_active", "remark")

    def before_save_instance(self, instance: Any, row: Any, **kwargs: Any) -> None:
        from webapp.system import actions

        try:
            actions.check_role_change(self.acting_user, instance if instance.pk else None, {
                "data_scope": instance.data_scope, "is_active": instance.is_active})
        except (actions.GrantRefused, actions.Outranked) as exc:
            raise self.refused(exc) from exc


class DictTypeResource(resources.ModelResource):
    class Meta:
        model = DictType
        import_id_fields = ("code",)
        fields = ("code", "name", "is_active", "remark")


class DictItemResource(resources.ModelResource):
    dictionary = fields.Field(attribute="dict_type", column_name="dictionary",
                              widget=widgets.ForeignKeyWidget(DictType, "code"))

    class Meta:
        model = DictItem
        import_id_fields = ("dictionary", "value")
        fields = ("dictionary", "value", "label", "order", "is_default", "color", "is_active",
                  "remark")


class ParameterResource(resources.ModelResource):
    class Meta:
        model = Parameter
        import_id_fields = ("key",)
        fields = ("key", "name", "value", "value_type", "remark")


class OperationLogResource(resources.ModelResource):
    class Meta:
        model = OperationLog
        fields = ("time", "username", "source", "action", "app_label", "model", "object_id",
                  "object_repr", "before", "after", "address", "method", "path", "request_id",
                  "task")


class LoginLogResource(resources.ModelResource):
    class Meta:
        model = LoginLog
        fields = ("time", "username", "channel", "result", "address", "user_agent")
