"""The Django side of the ingest benchmark, run as a subprocess with its own DATABASE_URL:
`python -m bench._ingest_django setup N` creates the product and N devices and prints their
secrets; `query N` stores N points (100 devices) and times the 1-day 1-minute average query;
`copy` times a plain COPY of the stored rows into a twin table; `rules N` creates N alarm
threshold rules on the product's temperature that the traffic never crosses."""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402

from webapp.devices import actions as device_actions  # noqa: E402
from webapp.products import actions as product_actions  # noqa: E402
from webapp.products.models import Product  # noqa: E402
from webapp.system.models import User  # noqa: E402
from webapp.telemetry.backends import Point, get_backend  # noqa: E402
from webapp.telemetry.backends.sql import table_name  # noqa: E402

PRODUCT = {
    "identifier": "benchmeter", "name": "Bench meter", "product_type": "common",
    "protocol": "mqtt",
    "services": [{"code": "env", "name": "Environment", "properties": [
        {"code": "temperature", "datatype": "decimal", "min": -1000, "max": 1000},
        {"code": "humidity", "datatype": "int", "min": 0, "max": 1000}]}],
}


def setup(devices: int) -> None:
    call_command("migrate", verbosity=0)
    user = User.objects.filter(is_superuser=True).first() or User.objects.create_superuser(
        "bench", "", "bench-Passw0rd!")
    product = Product.objects.filter(identifier="benchmeter").first() or \
        product_actions.create_product(acting_user=user, data=json.loads(json.dumps(PRODUCT)))
    get_backend().ensure_schema(product)
    get_backend().prepare_ahead(product, int(time.time() * 1000) + 86_400_000)
    secrets = {}
    for i in range(devices):
        device, secret = device_actions.create_device(
            acting_user=user, product=product, identifier=f"bm-{i:05d}")
        secrets[device.identifier] = secret
    print(json.dumps({"secrets": secrets, "table": table_name(product, "env")}))


def _table() -> str:
    return table_name(Product.objects.get(identifier="benchmeter"), "env")


def copy_baseline() -> None:
    """COPY the rows ingest stored into an identical empty table; rows per second."""
    table = _table()
    twin = f"{table}_copytwin"
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT device, ts, received, temperature, humidity FROM {table}")  # noqa: S608
        rows = cursor.fetchall()
        cursor.execute(f"DROP TABLE IF EXISTS {twin}")
        cursor.execute(f"CREATE TABLE {twin} (LIKE {table} INCLUDING ALL) PARTITION BY RANGE (ts)")
        days = sorted({r[1] - r[1] % 86_400_000 for r in rows})
        for i, day in enumerate(days):
            cursor.execute(f"CREATE TABLE {twin}_{i} PARTITION OF {twin} FOR VALUES FROM "
                           f"({int(day)}) TO ({int(day) + 86_400_000})")
        started = time.perf_counter()
        with cursor.cursor.copy(f"COPY {twin} (device, ts, received, temperature, humidity) "
                                f"FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        seconds = time.perf_counter() - started
        cursor.execute(f"DROP TABLE {twin}")
    print(json.dumps({"rows": len(rows), "seconds": seconds}))


def query(points: int) -> None:
    """Store `points` (100 devices, one point a second), then time one device's day at
    1-minute averages through the API's query function."""
    from webapp.devices.models import Device
    from webapp.telemetry import queries

    table = _table()
    per_device = points // 100
    base = (int(time.time() * 1000) // 86_400_000 - 3) * 86_400_000
    product = Product.objects.get(identifier="benchmeter")
    # A write creates the daily partitions it needs (one marker point per day).
    days = range(base, base + per_device * 1000 + 86_400_000, 86_400_000)
    get_backend().write([Point("benchmeter", "env", "bm-marker", day, day, {"humidity": 0})
                         for day in days])
    with connection.cursor() as cursor:
        started = time.perf_counter()
        cursor.execute(
            f"INSERT INTO {table} (device, ts, received, temperature, humidity) "  # noqa: S608
            f"SELECT 'bm-' || lpad(d::text, 5, '0'), %s + s * 1000, %s + s * 1000, "
            f"random() * 100, (random() * 100)::int "
            f"FROM generate_series(0, 99) d, generate_series(0, %s) s "
            f"ON CONFLICT DO NOTHING", [base, base, per_device - 1])
        cursor.execute(f"ANALYZE {table}")
        fill_seconds = time.perf_counter() - started
        cursor.execute(f"SELECT COUNT(*) FROM {table}")  # noqa: S608
        stored = cursor.fetchone()[0]
    from datetime import UTC, datetime

    if not Device.objects.filter(identifier="bm-00050").exists():
        device_actions.create_device(acting_user=User.objects.filter(is_superuser=True).first(),
                                     product=product, identifier="bm-00050")
    device = Device.objects.select_related("product").get(identifier="bm-00050")
    start = datetime.fromtimestamp(base / 1000, tz=UTC)
    end = datetime.fromtimestamp((base + 86_400_000) / 1000, tz=UTC)
    params = {"service": "env", "property": "temperature", "interval": "1m", "agg": "avg",
              "start": start, "end": end}
    timings, rows = [], 0
    for _ in range(7):
        began = time.perf_counter()
        body = queries.telemetry(device, params)
        timings.append((time.perf_counter() - began) * 1000)
        rows = len(body["results"])
    print(json.dumps({"stored": stored, "fill_seconds": round(fill_seconds, 1),
                      "rows": rows, "first_ms": round(timings[0], 1),
                      "median_ms": round(statistics.median(timings[1:]), 1)}))


def rules(count: int) -> None:
    """N quiet threshold rules (bench.rules_ingest's `quiet` set) on benchmeter's env."""
    from bench.rules_ingest import _rules
    from webapp.rules import actions as rule_actions

    for body in _rules("quiet", count):
        body["trigger"]["product"] = "benchmeter"  # thresholds > 60 or < -10: never crossed
        rule_actions.create_rule(acting_user=None, data=body)
    print(json.dumps({"rules": count}))


if __name__ == "__main__":
    command = sys.argv[1]
    if command == "setup":
        setup(int(sys.argv[2]))
    elif command == "copy":
        copy_baseline()
    elif command == "query":
        query(int(sys.argv[2]))
    elif command == "rules":
        rules(int(sys.argv[2]))
