"""Checking a rule against its product's thing model: the trigger's service, property, event
and command exist; each condition leaf names a property the message (or the device's latest
values) can carry, with an operator that fits the property's type and a value of that type
(an enumeration is compared with its values, a number within its datatype's bounds); a
`command` action's parameters and a `shadow` action's values are those of the model.

The rule actions call it on save (`webapp.rules.actions.create_rule / update_rule`), so the
API, the admin and the console refuse the same rules. Each problem names where it is
(`trigger`, `condition`, `condition.all.1.any.0`, `actions.2`), so that a form can show the
reason next to the part of the rule it concerns. A product without a thing model (no
services), or a rule without a product, is not checked. Expressions (`expr`) are not checked
against the model (they are checked when parsed), nor is a dotted path into a JSON property.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.utils.translation import gettext as _

from edge.thingmodel import INT32, INT64, FieldSpec, ServiceSpec, ThingModel
from webapp.products.models import Product
from webapp.products.thingmodel import thing_model
from webapp.rules.choices import ActionType, TriggerType

NUMERIC = ("int", "bigint", "decimal")
_ALWAYS = ("==", "!=", "exists", "changed")
# The operators that make sense for each datatype (conditions.OPERATORS holds them all).
OPERATORS_BY_TYPE: dict[str, tuple[str, ...]] = {
    "int": (*_ALWAYS, ">", ">=", "<", "<=", "between", "not_between", "in", "not_in",
            "increased_by", "decreased_by"),
    "bool": (*_ALWAYS, "in", "not_in"),
    "enum": (*_ALWAYS, "in", "not_in"),
    "string": (*_ALWAYS, "in", "not_in", "contains", "not_contains"),
    "datetime": (*_ALWAYS, ">", ">=", "<", "<=", "in", "not_in"),
    "binary": _ALWAYS,
    "json": (*_ALWAYS, "in", "not_in", "contains", "not_contains"),
}
OPERATORS_BY_TYPE["bigint"] = OPERATORS_BY_TYPE["decimal"] = OPERATORS_BY_TYPE["int"]
_NO_VALUE = ("exists", "changed")
_LIST_VALUE = ("in", "not_in")
_PAIR_VALUE = ("between", "not_between")
_DELTA_VALUE = ("increased_by", "decreased_by")
# What a status trigger's and a command response's messages carry besides the model's fields.
STATUS_FIELDS = {"status": FieldSpec("status", "enum", enum=("online", "offline")),
                 "reason": FieldSpec("reason", "string")}
ERR_FIELD = {"err": FieldSpec("err", "json")}


@dataclass(frozen=True, slots=True)
class ModelProblem:
    """Why part of a rule does not fit the thing model; `path` says which part."""

    path: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "message": self.message}


def _templated(value: Any) -> bool:
    return isinstance(value, str) and "{{" in value


def _value_problem(spec: FieldSpec, value: Any) -> str:
    """Why `value` cannot be a value of `spec`'s type (empty when it can)."""
    kind = spec.datatype
    if kind in NUMERIC:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return _("{name} is a number ({type}), not {value}.").format(
                name=spec.code, type=kind, value=_shown(value))
        if isinstance(value, float) and not math.isfinite(value):
            return _("{value} is not a finite number.").format(value=_shown(value))
        low, high = INT32 if kind == "int" else INT64 if kind == "bigint" else (None, None)
        if low is not None and high is not None and not low <= value <= high:
            return _("{value} is outside the range of {name}'s type {type} "
                     "({low} … {high}).").format(value=_shown(value), name=spec.code,
                                                  type=kind, low=low, high=high)
        return ""
    if kind == "enum":
        allowed = list(spec.enum or ())
        if not any(value == v and type(value) is type(v) for v in allowed):
            return _("{value} is not a value of {name} (one of {values}).").format(
                value=_shown(value), name=spec.code,
                values=", ".join(_shown(v) for v in allowed) or "—")
        return ""
    if kind == "bool":
        return "" if isinstance(value, bool) else _(
            "{name} is true or false, not {value}.").format(name=spec.code, value=_shown(value))
    if kind in ("string", "datetime", "binary"):
        if not isinstance(value, str):
            return _("{name} is text, not {value}.").format(name=spec.code, value=_shown(value))
        limit = spec.max_length
        if kind == "string" and limit is not None and len(value) > limit:
            return _("{name} holds at most {n} characters; the value has {m}.").format(
                name=spec.code, n=limit, m=len(value))
        return ""
    return ""  # json: any value


def _shown(value: Any) -> str:
    if value is None:
        return "null"
    text = repr(value) if isinstance(value, str) else str(value).lower() if isinstance(
        value, bool) else str(value)
    return text if len(text) <= 40 else text[:39] + "…"


def _leaf_problem(spec: FieldSpec, op: str, value: Any) -> str:
    allowed = OPERATORS_BY_TYPE.get(spec.datatype, _ALWAYS)
    if op not in allowed:
        return _("The operator {op} does not apply to {name} ({type}); use one of "
                 "{ops}.").format(op=op, name=spec.code, type=spec.datatype,
                                  ops=" ".join(allowed))
    if op in _NO_VALUE or _templated(value):
        return ""
    if op in _DELTA_VALUE:
        return ""  # a non-negative number: the compiler checks it
    if op in _PAIR_VALUE or op in _LIST_VALUE:
        items = value if isinstance(value, list) else []
        for item in items:
            problem = _value_problem(spec, item)
            if problem:
                return problem
        return ""
    if op in ("contains", "not_contains"):
        return "" if spec.datatype == "json" or isinstance(value, str) else _value_problem(
            spec, value)
    return _value_problem(spec, value)


class _Checker:
    def __init__(self, model: ThingModel, trigger: Mapping[str, Any]) -> None:
        self.model = model
        self.trigger = trigger
        self.kind = trigger.get("type")
        self.service = trigger.get("service") or ""
        self.problems: list[ModelProblem] = []

    def add(self, path: str, message: str) -> None:
        self.problems.append(ModelProblem(path, message))

    def services_with(self, attribute: str, code: str) -> list[ServiceSpec]:
        services = [self.model.services[self.service]] if self.service in \
            self.model.services else list(self.model.services.values())
        return [s for s in services if code in getattr(s, attribute)]

    def check_trigger(self) -> None:
        if self.service and self.service not in self.model.services:
            self.add("trigger", _("The product has no service {service!r}.").format(
                service=self.service))
            return
        prop = self.trigger.get("property") or ""
        if self.kind == TriggerType.PROPERTY and prop and self.service and \
                prop.split(".")[0] not in self.model.services[self.service].properties:
            self.add("trigger", _("The service {service!r} has no property {property!r}.")
                     .format(service=self.service, property=prop))
        event = self.trigger.get("event") or ""
        if self.kind == TriggerType.EVENT and event and not self.services_with("events", event):
            self.add("trigger", _("The product has no event {event!r}.").format(event=event))
        command = self.trigger.get("command") or ""
        if self.kind == TriggerType.COMMAND_RESPONSE and command and \
                not self.services_with("commands", command):
            self.add("trigger", _("The product has no command {command!r}.").format(
                command=command))

    def message_fields(self) -> dict[str, FieldSpec]:
        """The fields a message of the trigger carries besides its service's properties."""
        if self.kind == TriggerType.EVENT:
            event = self.trigger.get("event") or ""
            fields: dict[str, FieldSpec] = {}
            for service in self.services_with("events", event) if event else []:
                fields.update(service.events[event].params)
            if not event:  # any event: any event's params
                for service in self.model.services.values():
                    for event_spec in service.events.values():
                        fields.update(event_spec.params)
            return fields
        if self.kind == TriggerType.COMMAND_RESPONSE:
            command = self.trigger.get("command") or ""
            fields = dict(ERR_FIELD)
            for service in self.model.services.values():
                for code, command_spec in service.commands.items():
                    if not command or code == command:
                        fields.update(command_spec.responses)
            return fields
        if self.kind == TriggerType.STATUS:
            return dict(STATUS_FIELDS)
        return {}

    def field_of(self, path: str, leaf: Mapping[str, Any]) -> FieldSpec | None:
        """The field a leaf compares, or None after reporting why there is none."""
        prop = leaf.get("property") or self.trigger.get("property") or ""
        service = leaf.get("service") or self.service
        if not isinstance(prop, str) or not isinstance(service, str):
            return None  # the compiler reports malformed leaves
        head, _dot, rest = prop.partition(".")
        if not leaf.get("service") or leaf.get("service") == self.service:
            extra = self.message_fields()
            if head in extra:
                return None if rest else extra[head]
        if not service:
            if self.kind in (TriggerType.EVENT, TriggerType.COMMAND_RESPONSE,
                             TriggerType.STATUS):
                self.add(path, _("{property!r} is not a field of this trigger's messages.")
                         .format(property=prop))
            return None
        spec = self.model.services.get(service)
        if spec is None:
            self.add(path, _("The product has no service {service!r}.").format(service=service))
            return None
        field = spec.properties.get(head)
        if field is None:
            self.add(path, _("The service {service!r} has no property {property!r}.").format(
                service=service, property=head))
            return None
        if rest:
            if field.datatype != "json":
                self.add(path, _("{property} is not a JSON property: it has no {rest!r}.")
                         .format(property=head, rest=rest))
            return None
        return field

    def check_condition(self, node: Any, path: str) -> None:
        if not isinstance(node, Mapping) or not node:
            return
        for mode in ("all", "any"):
            if mode in node:
                children = node[mode]
                for i, child in enumerate(children if isinstance(children, list) else []):
                    self.check_condition(child, f"{path}.{mode}.{i}")
                return
        if "not" in node:
            self.check_condition(node["not"], f"{path}.not")
            return
        if "expr" in node:
            return
        field = self.field_of(path, node)
        op = node.get("op")
        if field is not None and isinstance(op, str):
            problem = _leaf_problem(field, op, node.get("value"))
            if problem:
                self.add(path, problem)

    def check_actions(self, actions: Any) -> None:
        for i, action in enumerate(actions if isinstance(actions, list) else []):
            if not isinstance(action, Mapping):
                continue
            kind = action.get("type")
            device = action.get("device")
            if device not in (None, "", "{{device}}", "{{ device }}"):
                continue  # another device, maybe of another product
            if kind == ActionType.COMMAND:
                self.check_command(f"actions.{i}", action)
            elif kind == ActionType.SHADOW:
                self.check_shadow(f"actions.{i}", action)

    def check_command(self, path: str, action: Mapping[str, Any]) -> None:
        service = self.model.services.get(str(action.get("service") or ""))
        if service is None:
            self.add(path, _("The product has no service {service!r}.").format(
                service=action.get("service")))
            return
        command = service.commands.get(str(action.get("command") or ""))
        if command is None:
            self.add(path, _("The service {service!r} has no command {command!r}.").format(
                service=service.code, command=action.get("command")))
            return
        params = action.get("params") or {}
        if not isinstance(params, Mapping):
            return
        for code, value in params.items():
            spec = command.requests.get(code)
            if spec is None:
                self.add(path, _("The command {command!r} has no parameter {param!r}.").format(
                    command=command.code, param=code))
            elif not _templated(value):
                _value, problem = spec.check(value, service.code)
                if problem is not None:
                    self.add(path, problem.reason)
        for code, spec in command.requests.items():
            if spec.required and code not in params:
                self.add(path, _("The command {command!r} needs its parameter {param!r}.")
                         .format(command=command.code, param=code))

    def check_shadow(self, path: str, action: Mapping[str, Any]) -> None:
        service = self.model.services.get(str(action.get("service") or ""))
        if service is None:
            self.add(path, _("The product has no service {service!r}.").format(
                service=action.get("service")))
            return
        values = action.get("values") or {}
        for code, value in values.items() if isinstance(values, Mapping) else ():
            spec = service.properties.get(code)
            if spec is None:
                self.add(path, _("The service {service!r} has no property {property!r}.")
                         .format(service=service.code, property=code))
            elif "W" not in spec.access:
                self.add(path, _("The property {property!r} is read-only.").format(
                    property=code))
            elif not _templated(value):
                _value, problem = spec.check(value, service.code)
                if problem is not None:
                    self.add(path, problem.reason)


def model_problems(trigger: Any, condition: Any, actions: Any,
                   product: Product | None = None) -> list[ModelProblem]:
    """Where the rule does not fit its product's thing model (empty: it fits, or there is
    no model to check it against). `product` defaults to the trigger's."""
    if not isinstance(trigger, Mapping):
        return []
    if product is None:
        identifier = trigger.get("product")
        if not isinstance(identifier, str) or not identifier:
            return []
        product = Product.objects.filter(identifier=identifier).first()
        if product is None:
            return []
    model = thing_model(product)
    if not model.services:
        return []
    checker = _Checker(model, trigger)
    checker.check_trigger()
    checker.check_condition(condition, "condition")
    checker.check_actions(actions)
    return checker.problems
