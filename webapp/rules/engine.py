"""Rule evaluation on the ingest path.

The ingest worker calls `on_batch` with every stored batch and `on_events` with device events
and command responses (webapp.telemetry.hooks). Rules are looked up in an in-memory index
compiled per product, rebuilt only when the version key in Redis changes (actions bump it after
commit): evaluating a message costs no SQL query. Per batch, the state the rules need (debounce
windows, cool-down, previous values, which devices have an open alarm) and the devices' latest
values come from Redis in one pipelined round trip, and go back in one more with the
firings, queued in a Redis list that a Celery task (`rules.drain_firings`) works off.

Replays are harmless: in a batch of entries delivered before (a crash before XACK), a message
no newer than the last one evaluated for the same device, kind and service is skipped; fresh
batches are evaluated whole (late and interleaved points too); and alarm actions update the one
open alarm of a (rule, device) instead of adding one.

One rule cannot hurt the others nor ingest: a rule whose evaluation raises (an arithmetic
overflow in an expression, a bug) or takes longer than `RULES_EVAL_BUDGET_MS` on one message
is taken out of the index at once, and marked failed (`Rule.failed_at`, `failure_reason`,
disabled) after the batch; the other rules and the batch go on.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from bisect import bisect_left, bisect_right
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from django.utils.translation import gettext_lazy as _

from edge import fastjson
from webapp.core.redis import get_redis, keys
from webapp.rules.choices import FireMode, TriggerType
from webapp.rules.compiler import CompiledRule, compile_model
from webapp.rules.conditions import _MISSING, Group, Leaf, Message, _lookup
from webapp.rules.expressions import ExpressionError, is_number
from webapp.rules.firings import seal
from webapp.telemetry import hooks

if TYPE_CHECKING:
    from webapp.telemetry.ingest import Batch

log = logging.getLogger(__name__)

# A queued drain task that never ran (worker down, message lost) is resent after this.
DRAIN_PENDING_TTL_S = 60


def eval_budget_s() -> float:
    """How long one rule may take over one message before it is marked failed (a setting,
    or the environment's RULES_EVAL_BUDGET_MS; 50 ms by default)."""
    from django.conf import settings

    value = getattr(settings, "RULES_EVAL_BUDGET_MS", None) or os.environ.get(
        "RULES_EVAL_BUDGET_MS") or 50
    return int(value) / 1000


class RuleKeys:
    """The rule engine's Redis keys (under the bus prefix, see docs/rules.md)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    @property
    def version(self) -> str:
        return f"{self.prefix}rules:version"

    @property
    def states(self) -> str:
        """Hash device → JSON `{rule id: state}` of the devices that have rule state."""
        return f"{self.prefix}rules:states"

    def stats(self, rule_id: int) -> str:
        return f"{self.prefix}rules:stats:{rule_id}"

    @property
    def guards(self) -> str:
        """Hash `{device}|{stream}` → the newest message ts evaluated (replay guard)."""
        return f"{self.prefix}rules:guards"

    @property
    def firings(self) -> str:
        """List of firings decided on the ingest path, waiting for a Celery worker."""
        return f"{self.prefix}rules:firings"

    @property
    def drain_pending(self) -> str:
        """Set while a `rules.drain_firings` task is queued and has not started."""
        return f"{self.prefix}rules:drain-pending"


def rule_keys() -> RuleKeys:
    return RuleKeys(keys().prefix)


def rule_state(device: str, rule_id: int) -> dict[str, Any]:
    """One rule's state for one device (what the rule test shows)."""
    raw = get_redis().hget(rule_keys().states, device)
    return dict((fastjson.loads(raw) if raw else {}).get(str(rule_id)) or {})


def bump_version() -> None:
    """Tell every process's index that the rules changed (called after commit)."""
    get_redis().incr(rule_keys().version)


def on_group_change(sender: Any, action: str = "post_delete", **kwargs: Any) -> None:
    """Device group membership changed: recompile the indexes (rules may name groups)."""
    if action in ("post_add", "post_remove", "post_clear", "post_delete"):
        from django.db import transaction

        transaction.on_commit(bump_version)


def on_device_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    """A deleted device's rule state goes with it (after commit)."""
    from django.db import transaction

    device = instance.identifier
    transaction.on_commit(lambda: get_redis().hdel(rule_keys().states, device))


class Bucket:
    """The rules one kind of message is evaluated against: those of one product and service
    for property reports, of one product for events, responses and status changes.

    Comparisons of the reported property with a number (`temperature > 30`, the common
    alarm threshold) are kept sorted per (property, operator): the rules a value satisfies
    are found by bisection, so a hundred thresholds cost one lookup, not a hundred
    evaluations. A rule whose condition is such a comparison AND other conditions is indexed
    by the comparison, and the rest is evaluated only when it holds. Every other rule is
    evaluated one by one.
    """

    def __init__(self, rules: list[CompiledRule]) -> None:
        self._build(rules)
        service = rules[0].service if rules else ""
        self.guard = f"_t:p:{service}"

    def drop(self, rule_id: int) -> None:
        """Take a rule out (it failed): the bucket is rebuilt in place, as the runs in
        progress and the index hold it."""
        self._build([rule for rule in self.rules if rule.id != rule_id])

    def _build(self, rules: list[CompiledRule]) -> None:
        self.rules = rules
        self.by_field = {str(r.id): r for r in rules}
        self.general: list[CompiledRule] = []
        grouped: dict[tuple[str, str], list[tuple[float, CompiledRule]]] = defaultdict(list)
        for rule in rules:
            guard = self._guard(rule)
            if guard is None:
                self.general.append(rule)
            else:
                grouped[(guard.property, guard.op)].append((float(guard.value), rule))
        self.thresholds: dict[tuple[str, str], tuple[list[float], list[CompiledRule]]] = {}
        for key, items in grouped.items():
            items.sort(key=lambda item: item[0])
            self.thresholds[key] = ([x for x, _ in items], [r for _, r in items])
        # Per property, the values for which no threshold holds: a point whose values are
        # all in these ranges concerns no rule (le < v < ge and lt <= v <= gt).
        inf = float("inf")
        bounds: dict[str, list[float]] = {}
        for (prop, op), (thresholds, _rules) in self.thresholds.items():
            gt, ge, lt, le = bounds.setdefault(prop, [inf, inf, -inf, -inf])
            if op == ">":
                gt = min(gt, thresholds[0])
            elif op == ">=":
                ge = min(ge, thresholds[0])
            elif op == "<":
                lt = max(lt, thresholds[-1])
            else:
                le = max(le, thresholds[-1])
            bounds[prop] = [gt, ge, lt, le]
        self.cold_ranges = [(prop, *b, (self, (prop, "*"))) for prop, b in bounds.items()]
        self.by_property: dict[str, list[CompiledRule]] = defaultdict(list)
        for (prop, _op), (_thresholds, threshold_rules) in self.thresholds.items():
            self.by_property[prop].extend(threshold_rules)
        # (rule, trigger property or None when `accepts` must be asked, holds): what the
        # per-message loop needs, looked up once.
        self.general_entries = [
            (rule, rule.property if rule.trigger_type == TriggerType.PROPERTY and
             rule.devices is None else None, rule.condition.holds) for rule in self.general]
        # The previous values the bucket's stateful operators compare with (kept per device
        # for all of them at once, see PREVIOUS).
        self.stateful_keys: tuple[str, ...] = tuple(sorted(
            {key for rule in rules for key in rule.condition.stateful_keys}))
        self.latest_services: frozenset[str] = frozenset().union(
            *(r.latest_services for r in rules))

    @staticmethod
    def _guard(rule: CompiledRule) -> Leaf | None:
        """The numeric comparison of the reported property that must hold for the rule to
        hold, if its condition has one (itself, or a member of a top-level AND group)."""
        if rule.trigger_type != TriggerType.PROPERTY or rule.devices is not None or \
                not rule.property or rule.condition.stateful_keys:
            return None
        condition = rule.condition
        members = condition.children if isinstance(condition, Group) and \
            condition.mode == "all" else [condition]
        for leaf in members:
            if isinstance(leaf, Leaf) and leaf.property == rule.property and \
                    leaf.service == rule.service and leaf.source != "latest" and \
                    leaf.op in (">", ">=", "<", "<=") and is_number(leaf.value):
                return leaf
        return None


@dataclass
class ProductRules:
    property: dict[str, Bucket] = field(default_factory=dict)
    event: Bucket | None = None
    cmdrsp: Bucket | None = None
    status: Bucket | None = None


class RuleIndex:
    """The enabled rules of every product, compiled; one per process and key prefix."""

    def __init__(self) -> None:
        self.version: bytes | None = None
        self.products: dict[str, ProductRules] = {}
        self.status_rules = False
        self.cmdrsp_rules = False
        self.loaded_at = 0.0

    def rebuild(self) -> None:
        from webapp.rules.models import Rule

        lists: dict[tuple[str, str, str], list[CompiledRule]] = defaultdict(list)
        rules = Rule.objects.filter(enabled=True).exclude(trigger_type=TriggerType.SCHEDULE)
        refused: dict[int, str] = {}
        for rule in rules:
            try:
                compiled = compile_model(rule)
            except ExpressionError as exc:
                # Saved before a limit it breaks existed (or edited in the database).
                refused[rule.pk] = str(_("The rule cannot be compiled: {error}").format(
                    error=exc.detail))
                continue
            except Exception:
                log.exception("rule %s cannot be compiled; it is skipped", rule.pk)
                continue
            service = compiled.service if compiled.trigger_type == TriggerType.PROPERTY else ""
            lists[(compiled.product, compiled.trigger_type, service)].append(compiled)
        products: dict[str, ProductRules] = defaultdict(ProductRules)
        for (product, kind, service), compiled_rules in lists.items():
            bucket = Bucket(compiled_rules)
            if kind == TriggerType.PROPERTY:
                products[product].property[service] = bucket
            elif kind == TriggerType.EVENT:
                products[product].event = bucket
            elif kind == TriggerType.COMMAND_RESPONSE:
                products[product].cmdrsp = bucket
            elif kind == TriggerType.STATUS:
                products[product].status = bucket
        self.products = dict(products)
        self.status_rules = any(p.status for p in self.products.values())
        self.cmdrsp_rules = any(p.cmdrsp for p in self.products.values())
        self.loaded_at = time.monotonic()
        if refused:
            record_failures(refused)


_indexes: dict[str, RuleIndex] = {}
_lock = threading.Lock()


def current_index(version: bytes | None) -> RuleIndex:
    """The index for this prefix, rebuilt when the version in Redis moved."""
    prefix = keys().prefix
    with _lock:
        index = _indexes.get(prefix)
        if index is None or index.version != version or version is None:
            index = index or RuleIndex()
            index.rebuild()
            index.version = version
            _indexes[prefix] = index
        return index


def forget_indexes() -> None:
    with _lock:
        _indexes.clear()


# --- evaluation --------------------------------------------------------------------------


@dataclass(slots=True)
class Item:
    """One message to evaluate, the rules it is evaluated against, and its replay guard
    (the state field holding the newest ts evaluated for this stream of messages)."""

    msg: Message
    bucket: Bucket
    guard: str


@dataclass
class Outcome:
    firings: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[int, dict[str, int]] = field(default_factory=lambda: defaultdict(
        lambda: defaultdict(int)))
    # Rules whose evaluation failed in this run: rule id → reason (see record_failures).
    failures: dict[int, str] = field(default_factory=dict)


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


def _failed(rule: CompiledRule, exc: Exception, outcome: Outcome) -> None:
    if rule.id not in outcome.failures:
        log.warning("rule %s failed on a message: %r", rule.id, exc)
        outcome.failures[rule.id] = failure_reason(exc)


def record_failures(failures: dict[int, str]) -> None:
    """Mark failed rules: disabled, with when and why (shown in the API and the admin), and
    tell every index. Best effort: when the database is unavailable this is logged, and the
    rule, out of this process's index already, fails again and is recorded later."""
    from django.utils import timezone

    from webapp.rules.models import Rule

    now = timezone.now()
    try:
        for rule_id, reason in failures.items():
            log.error("rule %s failed and is disabled: %s", rule_id, reason)
            Rule.objects.filter(pk=rule_id, enabled=True).update(
                enabled=False, failed_at=now, failure_reason=reason[:2000], updated=now)
        bump_version()
    except Exception:
        log.exception("recording the failure of rules %s failed", sorted(failures))


def _message_json(msg: Message) -> dict[str, Any]:
    return {"kind": msg.kind, "device": msg.device, "product": msg.product,
            "service": msg.service, "ts": msg.ts, "values": dict(msg.values),
            "event": msg.event, "command": msg.command, "status": msg.status, "err": msg.err}


# The state field (per device) holding the previous values that `changed`, `increased_by`
# and `decreased_by` compare with: one for all rules, "service.property" → value.
PREVIOUS = "_p"


def _current_of(stateful_keys: Iterable[str], msg: Message) -> dict[str, Any]:
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


def _firing(rule: CompiledRule, kind: str, msg: Message) -> dict[str, Any]:
    return {"rule": rule.id, "kind": kind, "message": _message_json(msg),
            "latest": msg.latest, "prev": msg.prev}


def decide(rule: CompiledRule, msg: Message, st: dict[str, Any], held: bool,
           outcome: Outcome) -> str:
    """Apply debounce, cool-down and auto-clear to one rule's verdict on one message."""
    stats = outcome.stats[rule.id]
    if not held:
        st.pop("s", None)
        st.pop("on", None)
        if rule.debounce_window and st.get("h"):
            window = (st["h"] + [0])[-rule.debounce_window:]
            if any(window):
                st["h"] = window
            else:
                st.pop("h")
        if st.pop("a", None) and rule.auto_clear:
            outcome.firings.append(_firing(rule, "cleared", msg))
            stats["cleared"] += 1
            return "cleared"
        return "not_held"
    stats["held"] += 1
    effective = True
    if rule.debounce_window:
        window = [*st.get("h", []), 1][-rule.debounce_window:]
        st["h"] = window
        effective = sum(window) >= rule.debounce_count
    if rule.debounce_duration_ms:
        since = st.setdefault("s", msg.ts)
        effective = effective and msg.ts - since >= rule.debounce_duration_ms
    if effective and rule.fire_mode == FireMode.CHANGE and st.get("on"):
        effective = False
    if effective and rule.cooldown_ms and msg.ts - st.get("f", 0) < rule.cooldown_ms:
        effective = False
    if not effective:
        stats["suppressed"] += 1
        return "suppressed"
    if rule.needs_state:
        st["f"] = msg.ts
        st["on"] = 1
        st.pop("h", None)
        if rule.has_alarm:
            st["a"] = 1
    outcome.firings.append(_firing(rule, "fired", msg))
    stats["fired"] += 1
    return "fired"


def _verdicts(item: Item, state: dict[str, Any], outcome: Outcome,
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
                _failed(rule, exc, outcome)
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
            _failed(rule, exc, outcome)
    for name, st in state.items():
        # Only state a message that does not hold acts on: an open alarm to clear, a
        # debounce window, a duration or episode in progress (a cool-down time waits).
        if name[0] != "_" and ("a" in st or "h" in st or "s" in st or "on" in st):
            with_state = bucket.by_field.get(name)
            if with_state is not None and with_state.id not in seen and \
                    with_state.accepts(msg):
                out.append((with_state, False))
    return out


def _holds_or_fails(rule: CompiledRule, msg: Message, outcome: Outcome) -> bool:
    try:
        return rule.condition.holds(msg)
    except Exception as exc:  # one rule must not stop the others
        _failed(rule, exc, outcome)
        return False


def _over_budget(item: Item, outcome: Outcome, budget: float) -> None:
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
            _failed(rule, exc, outcome)
            continue
        took = time.perf_counter() - started
        if took > budget:
            _failed(rule, TimeoutError(), outcome)
            outcome.failures[rule.id] = str(_(
                "Evaluating one message took {took} ms, over the limit of {limit} ms "
                "(RULES_EVAL_BUDGET_MS).").format(took=round(took * 1000),
                                                   limit=round(budget * 1000)))


def _decode_latest(raw: bytes | None) -> dict[str, Any] | None:
    return {p: e.get("value") for p, e in fastjson.loads(raw).items()} if raw else None


# Replay guards only move forward: ARGV holds field, ts pairs.
_RAISE_GUARDS = """
for i = 1, #ARGV, 2 do
  local current = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '0')
  if tonumber(ARGV[i + 1]) > current then redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
return 0
"""

# One server-side loop for a batch's counters instead of one HINCRBY per counter.
_INCREMENTS = """
for i = 1, #KEYS do
  redis.call('HINCRBY', KEYS[i], ARGV[2 * i - 1], ARGV[2 * i])
end
return #KEYS
"""


class StaleIndex(Exception):
    """The rules changed since the index in hand was compiled."""

    def __init__(self, version: bytes) -> None:
        super().__init__("the rule index is stale")
        self.version = version


@dataclass
class Run:
    """The working set of one evaluation: the replay guards and the rule state of the
    devices concerned, read at the start; what changed, written at the end.

    Redis holds the guards of every device in one hash and the rule state of every device
    that has some in another, so that a batch costs the same few commands whatever the
    number of devices: one round trip reads both for the batch's devices, one writes back."""

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
    budget: float = field(default_factory=eval_budget_s)
    dropped: set[int] = field(default_factory=set)  # failed rules taken out of their bucket

    @classmethod
    def start(cls, streams: set[tuple[str, str]], index: RuleIndex | None = None,
              redelivered: bool = False) -> Run:
        """Read the devices' rule state and, for a redelivered batch, the guards of the
        (device, guard) streams (a fresh batch has nothing to check against them).

        With `index`, the rules' version is read in the same round trip: `StaleIndex` is
        raised when the rules changed since the index was compiled (the caller recompiles and
        starts again), so that checking for changes costs no round trip of its own."""
        rk = rule_keys()
        pairs = sorted(streams)
        devices = sorted({device for device, _ in pairs})
        pipe = get_redis().pipeline(transaction=False)
        pipe.hmget(rk.states, devices)
        if index is not None:
            pipe.get(rk.version)
        if redelivered:
            pipe.hmget(rk.guards, [f"{d}|{g}" for d, g in pairs])
        replies = pipe.execute()
        if index is not None and (replies[1] or b"0") != index.version:
            raise StaleIndex(replies[1] or b"0")
        states_raw = replies[0]
        guards = {pair: int(raw) for pair, raw in zip(pairs, replies[-1]) if raw} \
            if redelivered else {}
        states = {d: fastjson.loads(raw) if raw else {} for d, raw in zip(devices, states_raw)}
        return cls(guards, {d for d, raw in zip(devices, states_raw) if raw}, states,
                   redelivered=redelivered)

    def load(self, devices: dict[str, set[str]]) -> None:
        """Read the latest values the conditions name (state came with `start`)."""
        k = keys()
        pipe = get_redis().pipeline(transaction=False)
        reads: list[tuple[str, str, Any]] = []
        for device, services in devices.items():
            if device in self.latest:
                continue
            self.states.setdefault(device, {})
            if "*" in services:
                pipe.hgetall(k.latest(device))
                reads.append(("all", device, None))
            elif services:
                names = sorted(services)
                pipe.hmget(k.latest(device), names)
                reads.append(("some", device, names))
        if not reads:
            return
        for (kind, device, names), reply in zip(reads, pipe.execute()):
            if kind == "all":
                self.latest[device] = {s.decode(): _decode_latest(v) or {}
                                       for s, v in reply.items()}
            else:
                self.latest[device] = {s: v for s, v in (
                    (s, _decode_latest(raw)) for s, raw in zip(names, reply)) if v}

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
            state = self.states[device]
            msg.latest = self.latest.get(device, {})
            previous = state.get(PREVIOUS) or {}
            msg.prev = previous
            started = time.perf_counter()
            verdicts = _verdicts(item, state, outcome, self.general_evaluated)
            if time.perf_counter() - started > self.budget:
                _over_budget(item, outcome, self.budget)
            if len(outcome.failures) > len(self.dropped):
                self._drop_failed(item.bucket)
                verdicts = [(r, h) for r, h in verdicts if r.id not in outcome.failures]
            for rule, held in verdicts:
                if not rule.needs_state:
                    if held:
                        decide(rule, msg, {}, True, outcome)
                    continue
                name = str(rule.id)
                st = dict(state.get(name) or {})
                before = dict(st)  # decide() replaces nested values, never mutates them
                decide(rule, msg, st, held, outcome)
                if st != before:
                    if st:
                        state[name] = st
                    else:
                        state.pop(name, None)
                    self.dirty.add(device)
            stateful_keys = item.bucket.stateful_keys
            if stateful_keys:  # what the next message's `changed`, `increased_by`… compare with
                current = _current_of(stateful_keys, msg)
                if any(previous.get(key, _MISSING) != value for key, value in current.items()):
                    state[PREVIOUS] = {**previous, **current}
                    self.dirty.add(device)

    def _drop_failed(self, bucket: Bucket) -> None:
        """Take the rules that failed out of the bucket, so that the rest of the batch does
        not evaluate them (the index is rebuilt without them once they are recorded)."""
        for rule_id in self.outcome.failures.keys() - self.dropped:
            self.dropped.add(rule_id)
            if rule_id in {rule.id for rule in bucket.rules}:
                bucket.drop(rule_id)

    def store(self) -> Outcome:
        """Write the guards, the changed state and the counters and queue the firings (one
        round trip); wake a Celery worker if none is about to run them."""
        outcome = self.outcome
        rk = rule_keys()
        r = get_redis()
        for (bucket, (prop, _all)), count in self.evaluated.items():
            for rule in bucket.by_property[prop]:
                outcome.stats[rule.id]["evaluated"] += count
        for rule_id, count in self.general_evaluated.items():
            outcome.stats[rule_id]["evaluated"] += count
        pipe = r.pipeline(transaction=False)
        if self.newest:  # raised, never lowered (workers may evaluate out of order)
            pipe.eval(_RAISE_GUARDS, 1, rk.guards,
                      *[x for (d, g), ts in self.newest.items() for x in (f"{d}|{g}", ts)])
        changed = {device: fastjson.dumps(self.states[device])
                   for device in self.dirty if self.states[device]}
        emptied = [device for device in self.dirty if not self.states[device]]
        if changed:
            pipe.hset(rk.states, mapping=changed)
        if emptied:
            pipe.hdel(rk.states, *emptied)
        counters = [(rk.stats(rule_id), name, count)
                    for rule_id, stats in outcome.stats.items()
                    for name, count in stats.items() if count]
        if counters:
            pipe.eval(_INCREMENTS, len(counters), *[c[0] for c in counters],
                      *[x for c in counters for x in c[1:]])
        if outcome.firings:
            # Firings are queued in Redis with the state, in the same round trip; a Celery
            # task is sent only when none is already waiting to run them (publishing a
            # Celery message costs milliseconds, more than a whole batch of evaluations).
            pipe.rpush(rk.firings, *[seal(fastjson.dumps(f)) for f in outcome.firings])
            pipe.set(rk.drain_pending, "1", nx=True, ex=DRAIN_PENDING_TTL_S)
        replies = pipe.execute() if len(pipe) else []
        if outcome.firings and replies[-1]:
            wake_worker()
        return outcome


def evaluate(items: list[Item], redelivered: bool = False) -> Outcome:
    """Evaluate messages of any kind: read guards and state, decide, store."""
    if not items:
        return Outcome()
    run = Run.start({(item.msg.device, item.guard) for item in items},
                    redelivered=redelivered)
    items.sort(key=lambda i: i.msg.ts)
    fresh = []
    for item in items:
        msg = item.msg
        if run.replayed(msg.device, item.guard, msg.ts):
            for rule in item.bucket.rules:
                if rule.accepts(msg):
                    run.outcome.stats[rule.id]["replayed"] += 1
        else:
            fresh.append(item)
    devices: dict[str, set[str]] = defaultdict(set)  # device → latest services needed
    for item in fresh:
        devices[item.msg.device].update(item.bucket.latest_services)
    run.load(devices)
    run.decide_items(fresh)
    return run.store()


_BY_TS = attrgetter("ts")


def evaluate_points(index: RuleIndex, points: list[Any], redelivered: bool = False) -> Outcome:
    """Property reports: the hot path. A point whose values hold for no threshold of its
    bucket (the usual case), on a device with nothing in progress, only moves the replay
    guard; the others are decided in full, in time order.

    One pass over the points in time order, with everything it needs in locals (the replay
    guards were read for the batch's streams before it)."""
    # product → service → bucket (None: no rule), looked up without building a key tuple.
    buckets: dict[str, dict[str, Bucket | None]] = defaultdict(dict)
    for product_id, service in {(p.product, p.service) for p in points}:
        product = index.products.get(product_id)
        buckets[product_id][service] = product.property.get(service) if product else None
    # The replay guards to read: every device of the batch for every guard concerned (one
    # guard per service with rules; a combination that matches no point reads a nil).
    guard_names = {b.guard for services in buckets.values() for b in services.values() if b}
    devices = {p.device for p in points}
    streams = {(device, guard) for guard in guard_names for device in devices}
    if not streams:  # no rule for these points, unless the rules changed: ask
        version = get_redis().get(rule_keys().version) or b"0"
        if version != index.version:
            raise StaleIndex(version)
        return Outcome()
    run = Run.start(streams, index, redelivered)
    # Per guard (one per service), device → newest ts: before this batch, and in it.
    guards: dict[str, dict[str, int]] = defaultdict(dict)
    for (device, guard), ts in run.guards.items():
        guards[guard][device] = ts
    newest: dict[str, dict[str, int]] = defaultdict(dict)
    stateful = run.stateful
    counts: dict[Any, int] = run.evaluated
    replays: dict[Bucket, list[Any]] = defaultdict(list)
    todo: list[tuple[Any, Bucket, bool]] = []
    needed: dict[str, set[str]] = {}
    ordered = sorted(points, key=_BY_TS)
    # Per bucket, the devices with something in progress that a quiet point acts on (an
    # open alarm to clear, a debounce window, a duration or an episode): a device whose
    # state is only a cool-down time needs no look at its quiet points.
    with_rules = [b for services in buckets.values() for b in services.values()]
    busy: dict[Bucket, set[str]] = {
        bucket: {d for d in stateful if _in_progress(run.states[d], bucket)}
        for bucket in with_rules if bucket is not None}
    if len(with_rules) == 1 and with_rules[0] is not None and \
            not busy[with_rules[0]] & devices and \
            _all_quiet(with_rules[0], ordered, guards[with_rules[0].guard] if redelivered
                       else {}, newest[with_rules[0].guard], counts):
        ordered = []  # the usual batch: one product and service, nothing to decide
    for point in ordered:
        bucket = buckets[point.product][point.service]
        if bucket is None:
            continue
        device, ts = point.device, point.ts
        if redelivered and ts <= guards[bucket.guard].get(device, 0):  # evaluated before
            replays[bucket].append(point)
            continue
        newest[bucket.guard][device] = ts  # points come in time order
        values = point.values
        cold = not bucket.general
        for prop, gt, ge, lt, le, counter in bucket.cold_ranges:
            value = values.get(prop, _MISSING)
            if value is _MISSING:
                continue
            counts[counter] = counts.get(counter, 0) + 1
            if cold and (type(value) not in (int, float) or
                         not (le < value < ge and lt <= value <= gt)):
                cold = False
        # A quiet point is skipped unless its device has something in progress, from
        # before or from a point to decide in this batch (a firing there may need clearing).
        if cold and device not in needed and device not in busy[bucket]:
            continue
        todo.append((point, bucket, cold))
        services = needed.get(device)
        if services is None:
            needed[device] = set(bucket.latest_services)
        elif bucket.latest_services:
            services.update(bucket.latest_services)
    run.newest.update({(device, guard): ts for guard, by_device in newest.items()
                       for device, ts in by_device.items()})
    for bucket, replayed in replays.items():
        _count_replays(bucket, replayed, run.outcome)
    if todo:
        run.load(needed)
    # (device, bucket) has something in progress: as at the start (busy) until a point of
    # the device is decided in this batch.
    active: dict[tuple[str, Bucket], bool] = {}
    for point, bucket, cold in todo:
        device = point.device
        key2 = (device, bucket)
        if cold and not active.get(key2, device in busy[bucket]):
            continue
        run.decide_items([Item(Message(kind=TriggerType.PROPERTY, device=device,
                                       product=point.product, service=point.service,
                                       ts=point.ts, values=point.values), bucket,
                               bucket.guard)])
        active[key2] = _in_progress(run.states[device], bucket)
    return run.store()


_PLAIN_NUMBERS = frozenset((int, float))


def _all_quiet(bucket: Bucket, points: list[Any], guards: dict[str, int],
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


def _count_replays(bucket: Bucket, points: list[Any], outcome: Outcome) -> None:
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


def _in_progress(state: dict[str, Any], bucket: Bucket) -> bool:
    """Whether a rule of the bucket has state that a message which does not hold acts on."""
    for name, st in state.items():
        if name in bucket.by_field and ("a" in st or "h" in st or "s" in st or "on" in st):
            return True
    return False


def wake_worker() -> None:
    """Send a Celery task to run the queued firings (only one is ever waiting)."""
    from webapp.rules.tasks import drain_firings

    drain_firings.apply_async(argsrepr="()")


# --- the ingest hooks --------------------------------------------------------------------


def _index() -> RuleIndex:
    raw = get_redis().get(rule_keys().version)
    return current_index(raw or b"0")


def on_batch(batch: Batch) -> None:
    """Evaluate property and online/offline rules on a stored batch."""
    if not batch.points and not batch.statuses:
        return
    index = _indexes.get(keys().prefix)
    if index is None or not index.products or not batch.points:
        # Nothing compiled, or no rules (one may have been created), or nothing whose
        # evaluation reads the version anyway: read it now.
        index = _index()
        if not index.products:
            return
    failures: dict[int, str] = {}
    if batch.points:
        for _attempt in range(5):
            try:
                failures.update(evaluate_points(index, batch.points,
                                                batch.redelivered).failures)
                break
            except StaleIndex as stale:  # rules changed: compile them and start again
                index = current_index(stale.version)
        else:
            raise RuntimeError("the rules kept changing while a batch was evaluated")
    if batch.statuses and index.status_rules:
        failures.update(evaluate(_status_items(index, batch.statuses),
                                 batch.redelivered).failures)
    if failures:
        record_failures(failures)


def _products_of(devices: Iterable[str]) -> dict[str, str]:
    names = sorted(set(devices))
    if not names:
        return {}
    k = keys()
    pipe = get_redis().pipeline(transaction=False)
    for device in names:
        pipe.hget(k.device(device), "product")
    return {d: p.decode() for d, p in zip(names, pipe.execute()) if p}


def _status_items(index: RuleIndex, statuses: list[dict[str, Any]]) -> list[Item]:
    products = _products_of(e["dev"] for e in statuses)
    out: list[Item] = []
    for event in statuses:
        device = event["dev"]
        product = index.products.get(products.get(device, ""))
        if product is None or product.status is None:
            continue
        msg = Message(kind=TriggerType.STATUS, device=device, product=products[device],
                      ts=int(event["ts"]), status=event["s"],
                      values={"status": event["s"], "reason": event.get("reason") or ""})
        out.append(Item(msg, product.status, "_t:s"))
    return out


def on_events(events: list[dict[str, Any]]) -> None:
    """Evaluate device-event rules."""
    index = _index()
    out: list[Item] = []
    for event in events:
        product = index.products.get(event.get("prod", ""))
        if product is None or product.event is None:
            continue
        params = event.get("params") or {}
        msg = Message(kind=TriggerType.EVENT, device=event["dev"], product=event["prod"],
                      service=event.get("svc", ""), ts=int(event.get("et") or event["ts"]),
                      event=event.get("event", ""),
                      values=params if isinstance(params, dict) else {"value": params})
        out.append(Item(msg, product.event, f"_t:e:{msg.service}:{msg.event}"))
    failures = evaluate(out, hooks.redelivered.get()).failures
    if failures:
        record_failures(failures)


def on_command_responses(events: list[dict[str, Any]]) -> None:
    """Evaluate command-response rules."""
    index = _index()
    if not index.cmdrsp_rules:
        return
    products = _products_of(e["dev"] for e in events)
    out: list[Item] = []
    for event in events:
        device = event["dev"]
        product = index.products.get(products.get(device, ""))
        if product is None or product.cmdrsp is None:
            continue
        params = event.get("params") or {}
        values = {**(params if isinstance(params, dict) else {}), "err": event.get("err")}
        msg = Message(kind=TriggerType.COMMAND_RESPONSE, device=device,
                      product=products[device], service=event.get("svc", ""),
                      ts=int(event["ts"]), command=event.get("cmd", ""), err=event.get("err"),
                      values=values)
        out.append(Item(msg, product.cmdrsp, f"_t:c:{msg.service}:{msg.command}"))
    failures = evaluate(out, hooks.redelivered.get()).failures
    if failures:
        record_failures(failures)
