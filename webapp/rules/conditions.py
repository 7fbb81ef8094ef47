"""Condition trees: compiled once from their JSON form, then evaluated per message.

    {"op": ">", "value": 30}                                   a leaf on the trigger's property
    {"property": "humidity", "op": "between", "value": [20, 60]}
    {"service": "power", "property": "voltage", "source": "latest", "op": "<", "value": 200}
    {"all": [leaf, {"any": [leaf, leaf]}]}   {"not": leaf}   {"expr": "temperature > hi"}

A leaf reads the message's value of its property when the message carries it, else the
device's latest value (`source`: `auto`, the default; `message` or `latest` to insist on one).
`holds()` is the hot path (short-circuit, no allocation beyond the lookups); `explain()` walks
the whole tree and says, for every node, what it compared and whether it held.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.utils.translation import gettext_lazy as _

from webapp.rules import expressions
from webapp.rules.expressions import BINARY, ExpressionError, equals, is_number, member_of

OPERATORS = ("==", "!=", ">", ">=", "<", "<=", "between", "not_between", "in", "not_in",
             "contains", "not_contains", "exists", "changed", "increased_by", "decreased_by")
STATEFUL_OPERATORS = ("changed", "increased_by", "decreased_by")
SOURCES = ("auto", "message", "latest")
MAX_NODES = 200
# Operators and operands of all the condition's expressions together, and items of the
# list an `in`/`not_in` leaf compares with: what one message costs a rule is bounded.
MAX_EXPRESSION_NODES = 1000
MAX_LIST = 1000


@dataclass(slots=True)
class Message:
    """What a rule is evaluated against: one report, event, response or status change."""

    kind: str
    device: str
    product: str
    service: str = ""
    ts: int = 0
    values: Mapping[str, Any] = field(default_factory=dict)
    event: str = ""
    command: str = ""
    status: str = ""
    err: Any = None
    latest: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    prev: Mapping[str, Any] = field(default_factory=dict)
    cached_env: dict[str, Any] | None = None

    def env(self) -> dict[str, Any]:
        """The names an expression sees (built once per message: expressions only read it)."""
        if self.cached_env is None:
            self.cached_env = self.template_env()
        return self.cached_env

    def template_env(self) -> dict[str, Any]:
        """The names an expression or a template sees, in a dict of the caller's own."""
        env: dict[str, Any] = dict(self.values)
        env.update(device=self.device, product=self.product, service=self.service,
                   ts=self.ts, values=dict(self.values), params=dict(self.values),
                   event=self.event, command=self.command, status=self.status, err=self.err,
                   latest={svc: dict(props) for svc, props in self.latest.items()})
        return env

    def as_json(self) -> dict[str, Any]:
        """The message itself as JSON (in firings, traces and payloads), without the
        latest and previous values it was evaluated with."""
        return {"kind": self.kind, "device": self.device, "product": self.product,
                "service": self.service, "ts": self.ts, "values": dict(self.values),
                "event": self.event, "command": self.command, "status": self.status,
                "err": self.err}


_MISSING = object()
_FAST_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq, "!=": operator.ne, ">": operator.gt, ">=": operator.ge,
    "<": operator.lt, "<=": operator.le}


def _lookup(values: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    if len(path) == 1:
        return values.get(path[0], _MISSING)
    current: Any = values
    for key in path:
        if not isinstance(current, Mapping) or key not in current:
            return _MISSING
        current = current[key]
    return current


def _between(actual: Any, bounds: Any) -> bool:
    low, high = bounds
    return bool(BINARY[">="](actual, low) and BINARY["<="](actual, high))


def _delta(actual: Any, previous: Any) -> float | None:
    if is_number(actual) and is_number(previous):
        try:
            return float(actual - previous)
        except OverflowError:  # integers wider than a float: no comparable change
            return None
    return None


class Condition:
    __slots__ = ()
    stateful_keys: tuple[str, ...] = ()
    latest_services: frozenset[str] = frozenset()

    def holds(self, msg: Message) -> bool:
        raise NotImplementedError

    def explain(self, msg: Message) -> dict[str, Any]:
        raise NotImplementedError


class Always(Condition):
    """No condition: the trigger alone fires the rule."""

    __slots__ = ()

    def holds(self, msg: Message) -> bool:
        return True

    def explain(self, msg: Message) -> dict[str, Any]:
        return {"held": True, "reason": str(_("no condition"))}


class Leaf(Condition):
    __slots__ = ("fast", "latest_services", "op", "path", "property", "service", "source",
                 "state_key", "stateful_keys", "test", "value")

    def __init__(self, service: str, prop: str, op: str, value: Any, source: str) -> None:
        self.service = service
        self.property = prop
        self.path = tuple(prop.split("."))
        self.op = op
        self.value = value
        self.source = source
        self.state_key = f"{service}.{prop}"
        self.stateful_keys = (self.state_key,) if op in STATEFUL_OPERATORS else ()
        self.latest_services = frozenset() if source == "message" else frozenset([service])
        self.test = self._tester()
        # A plain property compared with a number (`temperature > 30`): read and compared
        # directly when the message carries a number for it; anything else takes the
        # general path (latest values, strings, coercion).
        self.fast = _FAST_COMPARISONS.get(op) if (
            len(self.path) == 1 and source != "latest" and is_number(value)) else None

    def _tester(self) -> Callable[[Any, Any], bool]:
        op, expected = self.op, self.value
        if op in ("==", "!=", ">", ">=", "<", "<="):
            compare = BINARY[op]
            return lambda actual, prev: bool(compare(actual, expected))
        if op == "between":
            return lambda actual, prev: _between(actual, expected)
        if op == "not_between":
            return lambda actual, prev: is_number(actual) and not _between(actual, expected)
        if op == "in":
            return lambda actual, prev: member_of(actual, expected)
        if op == "not_in":
            return lambda actual, prev: not member_of(actual, expected)
        if op == "contains":
            return lambda actual, prev: member_of(expected, actual)
        if op == "not_contains":
            return lambda actual, prev: not member_of(expected, actual)
        if op == "exists":
            return lambda actual, prev: True
        if op == "changed":
            return lambda actual, prev: prev is not _MISSING and not equals(actual, prev)
        if op == "increased_by":
            def increased(actual: Any, prev: Any) -> bool:
                delta = None if prev is _MISSING else _delta(actual, prev)
                return delta is not None and delta >= expected

            return increased

        def decreased(actual: Any, prev: Any) -> bool:
            delta = None if prev is _MISSING else _delta(actual, prev)
            return delta is not None and -delta >= expected

        return decreased

    def actual(self, msg: Message) -> tuple[Any, str]:
        # A leaf without a service (event, response and status triggers name none) reads
        # the message's own service.
        service = self.service or msg.service
        if self.source != "latest" and service == msg.service:
            value = _lookup(msg.values, self.path)
            if value is not _MISSING:
                return value, "message"
        if self.source != "message":
            current = msg.latest.get(service)
            if current is not None:
                value = _lookup(current, self.path)
                if value is not _MISSING:
                    return value, "latest"
        return _MISSING, ""

    def holds(self, msg: Message) -> bool:
        fast = self.fast
        if fast is not None and (not self.service or self.service == msg.service):
            value = msg.values.get(self.property)
            if type(value) is float or type(value) is int:
                return fast(value, self.value)
        actual, _source = self.actual(msg)
        if actual is _MISSING:
            return False
        prev = msg.prev.get(self.state_key, _MISSING) if self.stateful_keys else _MISSING
        return self.test(actual, prev)

    def explain(self, msg: Message) -> dict[str, Any]:
        actual, source = self.actual(msg)
        out: dict[str, Any] = {"service": self.service, "property": self.property,
                               "op": self.op, "expected": self.value}
        if actual is _MISSING:
            out.update(held=False, actual=None, source=None, reason=str(_(
                "{service}.{property} is neither in the message nor in the device's latest "
                "values").format(service=self.service, property=self.property)))
            return out
        prev = msg.prev.get(self.state_key, _MISSING) if self.stateful_keys else _MISSING
        held = self.test(actual, prev)
        out.update(held=held, actual=actual, source=source)
        if self.stateful_keys:
            out["previous"] = None if prev is _MISSING else prev
        if self.stateful_keys and prev is _MISSING:
            reason = str(_("no previous value to compare with"))
        else:
            shown = self.value if self.op not in STATEFUL_OPERATORS else (
                f"{prev}" if self.op == "changed" else f"{prev} ± {self.value}")
            reason = str(_("{actual} {op} {expected}: {verdict}")).format(
                actual=actual, op=self.op, expected=shown,
                verdict=_("holds") if held else _("does not hold"))
        out["reason"] = reason
        return out


class Expr(Condition):
    """An expression of the expression language. Its evaluation may raise (an arithmetic
    overflow: `expressions.EvaluationError`): the rule engine then marks the rule failed."""

    __slots__ = ("latest_services", "node", "size", "source", "stateful_keys")

    def __init__(self, source: str) -> None:
        self.source = source
        self.node = expressions.parse(source)
        self.size = expressions.size(self.node)
        self.stateful_keys = ()
        self.latest_services = frozenset(["*"])

    def holds(self, msg: Message) -> bool:
        return bool(self.node.eval(msg.env()))

    def explain(self, msg: Message) -> dict[str, Any]:
        env = msg.env()
        names = sorted(set(self.node.names()))
        inputs = {name: env.get(name) for name in names}
        try:
            held = bool(self.node.eval(env))
        except ExpressionError as exc:
            return {"expr": self.source, "held": False, "inputs": inputs, "error": str(exc),
                    "reason": str(_("the expression cannot be evaluated: {error}").format(
                        error=exc))}
        return {"expr": self.source, "held": held, "inputs": inputs,
                "reason": str(_("the expression is {verdict}").format(
                    verdict=_("true") if held else _("false")))}


class Group(Condition):
    __slots__ = ("children", "latest_services", "mode", "stateful_keys")

    def __init__(self, mode: str, children: list[Condition]) -> None:
        self.mode = mode  # all | any
        self.children = children
        self.stateful_keys = tuple(k for c in children for k in c.stateful_keys)
        self.latest_services = frozenset().union(*(c.latest_services for c in children))

    def holds(self, msg: Message) -> bool:
        # Plain loops: all()/any() over a generator cost a frame per call on the hot path.
        if self.mode == "all":
            for child in self.children:  # noqa: SIM110
                if not child.holds(msg):
                    return False
            return True
        for child in self.children:  # noqa: SIM110
            if child.holds(msg):
                return True
        return False

    def explain(self, msg: Message) -> dict[str, Any]:
        parts = [child.explain(msg) for child in self.children]
        held = all(p["held"] for p in parts) if self.mode == "all" else any(
            p["held"] for p in parts)
        return {self.mode: parts, "held": held}


class Negation(Condition):
    __slots__ = ("child", "latest_services", "stateful_keys")

    def __init__(self, child: Condition) -> None:
        self.child = child
        self.stateful_keys = child.stateful_keys
        self.latest_services = child.latest_services

    def holds(self, msg: Message) -> bool:
        return not self.child.holds(msg)

    def explain(self, msg: Message) -> dict[str, Any]:
        inner = self.child.explain(msg)
        return {"not": inner, "held": not inner["held"]}


def _check_value(op: str, value: Any) -> Any:
    if op in ("between", "not_between"):
        if not (isinstance(value, list) and len(value) == 2):
            raise ExpressionError(_("'{op}' takes a list of two bounds, e.g. [10, 20].").format(
                op=op))
    elif op in ("in", "not_in"):
        if not isinstance(value, list):
            raise ExpressionError(_("'{op}' takes a list of values.").format(op=op))
        if len(value) > MAX_LIST:
            raise ExpressionError(_("'{op}' takes at most {n} values.").format(
                op=op, n=MAX_LIST))
    elif op in ("increased_by", "decreased_by"):
        if not is_number(value) or value < 0:
            raise ExpressionError(_("'{op}' takes a non-negative number.").format(op=op))
    elif op in ("changed", "exists"):
        return None
    elif isinstance(value, dict | list) and op not in ("==", "!=", "contains", "not_contains"):
        raise ExpressionError(_("'{op}' compares with a number or a string.").format(op=op))
    return value


def compile_condition(spec: Any, *, service: str = "", prop: str = "",
                      prop_in_message: bool = False) -> Condition:
    """Compile the JSON form; `service` and `prop` are the trigger's defaults for leaves.
    With `prop_in_message` (a property trigger only runs on messages carrying its property),
    a leaf on that property never needs the device's latest values."""
    count = [0, 0]  # condition nodes, expression nodes

    def build(node: Any, depth: int) -> Condition:
        count[0] += 1
        if count[0] > MAX_NODES or depth > expressions.MAX_DEPTH:
            raise ExpressionError(_("The condition is too large."))
        if not isinstance(node, dict):
            raise ExpressionError(_("A condition is an object."))
        if "all" in node or "any" in node:
            mode = "all" if "all" in node else "any"
            children = node[mode]
            if not isinstance(children, list) or not children:
                raise ExpressionError(_("'{mode}' takes a non-empty list.").format(mode=mode))
            return Group(mode, [build(child, depth + 1) for child in children])
        if "not" in node:
            return Negation(build(node["not"], depth + 1))
        if "expr" in node:
            expr = Expr(node["expr"])
            count[1] += expr.size
            if count[1] > MAX_EXPRESSION_NODES:
                raise ExpressionError(_(
                    "The condition's expressions have more than {n} operators and operands "
                    "in all.").format(n=MAX_EXPRESSION_NODES))
            return expr
        op = node.get("op")
        if op not in OPERATORS:
            raise ExpressionError(_("Unknown operator {op!r}; use one of {ops}.").format(
                op=op, ops=", ".join(OPERATORS)))
        leaf_service = node.get("service") or service
        leaf_prop = node.get("property") or prop
        if not leaf_prop or not isinstance(leaf_prop, str):
            raise ExpressionError(_("A condition names its property (or the trigger does)."))
        source = node.get("source", "auto")
        if source not in SOURCES:
            raise ExpressionError(_("'source' is one of {sources}.").format(
                sources=", ".join(SOURCES)))
        leaf = Leaf(str(leaf_service), leaf_prop, op, _check_value(op, node.get("value")),
                    source)
        if prop_in_message and leaf_service == service and leaf_prop == prop:
            leaf.latest_services = frozenset()
        return leaf

    if spec in (None, {}, []):
        return Always()
    return build(spec, 0)
