"""System management writes: views, the admin and tasks change these models through here.

Every function owns its transaction and leaves the operation log to the generic recorder
(`webapp.system.oplog`, which knows who acts from the operation context), calling
`oplog.record` only for what model signals cannot see. A function takes the acting user
only when who acts decides something (what they may grant, whom they outrank).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.contrib.auth import password_validation
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import models, transaction
from django.db.models import ProtectedError, Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from edge.crypto import random_token
from webapp.core.errors import Conflict, DomainError
from webapp.core.types import Actor
from webapp.system import cache as system_cache
from webapp.system import oplog, sessions
from webapp.system.actors import recorded_user
from webapp.system.authentication import hash_key, make_key
from webapp.system.backends import forget_permissions
from webapp.system.choices import (
    Audience,
    DataScope,
    MessageCategory,
    NoticeStatus,
    OperationAction,
)
from webapp.system.models import (
    ApiKey,
    Department,
    DictItem,
    DictType,
    LoginSession,
    Menu,
    Message,
    Notice,
    Parameter,
    Role,
    User,
)
from webapp.system.scope import (
    can_assign,
    default_scope,
    department_queryset,
    restrict,
    user_scope,
)


class GrantRefused(DomainError):
    code = "grant_refused"
    http_status = 403
    default_detail = _("You cannot grant more than you hold.")


class Outranked(DomainError):
    code = "outranked"
    http_status = 403
    default_detail = _("This user holds rights you do not hold: only someone who holds them "
                       "can change the user, reset their password or act as them.")


class RoleOutranked(Outranked):
    default_detail = _("This role is held by users who hold rights you do not hold: only "
                       "someone who holds them can change or delete the role.")


class MenuOutranked(Outranked):
    default_detail = _("This menu belongs to roles held by users who hold rights you do not "
                       "hold: only someone who holds them can change or delete the menu.")


class GroupOutranked(Outranked):
    default_detail = _("This group has members who hold rights you do not hold: only someone "
                       "who holds them can change or delete the group.")


def refusal(exc: GrantRefused | Outranked) -> str:
    """A refused grant as one sentence, for admin forms, messages and import rows."""
    if isinstance(exc, MenuOutranked):
        template = _("This menu belongs to roles held by users who hold rights you do not "
                     "hold: {missing}")
    elif isinstance(exc, GroupOutranked):
        template = _("This group has members who hold rights you do not hold: {missing}")
    elif isinstance(exc, RoleOutranked):
        template = _("This role is held by users who hold rights you do not hold: {missing}")
    elif isinstance(exc, Outranked):
        template = _("This user holds rights you do not hold: {missing}")
    else:
        template = _("You cannot grant what you do not hold: {missing}")
    return template.format(missing=", ".join(exc.extra.get("missing", ())))


def _codes(permissions: Iterable[Any]) -> set[str]:
    return {f"{p.content_type.app_label}.{p.codename}" for p in permissions}


def _actor(acting_user: Actor) -> User | None:
    """The user whose grants are checked; None for the platform and for superusers."""
    user = recorded_user(acting_user)
    return None if user is None or user.is_superuser else user


def _scope_missing(user: User, kinds: set[str], departments: Iterable[Department]) -> list[str]:
    """The data scope `user` would give away without holding it: the all scope, a relative
    scope (own department, and below) they do not hold, custom departments they do not reach."""
    if user_scope(user).everything:
        return []
    missing = []
    if DataScope.ALL in kinds:
        missing.append("data_scope:all")
    relative = kinds & {DataScope.DEPARTMENT, DataScope.DEPARTMENT_AND_BELOW}
    if relative:
        held = set(user.roles.filter(is_active=True).values_list("data_scope", flat=True)) \
            or {default_scope()}
        if DataScope.DEPARTMENT_AND_BELOW in held:
            held.add(DataScope.DEPARTMENT)
        missing.extend(f"data_scope:{kind}" for kind in sorted(relative - held))
    departments = list(departments)
    if departments:
        reached = set(department_queryset(user).values_list("pk", flat=True))
        missing.extend(sorted(f"department:{d.name}" for d in departments
                              if d.pk not in reached))
    return missing


def check_grant(acting_user: Actor, *, roles: Iterable[Role] = (),
                permissions: Iterable[Any] = (), menus: Iterable[Any] = (),
                codes: Iterable[str] = (), groups: Iterable[Any] = (),
                data_scope: str | None = None, departments: Iterable[Department] = (),
                superuser: bool = False, staff: bool = False) -> None:
    """Someone who is not a superuser grants only what they hold themselves: roles whose
    permissions, menu codes and data scope they have, those permissions, menu codes and
    groups directly, a data scope and custom departments they reach; never the superuser
    flag, and the staff flag only when they are staff."""
    user = _actor(acting_user)
    if user is None:
        return
    held = user.get_all_permissions()
    wanted = set(_codes(permissions)) | {code for code in codes if code}
    wanted |= {m.permission for m in menus if m.permission}
    for group in groups:
        wanted |= _codes(group.permissions.select_related("content_type"))
    kinds = {data_scope} if data_scope else set()
    departments = list(departments)
    for role in roles:
        wanted |= _codes(role.permissions.select_related("content_type"))
        wanted |= set(role.menus.filter(is_active=True).exclude(permission="").values_list(
            "permission", flat=True))
        kinds.add(role.data_scope)
        if role.data_scope == DataScope.CUSTOM:
            departments.extend(role.departments.all())
    missing = sorted(wanted - held)
    if superuser:
        missing.append("is_superuser")
    if staff and not user.is_staff:
        missing.append("is_staff")
    missing.extend(_scope_missing(user, kinds, departments))
    if missing:
        raise GrantRefused(extra={"missing": missing})


def _as_active(user: User) -> User:
    """`user` as if active, without caches: a disabled user's rights come back when
    someone enables them, so they count."""
    from webapp.system.scope import forget

    probe = copy.copy(user)
    probe.is_active = True
    forget_permissions(probe)
    forget(probe)
    return probe


def check_outranks(acting_user: Actor, user: User) -> None:
    """Refuse (`Outranked`) when `user` holds something the actor does not: the superuser
    or staff flag, a permission, the all scope or a department outside the actor's scope.
    Whoever changes a user's password, status, e-mail or department, or gets a key for them,
    could become them; so they may do it only to users who hold no more than they do."""
    actor = _actor(acting_user)
    if actor is None or actor.pk == user.pk:
        return
    target = _as_active(user)
    missing = []
    if target.is_superuser:
        missing.append("is_superuser")
    if target.is_staff and not actor.is_staff:
        missing.append("is_staff")
    missing.extend(sorted(target.get_all_permissions() - actor.get_all_permissions()))
    if not user_scope(actor).everything:
        if user_scope(target).everything:
            missing.append("data_scope:all")
        else:
            beyond = department_queryset(target).exclude(
                pk__in=department_queryset(actor).values("pk"))
            missing.extend(sorted(f"department:{d.name}" for d in beyond))
    if missing:
        raise Outranked(extra={"missing": missing})


def _check_holders(actor: User, holders: Any, error: type[Outranked]) -> None:
    """Refused (`error`) unless every user of `holders` (but the actor) is within the
    actor's data scope and holds no more than the actor (`check_outranks`)."""
    holders = holders.exclude(pk=actor.pk).distinct().order_by("pk")
    beyond = holders.exclude(pk__in=restrict(User.objects.all(), actor).values("pk"))
    missing = [f"{name}: data scope" for name in beyond.values_list("username", flat=True)[:5]]
    if not missing:
        for holder in holders.iterator():
            try:
                check_outranks(actor, holder)
            except Outranked as exc:
                codes = exc.extra["missing"]
                more = ", …" if len(codes) > 5 else ""
                missing.append(f"{holder.username}: {', '.join(codes[:5])}{more}")
                break
    if missing:
        raise error(extra={"missing": missing})


def check_role_holders(acting_user: Actor, role: Role | None) -> None:
    """Roles are shared by every department: changing, deactivating or deleting one changes
    each of its holders. Refused (`RoleOutranked`) unless every holder is within the actor's
    data scope and holds no more than the actor (`check_outranks`): a department's manager
    cannot switch off the administrator role or change another department's users' roles."""
    actor = _actor(acting_user)
    if actor is None or role is None or not role.pk:
        return
    _check_holders(actor, User.objects.filter(roles=role), RoleOutranked)


def check_menu_holders(acting_user: Actor, menu: Menu | None) -> None:
    """A menu's code reaches every holder of the roles it belongs to: it is changed,
    deactivated or deleted only when none of them outranks the actor (`MenuOutranked`)."""
    actor = _actor(acting_user)
    if actor is None or menu is None or not menu.pk:
        return
    _check_holders(actor, User.objects.filter(roles__menus=menu), MenuOutranked)


def check_group_holders(acting_user: Actor, group: Any) -> None:
    """A Django group's permissions reach every member: it is changed or deleted only when
    none of them outranks the actor (`GroupOutranked`)."""
    actor = _actor(acting_user)
    if actor is None or group is None or not group.pk:
        return
    _check_holders(actor, User.objects.filter(groups=group), GroupOutranked)


def _added(new: Iterable[Any] | None, old: Iterable[Any]) -> list[Any]:
    if new is None:
        return []
    current = {item.pk for item in old}
    return [item for item in new if item.pk not in current]


def check_user_change(acting_user: Actor, user: User | None, changes: dict[str, Any]) -> None:
    """What every write of a user goes through (API, admin form, admin import): the user
    must not outrank the actor (`check_outranks`), added roles, permissions and groups and
    the superuser and staff flags must be the actor's to grant (`check_grant`), and a new
    department must be within the actor's scope. `changes` maps field names to new values
    (model instances and lists of them); the current values are read from the database."""
    actor = _actor(acting_user)
    if actor is None:
        return
    before = User.objects.filter(pk=user.pk).first() if user is not None and user.pk else None
    if before is not None:
        check_outranks(actor, before)

    def current(name: str) -> Iterable[Any]:
        return getattr(before, name).all() if before is not None else ()

    department = changes.get("department")
    if department is not None and department.pk != getattr(before, "department_id", None) \
            and not can_assign(actor, department):
        raise GrantRefused(extra={"missing": [f"department:{department.name}"]})
    check_grant(
        actor, roles=_added(changes.get("roles"), current("roles")),
        permissions=_added(changes.get("user_permissions"), current("user_permissions")),
        groups=_added(changes.get("groups"), current("groups")),
        superuser=bool(changes.get("is_superuser")) and not getattr(before, "is_superuser",
                                                                    False),
        staff=bool(changes.get("is_staff")) and not getattr(before, "is_staff", False))


def check_role_change(acting_user: Actor, role: Role | None, data: dict[str, Any]) -> None:
    """A role changes only when none of its holders outranks the actor
    (`check_role_holders`), and only towards what the actor holds: what it grants after the
    change (permissions, active menu codes, data scope and custom departments; nothing while
    inactive) minus what it granted before must be the actor's to grant. Activating a role
    therefore checks all of it. Current values are read from the database."""
    actor = _actor(acting_user)
    if actor is None:
        return
    before = Role.objects.filter(pk=role.pk).first() if role is not None and role.pk else None
    check_role_holders(actor, before)
    granted = before is not None and before.is_active
    default = before if before is not None else Role()
    if not data.get("is_active", default.is_active):
        return

    def value(name: str) -> list[Any]:
        if name in data:
            return list(data[name] or ())
        return list(getattr(before, name).all()) if before is not None else []

    def old(name: str) -> list[Any]:
        return list(getattr(before, name).all()) if granted and before is not None else []

    kind = data.get("data_scope") or default.data_scope
    old_kind = before.data_scope if granted and before is not None else None
    departments: list[Any] = []
    if kind == DataScope.CUSTOM:
        departments = _added(value("departments"),
                             old("departments") if old_kind == DataScope.CUSTOM else ())
    check_grant(actor, permissions=_added(value("permissions"), old("permissions")),
                codes=[m.permission for m in _added(value("menus"), old("menus"))
                       if m.is_active],
                data_scope=kind if kind != old_kind else None, departments=departments)


def check_menu_change(acting_user: Actor, menu: Menu | None, data: dict[str, Any]) -> None:
    """A menu's permission code is a grant to every holder of its roles
    (`webapp.system.backends.RoleBackend`): a menu changes only when none of them outranks
    the actor (`check_menu_holders`), and setting or activating a code needs the actor to
    hold it. Current values are read from the database."""
    actor = _actor(acting_user)
    if actor is None:
        return
    before = Menu.objects.filter(pk=menu.pk).first() if menu is not None and menu.pk else None
    check_menu_holders(actor, before)
    default = before if before is not None else Menu()
    code = data.get("permission", default.permission)
    if not code or not data.get("is_active", default.is_active):
        return
    if before is not None and before.is_active and before.permission == code:
        return
    check_grant(actor, codes=[code])


class PasswordRejected(DomainError):
    code = "weak_password"
    default_detail = _("The password does not meet the password policy.")


class BuiltinProtected(DomainError):
    code = "builtin"
    http_status = 409
    default_detail = _("Built-in records cannot be deleted or renamed.")


class InUse(Conflict):
    code = "in_use"
    default_detail = _("The record is still in use.")


def _split_m2m(model: type[models.Model], data: dict[str, Any]) -> tuple[dict, dict]:
    data = dict(data)
    m2m = {f.name: data.pop(f.name) for f in model._meta.many_to_many if f.name in data}
    return data, m2m


@transaction.atomic
def save(*, acting_user: Actor, model: type[models.Model], instance: models.Model | None,
         data: dict[str, Any]) -> Any:
    """Create (`instance` None) or update a record of a simple model, many-to-many included."""
    fields, m2m = _split_m2m(model, data)
    if instance is None:
        instance = model(**fields)
        if any(f.name == "created_by" for f in model._meta.concrete_fields):
            instance.created_by = recorded_user(acting_user)  # type: ignore[attr-defined]
    else:
        for key, value in fields.items():
            setattr(instance, key, value)
    try:
        instance.full_clean(exclude=[f.name for f in model._meta.many_to_many])
    except DjangoValidationError as exc:
        raise DomainError(exc.message_dict if hasattr(exc, "error_dict") else exc.messages,
                          code="invalid") from exc
    instance.save()
    for name, values in m2m.items():
        getattr(instance, name).set(values)
    _after_change(instance)
    return instance


@transaction.atomic
def delete(*, instance: models.Model) -> None:
    if getattr(instance, "is_builtin", False):
        raise BuiltinProtected()
    try:
        instance.delete()
    except ProtectedError as exc:
        raise InUse(_("{name} is still in use and cannot be deleted.").format(
            name=instance)) from exc
    _after_change(instance)


def _after_change(instance: models.Model) -> None:
    """Caches that depend on the changed record are dropped now and again after commit (a
    reader between the two could otherwise cache the old value)."""
    forget: Any = None
    if isinstance(instance, DictType):
        code = instance.code
        forget = lambda: system_cache.forget_dict(code)  # noqa: E731
    elif isinstance(instance, DictItem):
        code = DictType.objects.filter(pk=instance.dict_type_id).values_list(
            "code", flat=True).first() or ""
        forget = lambda: system_cache.forget_dict(code)  # noqa: E731
    elif isinstance(instance, Parameter):
        key = instance.key
        forget = lambda: system_cache.forget_param(key)  # noqa: E731
    if forget is not None:
        forget()
        transaction.on_commit(forget)


# Departments ---------------------------------------------------------------------------

@transaction.atomic
def save_department(*, acting_user: Actor, instance: Department | None,
                    data: dict[str, Any]) -> Department:
    parent = data.get("parent")
    if instance is not None and parent is not None and (
            parent.pk == instance.pk or parent.path.startswith(instance.path)):
        raise DomainError(_("A department cannot be placed below itself."), code="cycle")
    return save(acting_user=acting_user, model=Department, instance=instance, data=data)


@transaction.atomic
def delete_department(*, department: Department) -> None:
    if department.children.exists() or department.users.exists():
        raise InUse(_("The department still has sub-departments or users."))
    delete(instance=department)


# Roles ---------------------------------------------------------------------------------

@transaction.atomic
def save_role(*, acting_user: Actor, instance: Role | None, data: dict[str, Any]) -> Role:
    if instance is not None and instance.is_builtin and data.get("code", instance.code) != \
            instance.code:
        raise BuiltinProtected()
    check_role_change(acting_user, instance, data)
    return save(acting_user=acting_user, model=Role, instance=instance, data=data)


@transaction.atomic
def delete_role(*, acting_user: Actor, role: Role) -> None:
    """Delete a role (not a built-in one) none of whose holders outranks the actor."""
    check_role_holders(acting_user, role)
    delete(instance=role)


# Menus ---------------------------------------------------------------------------------

@transaction.atomic
def save_menu(*, acting_user: Actor, instance: Menu | None, data: dict[str, Any]) -> Menu:
    check_menu_change(acting_user, instance, data)
    return save(acting_user=acting_user, model=Menu, instance=instance, data=data)


def delete_menu(*, acting_user: Actor, menu: Menu) -> None:
    """Delete a menu none of whose holders outranks the actor."""
    check_menu_holders(acting_user, menu)
    delete(instance=menu)


def delete_group(*, acting_user: Actor, group: Any) -> None:
    """Delete a Django group none of whose members outranks the actor."""
    check_group_holders(acting_user, group)
    group.delete()


# Users ---------------------------------------------------------------------------------

def check_password(password: str, user: User | None = None) -> None:
    try:
        password_validation.validate_password(password, user)
    except DjangoValidationError as exc:
        raise PasswordRejected(extra={"errors": {"password": exc.messages}}) from exc


@transaction.atomic
def create_user(*, acting_user: Actor, data: dict[str, Any],
                password: str | None = None) -> User:
    fields, m2m = _split_m2m(User, data)
    check_user_change(acting_user, None, data)
    user = User(**fields)
    user.created_by = recorded_user(acting_user)
    if password:
        check_password(password, user)
        user.set_password(password)
    else:
        user.set_unusable_password()
    user.save()
    for name, values in m2m.items():
        getattr(user, name).set(values)
    return user


@transaction.atomic
def update_user(*, acting_user: Actor, user: User, data: dict[str, Any]) -> User:
    fields, m2m = _split_m2m(User, data)
    check_user_change(acting_user, user, data)
    was_active = user.is_active
    for key, value in fields.items():
        setattr(user, key, value)
    user.save()
    for name, values in m2m.items():
        getattr(user, name).set(values)
    forget_permissions(user)
    check_outranks(acting_user, user)  # what the change made of them (rolled back if more)
    if was_active and not user.is_active:
        logout_user(acting_user=acting_user, user=user)
    return user


@transaction.atomic
def delete_user(*, acting_user: Actor, user: User) -> None:
    if recorded_user(acting_user) == user:
        raise DomainError(_("You cannot delete your own account."), code="self_delete")
    check_outranks(acting_user, user)
    logout_user(acting_user=acting_user, user=user)
    user.delete()


@transaction.atomic
def set_password(*, user: User, password: str,
                 old_password: str | None = None) -> User:
    """Change a password (the user's own: `old_password` is checked). Other logins end."""
    if old_password is not None and not user.check_password(old_password):
        raise DomainError(_("The current password is wrong."), code="wrong_password")
    check_password(password, user)
    user.set_password(password)
    user.must_change_password = False
    user.save(update_fields=["password", "password_changed", "must_change_password"])
    return user


@transaction.atomic
def reset_password(*, acting_user: Actor, user: User, password: str | None = None) -> str:
    """An administrator sets a new password (generated when omitted) that the user must change
    at next login; every login of the user ends. Returns the password (shown once).
    Refused for a user who holds more than the actor (`check_outranks`)."""
    check_outranks(acting_user, user)
    password = password or random_token(12)
    check_password(password, user)
    user.set_password(password)
    user.must_change_password = True  # after set_password, which clears it
    user.save(update_fields=["password", "password_changed", "must_change_password"])
    logout_user(acting_user=acting_user, user=user)
    return password


# Online users --------------------------------------------------------------------------

@transaction.atomic
def force_logout(*, acting_user: Actor, session: LoginSession) -> None:
    """End one login; not of a user who holds more than the actor (`check_outranks`)."""
    check_outranks(acting_user, session.user)
    sessions.revoke(session)
    oplog.record(OperationAction.OTHER, session, after={"logout": str(session.pk)},
                 object_repr=str(session))


@transaction.atomic
def logout_user(*, acting_user: Actor, user: User) -> int:
    """End every login of `user` (tokens refused, admin sessions deleted); not of a user who
    holds more than the actor (`check_outranks`: ending an administrator's logins at will
    keeps them out)."""
    check_outranks(acting_user, user)
    count = 0
    for session in sessions.online().filter(user=user):
        sessions.revoke(session)
        count += 1
    return count


# API keys ------------------------------------------------------------------------------

@transaction.atomic
def create_api_key(*, acting_user: Actor, user: User, name: str,
                   expires: datetime | None = None) -> tuple[ApiKey, str]:
    """A new key for `user`; the key itself is returned once and stored only hashed. A key
    for someone else is a way to act as them: refused when they outrank the actor."""
    check_outranks(acting_user, user)
    prefix, key = make_key()
    while ApiKey.objects.filter(prefix=prefix).exists():  # 32-bit prefixes rarely collide
        prefix, key = make_key()
    api_key = ApiKey.objects.create(user=user, name=name, prefix=prefix, key_hash=hash_key(key),
                                    expires=expires)
    return api_key, key


@transaction.atomic
def revoke_api_key(*, api_key: ApiKey) -> ApiKey:
    if api_key.revoked is None:
        api_key.revoked = timezone.now()
        api_key.save(update_fields=["revoked"])
    return api_key


# Notices and messages ------------------------------------------------------------------

def _audience(notice: Notice) -> models.QuerySet[User]:
    users = User.objects.filter(is_active=True)
    if notice.audience == Audience.DEPARTMENTS:
        paths = [d.path for d in notice.departments.all()]
        if not paths:
            return users.none()
        condition = Q()
        for path in paths:
            condition |= Q(department__path__startswith=path)
        return users.filter(condition)
    if notice.audience == Audience.ROLES:
        return users.filter(roles__in=notice.roles.all()).distinct()
    if notice.audience == Audience.USERS:
        return users.filter(pk__in=notice.users.values("pk"))
    return users


@transaction.atomic
def publish_notice(*, acting_user: Actor, notice: Notice) -> int:
    """Publish a notice: every user of its audience within the publisher's data scope gets
    an in-site message (a department's manager does not message other departments)."""
    if notice.status == NoticeStatus.PUBLISHED:
        raise Conflict(_("The notice is already published."), code="already_published")
    notice.status = NoticeStatus.PUBLISHED
    notice.published = timezone.now()
    notice.save(update_fields=["status", "published", "updated"])
    audience = _audience(notice)
    publisher = _actor(acting_user)
    if publisher is not None:
        audience = restrict(audience, publisher)
    recipients = list(audience.values_list("pk", flat=True))
    Message.objects.bulk_create([
        Message(recipient_id=pk, category=MessageCategory.NOTICE, title=notice.title,
                body=notice.content, notice=notice) for pk in recipients], batch_size=500)
    return len(recipients)


@transaction.atomic
def close_notice(*, notice: Notice) -> Notice:
    notice.status = NoticeStatus.CLOSED
    notice.save(update_fields=["status", "updated"])
    return notice


@transaction.atomic
def send_message(*, recipients: Iterable[User], title: str,
                 body: str = "", category: str = MessageCategory.SYSTEM,
                 link: str = "") -> list[Message]:
    """In-site messages (for other apps too: alarms use category `alarm`)."""
    return Message.objects.bulk_create([
        Message(recipient=user, title=title[:200], body=body, category=category,
                link=link[:300]) for user in recipients])


def mark_read(*, user: User, ids: Iterable[int] | None = None) -> int:
    """Mark the user's messages read (all unread ones when `ids` is None)."""
    queryset = Message.objects.filter(recipient=user, read__isnull=True)
    if ids is not None:
        queryset = queryset.filter(pk__in=list(ids))
    return queryset.update(read=timezone.now())
