"""What a rule action refers to: a channel or sink by id or name, a target device.

Shared by the checks made when a rule is saved (webapp/rules/actions/validation.py) and the
executors that resolve the same references when the rule runs: both must read a reference
the same way, or a rule could be saved pointing at one row and run against another."""

from __future__ import annotations

import re
from typing import Any

from django.db.models import Q

from edge.codecs.thinglinks import TOPIC_PREFIX as DEVICE_TOPIC_PREFIX
from webapp.rules.choices import ActionType

MAX_ID = 2**63 - 1  # a larger number is no row's id (and no database integer)

_PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_TRIGGERING_DEVICE = re.compile(r"\{\{\s*device\s*\}\}")


def is_number_reference(ref: Any) -> bool:
    """Whether a rule action's `channel` / `sink` reference can name a row by id: an int,
    or a text of ASCII digits only (`isdigit()` would take "²", which `int()` refuses)."""
    if isinstance(ref, bool):
        return False
    if isinstance(ref, int):
        return 0 < ref <= MAX_ID
    return isinstance(ref, str) and ref.isascii() and ref.isdecimal() and 0 < int(ref) <= MAX_ID


def reference_query(ref: Any) -> Q:
    """The rows a rule action's `channel` / `sink` reference may match when the rule runs
    (the id when the reference is a number, else the name)."""
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
