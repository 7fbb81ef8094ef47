from __future__ import annotations

from typing import Any

from django.contrib.auth.models import Permission
from django.utils.translation import gettext_lazy as _
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from webapp.system.models import (
    ApiKey,
    Department,
    DictItem,
    DictType,
    LoginLog,
    LoginSession,
    Menu,
    Message,
    Notice,
    OperationLog,
    Parameter,
    Position,
    Role,
    TaskRun,
    User,
)


@extend_schema_field(OpenApiTypes.STR)
class PermissionField(serializers.RelatedField):
    """A Django permission as `app_label.codename`."""

    default_error_messages = {"unknown": _("Unknown permission {value}.")}

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("queryset", Permission.objects.select_related("content_type"))
        super().__init__(**kwargs)

    def to_representation(self, value: Any) -> str:
        return f"{value.content_type.app_label}.{value.codename}"

    def to_internal_value(self, data: Any) -> Permission:
        app_label, _dot, codename = str(data).partition(".")
        queryset: Any = self.get_queryset()
        permission = queryset.filter(
            content_type__app_label=app_label, codename=codename).first()
        if permission is None:
            self.fail("unknown", value=data)
        return permission


class DepartmentSerializer(serializers.ModelSerializer):
    class Meta:
        model = Department
        fields = ("id", "name", "parent", "order", "leader", "leader_user", "phone", "email",
                  "is_active", "remark", "path", "created", "updated")
        read_only_fields = ("path", "created", "updated")


class DepartmentTreeSerializer(serializers.Serializer):
    id: Any = serializers.IntegerField()
    name = serializers.CharField()
    parent: Any = serializers.IntegerField(allow_null=True)
    is_active = serializers.BooleanField()
    children = serializers.ListField(child=serializers.DictField())


class PositionSerializer(serializers.ModelSerializer):
    class Meta:
        model = Position
        fields = ("id", "code", "name", "order", "is_active", "remark", "created")
        read_only_fields = ("created",)


class MenuSerializer(serializers.ModelSerializer):
    class Meta:
        model = Menu
        fields = ("id", "parent", "name", "menu_type", "permission", "path", "icon", "order",
                  "is_visible", "is_active", "remark")


class MenuTreeSerializer(serializers.Serializer):
    """A menu tree node (answers only)."""

    id = serializers.IntegerField(read_only=True)
    name = serializers.CharField(read_only=True)
    menu_type = serializers.CharField(read_only=True)
    permission = serializers.CharField(read_only=True)
    path = serializers.CharField(read_only=True)
    icon = serializers.CharField(read_only=True)
    children = serializers.ListField(child=serializers.DictField(), read_only=True)


class RoleSerializer(serializers.ModelSerializer):
    permissions = PermissionField(many=True, required=False)

    class Meta:
        model = Role
        fields = ("id", "code", "name", "order", "data_scope", "departments", "permissions",
                  "menus", "is_active", "is_builtin", "remark", "created", "updated")
        read_only_fields = ("is_builtin", "created", "updated")


class UserSerializer(serializers.ModelSerializer):
    password = serializers.CharField(write_only=True, required=False, style={
        "input_type": "password"}, help_text=_("Only on create; use set-password later."))

    class Meta:
        model = User
        fields = ("id", "username", "nickname", "first_name", "last_name", "email", "phone",
                  "gender", "avatar", "language", "time_zone", "department", "positions",
                  "roles", "is_active", "is_staff", "must_change_password", "last_login",
                  "date_joined", "password_changed", "remark", "password")
        read_only_fields = ("last_login", "date_joined", "password_changed")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if self.instance is not None and "password" in attrs:
            raise serializers.ValidationError(
                {"password": _("use the set-password action to change a password")})
        return attrs


class ProfileSerializer(serializers.ModelSerializer):
    """What a user may change about themselves. A new e-mail address needs the current
    password: password reset mails go there, so a stolen session must not be able to move
    them (and the account) to its own address."""

    current_password = serializers.CharField(
        write_only=True, required=False, allow_blank=True, style={"input_type": "password"},
        help_text=_("Required to change the e-mail address."))

    class Meta:
        model = User
        fields = ("nickname", "first_name", "last_name", "email", "phone", "gender", "avatar",
                  "language", "time_zone", "current_password")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        password = attrs.pop("current_password", "")
        user = self.instance
        if user is not None and "email" in attrs and attrs["email"] != user.email \
                and not user.check_password(password or ""):
            raise serializers.ValidationError({"current_password": _(
                "Enter your current password to change the e-mail address.")})
        return attrs


class PasswordSerializer(serializers.Serializer):
    password = serializers.CharField(write_only=True, style={"input_type": "password"})


class ChangePasswordSerializer(PasswordSerializer):
    old_password = serializers.CharField(write_only=True, style={"input_type": "password"})


class ResetPasswordSerializer(serializers.Serializer):
    password = serializers.CharField(required=False, write_only=True, help_text=_(
        "Generated when omitted; returned once."))


class ResetPasswordResultSerializer(serializers.Serializer):
    password = serializers.CharField()


class MeSerializer(serializers.ModelSerializer):
    permissions = serializers.ListField(child=serializers.CharField(), read_only=True)
    roles: Any = serializers.SlugRelatedField(slug_field="code", many=True, read_only=True)
    menus = MenuTreeSerializer(many=True, read_only=True)
    data_scope = serializers.CharField(read_only=True)
    department_name = serializers.CharField(source="department.name", default="",
                                            read_only=True)

    class Meta:
        model = User
        fields = ("id", "username", "nickname", "first_name", "last_name", "email", "phone",
                  "gender", "avatar", "language", "time_zone", "department", "department_name",
                  "roles", "is_superuser", "must_change_password", "last_login", "permissions",
                  "menus", "data_scope")
        read_only_fields = fields  # the caller as they are; changes go through PATCH me


class DictTypeSerializer(serializers.ModelSerializer):
    class Meta:
        model = DictType
        fields = ("id", "code", "name", "is_active", "is_builtin", "remark", "created",
                  "updated")
        read_only_fields = ("is_builtin", "created", "updated")


class DictItemSerializer(serializers.ModelSerializer):
    dictionary = serializers.SlugRelatedField(source="dict_type", slug_field="code",
                                              queryset=DictType.objects.all())

    class Meta:
        model = DictItem
        fields = ("id", "dictionary", "value", "label", "order", "is_default", "color",
                  "is_active", "remark")


class ParameterSerializer(serializers.ModelSerializer):
    class Meta:
        model = Parameter
        fields = ("id", "key", "name", "value", "value_type", "is_builtin", "remark", "updated")
        read_only_fields = ("is_builtin", "updated")


class NoticeSerializer(serializers.ModelSerializer):
    class Meta:
        model = Notice
        fields = ("id", "title", "content", "notice_type", "status", "audience", "departments",
                  "roles", "users", "department", "published", "created_by", "created",
                  "updated")
        read_only_fields = ("status", "published", "created_by", "created", "updated")


class PublishResultSerializer(serializers.Serializer):
    recipients = serializers.IntegerField()


class MessageSerializer(serializers.ModelSerializer):
    class Meta:
        model = Message
        fields = ("id", "category", "title", "body", "link", "notice", "read", "created")
        read_only_fields = fields


class MarkReadSerializer(serializers.Serializer):
    ids = serializers.ListField(child=serializers.IntegerField(), required=False, help_text=_(
        "The messages to mark read; all unread ones when omitted."))


class CountSerializer(serializers.Serializer):
    count = serializers.IntegerField()


class OperationLogSerializer(serializers.ModelSerializer):
    class Meta:
        model = OperationLog
        # department: the changed record's (the actor's for a record without one), which
        # decides who reads the entry; actor_department: the actor's.
        fields = ("id", "time", "user", "username", "source", "action", "app_label", "model",
                  "object_id", "object_repr", "before", "after", "address", "user_agent",
                  "method", "path", "request_id", "task", "department", "actor_department")
        read_only_fields = fields


class LoginLogSerializer(serializers.ModelSerializer):
    class Meta:
        model = LoginLog
        fields = ("id", "time", "username", "user", "channel", "result", "address",
                  "user_agent")
        read_only_fields = fields


class UnlockSerializer(serializers.Serializer):
    username = serializers.CharField()
    address = serializers.IPAddressField(required=False, allow_null=True)


class LoginSessionSerializer(serializers.ModelSerializer):
    username = serializers.CharField(source="user.username", read_only=True)

    class Meta:
        model = LoginSession
        fields = ("id", "user", "username", "channel", "address", "user_agent", "created",
                  "last_seen", "expires")
        read_only_fields = fields


class ApiKeySerializer(serializers.ModelSerializer):
    class Meta:
        model = ApiKey
        fields = ("id", "user", "name", "prefix", "expires", "last_used", "revoked", "created")
        read_only_fields = ("user", "prefix", "last_used", "revoked", "created")


class CreatedApiKeySerializer(ApiKeySerializer):
    key = serializers.CharField(read_only=True, help_text=_("Shown only in this response."))

    class Meta(ApiKeySerializer.Meta):
        fields: Any = (*ApiKeySerializer.Meta.fields, "key")


class TaskRunSerializer(serializers.ModelSerializer):
    class Meta:
        model = TaskRun
        fields = ("id", "task_id", "task_name", "periodic_task_name", "status", "started",
                  "finished", "runtime", "result", "error", "worker")
        read_only_fields = fields


class LogoutSerializer(serializers.Serializer):
    refresh = serializers.CharField(required=False, help_text=_(
        "The refresh token to end (the caller's current session when omitted)."))
