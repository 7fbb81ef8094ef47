"""Rule evaluation on the ingest path.

The ingest worker calls `on_batch` with every stored batch and `on_events` with device events
and command responses (webapp.telemetry.hooks). Rules are looked up in an in-memory index
compiled per product, rebuilt only when the version key in Redis changes (actions bump it after
commit): evaluating a message costs no SQL query. Per batch, the state the rules need (debounce
windows, cool-down, previous values, which devices have an open alarm) and the devices' latest
values come from Redis in one pipelined round trip, and go back in one more. What to do is
handed to Celery (`rules.run_firings`), a chunk of firings per task.

Replays are harmless: a message no newer than the last one evaluated for the same device,
kind and service is skipped (the batch is redelivered after a crash), and alarm actions update
the one open alarm of a (rule, device) instead of adding one.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from webapp.core.redis import get_redis, keys
from webapp.rules.choices import FireMode, TriggerType
from webapp.rules.compiler import CompiledRule, compile_model
from webapp.rules.conditions import _MISSING, Message, _lookup

if TYPE_CHECKING:
    from webapp.telemetry.ingest import Batch

log = logging.getLogger(__name__)

STATE_TTL_S = 30 * 86_400
FIRINGS_PER_TASK = 50


class RuleKeys:
    """The rule engine's Redis keys (under the bus prefix, see docs/rules.md)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    @property
    def version(self) -> str:
        return f"{self.prefix}rules:version"

    def state(self, device: str) -> str:
        return f"{self.prefix}rules:state:{device}"

    def stats(self, rule_id: int) -> str:
        return f"{self.prefix}rules:stats:{rule_id}"

    @property
    def mid(self) -> str:
        return f"{self.prefix}rules:mid"


def rule_keys() -> RuleKeys:
    return RuleKeys(keys().prefix)


def bump_version() -> None:
    """Tell every process's index that the rules changed (called after commit)."""
    get_redis().incr(rule_keys().version)


@dataclass
class ProductRules:
    property: dict[str, list[CompiledRule]] = field(default_factory=lambda: defaultdict(list))
    event: list[CompiledRule] = field(default_factory=list)
    cmdrsp: list[CompiledRule] = field(default_factory=list)
    status: list[CompiledRule] = field(default_factory=list)


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

        products: dict[str, ProductRules] = defaultdict(ProductRules)
        rules = Rule.objects.filter(enabled=True).exclude(trigger_type=TriggerType.SCHEDULE)
        for rule in rules:
            try:
                compiled = compile_model(rule)
            except Exception:
                log.exception("rule %s cannot be compiled; it is skipped", rule.pk)
                continue
            bucket = products[compiled.product]
            if compiled.trigger_type == TriggerType.PROPERTY:
                bucket.property[compiled.service].append(compiled)
            elif compiled.trigger_type == TriggerType.EVENT:
                bucket.event.append(compiled)
            elif compiled.trigger_type == TriggerType.COMMAND_RESPONSE:
                bucket.cmdrsp.append(compiled)
            elif compiled.trigger_type == TriggerType.STATUS:
                bucket.status.append(compiled)
        self.products = dict(products)
        self.status_rules = any(p.status for p in self.products.values())
        self.cmdrsp_rules = any(p.cmdrsp for p in self.products.values())
        self.loaded_at = time.monotonic()


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
class Candidate:
    rule: CompiledRule
    msg: Message
    guard: str  # the state field holding the last evaluated ts for this stream of messages


@dataclass
class Outcome:
    firings: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[int, dict[str, int]] = field(default_factory=lambda: defaultdict(
        lambda: defaultdict(int)))


def _message_json(msg: Message) -> dict[str, Any]:
    return {"kind": msg.kind, "device": msg.device, "product": msg.product,
            "service": msg.service, "ts": msg.ts, "values": dict(msg.values),
            "event": msg.event, "command": msg.command, "status": msg.status, "err": msg.err}


def _current_of(rule: CompiledRule, msg: Message) -> dict[str, Any]:
    """The present values of the properties a stateful operator compares with."""
    out: dict[str, Any] = {}
    for key in rule.condition.stateful_keys:
        service, _, prop = key.partition(".")
        path = tuple(prop.split("."))
        value = _lookup(msg.values, path) if service == msg.service else _MISSING
        if value is _MISSING:
            value = _lookup(msg.latest.get(service, {}), path)
        if value is not _MISSING:
            out[key] = value
    return out


def decide(rule: CompiledRule, msg: Message, st: dict[str, Any], outcome: Outcome) -> str:
    """Evaluate one rule on one message against its state; returns fired/cleared/held/…"""
    stats = outcome.stats[rule.id]
    stats["evaluated"] += 1
    msg.prev = st.get("p", {}) if rule.condition.stateful_keys else {}
    held = rule.condition.holds(msg)
    if rule.condition.stateful_keys:
        current = _current_of(rule, msg)
        if current:
            st["p"] = {**st.get("p", {}), **current}
    if not held:
        st.pop("s", None)
        st.pop("on", None)
        if rule.debounce_window:
            st["h"] = ([*st.get("h", []), 0])[-rule.debounce_window:]
        if st.pop("a", None) and rule.auto_clear:
            outcome.firings.append({"rule": rule.id, "kind": "cleared",
                                    "message": _message_json(msg), "latest": msg.latest,
                                    "prev": msg.prev})
            stats["cleared"] += 1
            return "cleared"
        return "not_held"
    stats["held"] += 1
    effective = True
    if rule.debounce_window:
        window = ([*st.get("h", []), 1])[-rule.debounce_window:]
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
    st["f"] = msg.ts
    st["on"] = 1
    if rule.debounce_window:
        st["h"] = []
    if rule.has_alarm:
        st["a"] = 1
    outcome.firings.append({"rule": rule.id, "kind": "fired", "message": _message_json(msg),
                            "latest": msg.latest, "prev": msg.prev})
    stats["fired"] += 1
    return "fired"


def _candidates_for_points(index: RuleIndex, points: Iterable[Any]) -> list[Candidate]:
    out: list[Candidate] = []
    for point in points:
        product = index.products.get(point.product)
        if product is None:
            continue
        rules = product.property.get(point.service)
        if not rules:
            continue
        msg: Message | None = None
        for rule in rules:
            if rule.property and rule.property not in point.values:
                continue
            if rule.devices is not None and point.device not in rule.devices:
                continue
            if msg is None:
                msg = Message(kind=TriggerType.PROPERTY, device=point.device,
                              product=point.product, service=point.service, ts=point.ts,
                              values=point.values)
            out.append(Candidate(rule, msg, f"_t:p:{point.service}"))
    return out


def evaluate(candidates: list[Candidate]) -> Outcome:
    """Fetch state and latest values, decide every candidate, store state, dispatch."""
    outcome = Outcome()
    if not candidates:
        return outcome
    r = get_redis()
    k = keys()
    rk = rule_keys()
    devices: dict[str, set[str]] = defaultdict(set)  # device → latest services needed
    for cand in candidates:
        needed = devices[cand.msg.device]
        needed.update(cand.rule.latest_services)
    pipe = r.pipeline(transaction=False)
    order = list(devices)
    for device in order:
        pipe.hgetall(rk.state(device))
        services = devices[device]
        if "*" in services:
            pipe.hgetall(k.latest(device))
        elif services:
            pipe.hmget(k.latest(device), sorted(services))
    replies = iter(pipe.execute())
    states: dict[str, dict[str, Any]] = {}
    latest: dict[str, dict[str, dict[str, Any]]] = {}
    for device in order:
        raw_state = next(replies)
        states[device] = {f.decode(): json.loads(v) for f, v in raw_state.items()}
        services = devices[device]
        values: dict[str, dict[str, Any]] = {}
        if "*" in services:
            for svc, raw in next(replies).items():
                values[svc.decode()] = {p: e.get("value") for p, e in json.loads(raw).items()}
        elif services:
            for svc, raw in zip(sorted(services), next(replies)):
                if raw:
                    values[svc] = {p: e.get("value") for p, e in json.loads(raw).items()}
        latest[device] = values
    dirty: dict[str, set[str]] = defaultdict(set)
    candidates.sort(key=lambda c: c.msg.ts)
    newest: dict[tuple[str, str], int] = {}
    for cand in candidates:
        device = cand.msg.device
        state = states[device]
        # At or before the newest ts of an earlier batch: a redelivered batch; skip it.
        if cand.msg.ts <= int(state.get(cand.guard, 0)):
            outcome.stats[cand.rule.id]["replayed"] += 1
            continue
        key = (device, cand.guard)
        newest[key] = max(newest.get(key, 0), cand.msg.ts)
        if device in latest:
            cand.msg.latest = latest[device]
        if not cand.rule.needs_state:
            decide(cand.rule, cand.msg, {}, outcome)
            continue
        field_name = str(cand.rule.id)
        st = dict(state.get(field_name) or {})
        before = dict(st)  # decide() replaces nested values, never mutates them
        decide(cand.rule, cand.msg, st, outcome)
        if st != before:
            state[field_name] = st
            dirty[device].add(field_name)
    for (device, guard), ts in newest.items():
        states[device][guard] = ts
        dirty[device].add(guard)
    pipe = r.pipeline(transaction=False)
    for device, fields in dirty.items():
        mapping = {}
        removed = []
        for name in fields:
            value = states[device].get(name)
            if value in (None, {}):
                removed.append(name)
            else:
                mapping[name] = json.dumps(value, separators=(",", ":"))
        if mapping:
            pipe.hset(rk.state(device), mapping=mapping)
        if removed:
            pipe.hdel(rk.state(device), *removed)
        pipe.expire(rk.state(device), STATE_TTL_S)
    for rule_id, counters in outcome.stats.items():
        for name, count in counters.items():
            pipe.hincrby(rk.stats(rule_id), name, count)
    pipe.execute()
    dispatch(outcome.firings)
    return outcome


def dispatch(firings: list[dict[str, Any]]) -> None:
    if not firings:
        return
    from webapp.rules.tasks import run_firings

    for start in range(0, len(firings), FIRINGS_PER_TASK):
        run_firings.delay(firings[start:start + FIRINGS_PER_TASK])


# --- the ingest hooks --------------------------------------------------------------------


def _index() -> RuleIndex:
    raw = get_redis().get(rule_keys().version)
    return current_index(raw or b"0")


def on_batch(batch: Batch) -> None:
    """Evaluate property and online/offline rules on a stored batch."""
    if not batch.points and not batch.statuses:
        return
    index = _index()
    if not index.products:
        return
    candidates = _candidates_for_points(index, batch.points)
    if batch.statuses and index.status_rules:
        candidates.extend(_status_candidates(index, batch.statuses))
    evaluate(candidates)


def _products_of(devices: Iterable[str]) -> dict[str, str]:
    names = sorted(set(devices))
    if not names:
        return {}
    k = keys()
    pipe = get_redis().pipeline(transaction=False)
    for device in names:
        pipe.hget(k.device(device), "product")
    return {d: p.decode() for d, p in zip(names, pipe.execute()) if p}


def _status_candidates(index: RuleIndex, statuses: list[dict[str, Any]]) -> list[Candidate]:
    products = _products_of(e["dev"] for e in statuses)
    out: list[Candidate] = []
    for event in statuses:
        device = event["dev"]
        product = index.products.get(products.get(device, ""))
        if product is None:
            continue
        msg = Message(kind=TriggerType.STATUS, device=device, product=products[device],
                      ts=int(event["ts"]), status=event["s"],
                      values={"status": event["s"], "reason": event.get("reason") or ""})
        for rule in product.status:
            if rule.watches(device):
                out.append(Candidate(rule, msg, "_t:s"))
    return out


def on_events(events: list[dict[str, Any]]) -> None:
    """Evaluate device-event rules."""
    index = _index()
    out: list[Candidate] = []
    for event in events:
        product = index.products.get(event.get("prod", ""))
        if product is None or not product.event:
            continue
        ts = int(event.get("et") or event["ts"])
        params = event.get("params") or {}
        msg = Message(kind=TriggerType.EVENT, device=event["dev"], product=event["prod"],
                      service=event.get("svc", ""), ts=ts, event=event.get("event", ""),
                      values=params if isinstance(params, dict) else {"value": params})
        for rule in product.event:
            if rule.service and rule.service != msg.service:
                continue
            if rule.event and rule.event != msg.event:
                continue
            if rule.watches(msg.device):
                out.append(Candidate(rule, msg, f"_t:e:{msg.service}:{msg.event}"))
    evaluate(out)


def on_command_responses(events: list[dict[str, Any]]) -> None:
    """Evaluate command-response rules."""
    index = _index()
    if not index.cmdrsp_rules:
        return
    products = _products_of(e["dev"] for e in events)
    out: list[Candidate] = []
    for event in events:
        device = event["dev"]
        product = index.products.get(products.get(device, ""))
        if product is None:
            continue
        params = event.get("params") or {}
        values = {**(params if isinstance(params, dict) else {}), "err": event.get("err")}
        msg = Message(kind=TriggerType.COMMAND_RESPONSE, device=device,
                      product=products[device], service=event.get("svc", ""),
                      ts=int(event["ts"]), command=event.get("cmd", ""), err=event.get("err"),
                      values=values)
        for rule in product.cmdrsp:
            if rule.service and rule.service != msg.service:
                continue
            if rule.command and rule.command != msg.command:
                continue
            if rule.watches(device):
                out.append(Candidate(rule, msg, f"_t:c:{msg.service}:{msg.command}"))
    evaluate(out)
