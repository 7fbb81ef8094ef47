"""What is particular to the SQL layout: daily partitions on PostgreSQL, plain tables on
SQLite, and the names of the tables."""

from __future__ import annotations

import pytest
from django.db import connection

from tests.telemetry.backend_suite import point
from tests.telemetry.conftest import BASE
from webapp.telemetry.backends.sql import DAY_MS, partition_name, rollup_table_name, table_name

on_postgresql = pytest.mark.skipif(connection.vendor != "postgresql",
                                   reason="partitioning is PostgreSQL's")


def partitions(table):
    with connection.cursor() as cursor:
        cursor.execute("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                       "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = %s", [table])
        return sorted(r[0] for r in cursor.fetchall())


@pytest.fixture
def backend(db):
    from webapp.telemetry.backends import get_backend

    return get_backend()


def test_names_stay_valid_identifiers(sensor):
    """Long service codes give names within 63 characters that do not collide."""
    long_a, long_b = "a" * 50, "a" * 49 + "b"
    assert table_name(sensor, "env") == f"tl_ts_{sensor.pk}_env"
    names = {table_name(sensor, long_a), table_name(sensor, long_b),
             rollup_table_name(sensor, long_a, 300_000), rollup_table_name(sensor, long_b, 300_000)}
    assert len(names) == 4 and all(len(n) <= 63 for n in names)
    assert partition_name("tl_ts_1_env", BASE - BASE % DAY_MS) == "tl_ts_1_env_p20231114"


@on_postgresql
def test_writes_create_the_daily_partitions_they_need(backend, sensor):
    """A write into days without a partition creates exactly those partitions."""
    table = table_name(sensor, "env")
    assert partitions(table) == []
    day = BASE - BASE % DAY_MS
    backend.write([point("d1", day + 5, humidity=1), point("d1", day + DAY_MS + 5, humidity=2),
                   point("d1", day + 10 * DAY_MS, humidity=3)])
    assert partitions(table) == sorted(partition_name(table, day + n * DAY_MS) for n in (0, 1, 10))
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT humidity FROM {partition_name(table, day + DAY_MS)}")  # noqa: S608
        assert cursor.fetchall() == [(2,)]


@on_postgresql
def test_prepare_ahead_creates_future_partitions(backend, sensor):
    """Beat's prepare_ahead creates today's and the coming days' partitions, once."""
    from edge.clock import now_ms

    now = now_ms()  # read once: two reads a millisecond apart made "today" 1 ms early
    today = now - now % DAY_MS
    assert backend.prepare_ahead(sensor, today + 2 * DAY_MS) == 2 * 3  # two services
    assert backend.prepare_ahead(sensor, today + 2 * DAY_MS) == 0
    assert len(partitions(table_name(sensor, "env"))) == 3


def test_expire_drops_old_data_only(backend, sensor):
    """Raw retention removes what is older than the cut-off (whole days on PostgreSQL)."""
    day = BASE - BASE % DAY_MS
    backend.write([point("d1", day - DAY_MS + 10, humidity=1), point("d1", day + 10, humidity=2),
                   point("d1", day + DAY_MS + 10, humidity=3)])
    assert backend.expire(sensor, day + 20) >= 1
    from tests.telemetry.backend_suite import q

    rows = backend.query(q(sensor, properties=["humidity"], start=0, end=day + 2 * DAY_MS))
    kept = [r["humidity"] for r in rows]
    # PostgreSQL drops whole partitions that end by the cut-off; SQLite deletes rows.
    assert kept == ([2, 3] if connection.vendor == "postgresql" else [3])
