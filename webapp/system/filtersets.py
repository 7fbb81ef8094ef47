"""One FilterSet per model, shared by the API, the admin and exports."""

from __future__ import annotations

import django_filters
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

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


class SearchFilterSet(django_filters.FilterSet):
    """`q` searches the fields named in `search_fields`."""

    search_fields: tuple[str, ...] = ()
    q = django_filters.CharFilter(method="search", label=_("Search"))

    def search(self, queryset, name, value):
        condition = Q()
        for field in self.search_fields:
            condition |= Q(**{f"{field}__icontains": value})
        return queryset.filter(condition)


class UserFilterSet(SearchFilterSet):
    search_fields = ("username", "nickname", "email", "phone", "first_name", "last_name")
    department_tree = django_filters.NumberFilter(
        method="in_department_tree", label=_("Department and below"))
    role = django_filters.CharFilter(field_name="roles__code", label=_("Role"))

    class Meta:
        model = User
        fields = ("is_active", "is_staff", "department", "positions", "roles", "role")

    def in_department_tree(self, queryset, name, value):
        return queryset.filter(department__path__contains=f"/{int(value)}/")


class DepartmentFilterSet(SearchFilterSet):
    search_fields = ("name", "leader", "phone", "email")

    class Meta:
        model = Department
        fields = ("parent", "is_active")


class PositionFilterSet(SearchFilterSet):
    search_fields = ("code", "name")

    class Meta:
        model = Position
        fields = ("is_active",)


class RoleFilterSet(SearchFilterSet):
    search_fields = ("code", "name")

    class Meta:
        model = Role
        fields = ("is_active", "data_scope", "is_builtin")


class MenuFilterSet(SearchFilterSet):
    search_fields = ("name", "permission", "path")

    class Meta:
        model = Menu
        fields = ("parent", "menu_type", "is_visible", "is_active")


class DictTypeFilterSet(SearchFilterSet):
    search_fields = ("code", "name")

    class Meta:
        model = DictType
        fields = ("is_active", "code")


class DictItemFilterSet(SearchFilterSet):
    search_fields = ("value", "label")
    dictionary = django_filters.CharFilter(field_name="dict_type__code",
                                           label=_("Dictionary code"))

    class Meta:
        model = DictItem
        fields = ("dict_type", "dictionary", "is_active")


class ParameterFilterSet(SearchFilterSet):
    search_fields = ("key", "name")

    class Meta:
        model = Parameter
        fields = ("value_type", "is_builtin")


class NoticeFilterSet(SearchFilterSet):
    search_fields = ("title", "content")

    class Meta:
        model = Notice
        fields = ("notice_type", "status", "audience")


class MessageFilterSet(SearchFilterSet):
    search_fields = ("title", "body")
    unread = django_filters.BooleanFilter(field_name="read", lookup_expr="isnull",
                                          label=_("Unread"))

    class Meta:
        model = Message
        fields = ("category", "unread")


class OperationLogFilterSet(SearchFilterSet):
    search_fields = ("username", "object_repr", "path")
    start = django_filters.IsoDateTimeFilter(field_name="time", lookup_expr="gte",
                                             label=_("From"))
    end = django_filters.IsoDateTimeFilter(field_name="time", lookup_expr="lt", label=_("To"))

    class Meta:
        model = OperationLog
        fields = ("source", "action", "app_label", "model", "object_id", "username",
                  "request_id")


class LoginLogFilterSet(SearchFilterSet):
    search_fields = ("username", "user_agent")
    start = django_filters.IsoDateTimeFilter(field_name="time", lookup_expr="gte",
                                             label=_("From"))
    end = django_filters.IsoDateTimeFilter(field_name="time", lookup_expr="lt", label=_("To"))

    class Meta:
        model = LoginLog
        fields = ("result", "channel", "username", "address")


class LoginSessionFilterSet(SearchFilterSet):
    search_fields = ("user__username", "user_agent")

    class Meta:
        model = LoginSession
        fields = ("channel", "user", "address")


class ApiKeyFilterSet(SearchFilterSet):
    search_fields = ("name", "prefix")
    active = django_filters.BooleanFilter(field_name="revoked", lookup_expr="isnull",
                                          label=_("Not revoked"))

    class Meta:
        model = ApiKey
        fields = ("user", "active")


class TaskRunFilterSet(SearchFilterSet):
    search_fields = ("task_name", "periodic_task_name")

    class Meta:
        model = TaskRun
        fields = ("status", "task_name", "periodic_task_name")
