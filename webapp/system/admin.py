"""System management in the admin: users, organisation, roles and menus, dictionaries,
parameters, notices, logs, online users, API keys, scheduled tasks with run history."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.contrib.auth.admin import GroupAdmin as BaseGroupAdmin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _
from django_celery_beat.admin import PeriodicTaskAdmin as BasePeriodicTaskAdmin
from django_celery_beat.models import (
    ClockedSchedule,
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
    SolarSchedule,
)
from import_export.admin import ExportMixin, ImportExportModelAdmin

from webapp.core.admin import BoundedImportMixin
from webapp.core.errors import DomainError
from webapp.system import actions, lockout, resources, runs, scope, sessions
from webapp.system.admin_scope import (
    ScopedAdminMixin,
    ScopedChoicesMixin,
    ScopedRelatedFieldListFilter,
)
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

# What the user change form offers only to superusers (anyone else would grant themselves
# rights through them); the form checks them server-side as well.
SUPERUSER_ONLY_FIELDS = ("is_superuser", "groups", "user_permissions")
USER_GRANT_FIELDS = ("roles", "department", "is_staff", *SUPERUSER_ONLY_FIELDS)


class GrantCheckForm(forms.ModelForm):
    """Refuses, as a form error, a change that would give away what the editor does not hold
    (roles, permissions, groups, flags, menu codes, data scope, departments) or touch a user
    who holds more than the editor (see `webapp.system.actions.check_grant`)."""

    acting_user: Any = None

    def clean(self) -> Any:
        data: Any = super().clean()
        instance = self.instance
        saved = instance if instance.pk else None
        try:
            if isinstance(instance, User):
                actions.check_user_change(self.acting_user, saved, {
                    name: data[name] for name in USER_GRANT_FIELDS if name in data})
            elif isinstance(instance, Role):
                actions.check_role_change(self.acting_user, saved, data)
            elif isinstance(instance, Menu):
                actions.check_menu_change(self.acting_user, saved, data)
            elif isinstance(instance, ApiKey) and data.get("user") is not None:
                actions.check_outranks(self.acting_user, data["user"])
            elif isinstance(instance, Group):
                actions.check_group_holders(self.acting_user, saved)
            if isinstance(instance, Group) and data.get("permissions") is not None:
                current = set(instance.permissions.values_list("pk", flat=True)) if saved \
                    else set()
                actions.check_grant(self.acting_user, permissions=[
                    p for p in data["permissions"] if p.pk not in current])
        except (actions.GrantRefused, actions.Outranked) as exc:
            raise forms.ValidationError(actions.refusal(exc)) from exc
        return data


def _with_grant_check(form: Any, request: Any) -> Any:
    return type(form.__name__, (GrantCheckForm, form), {"acting_user": request.user})


def _refusal(exc: DomainError) -> str:
    if isinstance(exc, actions.GrantRefused | actions.Outranked):
        return actions.refusal(exc)
    return str(exc.detail)


def _indent(depth: int, text: str) -> str:
    return format_html('<span style="padding-left:{}em">{}</span>', depth * 1.5, text)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Logs: looked at, filtered, exported; never edited by hand."""

    def has_add_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: Any, obj: Any = None) -> bool:
        return request.user.is_superuser


@admin.register(User)
class UserAdmin(ScopedAdminMixin, BoundedImportMixin, ImportExportModelAdmin, BaseUserAdmin):
    resource_classes = [resources.UserResource]
    list_display = ("username", "nickname", "email", "department", "roles_list", "is_active",
                    "is_staff", "last_login")
    list_filter = ("is_active", "is_staff", ("department", ScopedRelatedFieldListFilter),
                   "roles", "positions")
    search_fields = ("username", "nickname", "email", "phone", "first_name", "last_name")
    filter_horizontal = ("roles", "positions", "groups", "user_permissions")
    readonly_fields = ("last_login", "date_joined", "password_changed")
    actions = ("force_logout", "reset_passwords", "activate", "deactivate")
    fieldsets = (
        (None, {"fields": ("username", "password")}),
        (_("Profile"), {"fields": ("nickname", "first_name", "last_name", "email", "phone",
                                   "gender", "avatar", "language", "time_zone",
                                   "remark")}),
        (_("Organisation"), {"fields": ("department", "positions", "roles")}),
        (_("Status"), {"fields": ("is_active", "is_staff", "is_superuser",
                                  "must_change_password", "last_login", "password_changed",
                                  "date_joined")}),
        (_("Extra permissions"), {"classes": ("collapse",),
                                  "fields": ("groups", "user_permissions")}),
    )
    add_fieldsets = (
        (None, {"classes": ("wide",), "fields": ("username", "password1", "password2")}),
        (_("Organisation"), {"fields": ("department", "roles", "is_staff")}),
    )

    def get_queryset(self, request: Any) -> QuerySet:
        return super().get_queryset(request).select_related("department").prefetch_related(
            "roles")

    def get_fieldsets(self, request: Any, obj: Any = None) -> Any:
        fieldsets = super().get_fieldsets(request, obj)
        if request.user.is_superuser:
            return fieldsets
        trimmed = []
        for name, options in fieldsets:
            fields = tuple(f for f in options["fields"] if f not in SUPERUSER_ONLY_FIELDS)
            if fields:
                trimmed.append((name, {**options, "fields": fields}))
        return trimmed

    def get_form(self, request: Any, obj: Any = None, **kwargs: Any) -> Any:  # type: ignore[override]
        return _with_grant_check(super().get_form(request, obj, **kwargs), request)

    def get_import_resource_kwargs(self, request: Any, **kwargs: Any) -> Any:
        return {**super().get_import_resource_kwargs(request, **kwargs),
                "acting_user": request.user}

    def user_change_password(self, request: Any, id: str, form_url: str = "") -> Any:
        """Setting the password of a user who holds more than the editor is refused."""
        user = self.get_object(request, unquote(id))
        if user is not None:
            try:
                actions.check_outranks(request.user, user)
            except actions.Outranked as exc:
                raise PermissionDenied(_refusal(exc)) from exc
        return super().user_change_password(request, id, form_url)

    @admin.display(description=_("roles"))
    def roles_list(self, obj: User) -> str:
        return ", ".join(role.name for role in obj.roles.all())

    def save_model(self, request: Any, obj: User, form: Any, change: bool) -> None:
        was_active = User.objects.filter(pk=obj.pk).values_list("is_active", flat=True).first()
        super().save_model(request, obj, form, change)
        if change and was_active and not obj.is_active:
            actions.logout_user(acting_user=request.user, user=obj)

    @admin.action(description=_("Force the logout of the selected users"))
    def force_logout(self, request: Any, queryset: QuerySet) -> None:
        count = 0
        for user in queryset:
            try:
                count += actions.logout_user(acting_user=request.user, user=user)
            except DomainError as exc:
                self._refused(request, user, exc)
        self.message_user(request, _("{count} sessions ended.").format(count=count))

    def _refused(self, request: Any, user: User, exc: DomainError) -> None:
        messages.error(request, _("{username}: {reason}").format(username=user.username,
                                                                 reason=_refusal(exc)))

    @admin.action(description=_("Reset the passwords of the selected users"))
    def reset_passwords(self, request: Any, queryset: QuerySet) -> None:
        for user in queryset:
            try:
                password = actions.reset_password(acting_user=request.user, user=user)
            except DomainError as exc:
                self._refused(request, user, exc)
                continue
            messages.warning(request, _(
                "New password of {username}: {password} (shown once; to be changed at the "
                "next login)").format(username=user.username, password=password))

    @admin.action(description=_("Activate the selected users"))
    def activate(self, request: Any, queryset: QuerySet) -> None:
        for user in queryset:
            try:
                actions.update_user(acting_user=request.user, user=user,
                                    data={"is_active": True})
            except DomainError as exc:
                self._refused(request, user, exc)

    @admin.action(description=_("Disable the selected users (and end their sessions)"))
    def deactivate(self, request: Any, queryset: QuerySet) -> None:
        for user in queryset.exclude(pk=request.user.pk):
            try:
                actions.update_user(acting_user=request.user, user=user,
                                    data={"is_active": False})
            except DomainError as exc:
                self._refused(request, user, exc)


@admin.register(Department)
class DepartmentAdmin(ScopedAdminMixin, BoundedImportMixin, ImportExportModelAdmin):
    resource_classes = [resources.DepartmentResource]
    list_display = ("tree_name", "leader", "phone", "email", "order", "is_active")
    search_fields = ("name", "leader", "phone", "email")
    list_filter = ("is_active",)
    ordering = ("path",)
    autocomplete_fields = ("leader_user",)
    fields = ("name", "parent", "order", "leader", "leader_user", "phone", "email",
              "is_active", "remark")

    def get_import_resource_kwargs(self, request: Any, **kwargs: Any) -> Any:
        return {**super().get_import_resource_kwargs(request, **kwargs),
                "acting_user": request.user}

    @admin.display(description=_("name"), ordering="path")
    def tree_name(self, obj: Department) -> str:
        return _indent(obj.depth, obj.name)

    def delete_model(self, request: Any, obj: Department) -> None:
        actions.delete_department(department=obj)


@admin.register(Position)
class PositionAdmin(BoundedImportMixin, ImportExportModelAdmin):
    resource_classes = [resources.PositionResource]
    list_display = ("code", "name", "order", "is_active")
    search_fields = ("code", "name")
    list_filter = ("is_active",)


class DeletedThroughActions:
    """Admin deletes (one object or the bulk action) go through the app's delete action,
    `delete_one`, object by object; a refusal is a 403 with its reason."""

    def delete_one(self, user: Any, obj: Any) -> None:
        raise NotImplementedError

    def delete_model(self, request: Any, obj: Any) -> None:
        self.delete_queryset(request, type(obj).objects.filter(pk=obj.pk))

    def delete_queryset(self, request: Any, queryset: QuerySet) -> None:
        for obj in queryset:
            try:
                self.delete_one(request.user, obj)
            except DomainError as exc:
                raise PermissionDenied(_refusal(exc)) from exc


@admin.register(Role)
class RoleAdmin(DeletedThroughActions, BoundedImportMixin, ImportExportModelAdmin):
    resource_classes = [resources.RoleResource]
    list_display = ("name", "code", "data_scope", "is_active", "is_builtin", "user_count")
    search_fields = ("code", "name")
    list_filter = ("data_scope", "is_active", "is_builtin")
    filter_horizontal = ("permissions", "menus", "departments")
    readonly_fields = ("is_builtin",)
    fieldsets = (
        (None, {"fields": ("code", "name", "order", "is_active", "is_builtin", "remark")}),
        (_("Data scope"), {"fields": ("data_scope", "departments")}),
        (_("Menus and buttons"), {"fields": ("menus",)}),
        (_("Permissions"), {"fields": ("permissions",)}),
    )

    @admin.display(description=_("users"))
    def user_count(self, obj: Role) -> int:
        return obj.users.count()

    def get_form(self, request: Any, obj: Any = None, **kwargs: Any) -> Any:
        form = _with_grant_check(super().get_form(request, obj, **kwargs), request)
        field = form.base_fields.get("departments")
        if field is not None and not request.user.is_superuser:
            # Custom departments within the editor's scope (those already chosen stay).
            allowed = scope.department_queryset(request.user)
            if obj is not None:
                allowed = allowed | Department.objects.filter(roles=obj)
            field.queryset = allowed.distinct()
        return form

    def get_import_resource_kwargs(self, request: Any, **kwargs: Any) -> Any:
        return {**super().get_import_resource_kwargs(request, **kwargs),
                "acting_user": request.user}

    def get_readonly_fields(self, request: Any, obj: Any = None) -> Any:
        fields = tuple(super().get_readonly_fields(request, obj))
        return (*fields, "code") if obj is not None and obj.is_builtin else fields

    def has_delete_permission(self, request: Any, obj: Any = None) -> bool:
        if obj is not None and obj.is_builtin:
            return False
        return super().has_delete_permission(request, obj)

    def delete_one(self, user: Any, obj: Role) -> None:
        """Roles none of whose holders outranks the editor (`actions.check_role_holders`)."""
        actions.delete_role(acting_user=user, role=obj)


@admin.register(Menu)
class MenuAdmin(DeletedThroughActions, admin.ModelAdmin):
    list_display = ("tree_name", "menu_type", "permission", "path", "order", "is_visible",
                    "is_active")
    list_filter = ("menu_type", "is_visible", "is_active")
    search_fields = ("name", "permission", "path")

    def get_queryset(self, request: Any) -> QuerySet:
        return super().get_queryset(request).select_related("parent__parent")

    def get_form(self, request: Any, obj: Any = None, **kwargs: Any) -> Any:  # type: ignore[override]
        return _with_grant_check(super().get_form(request, obj, **kwargs), request)

    def delete_one(self, user: Any, obj: Menu) -> None:
        """Menus none of whose holders outranks the editor (`actions.check_menu_holders`)."""
        actions.delete_menu(acting_user=user, menu=obj)

    @admin.display(description=_("name"))
    def tree_name(self, obj: Menu) -> str:
        depth, parent = 0, obj.parent
        while parent is not None and depth < 3:
            depth, parent = depth + 1, parent.parent
        return _indent(depth, obj.name)


admin.site.unregister(Group)


@admin.register(Group)
class GroupAdmin(DeletedThroughActions, BaseGroupAdmin):
    """Django's groups: their permissions reach every member, so adding one is a grant, and
    a group is changed or deleted only when none of its members outranks the editor."""

    def get_form(self, request: Any, obj: Any = None, **kwargs: Any) -> Any:  # type: ignore[override]
        return _with_grant_check(super().get_form(request, obj, **kwargs), request)

    def delete_one(self, user: Any, obj: Group) -> None:
        """Groups none of whose members outranks the editor (`actions.check_group_holders`)."""
        actions.delete_group(acting_user=user, group=obj)


class DictItemInline(admin.TabularInline):
    model = DictItem
    extra = 1
    fields = ("value", "label", "order", "is_default", "color", "is_active")


@admin.register(DictType)
class DictTypeAdmin(BoundedImportMixin, ImportExportModelAdmin):
    resource_classes = [resources.DictTypeResource]
    list_display = ("code", "name", "is_active", "is_builtin", "updated")
    search_fields = ("code", "name")
    list_filter = ("is_active", "is_builtin")
    inlines = [DictItemInline]

    def save_related(self, request: Any, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        actions.save(acting_user=request.user, model=DictType, instance=form.instance,
                     data={})


@admin.register(DictItem)
class DictItemAdmin(BoundedImportMixin, ImportExportModelAdmin):
    resource_classes = [resources.DictItemResource]
    list_display = ("dict_type", "value", "label", "order", "is_default", "is_active")
    list_filter = ("dict_type", "is_active")
    search_fields = ("value", "label", "dict_type__code")
    list_select_related = ("dict_type",)

    def save_model(self, request: Any, obj: DictItem, form: Any, change: bool) -> None:
        actions.save(acting_user=request.user, model=DictItem, instance=obj, data={})


@admin.register(Parameter)
class ParameterAdmin(BoundedImportMixin, ImportExportModelAdmin):
    resource_classes = [resources.ParameterResource]
    list_display = ("key", "name", "value", "value_type", "is_builtin", "updated")
    search_fields = ("key", "name", "value")
    list_filter = ("value_type", "is_builtin")

    def save_model(self, request: Any, obj: Parameter, form: Any, change: bool) -> None:
        actions.save(acting_user=request.user, model=Parameter, instance=obj, data={})

    def has_delete_permission(self, request: Any, obj: Any = None) -> bool:
        if obj is not None and obj.is_builtin:
            return False
        return super().has_delete_permission(request, obj)


@admin.register(Notice)
class NoticeAdmin(ScopedChoicesMixin, admin.ModelAdmin):
    list_display = ("title", "notice_type", "status", "audience", "published", "created_by")
    list_filter = ("notice_type", "status", "audience")
    search_fields = ("title", "content")
    filter_horizontal = ("departments", "roles", "users")
    readonly_fields = ("status", "published", "created_by")
    actions = ("publish", "close")

    def save_model(self, request: Any, obj: Notice, form: Any, change: bool) -> None:
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)

    @admin.action(description=_("Publish the selected notices"))
    def publish(self, request: Any, queryset: QuerySet) -> None:
        for notice in queryset.exclude(status="published"):
            count = actions.publish_notice(acting_user=request.user, notice=notice)
            self.message_user(request, _("{title}: sent to {count} users.").format(
                title=notice.title, count=count))

    @admin.action(description=_("Close the selected notices"))
    def close(self, request: Any, queryset: QuerySet) -> None:
        for notice in queryset:
            actions.close_notice(notice=notice)


@admin.register(Message)
class MessageAdmin(ScopedAdminMixin, ReadOnlyAdmin):
    list_display = ("title", "recipient", "category", "read", "created")
    list_filter = ("category", "created")
    search_fields = ("title", "body", "recipient__username")
    list_select_related = ("recipient",)


def _pretty(value: Any) -> str:
    if value is None:
        return "-"
    return format_html("<pre class=\"tl-json\">{}</pre>",
                       json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True))


@admin.register(OperationLog)
class OperationLogAdmin(ScopedAdminMixin, ExportMixin, ReadOnlyAdmin):
    resource_classes = [resources.OperationLogResource]
    list_display = ("time", "username", "source", "action", "model", "object_repr", "address")
    list_filter = ("source", "action", "app_label", "model", "time")
    search_fields = ("username", "object_repr", "object_id", "path", "request_id")
    date_hierarchy = "time"
    fields = ("time", "username", "source", "action", "app_label", "model", "object_id",
              "object_repr", "before_json", "after_json", "address", "user_agent", "method",
              "path", "request_id", "task", "department")
    readonly_fields = fields

    @admin.display(description=_("before"))
    def before_json(self, obj: OperationLog) -> str:
        return _pretty(obj.before)

    @admin.display(description=_("after"))
    def after_json(self, obj: OperationLog) -> str:
        return _pretty(obj.after)


@admin.register(LoginLog)
class LoginLogAdmin(ScopedAdminMixin, ExportMixin, ReadOnlyAdmin):
    resource_classes = [resources.LoginLogResource]
    list_display = ("time", "username", "channel", "result", "address", "user_agent")
    list_filter = ("result", "channel", "time")
    search_fields = ("username", "address", "user_agent")
    date_hierarchy = "time"
    actions = ("unlock",)

    @admin.action(description=_("Lift the lockout of the selected username and address"),
                  permissions=["unlock"])
    def unlock(self, request: Any, queryset: QuerySet) -> None:
        for username, address in set(queryset.values_list("username", "address")):
            lockout.reset(username, address)
        self.message_user(request, _("Lockouts lifted."))

    def has_unlock_permission(self, request: Any) -> bool:
        return request.user.has_perm("system.unlock_login")


@admin.register(LoginSession)
class OnlineUserAdmin(ScopedAdminMixin, ReadOnlyAdmin):
    list_display = ("user", "channel", "address", "user_agent", "created", "last_seen",
                    "expires")
    list_filter = ("channel",)
    search_fields = ("user__username", "address", "user_agent")
    list_select_related = ("user",)
    actions = ("force_logout",)

    def get_queryset(self, request: Any) -> QuerySet:
        return super().get_queryset(request).filter(pk__in=sessions.online().values("pk"))

    @admin.action(description=_("Force the logout of the selected sessions"),
                  permissions=["logout"])
    def force_logout(self, request: Any, queryset: QuerySet) -> None:
        for session in queryset.select_related("user"):
            try:
                actions.force_logout(acting_user=request.user, session=session)
            except DomainError as exc:
                messages.error(request, _("{username}: {reason}").format(
                    username=session.user.username, reason=_refusal(exc)))
        self.message_user(request, _("Sessions ended."))

    def has_logout_permission(self, request: Any) -> bool:
        return request.user.has_perm("system.logout_loginsession")


@admin.register(ApiKey)
class ApiKeyAdmin(ScopedAdminMixin, admin.ModelAdmin):
    list_display = ("name", "user", "prefix", "expires", "last_used", "revoked", "created")
    list_filter = ("revoked", "expires")
    search_fields = ("name", "prefix", "user__username")
    list_select_related = ("user",)
    fields = ("user", "name", "expires", "prefix", "last_used", "revoked", "created")
    readonly_fields = ("prefix", "last_used", "revoked", "created")
    actions = ("revoke",)

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def get_form(self, request: Any, obj: Any = None, **kwargs: Any) -> Any:  # type: ignore[override]
        return _with_grant_check(super().get_form(request, obj, **kwargs), request)

    def save_model(self, request: Any, obj: ApiKey, form: Any, change: bool) -> None:
        api_key, key = actions.create_api_key(acting_user=request.user, user=obj.user,
                                              name=obj.name, expires=obj.expires)
        obj.pk, obj._state = api_key.pk, api_key._state
        messages.warning(request, _("The key is {key} — copy it now: it is stored hashed and "
                                    "will not be shown again.").format(key=key))

    @admin.action(description=_("Revoke the selected keys"))
    def revoke(self, request: Any, queryset: QuerySet) -> None:
        for api_key in queryset:
            actions.revoke_api_key(api_key=api_key)


@admin.register(TaskRun)
class TaskRunAdmin(ReadOnlyAdmin):
    list_display = ("started", "periodic_task_name", "task_name", "status", "runtime",
                    "worker")
    list_filter = ("status", "periodic_task_name", "task_name", "started")
    search_fields = ("task_name", "periodic_task_name", "task_id", "error")
    date_hierarchy = "started"

    def get_queryset(self, request: Any) -> QuerySet:
        """Runs of the schedules the user sees (`webapp.system.runs`)."""
        return runs.scoped_task_runs(super().get_queryset(request), request.user)


class SuperuserWritesMixin:
    """A schedule names any registered task with any arguments (a rule's action towards
    another department's sink, for one): only superusers add, change, delete or run them.
    Scheduled rules keep their schedules in step through the rules API."""

    def has_add_permission(self, request: Any, *args: Any) -> bool:
        return bool(request.user.is_superuser) and super().has_add_permission(  # type: ignore[misc]
            request, *args)

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        return bool(request.user.is_superuser) and super().has_change_permission(  # type: ignore[misc]
            request, obj)

    def has_delete_permission(self, request: Any, obj: Any = None) -> bool:
        return bool(request.user.is_superuser) and super().has_delete_permission(  # type: ignore[misc]
            request, obj)

    def get_actions(self, request: Any) -> Any:
        if not request.user.is_superuser:
            return {}
        return super().get_actions(request)  # type: ignore[misc]


for _schedule in (IntervalSchedule, CrontabSchedule, SolarSchedule, ClockedSchedule):
    if admin.site.is_registered(_schedule):
        _base = type(admin.site._registry[_schedule])
        admin.site.unregister(_schedule)
        admin.site.register(_schedule, type(_base.__name__, (SuperuserWritesMixin, _base), {}))


admin.site.unregister(PeriodicTask)


@admin.register(PeriodicTask)
class PeriodicTaskAdmin(SuperuserWritesMixin, BasePeriodicTaskAdmin):
    """Celery beat schedules, with their last runs; written by superusers only, and listed
    within the data scope (`webapp.system.runs`)."""

    list_display = (*BasePeriodicTaskAdmin.list_display, "last_status")
    readonly_fields = (*getattr(BasePeriodicTaskAdmin, "readonly_fields", ()), "recent_runs")

    def get_queryset(self, request: Any) -> QuerySet:
        return runs.scoped_periodic_tasks(super().get_queryset(request), request.user)

    def get_fieldsets(self, request: Any, obj: Any = None) -> Any:
        fieldsets = list(super().get_fieldsets(request, obj))
        if obj is not None:
            fieldsets.append((_("Run history"), {"fields": ("recent_runs",)}))
        return fieldsets

    @admin.display(description=_("last run"))
    def last_status(self, obj: PeriodicTask) -> str:
        run = TaskRun.objects.filter(periodic_task_name=obj.name).first()
        return run.get_status_display() if run else "-"

    @admin.display(description=_("recent runs"))
    def recent_runs(self, obj: PeriodicTask) -> str:
        runs = TaskRun.objects.filter(periodic_task_name=obj.name)[:10]
        if not runs:
            return str(_("No runs yet."))
        url = reverse("admin:system_taskrun_changelist") + f"?periodic_task_name={obj.name}"
        rows = format_html_join("", "<li>{} — {} ({} s)</li>", (
            (run.started.strftime("%Y-%m-%d %H:%M:%S"), run.get_status_display(),
             run.runtime if run.runtime is not None else "…") for run in runs))
        return format_html('<ul class="tl-runs">{}</ul><a href="{}">{}</a>', rows, url,
                           _("All runs"))
