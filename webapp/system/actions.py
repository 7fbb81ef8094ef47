"""System management writes (STYLE.md: writes go through actions).

Every function takes the acting user, owns its transaction and leaves the operation log to
the generic recorder (`webapp.system.oplog`), calling `oplog.record` only for what model
signals cannot see.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.contrib.auth import password_validation
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import models, transaction
from django.db.models import ProtectedError, Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from webapp.core.errors import Conflict, DomainError, NotFound
from webapp.core.scope import user_scope
from webapp.core.types import Actor, recorded_user
from webapp.system import cache as system_cache
from webapp.system import oplog, sessions
from webapp.system.authentication import hash_key, make_key
from webapp.system.backends import forget_permissions
from webapp.system.choices import Audience, MessageCategory, NoticeStatus, OperationAction
from webapp.system.models import (
    ApiKey,
    Department,
    DictItem,
    DictType,
    LoginSession,
    Message,
    Notice,
    Parameter,
    Role,
    User,
)


class GrantRefused(DomainError):
    code = "grant_refused"
    http_status = 403
    default_detail = _("You cannot grant more than you hold.")


def _codes(permissions: Iterable[Any]) -> set[str]:
    return {f"{p.content_type.app_label}.{p.codename}" for p in permissions}


def check_grant(acting_user: Actor, *, roles: Iterable[Role] = (),
                permissions: Iterable[Any] = (), menus: Iterable[Any] = (),
                data_scope: str | None = None) -> None:
    """Someone who is not a superuser grants only what they hold themselves: roles whose
    permissions, menu codes and data scope they have, or those permissions directly."""
    user = recorded_user(acting_user)
    if user is None or user.is_superuser:
        return
    held = user.get_all_permissions()
    wanted = set(_codes(permissions))
    wanted |= {m.permission for m in menus if m.permission}
    scopes = {data_scope} if data_scope else set()
    for role in roles:
        wanted |= _codes(role.permissions.select_related("content_type"))
        wanted |= set(role.menus.exclude(permission="").values_list("permission", flat=True))
        scopes.add(role.data_scope)
    missing = sorted(wanted - held)
    if "all" in scopes and not user_scope(user).everything:
        missing.append("data_scope:all")
    if missing:
        raise GrantRefused(extra={"missing": missing})


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
def delete(*, acting_user: Actor, instance: models.Model) -> None:
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
def delete_department(*, acting_user: Actor, department: Department) -> None:
    if department.children.exists() or department.users.exists():
        raise InUse(_("The department still has sub-departments or users."))
    delete(acting_user=acting_user, instance=department)


# Roles ---------------------------------------------------------------------------------

@transaction.atomic
def save_role(*, acting_user: Actor, instance: Role | None, data: dict[str, Any]) -> Role:
    if instance is not None and instance.is_builtin and data.get("code", instance.code) != \
            instance.code:
        raise BuiltinProtected()
    check_grant(acting_user, permissions=data.get("permissions") or (),
                menus=data.get("menus") or (), data_scope=data.get("data_scope"))
    return save(acting_user=acting_user, model=Role, instance=instance, data=data)


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
    check_grant(acting_user, roles=m2m.get("roles") or ())
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
    if "roles" in m2m:
        current = set(user.roles.values_list("pk", flat=True))
        check_grant(acting_user, roles=[r for r in m2m["roles"] if r.pk not in current])
    was_active = user.is_active
    for key, value in fields.items():
        setattr(user, key, value)
    user.save()
    for name, values in m2m.items():
        getattr(user, name).set(values)
    forget_permissions(user)
    if was_active and not user.is_active:
        logout_user(acting_user=acting_user, user=user)
    return user


@transaction.atomic
def delete_user(*, acting_user: Actor, user: User) -> None:
    if recorded_user(acting_user) == user:
        raise DomainError(_("You cannot delete your own account."), code="self_delete")
    logout_user(acting_user=acting_user, user=user)
    user.delete()


@transaction.atomic
def set_password(*, acting_user: Actor, user: User, password: str,
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
    at next login; every login of the user ends. Returns the password (shown once)."""
    password = password or secrets.token_urlsafe(12)
    check_password(password, user)
    user.set_password(password)
    user.must_change_password = True  # after set_password, which clears it
    user.save(update_fields=["password", "password_changed", "must_change_password"])
    logout_user(acting_user=acting_user, user=user)
    return password


# Online users --------------------------------------------------------------------------

@transaction.atomic
def force_logout(*, acting_user: Actor, session: LoginSession) -> None:
    sessions.revoke(session)
    oplog.record(OperationAction.OTHER, session, after={"logout": str(session.pk)},
                 object_repr=str(session))


@transaction.atomic
def logout_user(*, acting_user: Actor, user: User) -> int:
    """End every login of `user` (tokens refused, admin sessions deleted)."""
    count = 0
    for session in sessions.online().filter(user=user):
        sessions.revoke(session)
        count += 1
    return count


# API keys ------------------------------------------------------------------------------

@transaction.atomic
def create_api_key(*, acting_user: Actor, user: User, name: str,
                   expires: datetime | None = None) -> tuple[ApiKey, str]:
    """A new key for `user`; the key itself is returned once and stored only hashed."""
    prefix, key = make_key()
    while ApiKey.objects.filter(prefix=prefix).exists():  # 32-bit prefixes rarely collide
        prefix, key = make_key()
    api_key = ApiKey.objects.create(user=user, name=name, prefix=prefix, key_hash=hash_key(key),
                                    expires=expires)
    return api_key, key


@transaction.atomic
def revoke_api_key(*, acting_user: Actor, api_key: ApiKey) -> ApiKey:
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
    """Publish a notice: every user of its audience gets an in-site message."""
    if notice.status == NoticeStatus.PUBLISHED:
        raise Conflict(_("The notice is already published."), code="already_published")
    notice.status = NoticeStatus.PUBLISHED
    notice.published = timezone.now()
    notice.save(update_fields=["status", "published", "updated"])
    recipients = list(_audience(notice).values_list("pk", flat=True))
    Message.objects.bulk_create([
        Message(recipient_id=pk, category=MessageCategory.NOTICE, title=notice.title,
                body=notice.content, notice=notice) for pk in recipients], batch_size=500)
    return len(recipients)


@transaction.atomic
def close_notice(*, acting_user: Actor, notice: Notice) -> Notice:
    notice.status = NoticeStatus.CLOSED
    notice.save(update_fields=["status", "updated"])
    return notice


@transaction.atomic
def send_message(*, acting_user: Actor, recipients: Iterable[User], title: str,
                 body: str = "", category: str = MessageCategory.SYSTEM,
                 link: str = "") -> list[Message]:
    """In-site messages (for other apps too: alarms use category `alarm`)."""
    return Message.objects.bulk_create([
        Message(recipient=user, title=title[:200], body=body, category=category,
                link=link[:300]) for user in recipients])


def mark_read(*, acting_user: Actor, user: User, ids: Iterable[int] | None = None) -> int:
    """Mark the user's messages read (all unread ones when `ids` is None)."""
    queryset = Message.objects.filter(recipient=user, read__isnull=True)
    if ids is not None:
        queryset = queryset.filter(pk__in=list(ids))
    return queryset.update(read=timezone.now())


def get_session(session_id: Any) -> LoginSession:
    session = LoginSession.objects.filter(pk=session_id).first()
    if session is None:
        raise NotFound()
    return session
