"""The thing model as the edge and the ingest worker see it, and validation against it.

Pure code: the JSON form (docs/bus.md) is built by ``webapp.products`` from the SQL model and
published to Redis; the edge validates every uplink with it and ``webapp`` validates command
parameters with the same code.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

DATATYPES = ("int", "bigint", "decimal", "string", "bool", "datetime", "json", "binary", "enum")
INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
DEFAULT_MAX_LENGTH = 255
FAST_DECIMAL, FAST_INTEGER = 1, 2


@dataclass(frozen=True, slots=True)
class Problem:
    """Why one value (or one service, or one message) was refused."""

    code: str
    service: str | None
    property: str | None
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "serviceCode": self.service,
            "property": self.property,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """A typed value: a property, a command parameter or an event parameter."""

    code: str
    datatype: str
    min: float | None = None
    max: float | None = None
    max_length: int | None = None
    enum: tuple[Any, ...] | None = None
    required: bool = False
    access: str = "RW"
    # The fast path of `check` for a plain number (see __post_init__): which kind of number
    # the datatype is (0: not a number type), and the bounds a value is accepted within.
    fast: int = field(default=0, init=False, repr=False, compare=False)
    lo: float = field(default=0.0, init=False, repr=False, compare=False)
    hi: float = field(default=0.0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.datatype == "decimal":
            bounds: tuple[float, float] = (-sys.float_info.max, sys.float_info.max)
            kind = FAST_DECIMAL
        elif self.datatype in ("int", "bigint"):
            bounds = INT32 if self.datatype == "int" else INT64
            kind = FAST_INTEGER
        else:
            return
        lo = bounds[0] if self.min is None else max(bounds[0], self.min)
        hi = bounds[1] if self.max is None else min(bounds[1], self.max)
        object.__setattr__(self, "fast", kind)
        object.__setattr__(self, "lo", lo)
        object.__setattr__(self, "hi", hi)

    @classmethod
    def from_json(cls, code: str, obj: Mapping[str, Any]) -> FieldSpec:
        datatype = obj.get("datatype")
        if datatype not in DATATYPES:
            raise ValueError(f"{code}: unknown datatype {datatype!r}")
        enum = obj.get("enum")
        return cls(
            code=code,
            datatype=datatype,
            min=_number_or_none(obj.get("min")),
            max=_number_or_none(obj.get("max")),
            max_length=int(obj["max_length"]) if obj.get("max_length") is not None else None,
            enum=tuple(enum) if enum else None,
            required=bool(obj.get("required", False)),
            access=str(obj.get("access") or "RW"),
        )

    def check(self, value: Any, service: str | None) -> tuple[Any, Problem | None]:
        """Return ``(normalised value, None)`` or ``(None, problem)``."""
        accepted = _fast_number(self, value)
        if accepted is not None:
            return accepted, None
        try:
            return _CHECKERS[self.datatype](self, value), None
        except _Refused as refused:
            return None, Problem(refused.code, service, self.code, refused.reason)


@dataclass(frozen=True, slots=True)
class CommandSpec:
    code: str
    requests: Mapping[str, FieldSpec]
    responses: Mapping[str, FieldSpec]


@dataclass(frozen=True, slots=True)
class EventSpec:
    code: str
    params: Mapping[str, FieldSpec]


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    code: str
    properties: Mapping[str, FieldSpec]
    commands: Mapping[str, CommandSpec]
    events: Mapping[str, EventSpec]


class ThingModel:
    """A product's services with their properties, commands and events."""

    __slots__ = ("services",)

    def __init__(self, services: Mapping[str, ServiceSpec]) -> None:
        self.services = services

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> ThingModel:
        """Build from the JSON form of docs/bus.md; raises ValueError when it is malformed."""
        if not isinstance(obj, Mapping) or not isinstance(obj.get("services"), Mapping):
            raise ValueError("a thing model is an object with a 'services' object")
        services: dict[str, ServiceSpec] = {}
        for code, svc in obj["services"].items():
            services[code] = ServiceSpec(
                code=code,
                properties=_fields(svc.get("properties") or {}),
                commands={
                    c: CommandSpec(
                        c, _fields(spec.get("requests") or {}), _fields(spec.get("responses") or {})
                    )
                    for c, spec in (svc.get("commands") or {}).items()
                },
                events={
                    e: EventSpec(e, _fields(spec.get("params") or {}))
                    for e, spec in (svc.get("events") or {}).items()
                },
            )
        return cls(services)

    def validate_service_data(
        self, service: str, data: Any
    ) -> tuple[dict[str, Any], list[Problem]]:
        """Validate reported property values; valid ones are kept even when others fail."""
        spec = self.services.get(service)
        if spec is None:
            return {}, [Problem("unknown_service", service, None, f"unknown service {service!r}")]
        if type(data) is not dict and not isinstance(data, Mapping):
            return {}, [Problem("wrong_type", service, None, "service data must be a JSON object")]
        return _validate_values(spec.properties, data, service, enforce_required=False)

    def validate_command_params(
        self, service: str, command: str, params: Any, *, response: bool = False
    ) -> tuple[dict[str, Any], list[Problem]]:
        """Validate a command's request parameters (or, with ``response``, its reply)."""
        spec = self.services.get(service)
        if spec is None:
            return {}, [Problem("unknown_service", service, None, f"unknown service {service!r}")]
        cmd = spec.commands.get(command)
        if cmd is None:
            return {}, [
                Problem(
                    "unknown_command",
                    service,
                    None,
                    f"unknown command {command!r} in service {service!r}",
                )
            ]
        if params is None:
            params = {}
        if not isinstance(params, Mapping):
            return {}, [Problem("wrong_type", service, None, "params must be a JSON object")]
        fields = cmd.responses if response else cmd.requests
        return _validate_values(fields, params, service, enforce_required=not response)

    def validate_event(
        self, service: str, event: str, params: Any
    ) -> tuple[dict[str, Any], list[Problem]]:
        spec = self.services.get(service)
        if spec is None:
            return {}, [Problem("unknown_service", service, None, f"unknown service {service!r}")]
        ev = spec.events.get(event)
        if ev is None:
            return {}, [
                Problem(
                    "unknown_event",
                    service,
                    None,
                    f"unknown event {event!r} in service {service!r}",
                )
            ]
        if params is None:
            params = {}
        if not isinstance(params, Mapping):
            return {}, [Problem("wrong_type", service, None, "params must be a JSON object")]
        return _validate_values(ev.params, params, service, enforce_required=True)


class _Refused(Exception):
    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def _fields(obj: Mapping[str, Any]) -> dict[str, FieldSpec]:
    if not isinstance(obj, Mapping):
        raise ValueError("fields must be an object of code -> spec")
    return {code: FieldSpec.from_json(code, spec) for code, spec in obj.items()}


def _number_or_none(value: Any) -> float | None:
    if value is None or value == "":
        return None
    return float(value)


def _fast_number(spec: FieldSpec, value: Any) -> int | float | None:
    """The accepted value of a plain int or float inside a number type's bounds, or None
    when the full check must decide (any other value, NaN and infinities included)."""
    kind = type(value)
    if spec.fast == FAST_DECIMAL:
        if (kind is float or kind is int) and spec.lo <= value <= spec.hi:
            return float(value)
    elif spec.fast == FAST_INTEGER and kind is int and spec.lo <= value <= spec.hi:
        return value  # type: ignore[no-any-return]
    return None


def _validate_values(
    fields: Mapping[str, FieldSpec],
    data: Mapping[str, Any],
    service: str,
    *,
    enforce_required: bool,
) -> tuple[dict[str, Any], list[Problem]]:
    accepted: dict[str, Any] = {}
    problems: list[Problem] = []
    for code, value in data.items():
        field = fields.get(code)
        if field is not None and field.fast:  # the common case: a number in range
            number = _fast_number(field, value)
            if number is not None:
                accepted[code] = number
                continue
        if field is None:
            problems.append(
                Problem(
                    "unknown_property",
                    service,
                    code,
                    f"unknown property {code!r} in service {service!r}",
                )
            )
            continue
        normalised, problem = field.check(value, service)
        if problem is None:
            accepted[code] = normalised
        else:
            problems.append(problem)
    if enforce_required:
        for code, field in fields.items():
            if field.required and code not in data:
                problems.append(Problem("missing_required", service, code, f"{code} is required"))
    return accepted, problems


def _range(spec: FieldSpec, value: float) -> None:
    if spec.min is not None and value < spec.min:
        raise _Refused("out_of_range", f"{spec.code}={_fmt(value)} is below min {_fmt(spec.min)}")
    if spec.max is not None and value > spec.max:
        raise _Refused("out_of_range", f"{spec.code}={_fmt(value)} is above max {_fmt(spec.max)}")


def _fmt(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else str(number)


def _wrong(spec: FieldSpec, value: Any, expected: str) -> _Refused:
    return _Refused(
        "wrong_type", f"{spec.code} must be {expected}, got {type(value).__name__} {value!r:.40}"
    )


def _integer(spec: FieldSpec, value: Any, bounds: tuple[int, int]) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _wrong(spec, value, "an integer")
    if isinstance(value, float):
        if not value.is_integer():
            raise _wrong(spec, value, "an integer")
        value = int(value)
    if not bounds[0] <= value <= bounds[1]:
        raise _Refused("out_of_range", f"{spec.code}={value} does not fit the {spec.datatype} type")
    _range(spec, value)
    return value


def _check_int(spec: FieldSpec, value: Any) -> int:
    return _integer(spec, value, INT32)


def _check_bigint(spec: FieldSpec, value: Any) -> int:
    return _integer(spec, value, INT64)


def _check_decimal(spec: FieldSpec, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _wrong(spec, value, "a number")
    try:
        number = float(value)
    except OverflowError:  # an integer too large for a double
        raise _wrong(spec, value, "a finite number") from None
    if not math.isfinite(number):
        raise _wrong(spec, value, "a finite number")
    _range(spec, number)
    return number


def _check_string(spec: FieldSpec, value: Any) -> str:
    if not isinstance(value, str):
        raise _wrong(spec, value, "a string")
    limit = spec.max_length or DEFAULT_MAX_LENGTH
    if len(value) > limit:
        raise _Refused("too_long", f"{spec.code} is {len(value)} characters, max {limit}")
    if "\x00" in value:
        raise _wrong(spec, value, "a string without NUL characters")
    return value


def _check_bool(spec: FieldSpec, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if value in (0, 1) and isinstance(value, int):
        return bool(value)
    raise _wrong(spec, value, "a boolean")


def _check_datetime(spec: FieldSpec, value: Any) -> int:
    """Epoch milliseconds, from an integer or an ISO 8601 / ThingLinks ``yyyyMMddTHHmmssZ`` text."""
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value <= 253402300799999:
            raise _Refused("out_of_range", f"{spec.code}={value} is not a valid time")
        return value
    if isinstance(value, str):
        text = value.strip()
        for parse in (_parse_iso, _parse_compact):
            parsed = parse(text)
            if parsed is not None:
                return parsed
    raise _wrong(spec, value, "a time (epoch milliseconds or ISO 8601)")


def _parse_iso(text: str) -> int | None:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return int(moment.timestamp() * 1000)


def _parse_compact(text: str) -> int | None:
    try:
        moment = datetime.strptime(text, "%Y%m%dT%H%M%S%z")
    except ValueError:
        return None
    return int(moment.timestamp() * 1000)


def _has_nul(value: Any) -> bool:
    """Whether a NUL character is in any string (or key) of a JSON value."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _check_json(spec: FieldSpec, value: Any) -> Any:
    if _has_nul(value):  # PostgreSQL's jsonb (and text) cannot hold a NUL character
        raise _wrong(spec, value, "JSON without NUL characters")
    text = json.dumps(value, separators=(",", ":"))
    if spec.max_length is not None and len(text) > spec.max_length:
        raise _Refused(
            "too_long", f"{spec.code} is {len(text)} bytes of JSON, max {spec.max_length}"
        )
    return value


def _check_binary(spec: FieldSpec, value: Any) -> str:
    if not isinstance(value, str):
        raise _wrong(spec, value, "base64 text")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _wrong(spec, value, "base64 text") from None
    if spec.max_length is not None and len(raw) > spec.max_length:
        raise _Refused("too_long", f"{spec.code} is {len(raw)} bytes, max {spec.max_length}")
    return value


def _check_enum(spec: FieldSpec, value: Any) -> Any:
    allowed = spec.enum or ()
    if isinstance(value, bool) or value not in allowed:
        shown = ", ".join(repr(v) for v in allowed)
        raise _Refused("not_in_enum", f"{spec.code}={value!r} is not one of {shown}")
    return value


_CHECKERS = {
    "int": _check_int,
    "bigint": _check_bigint,
    "decimal": _check_decimal,
    "string": _check_string,
    "bool": _check_bool,
    "datetime": _check_datetime,
    "json": _check_json,
    "binary": _check_binary,
    "enum": _check_enum,
}
