"""The rule engine's pure core, without a database or Redis: `decide` (debounce, cool-down,
fire on change, auto-clear), the device state it keeps between messages, and a run of
messages through an `Evaluation` over an index built in memory."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from webapp.rules.compiler import CompiledRule, compile_rule
from webapp.rules.conditions import Message
from webapp.rules.engine.decide import Outcome, decide
from webapp.rules.engine.evaluation import Evaluation, Item
from webapp.rules.engine.index import Bucket, RuleIndex
from webapp.rules.engine.state import (
    PREVIOUS,
    acts_on_quiet,
    in_progress,
    remember_previous,
    step,
)

T0 = 1_700_000_000_000  # ms; later than any cool-down, as real timestamps are
ALARM = [{"type": "alarm", "severity": "major"}]
TRIGGER = {"type": "property", "product": "p", "service": "env", "property": "t"}


def rule(actions: list[dict[str, Any]] | None = None, condition: Any = None,
         **fields: Any) -> CompiledRule:
    """A rule on `t > 30` of product p, service env (compiled as the index compiles it)."""
    return compile_rule(id=fields.pop("id", 1), name="r", trigger=TRIGGER,
                        condition=condition or {"op": ">", "value": 30},
                        actions=actions or [], resolve_groups=False, **fields)


def msg(ts: int = T0, **values: Any) -> Message:
    return Message(kind="property", device="d", product="p", service="env", ts=ts,
                   values=values or {"t": 35})


PLAIN = rule()
WITH_ALARM = rule(ALARM)
NO_AUTO_CLEAR = rule(ALARM, auto_clear=False)
TWO_OF_THREE = rule(debounce={"count": 2, "window": 3})
FOR_TEN_SECONDS = rule(debounce={"duration": 10})
ON_CHANGE = rule(fire_mode="change")
COOL_A_MINUTE = rule(cooldown=60)


@pytest.mark.parametrize(("compiled", "before", "held", "ts", "result", "after"), [
    # A rule without state fires on every message that holds, and keeps nothing.
    (PLAIN, {}, True, T0, "fired", {}),
    (PLAIN, {}, False, T0, "not_held", {}),
    # An alarm rule remembers the firing and the open alarm; auto-clear closes it.
    (WITH_ALARM, {}, True, T0, "fired", {"f": T0, "on": 1, "a": 1}),
    (WITH_ALARM, {"f": T0, "on": 1, "a": 1}, False, T0 + 1, "cleared", {"f": T0}),
    (NO_AUTO_CLEAR, {"f": T0, "on": 1, "a": 1}, False, T0 + 1, "not_held", {"f": T0}),
    # Debounce 2 of the last 3: the window moves with every message.
    (TWO_OF_THREE, {}, True, T0, "suppressed", {"h": [1]}),
    (TWO_OF_THREE, {"h": [1]}, True, T0, "fired", {"f": T0, "on": 1}),
    (TWO_OF_THREE, {"h": [1, 0]}, True, T0, "fired", {"f": T0, "on": 1}),
    (TWO_OF_THREE, {"h": [1]}, False, T0, "not_held", {"h": [1, 0]}),
    (TWO_OF_THREE, {"h": [1, 0, 0]}, False, T0, "not_held", {}),
    (TWO_OF_THREE, {"h": [1, 0, 0]}, True, T0, "suppressed", {"h": [0, 0, 1]}),
    # Debounce by duration: held since the first message that held.
    (FOR_TEN_SECONDS, {}, True, T0, "suppressed", {"s": T0}),
    (FOR_TEN_SECONDS, {"s": T0}, True, T0 + 9_999, "suppressed", {"s": T0}),
    (FOR_TEN_SECONDS, {"s": T0}, True, T0 + 10_000, "fired",
     {"s": T0, "f": T0 + 10_000, "on": 1}),
    (FOR_TEN_SECONDS, {"s": T0}, False, T0 + 5_000, "not_held", {}),
    # Fire on change: once per episode; a message that does not hold ends the episode.
    (ON_CHANGE, {}, True, T0, "fired", {"f": T0, "on": 1}),
    (ON_CHANGE, {"f": T0, "on": 1}, True, T0 + 1, "suppressed", {"f": T0, "on": 1}),
    (ON_CHANGE, {"f": T0, "on": 1}, False, T0 + 2, "not_held", {"f": T0}),
    (ON_CHANGE, {"f": T0}, True, T0 + 3, "fired", {"f": T0 + 3, "on": 1}),
    # Cool-down: no second firing within a minute of the last one.
    (COOL_A_MINUTE, {"f": T0, "on": 1}, True, T0 + 59_999, "suppressed", {"f": T0, "on": 1}),
    (COOL_A_MINUTE, {"f": T0, "on": 1}, True, T0 + 60_000, "fired",
     {"f": T0 + 60_000, "on": 1}),
])
def test_decide(compiled, before, held, ts, result, after):
    st = dict(before)
    outcome = Outcome()
    assert decide(compiled, msg(ts), st, held, outcome) == result
    assert st == after
    kinds = [f["kind"] for f in outcome.firings]
    assert kinds == ([result] if result in ("fired", "cleared") else [])
    stats = outcome.stats[compiled.id]
    assert stats.get(result, 0) == (1 if result != "not_held" else 0)


def test_a_firing_carries_the_message_and_what_it_was_evaluated_with():
    outcome = Outcome()
    message = dataclasses.replace(msg(), latest={"env": {"t": 34}}, prev={"env.t": 33})
    decide(PLAIN, message, {}, True, outcome)
    assert outcome.firings == [{
        "rule": 1, "kind": "fired", "message": message.as_json(),
        "latest": {"env": {"t": 34}}, "prev": {"env.t": 33}}]


@pytest.mark.parametrize(("before", "held", "changed", "after"), [
    ({}, True, True, {"1": {"f": T0, "on": 1, "a": 1}}),
    ({}, False, False, {}),
    # An alarm cleared leaves the last firing time (what a cool-down compares with).
    ({"1": {"f": T0, "on": 1, "a": 1}}, False, True, {"1": {"f": T0}}),
    # Another rule's state and the previous values are left alone.
    ({"2": {"h": [1]}, PREVIOUS: {"env.t": 1}}, False, False,
     {"2": {"h": [1]}, PREVIOUS: {"env.t": 1}}),
])
def test_step_keeps_a_rules_entry_only_while_it_holds_something(before, held, changed,
                                                               after):
    state = {name: dict(st) for name, st in before.items()}
    assert step(WITH_ALARM, msg(), state, held, Outcome()) is changed
    assert state == after


def test_step_drops_an_entry_left_empty():
    state: dict[str, Any] = {"1": {"h": [1, 0, 0]}}
    assert step(TWO_OF_THREE, msg(), state, False, Outcome())
    assert state == {}


@pytest.mark.parametrize(("st", "acts"), [
    ({}, False),
    ({"f": T0}, False),  # a cool-down waits for a message that holds
    ({"a": 1}, True),
    ({"h": [1]}, True),
    ({"s": T0}, True),
    ({"on": 1}, True),
])
def test_what_a_quiet_message_acts_on(st, acts):
    assert acts_on_quiet(st) is acts
    bucket = Bucket([WITH_ALARM])
    assert in_progress({"1": st}, bucket) is acts
    assert not in_progress({"9": st}, bucket)  # state of a rule of another bucket


@pytest.mark.parametrize(("previous", "values", "latest", "changed", "after"), [
    (None, {"t": 20}, {}, True, {"env.t": 20}),
    ({"env.t": 20}, {"t": 20}, {}, False, {"env.t": 20}),
    ({"env.t": 20}, {"t": 21}, {}, True, {"env.t": 21}),
    # Not in the message: the latest value stands for it.
    ({"env.t": 20}, {"h": 1}, {"env": {"t": 22}}, True, {"env.t": 22}),
    # Nowhere to be found: the previous value is kept.
    ({"env.t": 20}, {"h": 1}, {}, False, {"env.t": 20}),
])
def test_remember_previous(previous, values, latest, changed, after):
    state: dict[str, Any] = {} if previous is None else {PREVIOUS: dict(previous)}
    message = dataclasses.replace(msg(**values), latest=latest)
    assert remember_previous(state, ["env.t"], message) is changed
    assert state[PREVIOUS] == after


def run(rules: list[CompiledRule], temperatures: list[Any]) -> tuple[Evaluation, list[str]]:
    """Messages of one device, in time order, through an index built in memory."""
    index = RuleIndex()
    index.build(rules)
    bucket = index.products["p"].property["env"]
    evaluation = Evaluation(guards={}, stateful=set())
    for i, value in enumerate(temperatures):
        evaluation.decide_items([Item(msg(T0 + i * 1000, t=value), bucket, bucket.guard)])
    return evaluation, [f"{f['rule']}:{f['kind']}" for f in evaluation.outcome.firings]


@pytest.mark.parametrize(("rules", "temperatures", "firings"), [
    ([PLAIN], [35, 20, 36], ["1:fired", "1:fired"]),
    ([WITH_ALARM], [35, 36, 20, 37], ["1:fired", "1:fired", "1:cleared", "1:fired"]),
    ([TWO_OF_THREE], [35, 20, 36, 37], ["1:fired"]),
    ([ON_CHANGE], [35, 36, 20, 31], ["1:fired", "1:fired"]),
    # Two thresholds, found by bisection: each fires on its own values.
    ([rule(id=1), rule(id=2, condition={"op": "<", "value": 0})], [35, -1, 10],
     ["1:fired", "2:fired"]),
    # A value that is no number holds for no threshold, and fails no rule.
    ([WITH_ALARM], [35, "hot", 36], ["1:fired", "1:cleared", "1:fired"]),
])
def test_an_evaluation_decides_messages_in_order(rules, temperatures, firings):
    evaluation, fired = run(rules, temperatures)
    assert fired == firings
    assert evaluation.outcome.failures == {}


def test_an_evaluation_marks_the_devices_whose_state_changed():
    evaluation, _fired = run([WITH_ALARM], [35])
    assert evaluation.dirty == {"d"} and evaluation.states["d"]["1"]["a"] == 1
    evaluation, _fired = run([PLAIN], [35])
    assert evaluation.dirty == set() and evaluation.states["d"] == {}


def test_a_rule_that_fails_is_taken_out_and_the_others_go_on():
    """A condition that raises on the data (an overflow) fails its rule alone, which is
    dropped from the bucket for the rest of the run."""
    failing = rule(id=2, condition={"expr": "t * 1e308 > 1"})
    evaluation, fired = run([PLAIN, failing], [35, 36])
    assert set(evaluation.outcome.failures) == {2}
    assert fired == ["1:fired", "1:fired"]
    assert evaluation.dropped == {2}


@pytest.mark.parametrize(("redelivered", "guard", "ts", "replayed"), [
    (False, T0, T0, False),  # a fresh batch is evaluated whole
    (True, T0, T0, True),
    (True, T0, T0 - 1, True),
    (True, T0, T0 + 1, False),
])
def test_replay_guard(redelivered, guard, ts, replayed):
    evaluation = Evaluation(guards={("d", "g"): guard}, stateful=set(),
                            redelivered=redelivered)
    assert evaluation.replayed("d", "g", ts) is replayed
    assert evaluation.newest.get(("d", "g")) == (None if replayed else ts)
