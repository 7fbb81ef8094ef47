"""Checks made before rules, channels and sinks are written: that a rule compiles, that its
webhooks, channels and sinks reach only allowed destinations, and that what it watches and
what its actions reach is within the acting user's data scope. They read, never write; the
write actions call them."""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext_lazy as _

from webapp.core import outbound
from webapp.core.errors import DomainError, NotFound
from webapp.devices.models import Device, DeviceGroup
from webapp.products.models import Product
from webapp.rules.choices import ActionType, ChannelType, SinkType
from webapp.rules.compiler import compile_rule
from webapp.rules.expressions import ExpressionError
from webapp.rules.models import NotificationChannel, Sink
from webapp.rules.references import action_device_target, department_filter, reference_query
from webapp.rules.sinks import SinkInvalid
from webapp.system import scope
from webapp.system.actors import recorded_user


class RuleInvalid(DomainError):
    code = "invalid_rule"
    default_detail = _("The rule is invalid.")


class ChannelInvalid(DomainError):
    code = "invalid_channel"
    default_detail = _("The notification channel is invalid.")


HTTP_CHANNELS = (ChannelType.WEBHOOK, ChannelType.DINGTALK, ChannelType.WECOM,
                 ChannelType.FEISHU)


def validate_rule(data: dict[str, Any]) -> None:
    """Refuse a rule that does not compile (the message says what is wrong where)."""
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
        matches = model.objects.filter(reference_query(ref))
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
    if not isinstance(trigger, dict):
        return
    previous = previous if isinstance(previous, dict) else {}
    resolve_trigger_group(trigger, user, previous)
    if scope.user_scope(user).everything:
        return
    product = trigger.get("product")
    if isinstance(product, str) and product and product != previous.get("product") and \
            not scope.restrict(Product.objects.all(), user).filter(identifier=product).exists():
        raise NotFound(_("There is no product {identifier!r}.").format(identifier=product),
                       code="unknown_product")
    devices = trigger.get("devices")
    if isinstance(devices, list):
        wanted = {d for d in devices if isinstance(d, str)} - set(previous.get("devices") or [])
        reached = set(scope.restrict(Device.objects.all(), user).filter(
            identifier__in=wanted).values_list("identifier", flat=True)) if wanted else set()
        if wanted - reached:
            raise RuleInvalid(_("There is no device {identifiers} within your data scope.")
                              .format(identifiers=", ".join(sorted(wanted - reached)[:10])))


def resolve_trigger_group(trigger: dict[str, Any], user: Any,
                          previous: dict[str, Any]) -> None:
    """Replace the trigger's device group (its id, or for older clients its name) by the
    id of a group within `user`'s data scope, in place: the rule watches that group, not
    whichever group bears the name later (a deleted group's name re-created by another
    department). The group the rule already watched (`previous`, by id) is kept. Refused as
    for a group that does not exist (no telling what exists elsewhere)."""
    group = trigger.get("group")
    if group is None or group == "":
        return
    if isinstance(group, bool) or not isinstance(group, int | str):
        raise RuleInvalid(_("The trigger's 'group' is a device group's id (or its name)."))
    groups = DeviceGroup.objects.all()
    match = groups.filter(name=group) if isinstance(group, str) else groups.filter(pk=group)
    kept = previous.get("group")
    found = match.filter(pk=kept).first() if isinstance(kept, int) else None
    if found is None:
        found = scope.restrict(match, user).first()
    if found is None:
        raise RuleInvalid(_("There is no device group {name!r}.").format(name=group))
    trigger["group"] = found.pk


def check_channel_destination(channel_type: str, config: Any) -> None:
    """Refuse a channel URL that reaches an address the platform may not connect to."""
    url = config.get("url") if isinstance(config, dict) else None
    if channel_type not in HTTP_CHANNELS or not isinstance(url, str):
        return
    try:
        outbound.check_url(url, schemes=("http", "https"))
    except outbound.OutboundRefused as exc:
        raise ChannelInvalid(exc.reason) from exc


def check_sink_scope(sink_type: str, config: Any, user: Any,
                     before: tuple[str, Any] | None = None) -> None:
    """A `topic` sink publishes on the platform's own broker as a client would: like the
    `publish` action, its topic may be a device topic only of a device within `user`'s data
    scope, or of the device that fired (`{{device}}`); only users who see all data may write
    a template that could render into a device topic. Unchanged settings are kept."""
    actor = recorded_user(user)
    if actor is None or sink_type != SinkType.TOPIC or before == (sink_type, config) or \
            not isinstance(config, dict):
        return  # the platform itself, another kind of sink, or what it already was
    problem = _device_problem({"type": ActionType.PUBLISH,
                               "topic": str(config.get("topic") or "")}, actor)
    if problem:
        raise SinkInvalid(problem)
