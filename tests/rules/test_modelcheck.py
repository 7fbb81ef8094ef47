"""A rule is checked against its product's thing model when it is saved (API, admin and
console alike): unknown services, properties, events and commands, operators that do not fit
a property's type, values outside the type, command parameters and shadow values."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.conftest import THERMO


@pytest.fixture
def product(db):
    from webapp.products import actions

    payload = copy.deepcopy(THERMO)
    payload["services"][0]["properties"] += [
        {"code": "mode", "datatype": "enum", "enum_values": ["eco", "boost"], "access": "RW"},
        {"code": "on", "datatype": "bool", "access": "RW"},
        {"code": "label", "datatype": "string", "max_length": 8, "access": "RW"},
        {"code": "extra", "datatype": "json"},
        {"code": "big", "datatype": "bigint"},
    ]
    return actions.create_product(acting_user=None, data=payload)


TRIGGER = {"type": "property", "product": "thermo", "service": "env",
           "property": "temperature"}


def problems(condition: Any = None, actions: Any = None, trigger: Any = None) -> list[Any]:
    from webapp.rules.modelcheck import model_problems

    return [(p.path, p.message) for p in model_problems(trigger or TRIGGER, condition,
                                                        actions or [])]


@pytest.mark.parametrize("leaf", [
    {"op": ">", "value": 30}, {"property": "humidity", "op": "between", "value": [10, 20]},
    {"property": "mode", "op": "==", "value": "eco"}, {"property": "mode", "op": "in",
                                                        "value": ["eco", "boost"]},
    {"property": "on", "op": "==", "value": True}, {"property": "label", "op": "contains",
                                                     "value": "ab"},
    {"property": "extra.a.b", "op": "==", "value": 1}, {"property": "big", "op": ">",
                                                        "value": 2**40},
    {"property": "temperature", "op": "increased_by", "value": 5},
    {"property": "mode", "op": "changed"}, {"expr": "temperature > 30 && nosuch"},
    {"property": "temperature", "op": "==", "value": "{{latest.env.target}}"},
])
def test_fitting_leaves_pass(product, leaf):
    assert problems({"all": [{"service": "env", **leaf}]}) == []


@pytest.mark.parametrize(("leaf", "words"), [
    ({"property": "pressure", "op": ">", "value": 1}, "has no property 'pressure'"),
    ({"service": "power", "property": "volts", "op": ">", "value": 1},
     "has no service 'power'"),
    ({"property": "mode", "op": "==", "value": 1}, "1 is not a value of mode"),
    ({"property": "mode", "op": "in", "value": ["eco", "turbo"]}, "'turbo' is not a value"),
    ({"property": "mode", "op": ">", "value": "eco"}, "does not apply to mode"),
    ({"property": "on", "op": "==", "value": 1}, "true or false"),
    ({"property": "temperature", "op": "==", "value": True}, "is a number"),
    ({"property": "temperature", "op": "<", "value": "30"}, "is a number"),
    ({"property": "humidity", "op": ">", "value": 2**40}, "outside the range"),
    ({"property": "big", "op": ">", "value": 2**70}, "outside the range"),
    ({"property": "label", "op": "==", "value": "x" * 9}, "at most 8 characters"),
    ({"property": "label", "op": ">", "value": "a"}, "does not apply"),
    ({"property": "temperature.x", "op": "==", "value": 1}, "not a JSON property"),
    ({"property": "temperature", "op": "between", "value": [0, float("inf")]},
     "not a finite number"),
])
def test_misfits_are_refused_with_their_place(product, leaf, words):
    found = problems({"any": [{"op": "exists"}, {"not": {"service": "env", **leaf}}]})
    assert len(found) == 1 and found[0][0] == "condition.any.1.not", found
    assert words in found[0][1]


def test_trigger_event_command_and_status_fields(product):
    assert problems(trigger={**TRIGGER, "property": "pressure"}) == [
        ("trigger", "The service 'env' has no property 'pressure'.")]
    assert problems(trigger={**TRIGGER, "service": "x"})[0][0] == "trigger"
    event = {"type": "event", "product": "thermo", "event": "overheat"}
    assert problems({"property": "level", "op": ">=", "value": 2}, trigger=event) == []
    assert problems({"property": "level", "op": ">=", "value": "x"}, trigger=event)
    assert problems(trigger={**event, "event": "boom"})[0][1] == \
        "The product has no event 'boom'."
    assert "not a field" in problems({"property": "nope", "op": "exists"}, trigger=event)[0][1]
    response = {"type": "cmdrsp", "product": "thermo", "command": "set_interval"}
    assert problems({"property": "err", "op": "!=", "value": 0}, trigger=response) == []
    assert problems({"property": "result", "op": "==", "value": "ok"}, trigger=response) == []
    status = {"type": "status", "product": "thermo", "status": "offline"}
    assert problems({"property": "reason", "op": "contains", "value": "kick"},
                    trigger=status) == []
    assert problems({"property": "status", "op": "==", "value": "gone"}, trigger=status)


def test_command_and_shadow_actions(product):
    good = [{"type": "command", "service": "env", "command": "set_interval",
             "params": {"seconds": 5}},
            {"type": "command", "service": "env", "command": "set_interval",
             "params": {"seconds": "{{value}}"}},
            {"type": "shadow", "service": "env", "values": {"mode": "eco"}},
            {"type": "command", "device": "other", "service": "x", "command": "y"}]
    assert problems(actions=good) == []
    bad = [{"type": "command", "service": "env", "command": "reboot"},
           {"type": "command", "service": "env", "command": "set_interval",
            "params": {"seconds": 0}},
           {"type": "command", "service": "env", "command": "set_interval",
            "params": {"minutes": 1}},
           {"type": "shadow", "service": "env", "values": {"temperature": 20}},
           {"type": "shadow", "service": "env", "values": {"mode": "turbo"}}]
    found = problems(actions=bad)
    assert [path for path, _m in found] == [f"actions.{i}" for i in range(5)], found
    assert "no command 'reboot'" in found[0][1] and "below min" in found[1][1]
    assert "no parameter 'minutes'" in found[2][1] and "read-only" in found[3][1]


def test_saving_checks_the_model_and_disabling_does_not(product):
    from webapp.rules import actions
    from webapp.rules.actions import RuleInvalid

    data = {"name": "hot", "trigger": TRIGGER, "condition": {"op": ">", "value": "hot"},
            "actions": []}
    with pytest.raises(RuleInvalid) as refused:
        actions.create_rule(acting_user=None, data=data)
    assert refused.value.code == "model_mismatch"
    assert refused.value.extra["problems"][0]["path"] == "condition"
    rule = actions.create_rule(acting_user=None, data={**data, "condition": {
        "property": "humidity", "op": ">", "value": 50}})
    product.services.get().properties.filter(code="humidity").delete()
    actions.set_rule_enabled(rule=rule, enabled=False)  # unchanged rule: not checked again
    with pytest.raises(RuleInvalid):
        actions.update_rule(rule=rule, data={"condition": {"property": "humidity", "op": "<",
                                                           "value": 5}})


def test_api_answers_the_problems(product, admin_client):
    answer = admin_client.post("/api/v1/rules/", {
        "name": "hot", "trigger": TRIGGER,
        "condition": {"all": [{"property": "mode", "op": "==", "value": 3}]}},
        content_type="application/json")
    assert answer.status_code == 400
    assert answer.json()["code"] == "model_mismatch"
    assert answer.json()["problems"][0]["path"] == "condition.all.0"


def test_oversized_and_malformed_actions_are_refused(product):
    from webapp.rules import actions
    from webapp.rules.actions import RuleInvalid

    base = {"name": "hot", "trigger": TRIGGER, "condition": {}}
    for bad in ("nope", ["x"], [{"type": "alarm", "message": "m" * 70_000}]):
        with pytest.raises(RuleInvalid):
            actions.create_rule(acting_user=None, data={**base, "actions": bad})
