"""The rule state of one device: per rule, what `decide` keeps between messages, and the
previous values the stateful operators (`changed`, `increased_by`, `decreased_by`) compare
with.

Pure: a device's state is a dict `{rule id: {field: value}, PREVIOUS: {...}}` that the
Redis-backed run reads for a batch and writes back when it changed."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from webapp.rules.compiler import CompiledRule
from webapp.rules.conditions import _MISSING, Message, _lookup
from webapp.rules.engine.decide import Outcome, decide
from webapp.rules.engine.index import Bucket

# The state field (per device) holding the previous values that `changed`, `increased_by`
# and `decreased_by` compare with: one for all rules, "service.property" → value.
PREVIOUS = "_p"


def acts_on_quiet(st: Mapping[str, Any]) -> bool:
    """Whether one rule's state is something a message that does not hold acts on: an open
    alarm to clear, a debounce window, a duration or an episode in progress (a cool-down
    time alone waits for the next message that holds)."""
    return "a" in st or "h" in st or "s" in st or "on" in st


def in_progress(state: Mapping[str, Any], bucket: Bucket) -> bool:
    """Whether a rule of the bucket has state that a message which does not hold acts on."""
    return any(name in bucket.by_field and acts_on_quiet(st) for name, st in state.items())


def step(rule: CompiledRule, msg: Message, state: dict[str, Any], held: bool,
         outcome: Outcome) -> bool:
    """Decide one rule on one message over the device's `state`, keeping the rule's entry
    only while it holds something; returns whether the state changed."""
    name = str(rule.id)
    st = dict(state.get(name) or {})
    before = dict(st)  # decide() replaces nested values, never mutates them
    decide(rule, msg, st, held, outcome)
    if st == before:
        return False
    if st:
        state[name] = st
    else:
        state.pop(name, None)
    return True


def current_of(stateful_keys: Iterable[str], msg: Message) -> dict[str, Any]:
    """The present values of the properties a stateful operator compares with."""
    out: dict[str, Any] = {}
    for key in stateful_keys:
        service, _, prop = key.partition(".")
        service = service or msg.service
        path = tuple(prop.split("."))
        value = _lookup(msg.values, path) if service == msg.service else _MISSING
        if value is _MISSING:
            value = _lookup(msg.latest.get(service, {}), path)
        if value is not _MISSING:
            out[key] = value
    return out


def remember_previous(state: dict[str, Any], stateful_keys: Iterable[str],
                      msg: Message) -> bool:
    """Keep the message's values of `stateful_keys` for the next message to compare with;
    returns whether the state changed."""
    previous = state.get(PREVIOUS) or {}
    current = current_of(stateful_keys, msg)
    if not any(previous.get(key, _MISSING) != value for key, value in current.items()):
        return False
    state[PREVIOUS] = {**previous, **current}
    return True
