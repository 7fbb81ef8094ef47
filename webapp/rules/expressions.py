"""A small, safe expression language for rule conditions, sink filters and templates.

Source text is tokenized and parsed into a tree of the node classes below by our own
recursive-descent parser, and evaluated by walking that tree. Nothing reaches Python's `eval`,
`exec`, `compile` or `ast`, and there is no attribute access: a name is looked up in the
mapping it is evaluated with, `a.b` and `a["b"]` read keys of mappings and items of lists only,
and the only callables are the functions in `FUNCTIONS`. Sizes are bounded at parse time
(source length, nesting, the tree's height and number of nodes, numeric literals) and at
evaluation (string results, numbers: an arithmetic overflow raises `EvaluationError`) so that
a rule cannot exhaust memory or the stack; the rule engine marks a rule whose evaluation
raises as failed (docs/rules.md).

    temperature > 30 && humidity < 60
    device in ["dev-1", "dev-2"] || lower(params.mode) == "boost"
    "{{device}} temperature {{value}}"          (a template: `{{ expression }}` placeholders)
"""

from __future__ import annotations

import json
import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from django.utils.translation import gettext_lazy as _

from edge.clock import now_ms
from webapp.core.errors import DomainError

MAX_SOURCE = 4000
MAX_DEPTH = 40  # nesting: parentheses, brackets, arguments, `!` and unary `-`
MAX_HEIGHT = 64  # levels of the tree, chains of operators included (`a + b + c` is 3)
MAX_NODES = 500  # operators and operands of one expression
MAX_NUMBER = 64  # characters of a numeric literal
MAX_INT_BITS = 1024  # an integer result beyond a float's range is an overflow
MAX_STRING = 65_536


class ExpressionError(DomainError):
    code = "invalid_expression"
    default_detail = _("The expression is invalid.")


class EvaluationError(ExpressionError):
    """An expression that parsed but cannot be evaluated on these values (an overflow)."""

    code = "expression_failed"
    default_detail = _("The expression could not be evaluated.")


_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<num>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
  | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<op>==|!=|>=|<=|&&|\|\||[-+*/%<>!().,\[\]])
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
""", re.VERBOSE)

_KEYWORDS = {"and": "&&", "or": "||", "not": "!", "in": "in", "contains": "contains",
             "true": True, "false": False, "null": None, "none": None}


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # num, str, op, name, kw, end
    value: Any
    pos: int


def tokenize(source: str) -> list[Token]:
    if len(source) > MAX_SOURCE:
        raise ExpressionError(_("The expression is longer than {n} characters.").format(
            n=MAX_SOURCE))
    tokens: list[Token] = []
    pos = 0
    while pos < len(source):
        match = _TOKEN.match(source, pos)
        if match is None:
            raise ExpressionError(_("Unexpected character {char!r} at {pos}.").format(
                char=source[pos], pos=pos))
        kind = match.lastgroup or ""
        text = match.group()
        if kind == "num":
            tokens.append(Token("num", _number(text, pos), pos))
        elif kind == "str":
            tokens.append(Token("str", _unescape(text[1:-1]), pos))
        elif kind == "op":
            tokens.append(Token("op", text, pos))
        elif kind == "name":
            lowered = text.lower()
            if lowered in _KEYWORDS:
                keyword = _KEYWORDS[lowered]
                if isinstance(keyword, str):
                    tokens.append(Token("op", keyword, pos))
                else:
                    tokens.append(Token("const", keyword, pos))
            else:
                tokens.append(Token("name", text, pos))
        pos = match.end()
    tokens.append(Token("end", None, pos))
    return tokens


def _number(text: str, pos: int) -> int | float:
    if len(text) > MAX_NUMBER:
        raise ExpressionError(_("The number at {pos} is longer than {n} characters.").format(
            pos=pos, n=MAX_NUMBER))
    if not any(c in text for c in ".eE"):
        return int(text)
    value = float(text)
    if math.isinf(value):
        raise ExpressionError(_("The number at {pos} is too large.").format(pos=pos))
    return value


def _unescape(body: str) -> str:
    escapes = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'"}
    out: list[str] = []
    chars = iter(body)
    for char in chars:
        if char == "\\":
            nxt = next(chars, "")
            out.append(escapes.get(nxt, nxt))
        else:
            out.append(char)
    return "".join(out)


# --- the tree ----------------------------------------------------------------------------


class Node:
    __slots__ = ()

    def eval(self, env: Mapping[str, Any]) -> Any:
        raise NotImplementedError

    def children(self) -> tuple[Node, ...]:
        return ()

    def names(self) -> list[str]:
        """The names the expression reads, left to right (walked with a stack of its own,
        not by recursion)."""
        out: list[str] = []
        stack: list[Node] = [self]
        while stack:
            node = stack.pop()
            if isinstance(node, Name):
                out.append(node.name)
            else:
                stack.extend(reversed(node.children()))
        return out


class Const(Node):
    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def eval(self, env: Mapping[str, Any]) -> Any:
        return self.value


class Name(Node):
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def eval(self, env: Mapping[str, Any]) -> Any:
        return env.get(self.name)


class Member(Node):
    """`a.b` or `a[i]`: a key of a mapping or an item of a list, never an attribute."""

    __slots__ = ("key", "target")

    def __init__(self, target: Node, key: Node) -> None:
        self.target = target
        self.key = key

    def eval(self, env: Mapping[str, Any]) -> Any:
        container = self.target.eval(env)
        key = self.key.eval(env)
        if isinstance(container, Mapping):
            return container.get(key) if isinstance(key, str | int) else None
        if isinstance(container, list | tuple) and isinstance(key, int) and \
                not isinstance(key, bool) and -len(container) <= key < len(container):
            return container[key]
        return None

    def children(self) -> tuple[Node, ...]:
        return (self.target, self.key)


class ListNode(Node):
    __slots__ = ("items",)

    def __init__(self, items: list[Node]) -> None:
        self.items = items

    def eval(self, env: Mapping[str, Any]) -> Any:
        return [item.eval(env) for item in self.items]

    def children(self) -> tuple[Node, ...]:
        return tuple(self.items)


class Not(Node):
    __slots__ = ("operand",)

    def __init__(self, operand: Node) -> None:
        self.operand = operand

    def eval(self, env: Mapping[str, Any]) -> Any:
        return not truthy(self.operand.eval(env))

    def children(self) -> tuple[Node, ...]:
        return (self.operand,)


class Negate(Node):
    __slots__ = ("operand",)

    def __init__(self, operand: Node) -> None:
        self.operand = operand

    def eval(self, env: Mapping[str, Any]) -> Any:
        value = self.operand.eval(env)
        return -value if is_number(value) else None

    def children(self) -> tuple[Node, ...]:
        return (self.operand,)


class Logical(Node):
    __slots__ = ("left", "op", "right")

    def __init__(self, op: str, left: Node, right: Node) -> None:
        self.op = op
        self.left = left
        self.right = right

    def eval(self, env: Mapping[str, Any]) -> Any:
        left = truthy(self.left.eval(env))
        if self.op == "&&":
            return left and truthy(self.right.eval(env))
        return left or truthy(self.right.eval(env))

    def children(self) -> tuple[Node, ...]:
        return (self.left, self.right)


class Binary(Node):
    __slots__ = ("fn", "left", "op", "right")

    def __init__(self, op: str, left: Node, right: Node) -> None:
        self.op = op
        self.left = left
        self.right = right
        self.fn = BINARY[op]

    def eval(self, env: Mapping[str, Any]) -> Any:
        return self.fn(self.left.eval(env), self.right.eval(env))

    def children(self) -> tuple[Node, ...]:
        return (self.left, self.right)


class Call(Node):
    __slots__ = ("args", "fn", "name")

    def __init__(self, name: str, args: list[Node]) -> None:
        if name not in FUNCTIONS:
            raise ExpressionError(_("Unknown function {name}().").format(name=name))
        self.name = name
        self.fn = FUNCTIONS[name]
        self.args = args

    def eval(self, env: Mapping[str, Any]) -> Any:
        try:
            return self.fn(*[arg.eval(env) for arg in self.args])
        except (TypeError, ValueError, OverflowError, ArithmeticError):
            return None

    def children(self) -> tuple[Node, ...]:
        return tuple(self.args)


# --- operators and functions -------------------------------------------------------------


_NUMBER_TYPES = (int, float)


def is_number(value: Any) -> bool:
    kind = type(value)
    if kind is int or kind is float:
        return True
    return isinstance(value, _NUMBER_TYPES) and not isinstance(value, bool)


def truthy(value: Any) -> bool:
    return bool(value)


def _compare(op: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def compare(left: Any, right: Any) -> bool:
        if type(left) in _NUMBER_TYPES and type(right) in _NUMBER_TYPES:
            return op(left, right)
        if left is None or right is None:
            return False
        if is_number(left) != is_number(right):
            left, right = coerce_pair(left, right)
            if left is None:
                return False
        try:
            return op(left, right)
        except TypeError:
            return False

    return compare


def coerce_pair(left: Any, right: Any) -> tuple[Any, Any]:
    """A number and a numeric string compare as numbers (device values vs form input)."""
    try:
        if is_number(left) and isinstance(right, str):
            return left, float(right)
        if is_number(right) and isinstance(left, str):
            return float(left), right
    except ValueError:
        pass
    return None, None


def equals(left: Any, right: Any) -> bool:
    if is_number(left) and is_number(right):
        return bool(left == right)
    if is_number(left) != is_number(right) and (isinstance(left, str) or isinstance(right,
                                                                                    str)):
        a, b = coerce_pair(left, right)
        return a is not None and a == b
    return bool(left == right)


def member_of(item: Any, container: Any) -> bool:
    if isinstance(container, str):
        return isinstance(item, str) and item in container
    if isinstance(container, list | tuple):
        return any(equals(item, candidate) for candidate in container)
    if isinstance(container, Mapping):
        return isinstance(item, str) and item in container
    return False


_ARITHMETIC: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv,
    "%": operator.mod}
_INT_LIMIT = 1 << MAX_INT_BITS


def _shown(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 24 else f"{text[:20]}…({len(text)} digits)"


def overflow(op: str, left: Any, right: Any) -> EvaluationError:
    return EvaluationError(_("Arithmetic overflow: {left} {op} {right} is out of range.").format(
        left=_shown(left), op=op, right=_shown(right)))


def _finite(value: Any) -> bool:
    return isinstance(value, int) or math.isfinite(value)


def _arith(op: str) -> Callable[[Any, Any], Any]:
    compute = _ARITHMETIC[op]

    def arith(left: Any, right: Any) -> Any:
        if op == "+" and isinstance(left, str) and isinstance(right, str):
            if len(left) + len(right) > MAX_STRING:
                return None
            return left + right
        if not (is_number(left) and is_number(right)):
            return None
        try:
            result = compute(left, right)
        except ZeroDivisionError:
            return None  # x / 0 is null, as a missing value
        except ArithmeticError:  # int / int or int * float beyond a float's range
            raise overflow(op, left, right) from None
        # A float that overflowed is inf (never an exception); an int grows without end.
        if type(result) is float:
            if not math.isfinite(result) and _finite(left) and _finite(right):
                raise overflow(op, left, right)
        elif not -_INT_LIMIT < result < _INT_LIMIT:
            raise overflow(op, left, right)
        return result

    return arith


BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "==": equals,
    "!=": lambda a, b: not equals(a, b),
    ">": _compare(lambda a, b: a > b),
    ">=": _compare(lambda a, b: a >= b),
    "<": _compare(lambda a, b: a < b),
    "<=": _compare(lambda a, b: a <= b),
    "in": member_of,
    "contains": lambda a, b: member_of(b, a),
    "+": _arith("+"),
    "-": _arith("-"),
    "*": _arith("*"),
    "/": _arith("/"),
    "%": _arith("%"),
}


def _num(value: Any) -> float | int | None:
    if is_number(value):
        return value
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
        return int(number) if number.is_integer() and "." not in value else number
    return None


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
    text = str(value)
    return text[:MAX_STRING]


def _round(value: Any, digits: Any = 0) -> Any:
    if not is_number(value) or not isinstance(digits, int) or not 0 <= digits <= 12:
        return None
    return round(value, digits) if digits else round(value)


def _between(value: Any, low: Any, high: Any) -> bool:
    return _compare(lambda a, b: a >= b)(value, low) and _compare(lambda a, b: a <= b)(value,
                                                                                      high)


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "abs": lambda x: abs(x) if is_number(x) else None,
    "min": lambda *xs: min(x for x in xs if is_number(x)),
    "max": lambda *xs: max(x for x in xs if is_number(x)),
    "round": _round,
    "floor": lambda x: math.floor(x) if is_number(x) else None,
    "ceil": lambda x: math.ceil(x) if is_number(x) else None,
    "len": lambda x: len(x) if isinstance(x, str | list | tuple | Mapping) else None,
    "lower": lambda x: x.lower() if isinstance(x, str) else None,
    "upper": lambda x: x.upper() if isinstance(x, str) else None,
    "str": _text,
    "num": _num,
    "between": _between,
    "startswith": lambda s, p: isinstance(s, str) and isinstance(p, str) and s.startswith(p),
    "endswith": lambda s, p: isinstance(s, str) and isinstance(p, str) and s.endswith(p),
    "coalesce": lambda *xs: next((x for x in xs if x is not None), None),
    "json": lambda x: _text(x) if isinstance(x, dict | list) else json.dumps(x),
    "now": lambda: now_ms(),
    "exists": lambda x: x is not None,
}


# --- the parser --------------------------------------------------------------------------


class Parser:
    """Recursive descent; every node goes through `made`, which counts the nodes and keeps
    the height of the tree (so that left-deep chains like `1+1+…` or `a.b.b…` are bounded
    as much as nesting), and every recursion through `nest`."""

    def __init__(self, source: str) -> None:
        self.tokens = tokenize(source)
        self.i = 0
        self.depth = 0
        self.nodes = 0
        self.heights: dict[int, int] = {}  # id(node) → height (nodes live until parsed)

    @property
    def current(self) -> Token:
        return self.tokens[self.i]

    def advance(self) -> Token:
        token = self.tokens[self.i]
        self.i += 1
        return token

    def accept(self, *ops: str) -> str | None:
        token = self.current
        if token.kind == "op" and token.value in ops:
            self.i += 1
            return str(token.value)
        return None

    def expect(self, op: str) -> None:
        if self.accept(op) is None:
            raise ExpressionError(_("Expected {expected!r} at {pos}.").format(
                expected=op, pos=self.current.pos))

    def made(self, node: Node) -> Node:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise ExpressionError(_(
                "The expression has more than {n} operators and operands; split it into "
                "several conditions.").format(n=MAX_NODES))
        height = 1 + max((self.heights[id(c)] for c in node.children()), default=0)
        if height > MAX_HEIGHT:
            raise ExpressionError(_(
                "The expression is nested too deeply: more than {n} levels of operators at "
                "{pos}.").format(n=MAX_HEIGHT, pos=self.current.pos))
        self.heights[id(node)] = height
        return node

    def nest(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ExpressionError(_("The expression is nested too deeply."))

    def parse(self) -> Node:
        node = self.expression()
        if self.current.kind != "end":
            raise ExpressionError(_("Unexpected {text!r} at {pos}.").format(
                text=self.current.value, pos=self.current.pos))
        return node

    def expression(self) -> Node:
        self.nest()
        try:
            return self.logical_or()
        finally:
            self.depth -= 1

    def logical_or(self) -> Node:
        node = self.logical_and()
        while self.accept("||"):
            node = self.made(Logical("||", node, self.logical_and()))
        return node

    def logical_and(self) -> Node:
        node = self.logical_not()
        while self.accept("&&"):
            node = self.made(Logical("&&", node, self.logical_not()))
        return node

    def logical_not(self) -> Node:
        if self.accept("!"):
            self.nest()
            try:
                return self.made(Not(self.logical_not()))
            finally:
                self.depth -= 1
        return self.comparison()

    def comparison(self) -> Node:
        node = self.additive()
        op = self.accept("==", "!=", ">", ">=", "<", "<=", "in", "contains")
        if op:
            node = self.made(Binary(op, node, self.additive()))
        return node

    def additive(self) -> Node:
        node = self.term()
        while op := self.accept("+", "-"):
            node = self.made(Binary(op, node, self.term()))
        return node

    def term(self) -> Node:
        node = self.unary()
        while op := self.accept("*", "/", "%"):
            node = self.made(Binary(op, node, self.unary()))
        return node

    def unary(self) -> Node:
        if self.accept("-"):
            self.nest()
            try:
                return self.made(Negate(self.unary()))
            finally:
                self.depth -= 1
        return self.postfix()

    def postfix(self) -> Node:
        node = self.primary()
        while True:
            if self.accept("."):
                token = self.advance()
                if token.kind != "name":
                    raise ExpressionError(_("Expected a key after '.' at {pos}.").format(
                        pos=token.pos))
                node = self.made(Member(node, self.made(Const(token.value))))
            elif self.accept("["):
                key = self.expression()
                self.expect("]")
                node = self.made(Member(node, key))
            else:
                return node

    def primary(self) -> Node:
        token = self.advance()
        if token.kind in ("num", "str", "const"):
            return self.made(Const(token.value))
        if token.kind == "name":
            if self.accept("("):
                args: list[Node] = []
                if not self.accept(")"):
                    args.append(self.expression())
                    while self.accept(","):
                        args.append(self.expression())
                    self.expect(")")
                return self.made(Call(token.value, args))
            return self.made(Name(token.value))
        if token.kind == "op" and token.value == "(":
            node = self.expression()
            self.expect(")")
            return node
        if token.kind == "op" and token.value == "[":
            items: list[Node] = []
            if not self.accept("]"):
                items.append(self.expression())
                while self.accept(","):
                    items.append(self.expression())
                self.expect("]")
            return self.made(ListNode(items))
        raise ExpressionError(_("Unexpected {text!r} at {pos}.").format(
            text=token.value if token.kind != "end" else "end", pos=token.pos))


def parse(source: str, allowed_names: Iterable[str] | None = None) -> Node:
    """Parse an expression; with `allowed_names`, refuse any other top-level name."""
    if not isinstance(source, str):
        raise ExpressionError(_("An expression is a string."))
    node = Parser(source).parse()
    if allowed_names is not None:
        allowed = set(allowed_names)
        unknown = sorted(set(node.names()) - allowed)
        if unknown:
            raise ExpressionError(_("Unknown name {names}; use one of {allowed}.").format(
                names=", ".join(unknown), allowed=", ".join(sorted(allowed))))
    return node


def size(node: Node) -> int:
    """The number of nodes of a tree (walked with a stack of its own)."""
    count = 0
    stack = [node]
    while stack:
        count += 1
        stack.extend(stack.pop().children())
    return count


def evaluate(source: str, env: Mapping[str, Any]) -> Any:
    return parse(source).eval(env)


# --- templates ---------------------------------------------------------------------------

# The fields a template may use: the message, the rule, the alarm.
TEMPLATE_FIELDS = ("device", "product", "service", "property", "value", "values", "params",
                   "event", "ts", "time", "rule", "alarm", "severity", "message", "status",
                   "latest", "err", "command", "topic", "payload")

_PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)


class Template:
    """A text with `{{ expression }}` placeholders; the parts are parsed once."""

    __slots__ = ("parts", "source")

    def __init__(self, source: str, allowed_names: Iterable[str] | None = TEMPLATE_FIELDS
                 ) -> None:
        if len(source) > MAX_STRING:
            raise ExpressionError(_("The template is too long."))
        self.source = source
        self.parts: list[str | Node] = []
        pos = 0
        for match in _PLACEHOLDER.finditer(source):
            if match.start() > pos:
                self.parts.append(source[pos:match.start()])
            self.parts.append(parse(match.group(1).strip(), allowed_names))
            pos = match.end()
        if pos < len(source):
            self.parts.append(source[pos:])

    @property
    def single(self) -> Node | None:
        """The expression when the template is exactly one placeholder (keeps its type)."""
        if len(self.parts) == 1 and isinstance(self.parts[0], Node):
            return self.parts[0]
        return None

    def render(self, env: Mapping[str, Any]) -> str:
        out = []
        for part in self.parts:
            out.append(part if isinstance(part, str) else _text(part.eval(env)))
        return "".join(out)[:MAX_STRING]

    def values(self, env: Mapping[str, Any]) -> list[Any]:
        """The placeholders' values in order (bound parameters of an SQL template)."""
        return [part.eval(env) for part in self.parts if isinstance(part, Node)]


def render(source: str, env: Mapping[str, Any]) -> str:
    return Template(source).render(env)


def render_structure(value: Any, env: Mapping[str, Any]) -> Any:
    """Render every string of a JSON structure; a string that is one placeholder keeps the
    type of its value (`"{{value}}"` → 35.2, not "35.2")."""
    if isinstance(value, str):
        if "{{" not in value:
            return value
        template = Template(value)
        node = template.single
        return node.eval(env) if node is not None else template.render(env)
    if isinstance(value, list):
        return [render_structure(item, env) for item in value]
    if isinstance(value, dict):
        return {str(k): render_structure(v, env) for k, v in value.items()}
    return value


def check_structure(value: Any) -> None:
    """Parse every template of a JSON structure (raises ExpressionError on the first fault)."""
    if isinstance(value, str):
        if "{{" in value:
            Template(value)
    elif isinstance(value, list):
        for item in value:
            check_structure(item)
    elif isinstance(value, dict):
        for item in value.values():
            check_structure(item)
