"""What the rule engine costs the ingest path: the real IngestWorker (Redis stream → SQL time
series → latest values → rule hooks) draining the same uplink traffic with no rules, then with
100 rules on the product, alternating rounds; the figures are the CPU the rule hook adds to
the rest of ingest (timed inside the worker), and the drop in points per second.

Runs in a child process with its own database (PostgreSQL: BENCH_DATABASE_URL, default the
machine's server, database `tl_bench_rules` created and dropped; or BENCH_DATABASE_URL=sqlite)
and Redis key prefix (REDIS_URL, or an embedded Redis when it is unset):
`python -m bench rules_ingest [--small]`.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

import orjson

from bench import benchmark

EVENTS_PER_ENTRY = 10  # the edge batches the events of one reactor turn into one entry


@benchmark("rules_ingest")
def run(small: bool) -> dict[str, Any]:
    args = [sys.executable, "-m", "bench.rules_ingest"] + (["--small"] if small else [])
    done = subprocess.run(args, capture_output=True, text=True, timeout=1800,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _rules(mix: str, count: int) -> list[dict[str, Any]]:
    """`quiet`: 100 alarm thresholds on the reported property, none of which is crossed (the
    steady state of a healthy fleet); `thresholds`: the same with four of them crossed now and
    then (each fires on every reading past it, and clears), so firings are queued too;
    `mixed`: as `thresholds`, a third of the rules with AND/OR groups, latest values,
    debounce, increased_by and expressions."""
    trigger = {"type": "property", "product": "bench", "service": "env",
               "property": "temperature"}
    alarm = [{"type": "alarm", "severity": "major", "message": "{{device}} {{value}}"}]
    rules = []
    for i in range(count):
        ops = [">", ">=", "<", "<="]
        op = ops[i % 4]
        # Most thresholds never hold (values are 20..40); every 25th one holds now and then.
        hot = i % 25 == 0 and mix != "quiet"
        value = 39.6 if hot and op in (">", ">=") else 20.4 if hot else (
            60 + i if op in (">", ">=") else -10 - i)
        condition: dict[str, Any] = {"op": op, "value": value}
        extra: dict[str, Any] = {}
        if mix == "mixed" and i % 3 == 1:
            kind = (i // 3) % 4
            if kind == 0:
                condition = {"all": [condition, {"property": "humidity", "op": "<",
                                                 "value": 10}]}
            elif kind == 1:
                condition = {"any": [condition, {"service": "power", "property": "volts",
                                                 "op": "<", "value": 100}]}
                extra = {"debounce": {"count": 3, "window": 5}}
            elif kind == 2:
                condition = {"op": "increased_by", "value": 50}
            else:
                condition = {"expr": f"temperature - humidity > {100 + i}"}
        rules.append({"name": f"bench-{i}", "trigger": trigger, "condition": condition,
                      "actions": alarm, "cooldown": 60 if i % 2 else 0, **extra})
    return rules


DATABASE = "tl_bench_rules"


def _database(workdir: str) -> tuple[str, Any]:
    """The database ingest writes to: PostgreSQL as in production and in the ingest bench
    (BENCH_DATABASE_URL names the server; `tl_bench_rules` is created and dropped), or a
    SQLite file with BENCH_DATABASE_URL=sqlite. Returns (DATABASE_URL, a cleanup)."""
    server = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    if server == "sqlite":
        return f"sqlite:///{workdir}/bench.sqlite3", lambda: None
    import psycopg

    admin = psycopg.connect(server, autocommit=True)
    admin.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
    admin.execute(f"CREATE DATABASE {DATABASE}")

    def drop() -> None:
        from django.db import connections

        connections.close_all()
        admin.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        admin.close()

    return server.rsplit("/", 1)[0] + f"/{DATABASE}", drop


class _HookTimer:
    """CPU time spent in the rule engine's ingest hook (engine.on_batch), summed."""

    def __init__(self, hook: Any) -> None:
        self.hook = hook
        self.seconds = 0.0

    def __call__(self, batch: Any) -> None:
        started = time.process_time()
        try:
            self.hook(batch)
        finally:
            self.seconds += time.process_time() - started


def child(small: bool) -> dict[str, Any]:
    workdir = tempfile.mkdtemp(prefix="tl-bench-rules-")
    os.environ["DATABASE_URL"], drop_database = _database(workdir)
    prefix = f"bench{uuid.uuid4().hex[:8]}:"
    os.environ["REDIS_PREFIX"] = prefix
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    embedded = None
    if not os.environ.get("REDIS_URL"):
        from pathlib import Path

        from config.embedded_redis import EmbeddedRedis

        embedded = EmbeddedRedis(Path(workdir), persistent=False)
        os.environ["REDIS_URL"] = embedded.start()
    import django

    django.setup()
    from django.core.management import call_command
    from rest_framework.test import APIClient

    from edge.bus.keys import Keys
    from edge.gctune import tune_gc
    from webapp.core.redis import get_redis
    from webapp.rules import actions, engine
    from webapp.rules.engine.hooks import _index as compile_index
    from webapp.rules.keys import bump_version, rule_keys
    from webapp.rules.models import Rule
    from webapp.system.models import User
    from webapp.telemetry import hooks
    from webapp.telemetry.backends import get_backend
    from webapp.telemetry.ingest import Batch, IngestWorker

    position = hooks._batch_handlers.index(engine.on_batch)
    timer = _HookTimer(engine.on_batch)
    hooks._batch_handlers[position] = timer

    call_command("migrate", verbosity=0)
    admin = User.objects.create_superuser("bench", "bench@example.com", "bench-pw-123!")
    client = APIClient()
    client.force_authenticate(admin)
    product = {"identifier": "bench", "name": "Bench", "services": [
        {"code": "env", "properties": [
            {"code": "temperature", "datatype": "decimal", "min": -40, "max": 125},
            {"code": "humidity", "datatype": "int", "min": 0, "max": 100}]},
        {"code": "power", "properties": [{"code": "volts", "datatype": "decimal"}]}]}
    assert client.post("/api/v1/products/", product, format="json").status_code == 201
    devices = 20 if small else 100
    for d in range(devices):
        client.post("/api/v1/devices/", {"product": "bench", "identifier": f"b-{d}"},
                    format="json")
    redis = get_redis()
    points_per_round = 4_000 if small else 40_000
    rounds = 2 if small else 5
    rng = random.Random(7)
    base_ts = int(time.time() * 1000) - 10 * 86_400_000

    # Each device's temperature wanders (a random walk in 20..40 °C): hot spells come and go
    # as they do on real sensors, rather than flapping on every reading.
    temperature = [rng.uniform(25, 35) for _ in range(devices)]

    def traffic(round_no: int) -> list[list[dict[str, Any]]]:
        entries, entry = [], []
        for n in range(points_per_round):
            d = n % devices
            temperature[d] = min(40.0, max(20.0, temperature[d] + rng.uniform(-0.8, 0.8)))
            entry.append({"t": "data", "dev": f"b-{d}", "prod": "bench", "svc": "env",
                          "ts": base_ts + round_no * 10_000_000 + n, "et": None,
                          "v": {"temperature": round(temperature[d], 2),
                                "humidity": rng.randint(30, 70)}})
            if len(entry) == EVENTS_PER_ENTRY:
                entries.append(entry)
                entry = []
        return entries

    def drain(worker: IngestWorker, entries: list[list[dict[str, Any]]]
              ) -> tuple[float, float, float]:
        """Wall seconds, CPU seconds, and CPU seconds inside the rule hook."""
        pipe = redis.pipeline(transaction=False)
        for entry in entries:
            # As the edge writes them: `o` = written by orjson (docs/bus.md).
            pipe.xadd(f"{prefix}uplink", {"b": orjson.dumps(entry), "o": "1"})
        pipe.execute()
        hook_before = timer.seconds
        started = time.perf_counter(), time.process_time()
        while worker.process(worker.read()):
            pass
        return (time.perf_counter() - started[0], time.process_time() - started[1],
                timer.seconds - hook_before)

    results: dict[str, Any] = {"points_per_round": points_per_round, "rounds": rounds,
                               "devices": devices, "events_per_entry": EVENTS_PER_ENTRY,
                               "database": os.environ["DATABASE_URL"].split(":", 1)[0],
                               "rules": 100}
    worker = IngestWorker(redis, Keys(prefix), get_backend(), "bench", count=200, block_ms=1)
    worker.ensure_group()
    drain(worker, traffic(999))  # warm up: tables, caches
    # As `manage.py ingest` does (edge.gctune): without it, the collector's passes over the
    # heap, larger with the rule index loaded, were most of the difference between rounds.
    tune_gc()
    round_no = 0
    try:
        for mix in ("quiet", "thresholds", "mixed"):
            Rule.objects.all().delete()
            for body in _rules(mix, 100):
                actions.create_rule(acting_user=None, data=body)
            rates: dict[str, list[float]] = {"none": [], "rules": []}
            cpu_rates: dict[str, list[float]] = {"none": [], "rules": []}
            hook_shares: list[float] = []
            for r in range(rounds):
                order = ("none", "rules") if r % 2 == 0 else ("rules", "none")
                for config in order:
                    Rule.objects.update(enabled=config == "rules")
                    bump_version()
                    compile_index()  # compile now, not inside the timed drain
                    round_no += 1
                    seconds, cpu_seconds, hook_seconds = drain(worker, traffic(round_no))
                    rates[config].append(points_per_round / seconds)
                    cpu_rates[config].append(points_per_round / cpu_seconds)
                    if config == "rules":
                        # What the hook adds to the CPU the rest of ingest spent on the round.
                        hook_shares.append(hook_seconds / (cpu_seconds - hook_seconds))
            Rule.objects.update(enabled=True)
            bump_version()
            compile_index()
            engine_us = []
            for _ in range(rounds):
                round_no += 1
                batch = Batch()
                for entry in traffic(round_no):
                    for event in entry:
                        batch.add(event)
                started = time.process_time()
                for start in range(0, len(batch.points), 2000):
                    engine.on_batch(Batch(points=batch.points[start:start + 2000]))
                engine_us.append(1e6 * (time.process_time() - started) / len(batch.points))
            fired = sum(int(redis.hget(rule_keys().stats(r.pk), "fired") or 0) +
                        int(redis.hget(rule_keys().stats(r.pk), "cleared") or 0)
                        for r in Rule.objects.all())
            none, rules = statistics.median(rates["none"]), statistics.median(rates["rules"])
            cpu_none = statistics.median(cpu_rates["none"])
            cpu_rules = statistics.median(cpu_rates["rules"])
            results[mix] = {"rule_hook_adds_percent": round(
                                100 * statistics.median(hook_shares), 1),
                            "points_per_cpu_s_no_rules": round(cpu_none),
                            "points_per_cpu_s_100_rules": round(cpu_rules),
                            "cpu_overhead_percent": round(100 * (1 - cpu_rules / cpu_none), 1),
                            "points_per_s_no_rules": round(none),
                            "points_per_s_100_rules": round(rules),
                            "wall_overhead_percent": round(100 * (1 - rules / none), 1),
                            "wall_rates": {k: [round(x) for x in v] for k, v in rates.items()},
                            "engine_alone_us_per_point": round(min(engine_us), 2),
                            "firings_per_1000_points": round(
                                1000 * fired / (points_per_round * rounds * 2), 1)}
    finally:
        keys = list(redis.scan_iter(match=f"{prefix}*", count=1000))
        for start in range(0, len(keys), 500):
            redis.delete(*keys[start:start + 500])
        if embedded is not None:
            embedded.stop()
        drop_database()
    return results


if __name__ == "__main__":
    print(json.dumps(child("--small" in sys.argv)))
