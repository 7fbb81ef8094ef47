"""What the rule engine costs the ingest path: the real IngestWorker (Redis stream → SQL time
series → latest values → rule hooks) draining the same uplink traffic with no rules, then with
100 rules on the product, alternating rounds; the figure is the drop in points per second.

Runs in a child process with its own SQLite database and Redis key prefix (REDIS_URL, or an
embedded Redis when it is unset): `python -m bench rules_ingest [--small]`.
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


def child(small: bool) -> dict[str, Any]:
    workdir = tempfile.mkdtemp(prefix="tl-bench-rules-")
    os.environ["DATABASE_URL"] = f"sqlite:///{workdir}/bench.sqlite3"
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
    from webapp.core.redis import get_redis
    from webapp.rules import actions, engine
    from webapp.rules.models import Rule
    from webapp.system.models import User
    from webapp.telemetry.backends import get_backend
    from webapp.telemetry.ingest import Batch, IngestWorker

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
              ) -> tuple[float, float]:
        pipe = redis.pipeline(transaction=False)
        for entry in entries:
            pipe.xadd(f"{prefix}uplink", {"b": json.dumps(entry)})
        pipe.execute()
        started = time.perf_counter(), time.process_time()
        while worker.process(worker.read()):
            pass
        return time.perf_counter() - started[0], time.process_time() - started[1]

    results: dict[str, Any] = {"points_per_round": points_per_round, "rounds": rounds,
                               "devices": devices, "events_per_entry": EVENTS_PER_ENTRY,
                               "database": "sqlite (file)", "rules": 100}
    worker = IngestWorker(redis, Keys(prefix), get_backend(), "bench", count=200, block_ms=1)
    worker.ensure_group()
    drain(worker, traffic(999))  # warm up: tables, caches
    round_no = 0
    try:
        for mix in ("quiet", "thresholds", "mixed"):
            Rule.objects.all().delete()
            for body in _rules(mix, 100):
                actions.create_rule(acting_user=None, data=body)
            rates: dict[str, list[float]] = {"none": [], "rules": []}
            cpu_rates: dict[str, list[float]] = {"none": [], "rules": []}
            for r in range(rounds):
                order = ("none", "rules") if r % 2 == 0 else ("rules", "none")
                for config in order:
                    Rule.objects.update(enabled=config == "rules")
                    engine.bump_version()
                    engine._index()  # compile now, not inside the timed drain
                    round_no += 1
                    seconds, cpu_seconds = drain(worker, traffic(round_no))
                    rates[config].append(points_per_round / seconds)
                    cpu_rates[config].append(points_per_round / cpu_seconds)
            Rule.objects.update(enabled=True)
            engine.bump_version()
            engine._index()
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
            fired = sum(int(redis.hget(engine.rule_keys().stats(r.pk), "fired") or 0) +
                        int(redis.hget(engine.rule_keys().stats(r.pk), "cleared") or 0)
                        for r in Rule.objects.all())
            none, rules = statistics.median(rates["none"]), statistics.median(rates["rules"])
            cpu_none = statistics.median(cpu_rates["none"])
            cpu_rules = statistics.median(cpu_rates["rules"])
            results[mix] = {"points_per_cpu_s_no_rules": round(cpu_none),
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
    return results


if __name__ == "__main__":
    print(json.dumps(child("--small" in sys.argv)))
