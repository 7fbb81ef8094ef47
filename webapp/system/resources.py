"""Import/export (django-import-export) of system records; passwords and key hashes never
leave or enter through a file."""

from __future__ import annotations

from import_export import fields, resources, widgets

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


class DepartmentResource(resources.ModelResource):
    parent = fields.Field(attribute="parent", column_name="parent",
                          widget=widgets.ForeignKeyWidget(Department, "name"))

    class Meta:
        model = Department
        fields = ("id", "name", "parent", "order", "leader", "phone", "email", "is_active",
                  "remark")


class PositionResource(resources.ModelResource):
    class Meta:
        model = Position
        import_id_fields = ("code",)
        fields = ("code", "name", "order", "is_active", "remark")


class UserResource(resources.ModelResource):
    """Bulk users: imported users have no usable password until reset."""

    department = fields.Field(attribute="department", column_name="department",
                              widget=widgets.ForeignKeyWidget(Department, "name"))
    roles = fields.Field(attribute="roles", column_name="roles",
                         widget=widgets.ManyToManyWidget(Role, field="code", separator="|"))
    positions = fields.Field(attribute="positions", column_name="positions",
                             widget=widgets.ManyToManyWidget(Position, field="code",
                                                             separator="|"))

    class Meta:
        model = User
        import_id_fields = ("username",)
        fields = ("username", "nickname", "first_name", "last_name", "email", "phone",
                  "gender", "language", "department", "roles", "positions", "is_active",
                  "is_staff", "remark")

    def before_save_instance(self, instance, row, **kwargs):
        if not instance.pk and not instance.password:
            instance.set_unusable_password()


class RoleResource(resources.ModelResource):
    class Meta:
        model = Role
        import_id_fields = ("code",)
        fields = ("code", "name", "order", "data_scope", "is_active", "remark")


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
