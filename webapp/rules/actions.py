"""Every state change of rules, alarms, channels, sinks and deliveries (STYLE.md: writes go
through actions). Rule changes bump the index version after commit, so that every ingest
worker recompiles its in-memory index before the next batch."""

from __future__ import annotations

import json
import re
import zoneinfo
from datetime import UTC, datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from edge.crypto import decrypt_secret, encrypt_secret
from webapp.core import outbound
from webapp.core.errors import DomainError, NotFound
from webapp.core.types import Actor
from webapp.rules import engine, notify
from webapp.rules.choices import (
    OPEN_ALARM_STATUSES,
    ActionType,
    AlarmEventKind,
    AlarmStatus,
    ChannelType,
    DeliveryStatus,
    SinkHealth,
    SinkType,
    TriggerType,
)
from webapp.rules.compiler import compile_rule
from webapp.rules.expressions import ExpressionError
from webapp.rules.models import (
    Alarm,
    AlarmComment,
    AlarmEvent,
    DeadLetter,
    Notification,
    NotificationChannel,
    Rule,
    RuleTrace,
    Sink,
)
from webapp.system import scope
from webapp.system.actors import recorded_user

MASK = "********"
MAX_ID = 2**63 - 1  # a larger number is no row's id (and no database integer)
RULE_FIELDS = ("name", "description", "enabled", "trigger", "condition", "actions", "debounce",
               "cooldown", "fire_mode", "auto_clear")


class RuleInvalid(DomainError):
    code = "invalid_rule"
    default_detail = _("The rule is invalid.")


# --- rules -------------------------------------------------------------------------------


def seal_action_secrets(actions: list[dict[str, Any]],
                        previous: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Replace each action's plain `secret` by its Fernet token; a masked or absent secret
    keeps the token the same action had before."""
    sealed = []
    for i, action in enumerate(actions):
        action = dict(action)
        secret = action.pop("secret", None)
        old = previous[i] if previous and i < len(previous) else {}
        if secret and secret != MASK:
            action["secret_encrypted"] = encrypt_secret(str(secret))
        elif old.get("type") == action.get("type") and old.get("secret_encrypted") and \
                secret == MASK:
            action["secret_encrypted"] = old["secret_encrypted"]
        else:
            action.pop("secret_encrypted", None)
        sealed.append(action)
    return sealed


def masked_actions(actions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for action in actions:
        shown = {k: v for k, v in action.items() if k != "secret_encrypted"}
        if action.get("secret_encrypted"):
            shown["secret"] = MASK
        out.append(shown)
    return out


def action_secret(action: dict[str, Any]) -> str:
    token = action.get("secret_encrypted")
    return decrypt_secret(token) if token else ""


def validate_rule(data: dict[str, Any]) -> None:
    try:
        compile_rule(id=0, name=data.get("name", ""), trigger=data.get("trigger") or {},
                     condition=data.get("condition"), actions=data.get("actions") or [],
                     debounce=data.get("debounce"), cooldown=data.get("cooldown") or 0,
                     fire_mode=data.get("fire_mode", "each"),
                     auto_clear=data.get("auto_clear", True))
    except ExpressionError as exc:
        raise RuleInvalid(exc.detail) from exc


def check_webhook_destinations(actions: list[dict[str, Any]],
                               previous: list[dict[str, Any]] | None = None) -> None:
    """Refuse a webhook action whose URL reaches an address the platform may not connect
    to (webapp/core/outbound.py). A URL whose host is a template, or one the rule already
    had (disabling an old rule is never refused), is checked when sent."""
    kept = {a.get("url") for a in previous or [] if isinstance(a, dict)}
    for position, action in enumerate(actions, start=1):
        url = action.get("url") if isinstance(action, dict) else None
        if action.get("type") != ActionType.WEBHOOK or not isinstance(url, str) or \
                url in kept or outbound.templated_host(url):
            continue
        try:
            outbound.check_url(url, schemes=("http", "https"))
        except outbound.OutboundRefused as exc:
            raise RuleInvalid(_("Action {n} (webhook): {reason}").format(
                n=position, reason=exc.reason)) from exc


def is_number_reference(ref: Any) -> bool:
    """Whether a rule action's `channel` / `sink` reference can name a row by id: an int,
    or a text of ASCII digits only (`isdigit()` would take "²", which `int()` refuses)."""
    if isinstance(ref, bool):
        return False
    if isinstance(ref, int):
        return 0 < ref <= MAX_ID
    return isinstance(ref, str) and ref.isascii() and ref.isdecimal() and 0 < int(ref) <= MAX_ID


def _reference_query(ref: Any) -> Q:
    """The rows a rule action's `channel` / `sink` reference may match when the rule runs
    (executors._by_id_or_name: the id when the reference is a number, else the name)."""
    query = Q(name=str(ref))
    if is_number_reference(ref):
        query |= Q(pk=int(ref))
    return query


def department_filter(department_id: int | None) -> Q:
    """The channels and sinks a rule on a product of `department_id` may use: that
    department's, and the ones of no department (made before departments existed, reached
    only by users who see all data)."""
    if department_id is None:
        return Q(department__isnull=True)
    return Q(department__isnull=True) | Q(department_id=department_id)


_PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_TRIGGERING_DEVICE = re.compile(r"\{\{\s*device\s*\}\}")
DEVICE_TOPIC_PREFIX = "/v1/devices/"


def action_device_target(action: dict[str, Any]) -> tuple[str, str]:
    """Which device a `command`, `shadow` or `publish` action reaches: ("trigger", "") for
    the device whose message fired the rule (no `device`, or exactly `{{device}}`; a topic
    `/v1/devices/{{device}}/…`), ("device", identifier) for a named one, ("template", text)
    when a template could name any device, ("none", "") for a topic of no device."""
    kind = action.get("type")
    if kind in (ActionType.COMMAND, ActionType.SHADOW):
        value = action.get("device")
        if value in (None, ""):
            return "trigger", ""
        text = str(value)
        if _TRIGGERING_DEVICE.fullmatch(text):
            return "trigger", ""
        return ("template", text) if _PLACEHOLDER.search(text) else ("device", text)
    if kind != ActionType.PUBLISH or not isinstance(action.get("topic"), str):
        return "none", ""
    topic: str = action["topic"]
    placeholder = _PLACEHOLDER.search(topic)
    literal = topic if placeholder is None else topic[:placeholder.start()]
    if not literal.startswith(DEVICE_TOPIC_PREFIX):
        # A template may still render into a device topic unless the literal start rules
        # it out ("alerts/{{device}}" cannot; "{{topic}}" or "/v1/{{x}}" can).
        could = placeholder is not None and DEVICE_TOPIC_PREFIX.startswith(literal)
        return ("template", topic) if could else ("none", "")
    rest = literal[len(DEVICE_TOPIC_PREFIX):]
    if placeholder is None or "/" in rest:
        device = rest.partition("/")[0]
        return ("device", device) if device else ("none", "")
    after = topic[placeholder.end():]
    if rest == "" and _TRIGGERING_DEVICE.fullmatch(placeholder.group(0)) and \
            (after == "" or after.startswith("/")):
        return "trigger", ""
    return "template", topic


# What an action refers to (kept when the rule already had it): channel, sink, target.
_REFERENCE_KEYS: dict[str, str] = {
    ActionType.NOTIFY: "channel", ActionType.FORWARD: "sink", ActionType.COMMAND: "device",
    ActionType.SHADOW: "device", ActionType.PUBLISH: "topic"}


def _reference_key(action: dict[str, Any]) -> tuple[str, str] | None:
    kind = action.get("type")
    if not isinstance(kind, str) or kind not in _REFERENCE_KEYS:
        return None
    return kind, str(action.get(_REFERENCE_KEYS[kind]))


def _product_department(product: Any) -> tuple[bool, int | None]:
    """(whether the trigger names an existing product, that product's department)."""
    from webapp.products.models import Product

    if not isinstance(product, str) or not product:
        return False, None
    row = Product.objects.filter(identifier=product).values("department_id").first()
    return (True, row["department_id"]) if row is not None else (False, None)


def out_of_scope_references(actions: Any, user: Any,
                            previous: list[dict[str, Any]] | None = None,
                            product: Any = None) -> list[str]:
    """Why the actions of a rule may not be saved by `user`: one message per action, naming
    it by its position, whose channel or sink (notify, forward) or target device (command,
    shadow; a publish topic `/v1/devices/{id}/…`) is not within the user's data scope
    (webapp/system/scope.py). A target written as a template other than `{{device}}` (the
    device that fired) could name any device: only users who see all data may write one.
    A channel or sink also belongs to the department of the rule's `product` (the trigger's
    identifier), or to none: the executor resolves it only there. A reference the rule
    already had (`previous`, same action type and reference) is kept: editing a rule an
    administrator connected to another department's channel does not force removing it."""
    if not isinstance(actions, list):
        return []
    kept = {_reference_key(a) for a in previous or [] if isinstance(a, dict)} - {None}
    has_product, department_id = _product_department(product)
    problems = []
    for position, action in enumerate(actions, start=1):
        if not isinstance(action, dict) or _reference_key(action) in kept:
            continue
        kind = action.get("type")
        if kind in (ActionType.COMMAND, ActionType.SHADOW, ActionType.PUBLISH):
            problem = _device_problem(action, user)
            if problem:
                problems.append(str(_("Action {n} ({type}): {problem}").format(
                    n=position, type=kind, problem=problem)))
            continue
        if kind == ActionType.NOTIFY:
            model: type[NotificationChannel] | type[Sink] = NotificationChannel
            key = "channel"
        elif kind == ActionType.FORWARD:
            model, key = Sink, "sink"
        else:
            continue
        ref = action.get(key)
        if not isinstance(ref, int | str) or ref == "":
            continue  # a missing reference is the compiler's to report
        matches = model.objects.filter(_reference_query(ref))
        reachable = scope.restrict(model.objects.all(), user).values("pk")
        if not matches.exists() or matches.exclude(pk__in=reachable).exists():
            problems.append(str(_(
                "Action {n} ({type}): there is no {model} {ref!r} within your data scope."
            ).format(n=position, type=kind, model=model._meta.verbose_name, ref=ref)))
        elif has_product and matches.exclude(department_filter(department_id)).exists():
            problems.append(str(_(
                "Action {n} ({type}): the {model} {ref!r} belongs to another department "
                "than the product {product!r}: the rule could not use it."
            ).format(n=position, type=kind, model=model._meta.verbose_name, ref=ref,
                     product=product)))
    return problems


def _device_problem(action: dict[str, Any], user: Any) -> str:
    """Why `user` may not aim a command, shadow or publish action at its target device."""
    from webapp.devices.models import Device

    kind, target = action_device_target(action)
    if kind == "template" and not scope.user_scope(user).everything:
        what = _("the topic") if action.get("type") == ActionType.PUBLISH else _("the device")
        return str(_("{what} {ref!r} is a template that could name a device outside your "
                     "data scope: name the device, or use {placeholder} for the one that "
                     "fired the rule.").format(what=what, ref=target, placeholder="{{device}}"))
    if kind == "device" and not scope.restrict(Device.objects.all(), user).filter(
            identifier=target).exists():
        return str(_("there is no device {ref!r} within your data scope.").format(ref=target))
    return ""


def check_trigger_scope(trigger: Any, user: Any,
                        previous: dict[str, Any] | None = None) -> None:
    """Refuse a trigger whose product, device group or listed devices are outside `user`'s
    data scope: a rule on another department's product would send that department's
    messages through the user's channels. Answered as for a product or group that does not
    exist (no telling what exists elsewhere). A scoped user's listed devices must exist, or
    one made later in another department would be watched. What the rule already watched
    (`previous`) is kept."""
    from webapp.devices.models import Device, DeviceGroup
    from webapp.products.models import Product

    if not isinstance(trigger, dict) or scope.user_scope(user).everything:
        return
    previous = previous if isinstance(previous, dict) else {}
    product = trigger.get("product")
    if isinstance(product, str) and product and product != previous.get("product") and \
            not scope.restrict(Product.objects.all(), user).filter(identifier=product).exists():
        raise NotFound(_("There is no product {identifier!r}.").format(identifier=product),
                       code="unknown_product")
    group = trigger.get("group")
    if group and str(group) != str(previous.get("group")) and not scope.restrict(
            DeviceGroup.objects.all(), user).filter(name=str(group)).exists():
        raise RuleInvalid(_("There is no device group {name!r}.").format(name=group))
    devices = trigger.get("devices")
    if isinstance(devices, list):
        wanted = {d for d in devices if isinstance(d, str)} - set(previous.get("devices") or [])
        reached = set(scope.restrict(Device.objects.all(), user).filter(
            identifier__in=wanted).values_list("identifier", flat=True)) if wanted else set()
        if wanted - reached:
            raise RuleInvalid(_("There is no device {identifiers} within your data scope.")
                              .format(identifiers=", ".join(sorted(wanted - reached)[:10])))


def _apply(rule: Rule, data: dict[str, Any]) -> None:
    from webapp.products.models import Product

    previous = rule.actions if rule.pk else None
    for name in RULE_FIELDS:
        if name in data:
            setattr(rule, name, data[name])
    rule.actions = seal_action_secrets(list(rule.actions or []), previous)
    validate_rule({name: getattr(rule, name) for name in RULE_FIELDS})
    check_webhook_destinations(rule.actions, previous)
    rule.trigger_type = rule.trigger["type"]
    identifier = rule.trigger.get("product")
    if identifier:
        product = Product.objects.filter(identifier=identifier).first()
        if product is None:
            raise NotFound(_("There is no product {identifier!r}.").format(
                identifier=identifier), code="unknown_product")
        rule.product = product
    else:
        rule.product = None


def _sync_schedule(rule: Rule) -> None:
    """Keep the rule's Celery beat entry in step with its schedule trigger."""
    from django_celery_beat.models import CrontabSchedule, PeriodicTask

    if rule.trigger_type != TriggerType.SCHEDULE:
        if rule.periodic_task_id:
            PeriodicTask.objects.filter(pk=rule.periodic_task_id).delete()
            rule.periodic_task = None
            rule.save(update_fields=["periodic_task"])
        return
    minute, hour, day, month, weekday = rule.trigger["cron"].split()
    tz_name = rule.trigger.get("timezone") or timezone.get_current_timezone_name()
    try:
        tz = zoneinfo.ZoneInfo(tz_name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise RuleInvalid(_("Unknown time zone {tz!r}.").format(tz=tz_name)) from exc
    crontab, _created = CrontabSchedule.objects.get_or_create(
        minute=minute, hour=hour, day_of_month=day, month_of_year=month, day_of_week=weekday,
        timezone=tz)
    fields = {"crontab": crontab, "task": "rules.run_schedule", "args": json.dumps([rule.pk]),
              "enabled": rule.enabled, "name": f"rule {rule.pk}: {rule.name}"[:200]}
    if rule.periodic_task_id:
        PeriodicTask.objects.filter(pk=rule.periodic_task_id).update(**fields)
        PeriodicTask.objects.get(pk=rule.periodic_task_id).save()  # bumps beat's change flag
    else:
        rule.periodic_task = PeriodicTask.objects.create(**fields)
        rule.save(update_fields=["periodic_task"])


@transaction.atomic
def create_rule(*, acting_user: Actor, data: dict[str, Any]) -> Rule:
    rule = Rule(created_by=recorded_user(acting_user))
    _apply(rule, data)
    rule.save()
    _sync_schedule(rule)
    transaction.on_commit(engine.bump_version)
    return rule


@transaction.atomic
def update_rule(*, acting_user: Actor, rule: Rule, data: dict[str, Any]) -> Rule:
    _apply(rule, data)
    if rule.enabled and rule.failed_at is not None:  # enabled again after it failed
        rule.failed_at = None
        rule.failure_reason = ""
    rule.save()
    _sync_schedule(rule)
    transaction.on_commit(engine.bump_version)
    return rule


@transaction.atomic
def set_rule_enabled(*, acting_user: Actor, rule: Rule, enabled: bool) -> Rule:
    return update_rule(acting_user=acting_user, rule=rule, data={"enabled": enabled})


@transaction.atomic
def delete_rule(*, acting_user: Actor, rule: Rule) -> None:
    from django_celery_beat.models import PeriodicTask

    if rule.periodic_task_id:
        PeriodicTask.objects.filter(pk=rule.periodic_task_id).delete()
    rule.delete()
    transaction.on_commit(engine.bump_version)


def record_trace(*, rule: Rule, kind: str, device: str, ts_ms: int, message: dict[str, Any],
                 conditions: dict[str, Any], results: list[dict[str, Any]]) -> RuleTrace:
    return RuleTrace.objects.create(
        rule=rule, kind=kind, device=device[:64],
        ts=datetime.fromtimestamp(ts_ms / 1000, tz=UTC), message=message,
        conditions=conditions, results=results, ok=all(r.get("ok", True) for r in results))


# --- alarms ------------------------------------------------------------------------------


def _history(alarm: Alarm, kind: str, actor: Actor = None, **detail: Any) -> None:
    AlarmEvent.objects.create(alarm=alarm, kind=kind, actor=recorded_user(actor),
                              detail=detail)


@transaction.atomic
def raise_alarm(*, rule: Rule | None, device: str, severity: str, name: str, message: str,
                details: dict[str, Any], at: datetime | None = None) -> tuple[Alarm, bool]:
    """Open the alarm of (rule, device), or update the open one; returns (alarm, raised)."""
    from webapp.devices.models import Device

    at = at or timezone.now()
    device_obj = Device.objects.select_related("product").filter(identifier=device).first()
    existing = Alarm.objects.select_for_update().filter(
        rule=rule, device=device_obj, status__in=OPEN_ALARM_STATUSES).first()
    if existing is not None:
        changed = existing.severity != severity
        existing.severity = severity
        existing.message = message
        existing.details = details
        existing.count = F("count") + 1
        existing.last_seen = max(at, existing.last_seen)
        existing.save(update_fields=["severity", "message", "details", "count", "last_seen",
                                     "updated"])
        existing.refresh_from_db(fields=["count"])
        if changed:
            _history(existing, AlarmEventKind.UPDATED, severity=severity)
        return existing, False
    try:
        with transaction.atomic():
            alarm = Alarm.objects.create(
                rule=rule, name=name[:100], device=device_obj,
                product=device_obj.product if device_obj else rule.product if rule else None,
                severity=severity, message=message, details=details, first_seen=at,
                last_seen=at)
    except IntegrityError:
        # Another worker opened it a moment ago: update that one instead.
        return raise_alarm(rule=rule, device=device, severity=severity, name=name,
                           message=message, details=details, at=at)
    _history(alarm, AlarmEventKind.RAISED, severity=severity, message=message)
    return alarm, True


@transaction.atomic
def acknowledge_alarm(*, acting_user: Actor, alarm: Alarm) -> Alarm:
    alarm = Alarm.objects.select_for_update().get(pk=alarm.pk)
    if alarm.status != AlarmStatus.ACTIVE:
        raise DomainError(_("Only an active alarm can be acknowledged."), code="alarm_not_active")
    alarm.status = AlarmStatus.ACKNOWLEDGED
    alarm.acknowledged_at = timezone.now()
    alarm.acknowledged_by = recorded_user(acting_user)
    alarm.save(update_fields=["status", "acknowledged_at", "acknowledged_by", "updated"])
    _history(alarm, AlarmEventKind.ACKNOWLEDGED, acting_user)
    return alarm


@transaction.atomic
def clear_alarm(*, acting_user: Actor, alarm: Alarm, reason: str = "") -> Alarm:
    alarm = Alarm.objects.select_for_update().get(pk=alarm.pk)
    if alarm.status == AlarmStatus.CLEARED:
        raise DomainError(_("The alarm is already cleared."), code="alarm_cleared")
    alarm.status = AlarmStatus.CLEARED
    alarm.cleared_at = timezone.now()
    alarm.cleared_by = recorded_user(acting_user)
    alarm.save(update_fields=["status", "cleared_at", "cleared_by", "updated"])
    _history(alarm, AlarmEventKind.CLEARED, acting_user, reason=reason)
    return alarm


def clear_rule_alarm(*, rule: Rule | None, device: str, reason: str) -> Alarm | None:
    """Clear the open alarm of (rule, device), if there is one (auto-clear)."""
    alarm = Alarm.objects.filter(rule=rule, device__identifier=device,
                                 status__in=OPEN_ALARM_STATUSES).first()
    if alarm is None:
        return None
    return clear_alarm(acting_user=None, alarm=alarm, reason=reason)


@transaction.atomic
def assign_alarm(*, acting_user: Actor, alarm: Alarm, assignee: Any) -> Alarm:
    alarm.assignee = assignee
    alarm.save(update_fields=["assignee", "updated"])
    _history(alarm, AlarmEventKind.ASSIGNED, acting_user,
             assignee=assignee.get_username() if assignee else None)
    return alarm


@transaction.atomic
def comment_alarm(*, acting_user: Actor, alarm: Alarm, text: str) -> AlarmComment:
    if not text.strip():
        raise DomainError(_("A comment has text."), code="empty_comment")
    comment = AlarmComment.objects.create(alarm=alarm, author=recorded_user(acting_user),
                                          text=text)
    _history(alarm, AlarmEventKind.COMMENTED, acting_user, comment=comment.pk)
    return comment


# --- notification channels and deliveries ------------------------------------------------


def _set_owner(record: NotificationChannel | Sink, acting_user: Actor,
               data: dict[str, Any]) -> None:
    """A new channel or sink is made by the acting user, in their department unless the
    data names one (the API and the admin check it is within the user's scope)."""
    user = recorded_user(acting_user)
    record.created_by = user
    if "department" not in data and user is not None:
        record.department_id = user.department_id


def visible_notifications(queryset: QuerySet[Notification], user: Any
                          ) -> QuerySet[Notification]:
    """The notifications `user` reaches: those of rules and alarms in their data scope, the
    test notifications of channels in their scope, and always the ones sent to them."""
    if scope.user_scope(user).everything:
        return queryset
    reached = scope.restrict(queryset, user)
    channels = scope.restrict(NotificationChannel.objects.all(), user).values("pk")
    reached = reached | queryset.filter(rule=None, alarm=None, channel__in=channels)
    if getattr(user, "pk", None) is not None:
        reached = reached | queryset.filter(user=user.pk)
    return reached


class ChannelInvalid(DomainError):
    code = "invalid_channel"
    default_detail = _("The notification channel is invalid.")


# The credential of a robot URL (notify.split_url_token), encrypted, in the channel's config.
URL_TOKEN_KEY = "url_token_encrypted"  # noqa: S105 (a key name)
HTTP_CHANNELS = (ChannelType.WEBHOOK, ChannelType.DINGTALK, ChannelType.WECOM,
                 ChannelType.FEISHU)


def _masked_url(channel_type: str, config: Any) -> tuple[str, str]:
    url = config.get("url") if isinstance(config, dict) else None
    return notify.split_url_token(channel_type, url) if isinstance(url, str) else ("", "")


def channel_config(channel_type: str, config: Any, *, previous_type: str = "",
                   previous: Any = None) -> Any:
    """The config to store: its URL checked (webapp/core/outbound.py) when it is new or
    changed (disabling an old channel is never refused; every delivery checks it again),
    and a robot URL's credential moved out of `url` (masked there) into URL_TOKEN_KEY,
    encrypted. A masked URL keeps the stored credential only when the rest of the URL is
    unchanged: pointing it elsewhere takes the credential again."""
    if not isinstance(config, dict):
        return config
    previous = previous if isinstance(previous, dict) else {}
    masked, token = _masked_url(channel_type, config)
    before, plain_before = _masked_url(previous_type, previous)
    same_place = previous_type == channel_type and bool(masked) and masked == before
    if not same_place:
        check_channel_destination(channel_type, config)
    config = {k: v for k, v in config.items() if k != URL_TOKEN_KEY}
    if not token:
        return config
    config["url"] = masked
    if token != MASK:
        config[URL_TOKEN_KEY] = encrypt_secret(token)
    elif same_place and previous.get(URL_TOKEN_KEY):
        config[URL_TOKEN_KEY] = previous[URL_TOKEN_KEY]
    elif same_place and plain_before and plain_before != MASK:  # saved before L10's fix
        config[URL_TOKEN_KEY] = encrypt_secret(plain_before)
    else:
        raise ChannelInvalid(_("Give the robot URL with its token: a masked one keeps the "
                               "stored token only when the rest of the URL is unchanged."))
    return config


def channel_url(channel: NotificationChannel) -> str:
    """Where the channel sends: its URL with the stored credential put back."""
    config = channel.config if isinstance(channel.config, dict) else {}
    url = str(config.get("url") or "")
    token = config.get(URL_TOKEN_KEY)
    return notify.join_url_token(channel.channel_type, url, decrypt_secret(token)) \
        if token else url


def shown_channel_config(channel: NotificationChannel) -> Any:
    """The config as users see it: no encrypted credential, a robot URL's credential
    masked (also in one saved before credentials were kept apart)."""
    if not isinstance(channel.config, dict):
        return channel.config
    shown = {k: v for k, v in channel.config.items() if k != URL_TOKEN_KEY}
    if isinstance(shown.get("url"), str):
        shown["url"] = notify.split_url_token(channel.channel_type, shown["url"])[0]
    return shown


def check_channel_destination(channel_type: str, config: Any) -> None:
    """Refuse a channel URL that reaches an address the platform may not connect to."""
    url = config.get("url") if isinstance(config, dict) else None
    if channel_type not in HTTP_CHANNELS or not isinstance(url, str):
        return
    try:
        outbound.check_url(url, schemes=("http", "https"))
    except outbound.OutboundRefused as exc:
        raise ChannelInvalid(exc.reason) from exc


@transaction.atomic
def save_channel(*, acting_user: Actor, channel: NotificationChannel | None,
                 data: dict[str, Any], secret: str | None = None) -> NotificationChannel:
    relations = {k: data.pop(k) for k in ("users", "departments") if k in data}
    if channel is None:
        channel = NotificationChannel()
        _set_owner(channel, acting_user, data)
    previous_type, previous_config = channel.channel_type, channel.config
    for name, value in data.items():
        setattr(channel, name, value)
    channel.config = channel_config(channel.channel_type, channel.config,
                                    previous_type=previous_type if channel.pk else "",
                                    previous=previous_config)
    if secret is not None and secret != MASK:
        channel.secret_encrypted = encrypt_secret(secret) if secret else ""
    channel.save()
    for name, value in relations.items():
        getattr(channel, name).set(value)
    return channel


@transaction.atomic
def delete_channel(*, acting_user: Actor, channel: NotificationChannel) -> None:
    channel.delete()


def channel_secret(channel: NotificationChannel) -> str:
    return decrypt_secret(channel.secret_encrypted) if channel.secret_encrypted else ""


def create_notification(**fields: Any) -> Notification:
    return Notification.objects.create(**fields)


def record_delivery(notification: Notification, *, ok: bool, error: str = "",
                    final: bool = False) -> None:
    notification.attempts += 1
    if ok:
        notification.status = DeliveryStatus.SENT
        notification.sent_at = timezone.now()
        notification.last_error = ""
    else:
        notification.status = DeliveryStatus.FAILED if final else DeliveryStatus.RETRYING
        notification.last_error = error[:2000]
    notification.save(update_fields=["attempts", "status", "sent_at", "last_error"])


@transaction.atomic
def mark_notifications_read(*, acting_user: Actor, ids: list[int]) -> int:
    return Notification.objects.filter(user=recorded_user(acting_user), pk__in=ids).update(
        read=True)


# --- sinks -------------------------------------------------------------------------------


def sink_credentials(sink: Sink) -> dict[str, Any]:
    if not sink.credentials_encrypted:
        return {}
    return dict(json.loads(decrypt_secret(sink.credentials_encrypted)))


@transaction.atomic
def check_sink_scope(sink_type: str, config: Any, user: Any,
                     before: tuple[str, Any] | None = None) -> None:
    """A `topic` sink publishes on the platform's own broker as a client would: like the
    `publish` action, its topic may be a device topic only of a device within `user`'s data
    scope, or of the device that fired (`{{device}}`); only users who see all data may write
    a template that could render into a device topic. Unchanged settings are kept."""
    from webapp.rules.sinks import SinkInvalid

    actor = recorded_user(user)
    if actor is None or sink_type != SinkType.TOPIC or before == (sink_type, config) or \
            not isinstance(config, dict):
        return  # the platform itself, another kind of sink, or what it already was
    problem = _device_problem({"type": ActionType.PUBLISH,
                               "topic": str(config.get("topic") or "")}, actor)
    if problem:
        raise SinkInvalid(problem)


def save_sink(*, acting_user: Actor, sink: Sink | None, data: dict[str, Any],
              credentials: dict[str, Any] | None = None) -> Sink:
    from webapp.rules.sinks import check_sink

    if sink is None:
        sink = Sink()
        _set_owner(sink, acting_user, data)
    before = (sink.sink_type, sink.config) if sink.pk else None
    for name, value in data.items():
        setattr(sink, name, value)
    check_sink_scope(sink.sink_type, sink.config, acting_user, before)
    if credentials is not None:
        merged = sink_credentials(sink) if sink.pk else {}
        for key, value in credentials.items():
            if value == MASK:
                continue
            if value in (None, ""):
                merged.pop(key, None)
            else:
                merged[key] = value
        sink.credentials_encrypted = encrypt_secret(json.dumps(merged)) if merged else ""
    # The destination is checked when it is new (disabling an old sink is never refused);
    # every connection checks it again.
    check_sink(sink, destination=before != (sink.sink_type, sink.config))
    sink.save()
    return sink


@transaction.atomic
def delete_sink(*, acting_user: Actor, sink: Sink) -> None:
    sink.delete()


def record_sink_result(sink: Sink, *, ok: bool, error: str = "", count: int = 1) -> None:
    if ok:
        Sink.objects.filter(pk=sink.pk).update(
            health=SinkHealth.HEALTHY, failures=0, last_success=timezone.now(),
            delivered=F("delivered") + count)
    else:
        Sink.objects.filter(pk=sink.pk).update(
            health=SinkHealth.FAILING, failures=F("failures") + 1, last_error=error[:2000])


def record_dead_letter(*, sink: Sink, rule_id: int | None, message: dict[str, Any],
                       payload: str, error: str, attempts: int) -> DeadLetter:
    return DeadLetter.objects.create(sink=sink, rule_id=rule_id, message=message,
                                     payload=payload[:1_000_000], error=error[:2000],
                                     attempts=attempts)


@transaction.atomic
def mark_redelivered(*, acting_user: Actor, letter: DeadLetter) -> DeadLetter:
    letter.redelivered = True
    letter.save(update_fields=["redelivered"])
    return letter
