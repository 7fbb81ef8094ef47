"""Time series in the Django database (SQLite or PostgreSQL).

The layout mirrors ThingLinks' TDengine one: a table per (product, service), keyed by
(device, ts), one column per property. Times are BIGINT epoch milliseconds, so bucketing for
aggregates is integer arithmetic done by the database on every vendor.
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from django.db import connection, transaction

from webapp.core.errors import DomainError
from webapp.products.models import Product
from webapp.telemetry.backends.base import (
    AGGREGATES,
    NUMERIC_TYPES,
    Point,
    SeriesQuery,
    TimeSeriesBackend,
    safe_identifier,
)

RESERVED_COLUMNS = frozenset({"device", "ts", "received"})

_SQL_TYPES = {
    "postgresql": {"int": "INTEGER", "bigint": "BIGINT", "decimal": "DOUBLE PRECISION",
                   "string": "TEXT", "bool": "BOOLEAN", "datetime": "BIGINT", "json": "TEXT",
                   "binary": "TEXT", "enum": "TEXT"},
    "sqlite": {"int": "INTEGER", "bigint": "INTEGER", "decimal": "REAL", "string": "TEXT",
               "bool": "BOOLEAN", "datetime": "INTEGER", "json": "TEXT", "binary": "TEXT",
               "enum": "TEXT"},
}


def table_name(product: Product, service_code: str) -> str:
    return safe_identifier(f"tl_ts_{product.pk}_{service_code.lower()}")


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

    __slots__ = ("columns", "tables", "updated")

    def __init__(self, product: Product) -> None:
        self.updated = product.updated
        self.tables: dict[str, str] = {}
        self.columns: dict[str, dict[str, str]] = {}
        for service in product.services.prefetch_related("properties"):
            self.tables[service.code] = table_name(product, service.code)
            self.columns[service.code] = {p.code: p.datatype for p in service.properties.all()}


class SQLBackend(TimeSeriesBackend):
    name = "sql"

    def __init__(self) -> None:
        self._schemas: dict[str, _ProductSchema] = {}
        self._lock = threading.Lock()

    # schema -----------------------------------------------------------------------------

    @property
    def _vendor(self) -> str:
        return "postgresql" if connection.vendor == "postgresql" else "sqlite"

    def _existing_columns(self, table: str) -> set[str] | None:
        with connection.cursor() as cursor:
            if table not in connection.introspection.table_names(cursor):
                return None
            return {c.name for c in connection.introspection.get_table_description(cursor,
                                                                                   table)}

    def ensure_schema(self, product: Product) -> None:
        schema = _ProductSchema(product)
        types = _SQL_TYPES[self._vendor]
        qn = connection.ops.quote_name
        with transaction.atomic(), connection.cursor() as cursor:
            for service, table in schema.tables.items():
                columns = schema.columns[service]
                for code in columns:
                    safe_identifier(code)
                existing = self._existing_columns(table)
                if existing is None:
                    defs = ", ".join(f"{qn(code)} {types[dt]}" for code, dt in columns.items())
                    cursor.execute(
                        f"CREATE TABLE {qn(table)} (device VARCHAR(64) NOT NULL, "
                        f"ts BIGINT NOT NULL, received BIGINT NOT NULL"
                        f"{', ' + defs if defs else ''}, PRIMARY KEY (device, ts))"
                    )
                    continue
                for code, dt in columns.items():
                    if code not in existing:
                        cursor.execute(f"ALTER TABLE {qn(table)} ADD COLUMN {qn(code)} {types[dt]}")
        with self._lock:
            self._schemas[product.identifier] = schema

    def _schema(self, product_identifier: str) -> _ProductSchema | None:
        schema = self._schemas.get(product_identifier)
        if schema is not None:
            return schema
        product = Product.objects.filter(identifier=product_identifier).first()
        if product is None:
            return None
        self.ensure_schema(product)
        return self._schemas.get(product_identifier)

    def forget(self, product_identifier: str) -> None:
        """Drop the cached schema (the product's model changed)."""
        with self._lock:
            self._schemas.pop(product_identifier, None)

    def forget_all(self) -> None:
        with self._lock:
            self._schemas.clear()

    # writes -----------------------------------------------------------------------------

    def write(self, points: Iterable[Point]) -> int:
        grouped: dict[tuple[str, str], list[Point]] = defaultdict(list)
        for point in points:
            grouped[(point.product, point.service)].append(point)
        written = 0
        qn = connection.ops.quote_name
        with transaction.atomic(), connection.cursor() as cursor:
            for (product, service), batch in grouped.items():
                schema = self._schema(product)
                if schema is None or service not in schema.tables:
                    continue
                types = schema.columns[service]
                new_columns = {c for p in batch for c in p.values} - set(types)
                if new_columns:
                    self.forget(product)
                    schema = self._schema(product)
                    if schema is None:
                        continue
                    types = schema.columns[service]
                columns = sorted({c for p in batch for c in p.values} & set(types))
                names = ["device", "ts", "received", *columns]
                placeholders = ", ".join(["%s"] * len(names))
                updates = ", ".join(
                    f"{qn(c)} = COALESCE(excluded.{qn(c)}, {qn(schema.tables[service])}.{qn(c)})"
                    for c in columns
                ) or "received = excluded.received"
                sql = (
                    f"INSERT INTO {qn(schema.tables[service])} "  # noqa: S608
                    f"({', '.join(qn(n) for n in names)}) VALUES ({placeholders}) "
                    f"ON CONFLICT (device, ts) DO UPDATE SET {updates}"
                )
                rows = [
                    [p.device, p.ts, p.received,
                     *(_encode(types[c], p.values.get(c)) for c in columns)]
                    for p in batch
                ]
                cursor.executemany(sql, rows)
                written += len(rows)
        return written

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
        qn = connection.ops.quote_name
        device_marks = ", ".join(["%s"] * len(q.devices))
        params: list[Any] = [*q.devices, q.start, q.end]
        cursor_clause = ""
        if q.after is not None:
            cursor_clause = " AND ts < %s" if q.descending else " AND ts > %s"
            params.append(q.after)
        order = "DESC" if q.descending else "ASC"
        sql = (
            f"SELECT device, ts, {', '.join(qn(c) for c in types)} FROM {qn(table)} "  # noqa: S608
            f"WHERE device IN ({device_marks}) AND ts >= %s AND ts < %s{cursor_clause} "
            f"ORDER BY ts {order}, device LIMIT %s"
        )
        params.append(q.limit)
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
        codes = list(types)
        return [
            {"device": row[0], "ts": row[1],
             **{c: _decode(types[c], v) for c, v in zip(codes, row[2:])}}
            for row in rows
        ]

    def aggregate(self, q: SeriesQuery, interval_ms: int, function: str) -> list[dict[str, Any]]:
        if function not in AGGREGATES:
            raise DomainError(f"unknown aggregate {function!r}", code="invalid_aggregate")
        table, types = self._columns_for(q)
        if function not in ("count", "first", "last"):
            not_numeric = [c for c, dt in types.items() if dt not in NUMERIC_TYPES]
            if not_numeric:
                raise DomainError(f"{function} needs numeric properties; "
                                  f"{not_numeric[0]!r} is not", code="invalid_aggregate")
        qn = connection.ops.quote_name
        device_marks = ", ".join(["%s"] * len(q.devices))
        bucket = "(ts - (ts %% %s))"
        if function in ("first", "last"):
            return self._first_last(q, table, types, interval_ms, function)
        sql_fn = {"avg": "AVG", "min": "MIN", "max": "MAX", "sum": "SUM", "count": "COUNT"}
        selects = ", ".join(f"{sql_fn[function]}({qn(c)})" for c in types)
        sql = (
            f"SELECT device, {bucket} AS bucket, {selects} FROM {qn(table)} "  # noqa: S608
            f"WHERE device IN ({device_marks}) AND ts >= %s AND ts < %s "
            f"GROUP BY device, bucket ORDER BY bucket, device LIMIT %s"
        )
        params: list[Any] = [interval_ms, *q.devices, q.start, q.end, q.limit]
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
        codes = list(types)
        return [{"device": r[0], "ts": int(r[1]), **dict(zip(codes, r[2:]))} for r in rows]

    def _first_last(self, q: SeriesQuery, table: str, types: dict[str, str], interval_ms: int,
                    function: str) -> list[dict[str, Any]]:
        qn = connection.ops.quote_name
        device_marks = ", ".join(["%s"] * len(q.devices))
        pick = "MIN" if function == "first" else "MAX"
        sql = (
            f"SELECT t.device, (t.ts - (t.ts %% %s)) AS bucket, "  # noqa: S608
            f"{', '.join('t.' + qn(c) for c in types)} FROM {qn(table)} t JOIN ("
            f"SELECT device, {pick}(ts) AS pick FROM {qn(table)} "
            f"WHERE device IN ({device_marks}) AND ts >= %s AND ts < %s "
            f"GROUP BY device, (ts - (ts %% %s))) s ON t.device = s.device AND t.ts = s.pick "
            f"ORDER BY bucket, t.device LIMIT %s"
        )
        params: list[Any] = [interval_ms, *q.devices, q.start, q.end, interval_ms, q.limit]
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
        codes = list(types)
        return [
            {"device": r[0], "ts": int(r[1]),
             **{c: _decode(types[c], v) for c, v in zip(codes, r[2:])}}
            for r in rows
        ]
