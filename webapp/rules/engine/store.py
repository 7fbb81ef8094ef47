"""Evaluation against the state in Redis: per batch, the state the rules need (debounce
windows, cool-down, previous values, which devices have an open alarm), the replay guards
and the devices' latest values come from Redis in one pipelined round trip, and go back in
one more with the firings, queued in a Redis list that a Celery task
(`rules.drain_firings`) works off.

Replays are harmless: in a batch of entries delivered before (a crash before XACK), a message
no newer than the last one evaluated for the same device, kind and service is skipped; fresh
batches are evaluated whole (late and interleaved points too)."""

from __future__ import annotations

import os
from collections import defaultdict
from operator import attrgetter
from typing import Any

from django.conf import settings

from edge import fastjson
from webapp.core import metrics
from webapp.core.redis import get_redis, keys
from webapp.rules.choices import TriggerType
from webapp.rules.conditions import _MISSING, Message
from webapp.rules.engine.decide import Outcome
from webapp.rules.engine.evaluation import (
    Evaluation,
    Item,
    all_quiet,
    count_replays,
)
from webapp.rules.engine.index import Bucket, RuleIndex
from webapp.rules.engine.state import in_progress
from webapp.rules.firings import seal
from webapp.rules.keys import rule_keys
from webapp.rules.taskqueue import enqueue

# A queued drain task that never ran (worker down, message lost) is resent after this.
DRAIN_PENDING_TTL_S = 60


def eval_budget_s() -> float:
    """How long one rule may take over one message before it is marked failed (a setting,
    or the environment's RULES_EVAL_BUDGET_MS; 50 ms by default)."""
    value = getattr(settings, "RULES_EVAL_BUDGET_MS", None) or os.environ.get(
        "RULES_EVAL_BUDGET_MS") or 50
    return int(value) / 1000


def rule_state(device: str, rule_id: int) -> dict[str, Any]:
    """One rule's state for one device (what the rule test shows)."""
    raw = get_redis().hget(rule_keys().states, device)
    return dict((fastjson.loads(raw) if raw else {}).get(str(rule_id)) or {})


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


class Run(Evaluation):
    """An evaluation whose guards and state are read from Redis at the start and whose
    changes are written back at the end.

    Redis holds the guards of every device in one hash and the rule state of every device
    that has some in another, so that a batch costs the same few commands whatever the
    number of devices: one round trip reads both for the batch's devices, one writes back."""

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
                   redelivered=redelivered, budget=eval_budget_s())

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

    def store(self) -> Outcome:
        """Write the guards, the changed state and the counters and queue the firings (one
        round trip); wake a Celery worker if none is about to run them."""
        outcome = self.outcome
        rk = rule_keys()
        self.count_stats()
        pipe = get_redis().pipeline(transaction=False)
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
        observe(outcome)
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
            enqueue("rules.drain_firings")  # only one is ever waiting
        return outcome


_PROMETHEUS = (("evaluated", metrics.RULE_EVALUATED), ("fired", metrics.RULE_FIRED),
               ("suppressed", metrics.RULE_SUPPRESSED))


def observe(outcome: Outcome) -> None:
    """Add an evaluation's counts to this process's Prometheus counters (docs/metrics.md)."""
    for rule_id, stats in outcome.stats.items():
        for name, counter in _PROMETHEUS:
            count = stats.get(name)
            if count:
                counter.labels(str(rule_id)).inc(count)


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
        bucket: {d for d in stateful if in_progress(run.states[d], bucket)}
        for bucket in with_rules if bucket is not None}
    if len(with_rules) == 1 and with_rules[0] is not None and \
            not busy[with_rules[0]] & devices and \
            all_quiet(with_rules[0], ordered, guards[with_rules[0].guard] if redelivered
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
        count_replays(bucket, replayed, run.outcome)
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
        active[key2] = in_progress(run.states[device], bucket)
    return run.store()
