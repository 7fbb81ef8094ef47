"""Time series in the Django database (SQLite or PostgreSQL).

The layout mirrors ThingLinks' TDengine one: a table per (product, service), keyed by
(device, ts), one column per property. Times are BIGINT epoch milliseconds, so bucketing for
aggregates is integer arithmetic done by the database on every vendor.

On PostgreSQL each table is range-partitioned on `ts` by day (`{table}_pYYYYMMDD`): partitions
are created ahead by Celery beat and on demand by a write that needs one, retention drops whole
partitions, and writes are bulk-loaded with `COPY` into a session temp table and merged with
`INSERT … ON CONFLICT` (idempotent). SQLite keeps one plain table and `executemany` upserts.

Rollups (`tl_ts_r{interval}_{product}_{service}`) hold per device and bucket the min, max, sum
and count of every numeric property; avg is sum / count.

Identifiers reaching SQL text are built from validated parts (`safe_identifier`), quoted by
the driver, and every value is a bound parameter, except the integer partition bounds of DDL
(PostgreSQL takes no parameters in DDL): those are `int` values computed here, never input.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from django.db import connection, transaction

from edge.clock import now_ms
from webapp.core.errors import DomainError
from webapp.products.models import Product
from webapp.telemetry.backends.base import (
    NO_FILL,
    NUMERIC_TYPES,
    Fill,
    Point,
    SchemaCache,
    SeriesQuery,
    bucket_starts,
    check_aggregate,
    derived_name,
    fill_buckets,
    merge_points,
    pick_rollup,
    plain,
    safe_identifier,
)

RESERVED_COLUMNS = frozenset({"device", "ts", "received", "bucket"})
DAY_MS = 86_400_000

_SQL_TYPES = {
    "postgresql": {"int": "INTEGER", "bigint": "BIGINT", "decimal": "DOUBLE PRECISION",
                   "string": "TEXT", "bool": "BOOLEAN", "datetime": "BIGINT", "json": "TEXT",
                   "binary": "TEXT", "enum": "TEXT"},
    "sqlite": {"int": "INTEGER", "bigint": "INTEGER", "decimal": "REAL", "string": "TEXT",
               "bool": "BOOLEAN", "datetime": "INTEGER", "json": "TEXT", "binary": "TEXT",
               "enum": "TEXT"},
}
_SUM_TYPES = {"postgresql": {"decimal": "DOUBLE PRECISION", "int": "BIGINT", "bigint": "NUMERIC"},
              "sqlite": {"decimal": "REAL", "int": "INTEGER", "bigint": "INTEGER"}}
_SQL_FUNCTIONS = {"avg": "AVG", "min": "MIN", "max": "MAX", "sum": "SUM", "count": "COUNT"}


# Rollup intervals whose (possibly digest-shortened) table names drop_storage also checks.
_COMMON_ROLLUPS_MS = (60_000, 300_000, 900_000, 3_600_000, 86_400_000)


def table_name(product: Product, service_code: str) -> str:
    return derived_name("tl_ts", str(int(product.pk)), safe_identifier(service_code).lower())


def interval_label(interval_ms: int) -> str:
    for unit, size in (("d", DAY_MS), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if interval_ms % size == 0:
            return f"{interval_ms // size}{unit}"
    return f"{int(interval_ms)}ms"


def rollup_table_name(product: Product, service_code: str, interval_ms: int) -> str:
    return derived_name("tl_ts", "r" + interval_label(interval_ms), str(int(product.pk)),
                        safe_identifier(service_code).lower())


def partition_name(table: str, day_ms: int) -> str:
    day = datetime.fromtimestamp(day_ms / 1000, tz=UTC)
    return derived_name(table, day.strftime("p%Y%m%d"))


def _encode(datatype: str, value: Any) -> Any:
    if value is None:
        return None
    if datatype in ("json", "enum"):
        return json.dumps(value, separators=(",", ":"))
    return value


def _decode(datatype: str, value: Any) -> Any:
    if value is None:
        return None
    if datatype in ("json", "enum"):
        return json.loads(value)
    if datatype == "bool":
        return bool(value)
    return value


class _ProductSchema:
    """Tables and column types of one product, as last ensured."""

    __slots__ = ("columns", "ignored", "pk", "tables", "updated")

    def __init__(self, product: Product) -> None:
        self.pk = product.pk
        self.updated = product.updated
        self.tables: dict[str, str] = {}
        self.columns: dict[str, dict[str, str]] = {}
        self.ignored: set[str] = set()  # properties a device sent that the model lacks
        for service in product.services.prefetch_related("properties"):
            self.tables[service.code] = table_name(product, service.code)
            self.columns[service.code] = {
                safe_identifier(p.code): p.datatype for p in service.properties.all()
                if p.code not in RESERVED_COLUMNS}


class SQLBackend(SchemaCache[_ProductSchema]):
    name = "sql"

    def __init__(self) -> None:
        self._init_schema_cache()
        self._partitioned: dict[str, bool] = {}

    # schema -----------------------------------------------------------------------------

    @property
    def _vendor(self) -> str:
        return "postgresql" if connection.vendor == "postgresql" else "sqlite"

    @property
    def _pg(self) -> bool:
        return connection.vendor == "postgresql"

    def _existing_columns(self, cursor: Any, table: str) -> set[str] | None:
        if table not in connection.introspection.table_names(cursor):
            return None
        return {c.name for c in connection.introspection.get_table_description(cursor, table)}

    def ensure_schema(self, product: Product) -> None:
        schema = _ProductSchema(product)
        types = _SQL_TYPES[self._vendor]
        qn = connection.ops.quote_name
        with transaction.atomic(), connection.cursor() as cursor:
            if self._pg:
                # Two processes extending the same product must not race on the catalog.
                cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))",
                               [f"tl_ts_schema_{schema.pk}"])
            for service, table in schema.tables.items():
                columns = schema.columns[service]
                existing = self._existing_columns(cursor, table)
                if existing is None:
                    defs = "".join(f", {qn(code)} {types[dt]}" for code, dt in columns.items())
                    partitioned = " PARTITION BY RANGE (ts)" if self._pg else ""
                    cursor.execute(
                        f"CREATE TABLE {qn(table)} (device VARCHAR(64) NOT NULL, "
                        f"ts BIGINT NOT NULL, received BIGINT NOT NULL{defs}, "
                        f"PRIMARY KEY (device, ts)){partitioned}"
                    )
                    if not self._pg:
                        cursor.execute(f"CREATE INDEX {qn(derived_name(table, 'ts'))} "
                                       f"ON {qn(table)} (ts)")
                    continue
                for code, dt in columns.items():
                    if code not in existing:
                        cursor.execute(f"ALTER TABLE {qn(table)} ADD COLUMN {qn(code)} {types[dt]}")
        with self._lock:
            self._schemas[product.identifier] = schema

    def forget_all(self) -> None:
        super().forget_all()
        with self._lock:
            self._partitioned.clear()

    # thing model changes ----------------------------------------------------------------

    def has_data(self, product: Product, service: str, prop: str | None = None) -> bool:
        table = table_name(product, service)
        qn = connection.ops.quote_name
        with connection.cursor() as cursor:
            existing = self._existing_columns(cursor, table)
            if existing is None:
                return False
            if prop is None:
                cursor.execute(f"SELECT 1 FROM {qn(table)} LIMIT 1")  # noqa: S608
            elif safe_identifier(prop) not in existing:
                return False
            else:
                cursor.execute(
                    f"SELECT 1 FROM {qn(table)} WHERE {qn(prop)} IS NOT NULL LIMIT 1")  # noqa: S608
            return cursor.fetchone() is not None

    def drop_storage(self, product: Product, service: str,
                     props: Sequence[str] | None = None) -> None:
        """Drop property columns, or the service's table; its rollup tables are dropped too
        (derived data: the next rollup run recomputes them from the raw points)."""
        table = table_name(product, service)
        qn = connection.ops.quote_name
        rollup = re.compile(rf"^tl_ts_r\d+(?:ms|s|m|h|d)_{int(product.pk)}_"
                            rf"{re.escape(safe_identifier(service).lower())}$")
        with transaction.atomic(), connection.cursor() as cursor:
            names = set(connection.introspection.table_names(cursor))
            rollups = {n for n in names if rollup.match(n)} | {
                rollup_table_name(product, service, ms) for ms in _COMMON_ROLLUPS_MS}
            for rtable in sorted(rollups & names):
                cursor.execute(f"DROP TABLE {qn(rtable)}")
            if table in names:
                if props is None:
                    cursor.execute(f"DROP TABLE {qn(table)}")
                else:
                    existing = self._existing_columns(cursor, table) or set()
                    for prop in props:
                        if safe_identifier(prop) in existing:
                            cursor.execute(f"ALTER TABLE {qn(table)} DROP COLUMN {qn(prop)}")
        self.forget(product.identifier)
        with self._lock:
            self._partitioned.pop(table, None)

    # partitions (PostgreSQL) ------------------------------------------------------------

    def _is_partitioned(self, cursor: Any, table: str) -> bool:
        cursor.execute("SELECT relkind FROM pg_class WHERE relname = %s "
                       "AND pg_table_is_visible(oid)", [table])
        row = cursor.fetchone()
        return bool(row and row[0] == "p")

    def _partitions(self, cursor: Any, table: str) -> dict[str, int]:
        """Existing partitions of `table`: name -> lower bound (ms)."""
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = %s "
            "AND pg_table_is_visible(p.oid)", [table])
        names = [r[0] for r in cursor.fetchall()]
        out: dict[str, int] = {}
        for name in names:
            stamp = name.rsplit("_p", 1)[-1]
            try:
                day = datetime.strptime(stamp, "%Y%m%d").replace(tzinfo=UTC)
            except ValueError:
                continue
            out[name] = int(day.timestamp() * 1000)
        return out

    def _ensure_partitions(self, cursor: Any, table: str, days: Iterable[int]) -> int:
        """Create the daily partitions of `table` that start at `days` and do not exist."""
        wanted = {partition_name(table, int(d)): int(d) for d in days}
        cursor.execute("SELECT c.relname FROM pg_class c WHERE c.relname = ANY(%s) "
                       "AND pg_table_is_visible(c.oid)", [list(wanted)])
        missing = set(wanted) - {r[0] for r in cursor.fetchall()}
        if not missing:
            return 0
        qn = connection.ops.quote_name
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [table])
        for name in sorted(missing):
            low = int(wanted[name])
            # DDL takes no bound parameters; the bounds are ints computed above.
            cursor.execute(f"CREATE TABLE IF NOT EXISTS {qn(name)} PARTITION OF {qn(table)} "
                           f"FOR VALUES FROM ({low}) TO ({low + DAY_MS})")
        return len(missing)

    def prepare_ahead(self, product: Product, until_ms: int) -> int:
        if not self._pg:
            return 0
        self.ensure_schema(product)
        schema = self._schemas[product.identifier]
        now = now_ms()
        today = now - now % DAY_MS
        created = 0
        with transaction.atomic(), connection.cursor() as cursor:
            for table in schema.tables.values():
                if self._is_partitioned(cursor, table):
                    created += self._ensure_partitions(cursor, table,
                                                       range(today, until_ms + 1, DAY_MS))
        return created

    # writes -----------------------------------------------------------------------------

    def write(self, points: Iterable[Point]) -> int:
        written = 0
        qn = connection.ops.quote_name
        with transaction.atomic(), connection.cursor() as cursor:
            for (product, service), merged in merge_points(points).items():
                batch = list(merged.values())
                schema = self._schema(product)
                if schema is None or service not in schema.tables:
                    continue
                sent = {c for p in batch for c in p.values}
                if sent - set(schema.columns[service]) - schema.ignored:
                    # The model may have gained a property since we cached it.
                    self.forget(product)
                    schema = self._schema(product)
                    if schema is None or service not in schema.tables:
                        continue
                    schema.ignored |= sent - set(schema.columns[service])
                types = schema.columns[service]
                columns = sorted(sent & set(types))
                table = schema.tables[service]
                rows = self._rows(batch, types, columns)
                if self._pg:
                    self._copy_merge(cursor, table, types, columns, rows)
                else:
                    names = ["device", "ts", "received", *columns]
                    cursor.executemany(
                        f"INSERT INTO {qn(table)} ({', '.join(qn(n) for n in names)}) "  # noqa: S608
                        f"VALUES ({', '.join(['%s'] * len(names))}) {self._upsert(table, columns)}",
                        rows)
                written += len(rows)
        return written

    @staticmethod
    def _rows(batch: list[Point], types: dict[str, str], columns: list[str]) -> list[list[Any]]:
        if not any(types[c] in ("json", "enum") for c in columns):  # the common, fast case
            return [[p.device, p.ts, p.received, *map(p.values.get, columns)] for p in batch]
        return [[p.device, p.ts, p.received,
                 *(_encode(types[c], p.values.get(c)) for c in columns)] for p in batch]

    @staticmethod
    def _upsert(table: str, columns: Sequence[str]) -> str:
        """The ON CONFLICT clause: sent properties replace, missing ones keep their value,
        and a replay that changes nothing writes nothing."""
        if not columns:
            return "ON CONFLICT (device, ts) DO NOTHING"
        qn = connection.ops.quote_name
        t = qn(table)
        sets = ", ".join(f"{qn(c)} = COALESCE(excluded.{qn(c)}, {t}.{qn(c)})" for c in columns)
        changed = " OR ".join(
            f"(excluded.{qn(c)} IS NOT NULL AND {t}.{qn(c)} IS DISTINCT FROM excluded.{qn(c)})"
            if connection.vendor == "postgresql" else
            f"(excluded.{qn(c)} IS NOT NULL AND {t}.{qn(c)} IS NOT excluded.{qn(c)})"
            for c in columns)
        return f"ON CONFLICT (device, ts) DO UPDATE SET {sets} WHERE {changed}"

    def _copy_merge(self, cursor: Any, table: str, types: dict[str, str],
                    columns: list[str], rows: list[list[Any]]) -> None:
        """COPY the rows into a session temp table, then merge them with one upsert."""
        qn = connection.ops.quote_name
        if self._is_partitioned_cached(cursor, table):
            self._ensure_partitions(cursor, table, {r[1] - r[1] % DAY_MS for r in rows})
        # One staging table per (table, column set) and session; emptied at each commit.
        shape = hashlib.sha1(repr((table, sorted(types.items()))).encode(),
                             usedforsecurity=False).hexdigest()[:16]
        stage = qn(f"tl_stage_{shape}")
        cursor.execute(f"CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE {qn(table)}) "
                       f"ON COMMIT DELETE ROWS")
        names = ", ".join(qn(n) for n in ["device", "ts", "received", *columns])
        with cursor.cursor.copy(f"COPY {stage} ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        cursor.execute(f"INSERT INTO {qn(table)} ({names}) SELECT {names} FROM {stage} "  # noqa: S608
                       f"{self._upsert(table, columns)}")
        cursor.execute(f"DELETE FROM {stage}")  # noqa: S608

    def _is_partitioned_cached(self, cursor: Any, table: str) -> bool:
        if table not in self._partitioned:
            self._partitioned[table] = self._is_partitioned(cursor, table)
        return self._partitioned[table]

    # reads ------------------------------------------------------------------------------

    def _columns_for(self, q: SeriesQuery) -> tuple[str, dict[str, str]]:
        schema = self._schema(q.product.identifier)
        if schema is None or q.service not in schema.tables:
            raise DomainError(f"unknown service {q.service!r}", code="unknown_service")
        types = schema.columns[q.service]
        wanted = list(q.properties) or list(types)
        unknown = [p for p in wanted if p not in types]
        if unknown:
            raise DomainError(f"unknown property {unknown[0]!r} in service {q.service!r}",
                              code="unknown_property")
        return schema.tables[q.service], {p: types[p] for p in wanted}

    def query(self, q: SeriesQuery) -> list[dict[str, Any]]:
        table, types = self._columns_for(q)
        if not q.devices:
            return []
        qn = connection.ops.quote_name
        device_marks = ", ".join(["%s"] * len(q.devices))
        params: list[Any] = [*q.devices, q.start, q.end]
        cursor_clause = ""
        if q.after is not None:
            cursor_clause = " AND ts < %s" if q.descending else " AND ts > %s"
            params.append(q.after)
        order = "DESC" if q.descending else "ASC"
        selected = "".join(f", {qn(c)}" for c in types)
        sql = (
            f"SELECT device, ts{selected} FROM {qn(table)} "  # noqa: S608
            f"WHERE device IN ({device_marks}) AND ts >= %s AND ts < %s{cursor_clause} "
            f"ORDER BY ts {order}, device LIMIT %s"
        )
        params.append(q.limit)
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
        codes = list(types)
        return [
            {"device": row[0], "ts": int(row[1]),
             **{c: _decode(types[c], v) for c, v in zip(codes, row[2:])}}
            for row in rows
        ]

    def aggregate(self, q: SeriesQuery, interval_ms: int, function: str,
                  fill: Fill = NO_FILL, calendar: Sequence[int] = ()) -> list[dict[str, Any]]:
        table, types = self._columns_for(q)
        check_aggregate(function, types)
        if not q.devices:
            return []
        interval_ms = int(interval_ms)
        rollup = pick_rollup(q, interval_ms, function, calendar)
        rows: list[dict[str, Any]] = []
        start = q.start
        if rollup is not None:
            rtable = rollup_table_name(q.product, q.service, rollup)
            numeric = {c: dt for c, dt in types.items() if dt in NUMERIC_TYPES}
            watermark = self._rollup_watermark(rtable, rollup) if numeric == types else None
            if watermark is not None and watermark > q.start:
                # Whole query intervals before the watermark come from the rollup.
                split = min(q.end, _bucket_of(watermark, interval_ms, calendar))
                if split > q.start:
                    rows = self._aggregate_rollup(q, rtable, types, interval_ms, function,
                                                  split, calendar)
                    start = split
        if start < q.end and len(rows) < q.limit:
            if function in ("first", "last"):
                rows += self._first_last(q, table, types, interval_ms, function, start,
                                         calendar)
            else:
                rows += self._aggregate_raw(q, table, types, interval_ms, function, start,
                                            calendar)
        rows = fill_buckets(rows, q.devices, list(types),
                            bucket_starts(q.start, q.end, interval_ms, calendar), fill)
        return rows[:q.limit]

    def _aggregate_raw(self, q: SeriesQuery, table: str, types: dict[str, str],
                       interval_ms: int, function: str, start: int,
                       calendar: Sequence[int]) -> list[dict[str, Any]]:
        qn = connection.ops.quote_name
        device_marks = ", ".join(["%s"] * len(q.devices))
        fn = _SQL_FUNCTIONS[function]
        selects = "".join(f", {fn}({qn(c)})" for c in types)
        bucket, bucket_params = _bucket_sql("ts", interval_ms, calendar)
        sql = (
            f"SELECT device, {bucket} AS bucket{selects} FROM {qn(table)} "  # noqa: S608
            f"WHERE device IN ({device_marks}) AND ts >= %s AND ts < %s "
            f"GROUP BY device, bucket ORDER BY bucket, device LIMIT %s"
        )
        params: list[Any] = [*bucket_params, *q.devices, start, q.end, q.limit]
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
        codes = list(types)
        return [{"device": r[0], "ts": int(r[1]),
                 **{c: plain(v, types[c], function) for c, v in zip(codes, r[2:])}}
                for r in rows]

    def _first_last(self, q: SeriesQuery, table: str, types: dict[str, str], interval_ms: int,
                    function: str, start: int, calendar: Sequence[int]) -> list[dict[str, Any]]:
        """First/last non-null value of each property per bucket (TDengine's FIRST/LAST)."""
        qn = connection.ops.quote_name
        device_marks = ", ".join(["%s"] * len(q.devices))
        direction = "ASC" if function == "first" else "DESC"
        windows = "".join(
            f", FIRST_VALUE({qn(c)}) OVER (PARTITION BY device, bucket ORDER BY "
            f"CASE WHEN {qn(c)} IS NULL THEN 1 ELSE 0 END, ts {direction})"
            for c in types)
        inner = "".join(f", {qn(c)}" for c in types)
        bucket, bucket_params = _bucket_sql("ts", interval_ms, calendar)
        sql = (
            f"SELECT DISTINCT device, bucket{windows} FROM ("  # noqa: S608
            f"SELECT device, ts, {bucket} AS bucket{inner} FROM {qn(table)} "
            f"WHERE device IN ({device_marks}) AND ts >= %s AND ts < %s) r "
            f"ORDER BY bucket, device LIMIT %s"
        )
        params: list[Any] = [*bucket_params, *q.devices, start, q.end, q.limit]
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
        codes = list(types)
        return [{"device": r[0], "ts": int(r[1]),
                 **{c: _decode(types[c], v) for c, v in zip(codes, r[2:])}}
                for r in rows]

    def latest(self, q: SeriesQuery) -> dict[str, dict[str, dict[str, Any]]]:
        table, types = self._columns_for(q)
        qn = connection.ops.quote_name
        out: dict[str, dict[str, dict[str, Any]]] = {d: {} for d in q.devices}
        with connection.cursor() as cursor:
            for device in q.devices:
                for code, datatype in types.items():
                    cursor.execute(
                        f"SELECT ts, {qn(code)} FROM {qn(table)} WHERE device = %s "  # noqa: S608
                        f"AND ts >= %s AND ts < %s AND {qn(code)} IS NOT NULL "
                        f"ORDER BY ts DESC LIMIT 1", [device, q.start, q.end])
                    row = cursor.fetchone()
                    if row is not None:
                        out[device][code] = {"value": _decode(datatype, row[1]),
                                             "ts": int(row[0])}
        return out

    # retention --------------------------------------------------------------------------

    def expire(self, product: Product, before_ms: int) -> int:
        """Drop raw points before `before_ms`: whole partitions that end by then on PostgreSQL
        (instant, no dead rows), rows on SQLite."""
        self.ensure_schema(product)
        schema = self._schemas[product.identifier]
        qn = connection.ops.quote_name
        dropped = 0
        with transaction.atomic(), connection.cursor() as cursor:
            for table in schema.tables.values():
                if self._pg and self._is_partitioned(cursor, table):
                    for name, low in sorted(self._partitions(cursor, table).items()):
                        if low + DAY_MS <= before_ms:
                            cursor.execute(f"DROP TABLE IF EXISTS {qn(safe_identifier(name))}")
                            dropped += 1
                else:
                    cursor.execute(f"DELETE FROM {qn(table)} WHERE ts < %s",  # noqa: S608
                                   [before_ms])
                    dropped += max(cursor.rowcount, 0)
        return dropped

    # rollups ----------------------------------------------------------------------------

    def _ensure_rollup_table(self, cursor: Any, table: str, numeric: dict[str, str]) -> None:
        qn = connection.ops.quote_name
        types = _SQL_TYPES[self._vendor]
        sums = _SUM_TYPES[self._vendor]

        def defs(code: str, datatype: str) -> list[str]:
            return [f"{qn(code + '_min')} {types[datatype]}",
                    f"{qn(code + '_max')} {types[datatype]}",
                    f"{qn(code + '_sum')} {sums[datatype]}", f"{qn(code + '_cnt')} BIGINT"]

        existing = self._existing_columns(cursor, table)
        if existing is None:
            cols = "".join(f", {d}" for code, dt in numeric.items() for d in defs(code, dt))
            cursor.execute(f"CREATE TABLE {qn(table)} (device VARCHAR(64) NOT NULL, "
                           f"bucket BIGINT NOT NULL{cols}, PRIMARY KEY (device, bucket))")
            cursor.execute(f"CREATE INDEX {qn(derived_name(table, 'bucket'))} "
                           f"ON {qn(table)} (bucket)")
            return
        for code, dt in numeric.items():
            if f"{code}_cnt" not in existing:
                for d in defs(code, dt):
                    cursor.execute(f"ALTER TABLE {qn(table)} ADD COLUMN {d}")

    def _rollup_watermark(self, table: str, interval_ms: int) -> int | None:
        """End of the last bucket the rollup job has written (for the whole table: the job
        covers every device of a bucket at once)."""
        qn = connection.ops.quote_name
        with connection.cursor() as cursor:
            if table not in connection.introspection.table_names(cursor):
                return None
            cursor.execute(f"SELECT MAX(bucket) FROM {qn(table)}")  # noqa: S608
            row = cursor.fetchone()
        return None if row is None or row[0] is None else int(row[0]) + interval_ms

    def refresh_rollups(self, product: Product, intervals: Sequence[int], now_ms: int,
                        lookback_ms: int) -> int:
        self.ensure_schema(product)
        schema = self._schemas[product.identifier]
        qn = connection.ops.quote_name
        written = 0
        for service, table in schema.tables.items():
            numeric = {c: dt for c, dt in schema.columns[service].items()
                       if dt in NUMERIC_TYPES}
            if not numeric:
                continue
            for interval in sorted({int(i) for i in intervals}):
                rtable = rollup_table_name(product, service, interval)
                with transaction.atomic(), connection.cursor() as cursor:
                    self._ensure_rollup_table(cursor, rtable, numeric)
                    cursor.execute(f"SELECT MAX(bucket) FROM {qn(rtable)}")  # noqa: S608
                    last = cursor.fetchone()[0]
                    if last is None:
                        cursor.execute(f"SELECT MIN(ts) FROM {qn(table)}")  # noqa: S608
                        first = cursor.fetchone()[0]
                        if first is None:
                            continue
                        since = int(first)
                    else:
                        since = int(last) + interval - lookback_ms
                    since -= since % interval
                    until = now_ms - now_ms % interval  # only complete buckets
                    if since >= until:
                        continue
                    names = ["device", "bucket"]
                    selects = ["device", "(ts - (ts %% %s)) AS bucket"]
                    for code in numeric:
                        names += [f"{code}_min", f"{code}_max", f"{code}_sum", f"{code}_cnt"]
                        selects += [f"MIN({qn(code)})", f"MAX({qn(code)})",
                                    f"SUM({qn(code)})", f"COUNT({qn(code)})"]
                    updates = ", ".join(f"{qn(n)} = excluded.{qn(n)}" for n in names[2:])
                    cursor.execute(
                        f"INSERT INTO {qn(rtable)} ({', '.join(qn(n) for n in names)}) "  # noqa: S608
                        f"SELECT {', '.join(selects)} FROM {qn(table)} "
                        f"WHERE ts >= %s AND ts < %s GROUP BY device, bucket "
                        f"ON CONFLICT (device, bucket) DO UPDATE SET {updates}",
                        [interval, since, until])
                    written += max(cursor.rowcount, 0)
        return written

    def _aggregate_rollup(self, q: SeriesQuery, rtable: str, types: dict[str, str],
                          interval_ms: int, function: str, end: int,
                          calendar: Sequence[int]) -> list[dict[str, Any]]:
        qn = connection.ops.quote_name
        device_marks = ", ".join(["%s"] * len(q.devices))
        selects = []
        for code in types:
            if function == "avg":
                selects.append(f"SUM({qn(code + '_sum')}) * 1.0 / "
                               f"NULLIF(SUM({qn(code + '_cnt')}), 0)")
            elif function == "count":
                selects.append(f"SUM({qn(code + '_cnt')})")
            else:
                part = {"min": "_min", "max": "_max", "sum": "_sum"}[function]
                selects.append(f"{_SQL_FUNCTIONS[function]}({qn(code + part)})")
        bucket, bucket_params = _bucket_sql("bucket", interval_ms, calendar)
        sql = (
            f"SELECT device, {bucket} AS b, {', '.join(selects)} "  # noqa: S608
            f"FROM {qn(rtable)} WHERE device IN ({device_marks}) AND bucket >= %s "
            f"AND bucket < %s GROUP BY device, b ORDER BY b, device LIMIT %s"
        )
        # Rollup buckets that start in [start, end): a start that is not on a rollup
        # boundary leaves out the points of the partial rollup bucket before it.
        params: list[Any] = [*bucket_params, *q.devices, q.start, end, q.limit]
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
        codes = list(types)
        out = []
        for r in rows:
            values = {c: plain(v, types[c], function) for c, v in zip(codes, r[2:])}
            if function == "count":
                values = {c: v or 0 for c, v in values.items()}
            out.append({"device": r[0], "ts": int(r[1]), **values})
        return out

    def expire_rollups(self, product: Product, intervals: Sequence[int],
                       before_ms: int) -> int:
        qn = connection.ops.quote_name
        dropped = 0
        with transaction.atomic(), connection.cursor() as cursor:
            existing = set(connection.introspection.table_names(cursor))
            for service in product.services.values_list("code", flat=True):
                for interval in intervals:
                    rtable = rollup_table_name(product, service, int(interval))
                    if rtable in existing:
                        cursor.execute(f"DELETE FROM {qn(rtable)} WHERE bucket < %s",  # noqa: S608
                                       [before_ms])
                        dropped += max(cursor.rowcount, 0)
        return dropped


def _bucket_sql(column: str, interval_ms: int,
                calendar: Sequence[int]) -> tuple[str, list[int]]:
    """The SQL expression (and its bound values) of the bucket start of `column`: integer
    arithmetic for a fixed interval; for calendar buckets, whose lengths vary, the latest
    boundary at or before it (the boundaries are computed in Python from the time zone, so
    the same statement runs on PostgreSQL and SQLite without their time zone functions).
    `%%` is a literal `%`."""
    if not calendar:
        return f"({column} - ({column} %% %s))", [interval_ms]
    starts = list(calendar[:-1])[::-1]
    cases = " ".join(f"WHEN {column} >= %s THEN %s" for _ in starts)
    params: list[int] = []
    for boundary in starts:
        params += [boundary, boundary]
    return f"(CASE {cases} END)", params


def _bucket_of(moment: int, interval_ms: int, calendar: Sequence[int]) -> int:
    """The start of the bucket that holds `moment` (the last boundary at or before it)."""
    if not calendar:
        return moment - moment % interval_ms
    return max((b for b in calendar if b <= moment), default=calendar[0])
