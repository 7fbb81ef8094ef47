"""The operation log: every change of a model made on behalf of someone, with before/after.

Generic on purpose: model signals record creates, updates, deletes and many-to-many changes of
every model of the platform's apps (and Django groups and the Celery beat schedules) whenever
an operation context is open (`webapp.core.context`: a web request, a Celery task). No app
writes log code; an action that changes something signals cannot see (a bulk `update()`, a
command sent to a device) calls `record()`.

Secrets never reach the log: fields whose name says password/secret/token/key are masked.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from django.conf import settings
from django.core.exceptions import FieldDoesNotExist, ObjectDoesNotExist
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_delete, pre_save

from webapp.core.context import OperationContext, current
from webapp.system.choices import OperationAction

SECRET_FIELD = re.compile(r"password|secret|token|key_hash|api_key|credential|private",
                          re.IGNORECASE)
MASK = "***"
AUDITED_APPS_PREFIXES = ("webapp.",)
AUDITED_EXTRA = {"auth.group", "django_celery_beat.periodictask",
                 "django_celery_beat.crontabschedule", "django_celery_beat.intervalschedule",
                 "django_celery_beat.solarschedule", "django_celery_beat.clockedschedule"}
# Records the platform writes about itself (logs, traces, deliveries, progress): they are the
# trail, not operations on it.
NOT_AUDITED = {"system.operationlog", "system.loginlog", "system.loginsession",
               "system.taskrun", "system.message", "telemetry.devicemessage",
               "rules.ruletrace", "rules.alarmevent", "rules.notification", "rules.deadletter",
               "ota.otatask"}
# Fields that change by themselves: an update touching only these is not an operation.
NOISE_FIELDS = {"updated", "last_login", "last_seen", "last_used", "modified"}


def is_audited(model: type[models.Model]) -> bool:
    label = model._meta.label_lower
    if label in NOT_AUDITED or label in getattr(settings, "OPERATION_LOG_EXCLUDE", ()):
        return False
    return label in AUDITED_EXTRA or model.__module__.startswith(AUDITED_APPS_PREFIXES)


def _json(value: Any) -> Any:
    return json.loads(json.dumps(value, cls=DjangoJSONEncoder, default=str))


def snapshot(instance: models.Model) -> dict[str, Any]:
    """The instance's concrete fields as JSON, secrets masked."""
    data: dict[str, Any] = {}
    for field in instance._meta.concrete_fields:
        if SECRET_FIELD.search(field.name):
            data[field.attname] = MASK
            continue
        value = field.value_from_object(instance)
        if isinstance(field, models.FileField):
            value = value.name if value else ""
        data[field.attname] = value
    return _json(data)


def record_department(instance: models.Model) -> int | None:
    """The department the changed record belongs to, by its data-scope lookups
    (`webapp.system.scope`: `department`, `product__department`, `pk` for a department),
    or None for a record that belongs to none."""
    from webapp.system import scope

    fields = scope.scope_fields(type(instance))
    for lookup in fields.departments if fields is not None else ():
        *path, last = lookup.split("__")
        target: Any = instance
        try:
            for part in path:
                target = getattr(target, part, None)
                if not isinstance(target, models.Model):
                    break
            else:
                if last == "pk":
                    value = target.pk
                else:
                    field = target._meta.get_field(last)
                    value = getattr(target, field.attname) \
                        if isinstance(field, models.ForeignKey) else None
                if isinstance(value, int):
                    return value
        except (ObjectDoesNotExist, FieldDoesNotExist):
            continue
    return None


def _write(context: OperationContext, action: str, instance: models.Model | None, *,
           before: Any = None, after: Any = None, label: tuple[str, str] | None = None,
           object_id: str = "", object_repr: str = "",
           department_id: int | None = None) -> None:
    from webapp.system.models import Department, OperationLog, User

    actor = context.actor
    user = actor if isinstance(actor, User) else None
    if instance is not None and department_id is None:
        department_id = record_department(instance)
    elif department_id is not None and action == OperationAction.DELETE and \
            not Department.objects.filter(pk=department_id).exists():
        department_id = None  # deleted with the record (or before it): the actor's
    actor_department = user.department_id if user else None
    request = context.request
    if instance is not None:
        meta = instance._meta
        label = (meta.app_label, meta.model_name or "")
        object_id = str(instance.pk) if instance.pk is not None else object_id
        object_repr = object_repr or str(instance)
    app_label, model_name = label or ("", "")
    OperationLog.objects.create(
        user=user, username=user.get_username() if user else "",
        department_id=department_id if department_id is not None else actor_department,
        actor_department_id=actor_department,
        source=context.source, action=action, app_label=app_label, model=model_name,
        object_id=object_id[:64], object_repr=object_repr[:200], before=before, after=after,
        address=context.address, user_agent=context.user_agent,
        method=getattr(request, "method", "") or "",
        path=(getattr(request, "path", "") or "")[:300],
        request_id=context.request_id, task=context.task[:200])


def record(action: str, instance: models.Model | None = None, *, before: Any = None,
           after: Any = None, label: tuple[str, str] | None = None, object_id: str = "",
           object_repr: str = "") -> None:
    """Log an operation signals cannot see (a no-op outside an operation context)."""
    context = current()
    if context is not None:
        _write(context, action, instance, before=_json(before), after=_json(after),
               label=label, object_id=object_id, object_repr=object_repr)


def _on_pre_save(sender: Any, instance: models.Model, raw: bool = False, **kwargs: Any) -> None:
    if raw or current() is None or not is_audited(sender) or instance._state.adding:
        return
    old = sender._base_manager.filter(pk=instance.pk).first()
    if old is not None:
        instance._tl_before = (snapshot(old), _secret_digests(old))  # type: ignore[attr-defined]


def _on_post_save(sender: Any, instance: models.Model, created: bool, raw: bool = False,
                  **kwargs: Any) -> None:
    context = current()
    if raw or context is None or not is_audited(sender):
        return
    after = snapshot(instance)
    if created:
        _write(context, OperationAction.CREATE, instance, after=after)
        return
    saved: Any = instance.__dict__.pop("_tl_before", None) or ({}, {})
    before: dict[str, Any] = saved[0]
    digests: dict[str, str] = saved[1]
    new_digests = _secret_digests(instance)
    changed = [k for k, v in after.items() if k not in NOISE_FIELDS
               and (before.get(k) != v or digests.get(k) != new_digests.get(k))]
    if not changed:
        return
    _write(context, OperationAction.UPDATE, instance,
           before={k: before.get(k) for k in changed}, after={k: after[k] for k in changed})


def _secret_digests(instance: models.Model) -> dict[str, str]:
    """Digests of the secret fields: a changed secret shows as changed, never its value."""
    return {f.attname: hashlib.sha256(str(f.value_from_object(instance)).encode()).hexdigest()
            for f in instance._meta.concrete_fields if SECRET_FIELD.search(f.name)}


def _on_pre_delete(sender: Any, instance: models.Model, **kwargs: Any) -> None:
    if current() is not None and is_audited(sender):
        instance._tl_deleted = snapshot(instance)  # type: ignore[attr-defined]
        # A deleted department's entry goes to its parent (who reached the department).
        department = getattr(instance, "parent_id", None) if sender._meta.label_lower == \
            "system.department" else record_department(instance)
        instance._tl_deleted_department = department  # type: ignore[attr-defined]


def _on_post_delete(sender: Any, instance: models.Model, **kwargs: Any) -> None:
    context = current()
    before = instance.__dict__.pop("_tl_deleted", None)
    if context is None or before is None:
        return
    _write(context, OperationAction.DELETE, None, before=before,
           label=(instance._meta.app_label, instance._meta.model_name or ""),
           object_id=str(before.get("id", "")), object_repr=str(instance),
           department_id=instance.__dict__.pop("_tl_deleted_department", None))


def _on_m2m(sender: Any, instance: models.Model, action: str, reverse: bool, model: Any,
            **kwargs: Any) -> None:
    context = current()
    if context is None or reverse or not is_audited(type(instance)):
        return
    field = next((f for f in instance._meta.many_to_many
                  if f.remote_field.through is sender), None)
    if field is None:
        return
    if action in ("pre_add", "pre_remove", "pre_clear"):
        instance.__dict__.setdefault("_tl_m2m", {})[field.name] = sorted(
            getattr(instance, field.name).values_list("pk", flat=True))
        return
    if action not in ("post_add", "post_remove", "post_clear"):
        return
    before = instance.__dict__.get("_tl_m2m", {}).pop(field.name, None)
    after = sorted(getattr(instance, field.name).values_list("pk", flat=True))
    if before == after:
        return
    _write(context, OperationAction.UPDATE, instance, before={field.name: before},
           after={field.name: after})


def connect() -> None:
    post_save.connect(_on_post_save, dispatch_uid="tl_oplog_post_save")
    pre_save.connect(_on_pre_save, dispatch_uid="tl_oplog_pre_save")
    pre_delete.connect(_on_pre_delete, dispatch_uid="tl_oplog_pre_delete")
    post_delete.connect(_on_post_delete, dispatch_uid="tl_oplog_post_delete")
    m2m_changed.connect(_on_m2m, dispatch_uid="tl_oplog_m2m")
