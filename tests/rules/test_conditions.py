"""Condition trees: operators, groups, message vs latest values, and explanations."""

import pytest

from webapp.rules.conditions import Message, compile_condition
from webapp.rules.expressions import ExpressionError


def message(values, latest=None, prev=None, service="env"):
    return Message(kind="property", device="d", product="p", service=service, ts=1,
                   values=values, latest=latest or {}, prev=prev or {})


@pytest.mark.parametrize(("op", "value", "actual", "held"), [
    ("==", 30, 30.0, True), ("!=", 30, 31, True), (">", 30, 30, False), (">=", 30, 30, True),
    ("<", 30, 29.9, True), ("<=", 30, 31, False), ("between", [20, 30], 25, True),
    ("between", [20, 30], 31, False), ("not_between", [20, 30], 31, True),
    ("in", ["idle", "run"], "run", True), ("not_in", [1, 2], 3, True),
    ("contains", "err", "disk error", True), ("contains", 3, [1, 2], False),
    (">", 30, "hot", False), ("exists", None, 0, True),
])
def test_operators(op, value, actual, held):
    """Each operator on the trigger's property; mismatched types never hold."""
    cond = compile_condition({"op": op, "value": value}, service="env", prop="x")
    assert cond.holds(message({"x": actual})) is held


def test_stateful_operators_compare_with_the_previous_value():
    """changed / increased_by / decreased_by need a previous value and compare with it."""
    changed = compile_condition({"op": "changed"}, service="env", prop="t")
    assert not changed.holds(message({"t": 20}))
    assert changed.holds(message({"t": 21}, prev={"env.t": 20}))
    assert not changed.holds(message({"t": 20}, prev={"env.t": 20}))
    up = compile_condition({"op": "increased_by", "value": 5}, service="env", prop="t")
    assert up.holds(message({"t": 26}, prev={"env.t": 20}))
    assert not up.holds(message({"t": 24}, prev={"env.t": 20}))
    down = compile_condition({"op": "decreased_by", "value": 5}, service="env", prop="t")
    assert down.holds(message({"t": 14}, prev={"env.t": 20}))


def test_groups_and_latest_values():
    """AND/OR/NOT groups; a property absent from the message is read from latest values."""
    cond = compile_condition({"all": [
        {"op": ">", "value": 30},
        {"any": [{"property": "humidity", "op": "<", "value": 20},
                 {"service": "power", "property": "volts", "op": "<", "value": 200}]},
        {"not": {"property": "mode", "op": "==", "value": "test"}},
    ]}, service="env", prop="temperature")
    latest = {"env": {"humidity": 50, "mode": "run"}, "power": {"volts": 190}}
    assert cond.holds(message({"temperature": 31}, latest=latest))
    assert not cond.holds(message({"temperature": 31}, latest={**latest,
                                                               "power": {"volts": 220}}))
    message_only = compile_condition({"property": "humidity", "op": "<", "value": 60,
                                      "source": "message"}, service="env")
    assert not message_only.holds(message({"temperature": 1}, latest=latest))
    assert cond.latest_services == frozenset({"env", "power"})


def test_explain_says_what_held_and_why():
    """explain() shows every leaf's actual value, source and verdict."""
    cond = compile_condition({"any": [{"op": ">", "value": 30},
                                      {"property": "humidity", "op": "<", "value": 20}]},
                             service="env", prop="temperature")
    out = cond.explain(message({"temperature": 25}, latest={"env": {"humidity": 10}}))
    assert out["held"] is True
    first, second = out["any"]
    assert (first["actual"], first["source"], first["held"]) == (25, "message", False)
    assert "does not hold" in first["reason"]
    assert (second["actual"], second["source"], second["held"]) == (10, "latest", True)
    missing = compile_condition({"op": ">", "value": 1}, service="env",
                                prop="nope").explain(message({}))
    assert missing["held"] is False and "neither in the message" in missing["reason"]


def test_expression_leaf():
    """An `expr` leaf evaluates the safe expression over the message and latest values."""
    cond = compile_condition({"expr": "temperature - latest.env.setpoint > 5"}, service="env")
    assert cond.holds(message({"temperature": 30}, latest={"env": {"setpoint": 20}}))
    assert cond.explain(message({"temperature": 22}, latest={"env": {"setpoint": 20}}))[
        "held"] is False


@pytest.mark.parametrize("spec", [
    {"op": "~", "value": 1}, {"op": "between", "value": 3}, {"op": "in", "value": "x"},
    {"all": []}, {"op": ">", "value": 1, "source": "elsewhere"}, "temperature > 3",
    {"op": "increased_by", "value": -1},
])
def test_bad_conditions_are_refused(spec):
    """Malformed trees are refused when the rule is saved, with a reason."""
    with pytest.raises(ExpressionError):
        compile_condition(spec, service="env", prop="t")


from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_VALUES = st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=True), st.booleans(),
                    st.none(), st.text(max_size=4), st.sampled_from(["30", "3e1", "x"]))


@given(st.sampled_from(["==", "!=", ">", ">=", "<", "<="]),
       st.one_of(st.integers(-100, 100), st.floats(-1e3, 1e3)), _VALUES,
       st.sampled_from(["env", "other"]))
def test_the_numeric_fast_path_decides_as_the_general_one(op, expected, actual, service):
    """`holds` short-cuts a number compared with a number; `explain` always takes the general
    path: they agree for every value a device may send (strings, booleans, NaN, None)."""
    from webapp.rules.conditions import Message, compile_condition

    leaf = compile_condition({"op": op, "value": expected}, service="env", prop="temperature")
    msg = Message(kind="property", device="d", product="p", service=service,
                  values={"temperature": actual}, latest={"env": {"temperature": 1}})
    assert leaf.holds(msg) == leaf.explain(msg)["held"]
