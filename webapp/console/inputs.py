"""Typed form inputs generated from the thing model, and the values read back from them.

A command's request parameters and a device's writable properties become HTML inputs of the
right kind (number with its range and step, a yes/no choice, a list of enumerated values, text,
JSON). What the browser sends back is text; `parse_value` turns it into the JSON value the
thing model checks, and the devices app's actions validate it against the model as they do
for the API.
"""

from __future__ import annotations

import json
from typing import Any

from django.utils.translation import gettext as _

from webapp.products.choices import Datatype

INTEGER = {Datatype.INT, Datatype.BIGINT}
NUMERIC = INTEGER | {Datatype.DECIMAL}
# What the telemetry chart can draw (booleans as 0/1).
CHARTABLE = NUMERIC | {Datatype.BOOL}


def record_id(value: Any) -> int | None:
    """A record's id typed in a form or a query string: ASCII digits, at most 18 of them;
    None otherwise. `str.isdigit()` also accepts "²" or "٣", which `int()` and the database
    refuse (a server error), and a longer number overflows the database's integer."""
    text = value if isinstance(value, str) else ""
    if text.isascii() and text.isdigit() and len(text) <= 18:
        return int(text)
    return None


def widget(field: dict[str, Any]) -> dict[str, Any]:
    """How to render a typed field (`webapp.products.thingmodel.field_json` form)."""
    datatype = field["datatype"]
    spec: dict[str, Any] = {
        "code": field["code"], "name": field.get("name") or field["code"],
        "datatype": datatype, "datatype_label": Datatype(datatype).label
        if datatype in Datatype.values else datatype,
        "unit": field.get("unit") or "", "required": bool(field.get("required")),
        "description": field.get("description") or "",
    }
    if datatype in NUMERIC:
        spec["widget"] = "number"
        spec["min"] = _plain(field.get("min"))
        spec["max"] = _plain(field.get("max"))
        spec["step"] = field.get("step") or (1 if datatype in INTEGER else "any")
    elif datatype == Datatype.BOOL:
        spec["widget"] = "select"
        spec["options"] = [("true", _("Yes")), ("false", _("No"))]
    elif datatype == Datatype.ENUM:
        spec["widget"] = "select"
        spec["options"] = [(json.dumps(v), str(v)) for v in field.get("enum_values") or []]
    elif datatype == Datatype.JSON:
        spec["widget"] = "textarea"
        spec["placeholder"] = '{"key": "value"}'
    elif datatype == Datatype.DATETIME:
        spec["widget"] = "text"
        spec["placeholder"] = "2025-01-31T12:00:00Z"
    else:
        spec["widget"] = "text"
        spec["maxlength"] = field.get("max_length")
        if datatype == Datatype.BINARY:
            spec["placeholder"] = "base64"
    return spec


def range_text(field: dict[str, Any]) -> str:
    """`-40 … 125`, `≥ 0`, `≤ 10` or empty."""
    low, high = field.get("min"), field.get("max")
    if low is not None and high is not None:
        return f"{_number(low)} … {_number(high)}"
    if low is not None:
        return f"≥ {_number(low)}"
    if high is not None:
        return f"≤ {_number(high)}"
    if field.get("max_length"):
        return _("up to {n} characters").format(n=field["max_length"])
    return ""


def _plain(value: float | None) -> float | int | None:
    """Whole numbers without a trailing `.0` (the model stores ranges as floats)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


class BadInput(ValueError):
    pass


def parse_value(datatype: str, raw: str) -> Any:
    """The JSON value of one input's text (raises BadInput with a readable reason)."""
    text = raw.strip()
    try:
        if datatype in INTEGER:
            return int(text)
        if datatype == Datatype.DECIMAL:
            return float(text)
        if datatype == Datatype.BOOL:
            if text.lower() in ("true", "1", "yes", "on"):
                return True
            if text.lower() in ("false", "0", "no", "off"):
                return False
            raise ValueError(text)
        if datatype in (Datatype.JSON, Datatype.ENUM):
            return json.loads(text)
    except ValueError:
        raise BadInput(_("{value!r} is not a valid {datatype}").format(
            value=raw, datatype=Datatype(datatype).label)) from None
    return raw


def read_values(fields: list[dict[str, Any]], data: Any, prefix: str
                ) -> tuple[dict[str, Any], dict[str, str]]:
    """Values of `fields` from form `data` (names `{prefix}{code}`); empty inputs are left
    out. Returns (values, errors by field code)."""
    values: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for field in fields:
        raw = data.get(f"{prefix}{field['code']}", "")
        if raw is None or str(raw).strip() == "":
            continue
        try:
            values[field["code"]] = parse_value(field["datatype"], str(raw))
        except BadInput as exc:
            errors[field["code"]] = str(exc)
    return values, errors
