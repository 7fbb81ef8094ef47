"""Users, the organisation, roles and menus, notices and logs; the dictionaries and parameters.

The dictionaries and parameters are defined in `webapp.system.dictionaries` and re-exported
here: their cache (`webapp.system.cache`) imports them, and the users' password policy reads a
parameter through that cache, so they cannot live in this module."""

from __future__ import annotations

import uuid
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractUser, Permission
from django.core.validators import FileExtensionValidator
from django.db import models
from django.db.models.functions import Concat, Length, Substr
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from webapp.core.zones import validate_time_zone
from webapp.system.cache import param
from webapp.system.choices import (
    Audience,
    DataScope,
    Gender,
    LoginChannel,
    LoginResult,
    MenuType,
    MessageCategory,
    NoticeStatus,
    NoticeType,
    OperationAction,
    OperationSource,
    TaskRunStatus,
)
from webapp.system.codes import code_validator
from webapp.system.dictionaries import DictItem as DictItem
from webapp.system.dictionaries import DictType as DictType
from webapp.system.dictionaries import Parameter as Parameter


class Department(models.Model):
    """A node of the organisation tree; data scope is expressed in departments."""

    name = models.CharField(_("name"), max_length=100)
    parent = models.ForeignKey("self", verbose_name=_("parent"), null=True, blank=True,
                               on_delete=models.PROTECT, related_name="children")
    order = models.PositiveIntegerField(_("order"), default=0)
    leader = models.CharField(_("leader"), max_length=100, blank=True)
    phone = models.CharField(_("phone"), max_length=32, blank=True)
    email = models.EmailField(_("email"), blank=True)
    is_active = models.BooleanField(_("active"), default=True)
    created = models.DateTimeField(_("created"), auto_now_add=True)
    # Materialised path of ids ("/1/4/9/"): "this department and below" is one prefix match.
    path = models.CharField(_("path"), max_length=500, editable=False, db_index=True,
                            default="")
    leader_user = models.ForeignKey(settings.AUTH_USER_MODEL, verbose_name=_("leader (user)"),
                                    null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="led_departments")
    remark = models.TextField(_("remark"), blank=True)
    updated = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("department")
        verbose_name_plural = _("departments")
        ordering = ("order", "name")

    def __str__(self) -> str:
        return self.name

    @property
    def depth(self) -> int:
        return max(self.path.count("/") - 2, 0)

    def save(self, *args, **kwargs) -> None:
        """Keep `path` (and the paths of the whole subtree when the parent changes) right."""
        old_path = self.path
        parent_path = self.parent.path if self.parent_id and self.parent else "/"
        if self.parent_id and old_path and parent_path.startswith(old_path):
            from django.core.exceptions import ValidationError

            raise ValidationError(_("A department cannot be placed below itself."))
        if self.pk is not None:
            self.path = f"{parent_path}{self.pk}/"
            if kwargs.get("update_fields") is not None:
                kwargs["update_fields"] = {*kwargs["update_fields"], "path"}
        super().save(*args, **kwargs)
        if not old_path or old_path != f"{parent_path}{self.pk}/":
            # A new department learns its id only now: set the path without a second save.
            self.path = f"{parent_path}{self.pk}/"
            Department.objects.filter(pk=self.pk).update(path=self.path)
        if old_path and old_path != self.path:
            Department.objects.filter(path__startswith=old_path).exclude(pk=self.pk).update(
                path=Concat(models.Value(self.path),
                            Substr("path", Length(models.Value(old_path)) + 1)))


class Position(models.Model):
    """A post a user holds (RuoYi `sys_post`)."""

    code = models.CharField(_("code"), max_length=64, unique=True, validators=[code_validator])
    name = models.CharField(_("name"), max_length=100)
    order = models.PositiveIntegerField(_("order"), default=0)
    is_active = models.BooleanField(_("active"), default=True)
    remark = models.TextField(_("remark"), blank=True)
    created = models.DateTimeField(_("created"), auto_now_add=True)

    class Meta:
        verbose_name = _("position")
        verbose_name_plural = _("positions")
        ordering = ("order", "code")

    def __str__(self) -> str:
        return self.name


class Menu(models.Model):
    """The console's navigation: directories, pages and buttons with permission codes."""

    parent = models.ForeignKey("self", verbose_name=_("parent"), null=True, blank=True,
                               on_delete=models.CASCADE, related_name="children")
    name = models.CharField(_("name"), max_length=100)
    menu_type = models.CharField(_("type"), max_length=16, choices=MenuType.choices,
                                 default=MenuType.PAGE)
    # A Django permission ("devices.add_device") or a console code ("devices:debug").
    permission = models.CharField(_("permission code"), max_length=100, blank=True,
                                  db_index=True)
    path = models.CharField(_("route"), max_length=200, blank=True,
                            help_text=_("The console route or admin URL of a page."))
    icon = models.CharField(_("icon"), max_length=50, blank=True)
    order = models.PositiveIntegerField(_("order"), default=0)
    is_visible = models.BooleanField(_("visible"), default=True)
    is_active = models.BooleanField(_("active"), default=True)
    remark = models.TextField(_("remark"), blank=True)
    created = models.DateTimeField(_("created"), auto_now_add=True)

    class Meta:
        verbose_name = _("menu")
        verbose_name_plural = _("menus")
        ordering = ("order", "id")

    def __str__(self) -> str:
        return self.name


class Role(models.Model):
    """A set of permissions (Django and menu codes) plus the data scope it reaches."""

    code = models.CharField(_("code"), max_length=64, unique=True, validators=[code_validator])
    name = models.CharField(_("name"), max_length=100)
    order = models.PositiveIntegerField(_("order"), default=0)
    data_scope = models.CharField(_("data scope"), max_length=32, choices=DataScope.choices,
                                  default=DataScope.DEPARTMENT_AND_BELOW)
    departments = models.ManyToManyField(
        Department, verbose_name=_("custom departments"), blank=True, related_name="roles",
        help_text=_("The departments a role with custom data scope reaches."))
    permissions = models.ManyToManyField(Permission, verbose_name=_("permissions"), blank=True,
                                         related_name="roles")
    menus = models.ManyToManyField(Menu, verbose_name=_("menus"), blank=True,
                                   related_name="roles")
    is_active = models.BooleanField(_("active"), default=True)
    is_builtin = models.BooleanField(_("built-in"), default=False, editable=False)
    remark = models.TextField(_("remark"), blank=True)
    created = models.DateTimeField(_("created"), auto_now_add=True)
    updated = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("role")
        verbose_name_plural = _("roles")
        ordering = ("order", "code")

    def __str__(self) -> str:
        return self.name


def avatar_path(instance: User, filename: str) -> str:
    return f"avatars/{instance.pk or 'new'}/{uuid.uuid4().hex}.{filename.rsplit('.', 1)[-1]}"


class User(AbstractUser):
    """A platform user (console, admin and API)."""

    department = models.ForeignKey(Department, verbose_name=_("department"), null=True,
                                   blank=True, on_delete=models.SET_NULL, related_name="users")
    phone = models.CharField(_("phone"), max_length=32, blank=True)
    language = models.CharField(_("language"), max_length=10, blank=True,
                                choices=settings.LANGUAGES)
    time_zone = models.CharField(
        _("time zone"), max_length=64, blank=True, validators=[validate_time_zone],
        help_text=_("An IANA name such as Asia/Shanghai: the zone the console shows times in "
                    "and calendar aggregates (days, weeks, months) follow. Empty: the "
                    "platform's TIME_ZONE."))
    nickname = models.CharField(_("nickname"), max_length=100, blank=True)
    gender = models.CharField(_("gender"), max_length=8, choices=Gender.choices, blank=True)
    avatar = models.FileField(_("avatar"), upload_to=avatar_path, blank=True, validators=[
        FileExtensionValidator(["png", "jpg", "jpeg", "gif", "webp"])])
    positions = models.ManyToManyField(Position, verbose_name=_("positions"), blank=True,
                                       related_name="users")
    roles = models.ManyToManyField(Role, verbose_name=_("roles"), blank=True,
                                   related_name="users")
    password_changed = models.DateTimeField(_("password changed"), null=True, blank=True,
                                            editable=False)
    must_change_password = models.BooleanField(
        _("must change password"), default=False,
        help_text=_("Set when an administrator resets the password."))
    remark = models.TextField(_("remark"), blank=True)
    created_by = models.ForeignKey("self", verbose_name=_("created by"), null=True,
                                   blank=True, on_delete=models.SET_NULL, related_name="+",
                                   editable=False)

    class Meta:
        verbose_name = _("user")
        verbose_name_plural = _("users")

    def set_password(self, raw_password: str | None) -> None:
        super().set_password(raw_password)
        self.password_changed = timezone.now()
        self.must_change_password = False

    @property
    def password_change_required(self) -> bool:
        """An administrator reset the password, or it is older than
        `security.password.max_age_days` (0: passwords do not expire)."""
        if self.must_change_password:
            return True
        max_age = int(param("security.password.max_age_days", 0) or 0)
        return bool(max_age and self.password_changed and
                    timezone.now() - self.password_changed > timedelta(days=max_age))


class DepartmentOwned(models.Model):
    """Something owned by a department (data scope, webapp/system/scope.py) and its maker: the
    shared fields of configuration that lives in one department (notices, notification
    channels, sinks). Models whose department and maker have reverse accessors of their own
    (products, devices, users) declare the fields themselves."""

    department = models.ForeignKey(
        "system.Department", verbose_name=_("department"), null=True, blank=True,
        on_delete=models.SET_NULL, related_name="+", help_text=_(
            "The department that owns it: only users whose data scope reaches this "
            "department see it and use it."))
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, verbose_name=_("created by"),
                                   null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+", editable=False)

    class Meta:
        abstract = True


class Notice(DepartmentOwned):
    """An announcement; publishing it sends an in-site message to its audience."""

    title = models.CharField(_("title"), max_length=200)
    content = models.TextField(_("content"), blank=True)
    notice_type = models.CharField(_("type"), max_length=16, choices=NoticeType.choices,
                                   default=NoticeType.NOTICE)
    status = models.CharField(_("status"), max_length=16, choices=NoticeStatus.choices,
                              default=NoticeStatus.DRAFT)
    audience = models.CharField(_("audience"), max_length=16, choices=Audience.choices,
                                default=Audience.ALL)
    departments = models.ManyToManyField(Department, verbose_name=_("departments"),
                                         blank=True, related_name="+")
    roles = models.ManyToManyField(Role, verbose_name=_("roles"), blank=True, related_name="+")
    users = models.ManyToManyField(settings.AUTH_USER_MODEL, verbose_name=_("users"),
                                   blank=True, related_name="+")
    published = models.DateTimeField(_("published"), null=True, blank=True, editable=False)
    created = models.DateTimeField(_("created"), auto_now_add=True)
    updated = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("notice")
        verbose_name_plural = _("notices")
        ordering = ("-created",)

    def __str__(self) -> str:
        return self.title


class Message(models.Model):
    """An in-site message to one user (from a notice, an alarm or the platform)."""

    recipient = models.ForeignKey(settings.AUTH_USER_MODEL, verbose_name=_("recipient"),
                                  on_delete=models.CASCADE, related_name="messages")
    category = models.CharField(_("category"), max_length=16, choices=MessageCategory.choices,
                                default=MessageCategory.SYSTEM)
    title = models.CharField(_("title"), max_length=200)
    body = models.TextField(_("body"), blank=True)
    link = models.CharField(_("link"), max_length=300, blank=True)
    notice = models.ForeignKey(Notice, verbose_name=_("notice"), null=True, blank=True,
                               on_delete=models.CASCADE, related_name="messages")
    read = models.DateTimeField(_("read"), null=True, blank=True)
    created = models.DateTimeField(_("created"), auto_now_add=True, db_index=True)

    class Meta:
        verbose_name = _("message")
        verbose_name_plural = _("messages")
        ordering = ("-created", "-id")
        indexes = [models.Index(fields=("recipient", "read"))]

    def __str__(self) -> str:
        return self.title


class OperationLog(models.Model):
    """Who changed what, when, from where, with the record before and after."""

    time = models.DateTimeField(_("time"), default=timezone.now, db_index=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, verbose_name=_("user"), null=True,
                             blank=True, on_delete=models.SET_NULL, related_name="+")
    username = models.CharField(_("username"), max_length=150, blank=True, db_index=True)
    source = models.CharField(_("source"), max_length=16, choices=OperationSource.choices)
    action = models.CharField(_("action"), max_length=16, choices=OperationAction.choices)
    app_label = models.CharField(_("application"), max_length=100)
    model = models.CharField(_("model"), max_length=100)
    object_id = models.CharField(_("object id"), max_length=64, blank=True, db_index=True)
    object_repr = models.CharField(_("object"), max_length=200, blank=True)
    before = models.JSONField(_("before"), null=True, blank=True)
    after = models.JSONField(_("after"), null=True, blank=True)
    address = models.GenericIPAddressField(_("address"), null=True, blank=True)
    user_agent = models.CharField(_("user agent"), max_length=300, blank=True)
    method = models.CharField(_("method"), max_length=10, blank=True)
    path = models.CharField(_("path"), max_length=300, blank=True)
    request_id = models.CharField(_("request id"), max_length=32, blank=True, db_index=True)
    task = models.CharField(_("task"), max_length=200, blank=True)
    # Who may read the entry: the department of the changed record (the actor's for a record
    # without one), so that the before/after values of B's records stay with B's auditors
    # when a user of A who also reaches B changes them.
    department = models.ForeignKey(Department, verbose_name=_("department"), null=True,
                                   blank=True, on_delete=models.SET_NULL, related_name="+",
                                   help_text=_("The changed record's department (the "
                                               "actor's for a record without one)."))
    actor_department = models.ForeignKey(Department, verbose_name=_("actor's department"),
                                         null=True, blank=True, on_delete=models.SET_NULL,
                                         related_name="+")

    class Meta:
        verbose_name = _("operation log")
        verbose_name_plural = _("operation logs")
        ordering = ("-time", "-id")
        indexes = [models.Index(fields=("app_label", "model", "object_id"))]

    def __str__(self) -> str:
        return f"{self.get_action_display()} {self.model} {self.object_repr}"


class LoginLog(models.Model):
    time = models.DateTimeField(_("time"), default=timezone.now, db_index=True)
    username = models.CharField(_("username"), max_length=150, db_index=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, verbose_name=_("user"), null=True,
                             blank=True, on_delete=models.SET_NULL, related_name="+")
    channel = models.CharField(_("channel"), max_length=16, choices=LoginChannel.choices)
    result = models.CharField(_("result"), max_length=20, choices=LoginResult.choices)
    address = models.GenericIPAddressField(_("address"), null=True, blank=True)
    user_agent = models.CharField(_("user agent"), max_length=300, blank=True)

    class Meta:
        verbose_name = _("login log")
        verbose_name_plural = _("login logs")
        ordering = ("-time", "-id")
        permissions = [("unlock_login", _("Can lift a login lockout"))]

    def __str__(self) -> str:
        return f"{self.username} {self.result}"

    @property
    def success(self) -> bool:
        return self.result == LoginResult.SUCCESS


class LoginSession(models.Model):
    """One login (a JWT pair or an admin session): the online-users list and forced logout.

    Every JWT carries the session id (`sid`); revoking the session refuses its access and
    refresh tokens at once, and deletes the Django session of an admin login.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, verbose_name=_("user"),
                             on_delete=models.CASCADE, related_name="login_sessions")
    channel = models.CharField(_("channel"), max_length=16, choices=LoginChannel.choices)
    session_key = models.CharField(_("session key"), max_length=40, blank=True,
                                   editable=False)
    address = models.GenericIPAddressField(_("address"), null=True, blank=True)
    user_agent = models.CharField(_("user agent"), max_length=300, blank=True)
    created = models.DateTimeField(_("logged in"), auto_now_add=True)
    last_seen = models.DateTimeField(_("last seen"), default=timezone.now)
    expires = models.DateTimeField(_("expires"), db_index=True)
    revoked = models.DateTimeField(_("revoked"), null=True, blank=True, db_index=True)

    class Meta:
        verbose_name = _("online user")
        verbose_name_plural = _("online users")
        ordering = ("-last_seen",)
        permissions = [("logout_loginsession", _("Can force the logout of an online user"))]

    def __str__(self) -> str:
        return f"{self.user} ({self.get_channel_display()})"

    @property
    def is_active(self) -> bool:
        return self.revoked is None and self.expires > timezone.now()


class ApiKey(models.Model):
    """A per-user key for machine clients (`Authorization: Api-Key <key>`), stored hashed."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, verbose_name=_("user"),
                             on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(_("name"), max_length=100)
    prefix = models.CharField(_("prefix"), max_length=16, unique=True, editable=False)
    key_hash = models.CharField(_("key hash"), max_length=64, editable=False)
    expires = models.DateTimeField(_("expires"), null=True, blank=True)
    last_used = models.DateTimeField(_("last used"), null=True, blank=True, editable=False)
    revoked = models.DateTimeField(_("revoked"), null=True, blank=True, editable=False)
    created = models.DateTimeField(_("created"), auto_now_add=True)

    class Meta:
        verbose_name = _("API key")
        verbose_name_plural = _("API keys")
        ordering = ("-created",)

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked is None and (self.expires is None or self.expires > timezone.now())


class TaskRun(models.Model):
    """One run of a Celery task started by beat or from the admin (run history)."""

    task_id = models.CharField(_("task id"), max_length=64, unique=True)
    task_name = models.CharField(_("task"), max_length=200, db_index=True)
    periodic_task_name = models.CharField(_("schedule"), max_length=200, blank=True,
                                          db_index=True)
    status = models.CharField(_("status"), max_length=16, choices=TaskRunStatus.choices,
                              default=TaskRunStatus.STARTED)
    started = models.DateTimeField(_("started"), default=timezone.now, db_index=True)
    finished = models.DateTimeField(_("finished"), null=True, blank=True)
    runtime = models.FloatField(_("runtime (s)"), null=True, blank=True)
    result = models.TextField(_("result"), blank=True)
    error = models.TextField(_("error"), blank=True)
    worker = models.CharField(_("worker"), max_length=200, blank=True)

    class Meta:
        verbose_name = _("task run")
        verbose_name_plural = _("task runs")
        ordering = ("-started",)
        # The console's monitoring page (/monitoring/) has no model of its own.
        permissions = [("view_monitoring", _("Can view the monitoring page"))]

    def __str__(self) -> str:
        return f"{self.task_name} {self.task_id}"
