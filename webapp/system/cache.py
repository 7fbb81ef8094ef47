"""Dictionaries and parameters as the rest of the platform reads them: cached, invalidated
by the actions that change them.

    dict_choices("device_tag")            -> [("indoor", "Indoor"), …]   (form/field choices)
    param("security.login.max_failures", 5) -> 5 (typed by the parameter's type)
"""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.core.cache import cache

from webapp.system.choices import ParameterType
from webapp.system.dictionaries import DictItem, Parameter

TIMEOUT = 3600
_MISSING = "__missing__"


def _dict_key(code: str) -> str:
    return f"dict:{code}"


def _param_key(key: str) -> str:
    return f"param:{key}"


def dict_items(code: str) -> list[dict[str, Any]]:
    """The active items of an active dictionary, in order (empty for an unknown code)."""
    key = _dict_key(code)
    items = cache.get(key)
    if items is None:
        items = list(DictItem.objects.filter(
            dict_type__code=code, dict_type__is_active=True, is_active=True,
        ).order_by("order", "value").values("value", "label", "color", "is_default"))
        cache.set(key, items, TIMEOUT)
    return items


def dict_choices(code: str) -> list[tuple[str, str]]:
    return [(item["value"], item["label"]) for item in dict_items(code)]


def forget_dict(code: str) -> None:
    cache.delete(_dict_key(code))


class DictionaryChoiceField(forms.ChoiceField):
    """A form field whose choices are a dictionary's items, read when the form is built."""

    def __init__(self, code: str, **kwargs: Any) -> None:
        super().__init__(choices=lambda: dict_choices(code), **kwargs)


def _typed(value: str, value_type: str) -> Any:
    if value_type == ParameterType.INTEGER:
        return int(value)
    if value_type == ParameterType.BOOLEAN:
        return value.strip().lower() in ("1", "true", "yes", "on")
    if value_type == ParameterType.JSON:
        return json.loads(value)
    return value


def param(key: str, default: Any = None) -> Any:
    """The typed value of parameter `key`, or `default` when it is not defined."""
    cached = cache.get(_param_key(key))
    if cached is None:
        row = Parameter.objects.filter(key=key).values("value", "value_type").first()
        cached = {"value": row["value"], "type": row["value_type"]} if row else _MISSING
        cache.set(_param_key(key), cached, TIMEOUT)
    if cached == _MISSING:
        return default
    try:
        return _typed(cached["value"], cached["type"])
    except (ValueError, json.JSONDecodeError):
        return default


def forget_param(key: str) -> None:
    cache.delete(_param_key(key))
