"""Validating a rule's JSON (trigger, condition, actions, debounce) and compiling it into the
form the ingest path evaluates. Used by the serializers (to refuse a bad rule with a clear
message), by the in-memory index and by the test endpoint, so all three agree."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from django.utils.translation import gettext_lazy as _

from webapp.rules import expressions
from webapp.rules.choices import ActionType, FireMode, Severity, TriggerType
from webapp.rules.conditions import Always, Condition, Group, Leaf, compile_condition
from webapp.rules.expressions import ExpressionError

_CODE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,49}$")
_IDENTIFIER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_CRON_FIELD = re.compile(r"^[0-9A-Za-z*/,\-?]{1,64}$")
MAX_ACTIONS = 20
MAX_DEVICES = 10_000


@dataclass(slots=True)
class CompiledRule:
    id: int
    name: str
    trigger_type: str
    product: str
    service: str
    property: str
    event: str
    command: str
    status: str
    devices: frozenset[str] | None
    condition: Condition
    actions: list[dict[str, Any]]
    has_alarm: bool
    debounce_count: int = 0
    debounce_window: int = 0
    debounce_duration_ms: int = 0
    cooldown_ms: int = 0
    fire_mode: str = FireMode.EACH
    auto_clear: bool = True
    latest_services: frozenset[str] = field(default_factory=frozenset)
    # Whether deciding needs per-device state (debounce, cool-down, alarms, previous values).
    needs_state: bool = False

    def watches(self, device: str) -> bool:
        return self.devices is None or device in self.devices

    def accepts(self, msg: Any) -> bool:
        """Whether a message of the trigger's kind is one this rule evaluates."""
        if self.devices is not None and msg.device not in self.devices:
            return False
        if self.property:
            return self.property in msg.values
        if self.service and self.service != msg.service:
            return False
        if self.event and self.event != msg.event:
            return False
        return not (self.command and self.command != msg.command)


def _str(spec: dict[str, Any], key: str, pattern: re.Pattern[str] | None = None,
         required: bool = False) -> str:
    value = spec.get(key) or ""
    if not isinstance(value, str):
        raise ExpressionError(_("'{key}' is a string.").format(key=key))
    if required and not value:
        raise ExpressionError(_("'{key}' is required.").format(key=key))
    if value and pattern is not None and not pattern.match(value):
        raise ExpressionError(_("'{key}' is not a valid code: {value!r}.").format(
            key=key, value=value))
    return value


def group_id(ref: Any) -> int | None:
    """The device group a trigger names: its id (an integer). A name left in a stored
    trigger (from before rules named groups by id) names no group: a deleted group's name
    re-created by another department must not be watched."""
    return ref if isinstance(ref, int) and not isinstance(ref, bool) and ref > 0 else None


def group_members(ref: Any) -> list[str]:
    """The device identifiers of the trigger's device group (by id; resolved when the index
    is compiled)."""
    from webapp.devices.models import DeviceGroup

    pk = group_id(ref)
    group = DeviceGroup.objects.filter(pk=pk).first() if pk is not None else None
    if group is None:
        raise ExpressionError(_("There is no device group {name!r}.").format(name=ref))
    return list(group.devices.values_list("identifier", flat=True))


def check_trigger(trigger: Any) -> dict[str, Any]:
    if not isinstance(trigger, dict):
        raise ExpressionError(_("The trigger is an object."))
    kind = trigger.get("type")
    if kind not in TriggerType.values:
        raise ExpressionError(_("The trigger type is one of {types}.").format(
            types=", ".join(TriggerType.values)))
    _str(trigger, "product", _IDENTIFIER, required=kind != TriggerType.SCHEDULE)
    _str(trigger, "service", _CODE)
    _str(trigger, "property", None)
    _str(trigger, "event", _CODE)
    _str(trigger, "command", _CODE)
    devices = trigger.get("devices")
    if devices is not None and (not isinstance(devices, list) or len(devices) > MAX_DEVICES
                                or not all(isinstance(d, str) and _IDENTIFIER.match(d)
                                           for d in devices)):
        raise ExpressionError(_("'devices' is a list of device identifiers."))
    group = trigger.get("group")
    # An id; a name is resolved to one within the user's data scope by the actions layer
    # (`check_trigger_scope`) before the rule is saved, and never matches a group here.
    if group not in (None, "") and not isinstance(group, str):
        group_members(group)
    if kind == TriggerType.STATUS and trigger.get("status") not in (None, "", "online",
                                                                    "offline"):
        raise ExpressionError(_("A status trigger watches 'online', 'offline' or both."))
    if kind == TriggerType.SCHEDULE:
        cron = trigger.get("cron")
        fields = cron.split() if isinstance(cron, str) else []
        if len(fields) != 5 or not all(_CRON_FIELD.match(f) for f in fields):
            raise ExpressionError(_(
                "A schedule has a 'cron' of five fields: minute hour day month weekday."))
    return trigger


def check_actions(actions: Any) -> list[dict[str, Any]]:
    if not isinstance(actions, list) or len(actions) > MAX_ACTIONS:
        raise ExpressionError(_("'actions' is a list of at most {n} actions.").format(
            n=MAX_ACTIONS))
    for action in actions:
        if not isinstance(action, dict) or action.get("type") not in ActionType.values:
            raise ExpressionError(_("Each action has a 'type', one of {types}.").format(
                types=", ".join(ActionType.values)))
        kind = action["type"]
        if kind == ActionType.ALARM and action.get("severity", "major") not in Severity.values:
            raise ExpressionError(_("An alarm's severity is one of {values}.").format(
                values=", ".join(Severity.values)))
        if kind == ActionType.WEBHOOK:
            url = action.get("url")
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                raise ExpressionError(_("A webhook action has an http(s) 'url'."))
        if kind == ActionType.COMMAND:
            _str(action, "service", _CODE, required=True)
            _str(action, "command", _CODE, required=True)
            if not isinstance(action.get("params", {}), dict):
                raise ExpressionError(_("A command's 'params' is an object."))
        if kind == ActionType.SHADOW:
            _str(action, "service", _CODE, required=True)
            if not isinstance(action.get("values"), dict) or not action["values"]:
                raise ExpressionError(_("A shadow action has 'values': {property: value}."))
        if kind in (ActionType.NOTIFY, ActionType.FORWARD):
            key = "channel" if kind == ActionType.NOTIFY else "sink"
            if not isinstance(action.get(key), int | str) or action.get(key) in ("", None):
                raise ExpressionError(_("A {type} action names its '{key}' (id or name).").format(
                    type=kind, key=key))
        if kind == ActionType.PUBLISH:
            topic = action.get("topic")
            if not isinstance(topic, str) or not topic or "#" in topic or "+" in topic:
                raise ExpressionError(_("A publish action has a 'topic' without wildcards."))
            if action.get("qos", 0) not in (0, 1, 2):
                raise ExpressionError(_("'qos' is 0, 1 or 2."))
        expressions.check_structure({k: v for k, v in action.items()
                                     if k not in ("type", "secret", "secret_encrypted")})
    return actions


def check_debounce(debounce: Any) -> dict[str, int]:
    if debounce in (None, {}):
        return {}
    if not isinstance(debounce, dict):
        raise ExpressionError(_("'debounce' is an object."))
    count, window, duration = (debounce.get(k, 0) for k in ("count", "window", "duration"))
    if not all(isinstance(v, int) and v >= 0 for v in (count, window, duration)):
        raise ExpressionError(_("Debounce values are non-negative integers."))
    if (count or window) and not (1 <= count <= window <= 100):
        raise ExpressionError(_("Debounce 'count' of the last 'window' messages needs "
                                "1 <= count <= window <= 100."))
    return {"count": count, "window": window, "duration": duration}


def compile_rule(*, id: int, name: str, trigger: dict[str, Any], condition: Any,
                 actions: list[dict[str, Any]], debounce: Any = None, cooldown: int = 0,
                 fire_mode: str = FireMode.EACH, auto_clear: bool = True,
                 resolve_groups: bool = True) -> CompiledRule:
    check_trigger(trigger)
    check_actions(actions)
    bounce = check_debounce(debounce)
    service = trigger.get("service") or ""
    devices: set[str] | None = set(trigger["devices"]) if trigger.get("devices") else None
    if trigger.get("group") and resolve_groups:
        devices = (devices or set()) | set(group_members(trigger["group"]))
    compiled_condition = compile_condition(
        condition, service=service, prop=trigger.get("property") or "",
        prop_in_message=trigger["type"] == TriggerType.PROPERTY and bool(trigger.get("property")))
    if trigger["type"] == TriggerType.STATUS and trigger.get("status"):
        # The watched status is part of the condition, so that the other status makes it
        # stop holding (and clears the alarm an "offline" rule raised).
        watched = Leaf("", "status", "==", trigger["status"], "message")
        compiled_condition = watched if isinstance(compiled_condition, Always) else Group(
            "all", [watched, compiled_condition])
    compiled = CompiledRule(
        id=id, name=name, trigger_type=trigger["type"], product=trigger.get("product") or "",
        service=service, property=trigger.get("property") or "",
        event=trigger.get("event") or "", command=trigger.get("command") or "",
        status=trigger.get("status") or "",
        devices=frozenset(devices) if devices is not None else None,
        condition=compiled_condition, actions=actions,
        has_alarm=any(a.get("type") == ActionType.ALARM for a in actions),
        debounce_count=bounce.get("count", 0), debounce_window=bounce.get("window", 0),
        debounce_duration_ms=bounce.get("duration", 0) * 1000, cooldown_ms=cooldown * 1000,
        fire_mode=fire_mode, auto_clear=auto_clear,
        latest_services=compiled_condition.latest_services,
    )
    compiled.needs_state = bool(
        compiled.has_alarm or compiled.debounce_window or compiled.debounce_duration_ms
        or compiled.cooldown_ms or fire_mode == FireMode.CHANGE
        or compiled_condition.stateful_keys)
    return compiled


def compile_model(rule: Any) -> CompiledRule:
    return compile_rule(id=rule.pk or 0, name=rule.name, trigger=rule.trigger,
                        condition=rule.condition, actions=rule.actions, debounce=rule.debounce,
                        cooldown=rule.cooldown, fire_mode=rule.fire_mode,
                        auto_clear=rule.auto_clear)
