"""Evaluating messages against a bucket of rules: which rules hold (by bisection over the
sorted thresholds, or one by one), then deciding each over the device's state.

Pure: an `Evaluation` holds the replay guards, the devices' rule state and latest values
for a batch; the Redis-backed `store.Run` reads them before and writes them after. One rule
cannot hurt the others: a rule whose condition raises, or takes longer than the budget on
one message, is recorded in `Outcome.failures` and taken out of its bucket."""

from __future__ import annotations

import logging
import math
import time
from bisect import bisect_left, bisect_right
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from django.utils.translation import gettext_lazy as _

from webapp.rules.compiler import CompiledRule
from webapp.rules.conditions import _MISSING, Leaf, Message
from webapp.rules.engine.decide import Outcome, decide
from webapp.rules.engine.index import Bucket
from webapp.rules.engine.state import PREVIOUS, acts_on_quiet, remember_previous, step
from webapp.rules.expressions import ExpressionError

log = logging.getLogger("webapp.rules.engine")

DEFAULT_BUDGET_S = 0.05


@dataclass(slots=True)
class Item:
    """One message to evaluate, the rules it is evaluated against, and its replay guard
    (the state field holding the newest ts evaluated for this stream of messages)."""

    msg: Message
    bucket: Bucket
    guard: str


def failure_reason(exc: BaseException) -> str:
    """What an operator reads on a failed rule."""
    if isinstance(exc, ExpressionError):
        return str(exc.detail)
    if isinstance(exc, RecursionError):
        return str(_("The condition is nested too deeply to be evaluated."))
    if isinstance(exc, MemoryError):
        return str(_("Evaluating the condition ran out of memory."))
    return str(_("Evaluating the condition failed: {error}").format(
        error=f"{type(exc).__name__}: {exc}"[:500]))


def failed(rule: CompiledRule, exc: Exception, outcome: Outcome) -> None:
    if rule.id not in outcome.failures:
        log.warning("rule %s failed on a message: %r", rule.id, exc)
        outcome.failures[rule.id] = failure_reason(exc)


def _holds_or_fails(rule: CompiledRule, msg: Message, outcome: Outcome) -> bool:
    try:
        return rule.condition.holds(msg)
    except Exception as exc:  # one rule must not stop the others
        failed(rule, exc, outcome)
        return False


def verdicts(item: Item, state: dict[str, Any], outcome: Outcome,
             evaluated: dict[int, int] | None = None) -> list[tuple[CompiledRule, bool]]:
    """The rules to decide on for one message: those that hold, the stateful ones that must
    see every message, and those with state for the device (an open alarm to clear)."""
    msg, bucket = item.msg, item.bucket
    out: list[tuple[CompiledRule, bool]] = []
    seen: set[int] = set()
    values = msg.values
    for key, (thresholds, rules) in bucket.thresholds.items():
        value = values.get(key[0], _MISSING)
        if value is _MISSING:
            continue
        if type(value) in (int, float):
            op = key[1]
            if op == ">":
                hits = rules[:bisect_left(thresholds, value)]
            elif op == ">=":
                hits = rules[:bisect_right(thresholds, value)]
            elif op == "<":
                hits = rules[bisect_right(thresholds, value):]
            else:
                hits = rules[bisect_left(thresholds, value):]
        else:
            hits = [r for r in rules if _holds_or_fails(r, msg, outcome)]
        for rule in hits:
            # The guard holds; a rule with more to its condition is evaluated in full.
            try:
                if type(rule.condition) is Leaf or rule.condition.holds(msg):
                    out.append((rule, True))
                    seen.add(rule.id)
            except Exception as exc:  # one rule must not stop the others
                failed(rule, exc, outcome)
    if evaluated is None:
        evaluated = {}
    for rule, prop, holds in bucket.general_entries:
        if prop is not None:  # the common case: a property rule for all devices
            if prop and prop not in values:
                continue
        elif not rule.accepts(msg):
            continue
        evaluated[rule.id] = evaluated.get(rule.id, 0) + 1
        try:
            if holds(msg):
                out.append((rule, True))
                seen.add(rule.id)
        except Exception as exc:  # one rule must not stop the others
            failed(rule, exc, outcome)
    for name, st in state.items():
        # Only state a message that does not hold acts on (a cool-down time waits).
        if name[0] != "_" and acts_on_quiet(st):
            with_state = bucket.by_field.get(name)
            if with_state is not None and with_state.id not in seen and \
                    with_state.accepts(msg):
                out.append((with_state, False))
    return out


def over_budget(item: Item, outcome: Outcome, budget: float) -> None:
    """Evaluating a message took longer than one rule may: time the bucket's rules one by
    one on it and fail those over the budget by themselves (a slow machine that took long
    for all of them fails none)."""
    for rule in item.bucket.rules:
        if rule.id in outcome.failures or not rule.accepts(item.msg):
            continue
        started = time.perf_counter()
        try:
            rule.condition.holds(item.msg)
        except Exception as exc:  # one rule must not stop the others
            failed(rule, exc, outcome)
            continue
        took = time.perf_counter() - started
        if took > budget:
            failed(rule, TimeoutError(), outcome)
            outcome.failures[rule.id] = str(_(
                "Evaluating one message took {took} ms, over the limit of {limit} ms "
                "(RULES_EVAL_BUDGET_MS).").format(took=round(took * 1000),
                                                   limit=round(budget * 1000)))


@dataclass
class Evaluation:
    """The working set of one evaluation: the replay guards and the rule state of the
    devices concerned, and what changed."""

    guards: dict[tuple[str, str], int]
    stateful: set[str]
    states: dict[str, dict[str, Any]] = field(default_factory=dict)
    latest: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    outcome: Outcome = field(default_factory=Outcome)
    dirty: set[str] = field(default_factory=set)  # devices whose state changed
    evaluated: dict[Any, int] = field(default_factory=lambda: defaultdict(int))
    newest: dict[tuple[str, str], int] = field(default_factory=dict)
    general_evaluated: dict[int, int] = field(default_factory=dict)
    # The batch holds entries delivered before: points no newer than the guard were
    # evaluated already (a fresh batch is evaluated whole, late or interleaved points too).
    redelivered: bool = False
    budget: float = DEFAULT_BUDGET_S
    dropped: set[int] = field(default_factory=set)  # failed rules taken out of their bucket

    def replayed(self, device: str, guard: str, ts: int) -> bool:
        """In a redelivered batch, at or before the newest ts evaluated before: done."""
        key = (device, guard)
        if self.redelivered and ts <= self.guards.get(key, 0):
            return True
        if ts > self.newest.get(key, 0):
            self.newest[key] = ts
        return False

    def decide_items(self, items: list[Item]) -> None:
        """Decide every rule of every item (in time order; their devices are loaded)."""
        outcome = self.outcome
        for item in items:
            msg = item.msg
            device = msg.device
            state = self.states.setdefault(device, {})
            msg.latest = self.latest.get(device, {})
            msg.prev = state.get(PREVIOUS) or {}
            started = time.perf_counter()
            found = verdicts(item, state, outcome, self.general_evaluated)
            if time.perf_counter() - started > self.budget:
                over_budget(item, outcome, self.budget)
            if len(outcome.failures) > len(self.dropped):
                self._drop_failed(item.bucket)
                found = [(r, h) for r, h in found if r.id not in outcome.failures]
            for rule, held in found:
                if not rule.needs_state:
                    if held:
                        decide(rule, msg, {}, True, outcome)
                elif step(rule, msg, state, held, outcome):
                    self.dirty.add(device)
            # What the next message's `changed`, `increased_by`… compare with.
            if item.bucket.stateful_keys and \
                    remember_previous(state, item.bucket.stateful_keys, msg):
                self.dirty.add(device)

    def _drop_failed(self, bucket: Bucket) -> None:
        """Take the rules that failed out of the bucket, so that the rest of the batch does
        not evaluate them (the index is rebuilt without them once they are recorded)."""
        for rule_id in self.outcome.failures.keys() - self.dropped:
            self.dropped.add(rule_id)
            if rule_id in {rule.id for rule in bucket.rules}:
                bucket.drop(rule_id)

    def count_stats(self) -> None:
        """Add the per-threshold and per-rule evaluation counts to the outcome's stats."""
        stats = self.outcome.stats
        for (bucket, (prop, _all)), count in self.evaluated.items():
            for rule in bucket.by_property[prop]:
                stats[rule.id]["evaluated"] += count
        for rule_id, count in self.general_evaluated.items():
            stats[rule_id]["evaluated"] += count


_PLAIN_NUMBERS = frozenset((int, float))


def all_quiet(bucket: Bucket, points: list[Any], guards: dict[str, int],
              newest: dict[str, int], counts: dict[Any, int]) -> bool:
    """Whether every point — all of `bucket`, in time order, none of a device with rule
    state — is new and holds for no threshold: then move the replay guards and counters as
    the per-point loop would, with builtins over whole lists (min, max, map) instead of a
    Python loop per point. False, having changed nothing, when any point needs a look."""
    if bucket.general:
        return False
    found: list[tuple[Any, int]] = []
    for prop, gt, ge, lt, le, counter in bucket.cold_ranges:
        values = [v for p in points if (v := p.values.get(prop, _MISSING)) is not _MISSING]
        if values:
            kinds = set(map(type, values))
            if not kinds <= _PLAIN_NUMBERS or (float in kinds and any(map(math.isnan, values))):
                return False  # a boolean, a string, NaN: the per-point check decides
            low, high = min(values), max(values)
            if not (le < low and high < ge and lt <= low and high <= gt):
                return False
        found.append((counter, len(values)))
    first = {p.device: p.ts for p in reversed(points)}
    if any(ts <= guards.get(device, 0) for device, ts in first.items()):
        return False  # a redelivered point: the per-point loop counts it
    newest.update({p.device: p.ts for p in points})
    for counter, n in found:
        counts[counter] = counts.get(counter, 0) + n
    return True


def count_replays(bucket: Bucket, points: list[Any], outcome: Outcome) -> None:
    """Count redelivered points as `replayed` for every rule that would have seen them: per
    property present, not per rule and point (a redelivered batch must not cost more than
    a new one)."""
    present: Counter[str] = Counter()
    for point in points:
        present.update(point.values.keys())  # the names, not a mapping of counts
    for rule in bucket.rules:
        if rule.devices is None:
            n = present[rule.property] if rule.property else len(points)
        else:
            n = sum(1 for point in points if rule.accepts(point))
        if n:
            outcome.stats[rule.id]["replayed"] += n
