"""Time series in TDengine, with ThingLinks' layout.

One super table per (product, service) named `{productType}_{productIdentifier}_{serviceCode}`
(lower case; characters outside `[a-z0-9_]` become `_`, plus a digest when that happened so
that two products cannot meet in one name), columns `ts`, `received` and one per property,
and one tag `device_identification`. Each device has its sub-table `{stable}_{device}`,
created by its first write (`INSERT INTO … USING … TAGS`). A property added to the model
becomes `ALTER STABLE … ADD COLUMN`. A rewrite of the same (device, ts) replaces the columns it
carries, which is TDengine's own upsert.

Drivers (`TSDB_URL`): `taosws://user:pass@host:6041/db` (taos-ws-py), `taosrest://…` or
`http(s)://…` (taospy's REST client) and `taos://…` (native; needs TDengine's client library).

SQL safety (ThingLinks' CVE-2026-62849 was SQL injection through formatted values):
- identifiers are built from validated parts and checked against a strict pattern
  (`safe_identifier`), then quoted with backticks, which they cannot contain;
- with taos-ws-py every written value is bound through a prepared statement (`statement()`:
  `set_tbname_tags`, `bind_param`), never put into SQL text;
- the REST and native clients take SQL text only, and query filters on every driver (device
  identifiers, times, limits, fill values) are literals: `literal()` renders them by type. A
  number is rendered from a Python int/float (digits, sign, point, exponent: nothing else can
  appear); text is quoted with `'`, with every `\\` and `'` escaped by a backslash and NUL
  refused. TDengine's tokenizer (parTokenizer.c, `tGetToken`) ends a quoted string at the
  first quote not preceded by a backslash that it has not itself skipped, skipping the
  character after every backslash, unless the quote is doubled; so the escaped text is one
  string token, whatever it holds, as long as no quote follows it directly: the statements
  here always put a separator (`,`, `)` or a space) after a literal.
  UTF-8 cannot hide a quote or a backslash inside a multi-byte character (those bytes are all
  >= 0x80). `tests/telemetry/test_tdengine_statements.py` checks this against a port of that
  tokenizer loop, with generated strings.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import json
import math
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

from webapp.core.errors import DomainError
from webapp.products.models import Product
from webapp.telemetry.backends.base import (
    NO_FILL,
    Fill,
    Point,
    SchemaCache,
    SeriesQuery,
    check_aggregate,
    fill_buckets,
    merge_points,
    plain,
    safe_identifier,
)

MAX_NAME = 192  # TDengine's table-name limit
TAG = "device_identification"
RESERVED_COLUMNS = frozenset({"ts", "received", TAG})
STRING_LENGTH = 1024
INSERT_CHUNK = 1000  # rows per statement on the text path (TDengine caps SQL at 1 MB)

TD_TYPES = {"int": "INT", "bigint": "BIGINT", "decimal": "DOUBLE", "bool": "BOOL",
            "datetime": "BIGINT", "string": f"NCHAR({STRING_LENGTH})",
            "json": f"NCHAR({STRING_LENGTH * 4})", "enum": "NCHAR(256)",
            "binary": f"NCHAR({STRING_LENGTH * 4})"}
_TD_FUNCTIONS = {"avg": "AVG", "min": "MIN", "max": "MAX", "sum": "SUM", "count": "COUNT",
                 "first": "FIRST", "last": "LAST"}
_UNSAFE = re.compile(r"[^a-z0-9_]")


# literals ------------------------------------------------------------------------------------

def quote_text(text: str) -> str:
    """A TDengine string literal holding exactly `text` (see the module docstring)."""
    if not isinstance(text, str):
        raise TypeError("text literal of a non-string")
    if "\x00" in text:
        raise DomainError("text values cannot contain NUL", code="invalid_value")
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def literal(value: Any, datatype: str) -> str:
    """A value of the given thing-model datatype as SQL text, or NULL."""
    if value is None:
        return "NULL"
    if datatype == "bool":
        if not isinstance(value, bool):
            raise DomainError(f"{value!r} is not a bool", code="invalid_value")
        return "true" if value else "false"
    if datatype in ("int", "bigint", "datetime", "timestamp"):
        if isinstance(value, bool) or not isinstance(value, int | float) or (
                isinstance(value, float) and not value.is_integer()):
            raise DomainError(f"{value!r} is not an integer", code="invalid_value")
        return str(int(value))
    if datatype in ("decimal", "double"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise DomainError(f"{value!r} is not a number", code="invalid_value")
        number = float(value)
        if not math.isfinite(number):
            raise DomainError(f"{value!r} is not a finite number", code="invalid_value")
        return repr(number)
    return quote_text(_text(value, datatype))


def _text(value: Any, datatype: str) -> str:
    if datatype in ("json", "enum"):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return value if isinstance(value, str) else str(value)


def _decode(datatype: str, value: Any) -> Any:
    if value is None:
        return None
    if datatype in ("json", "enum"):
        return json.loads(value)
    if datatype == "bool":
        return bool(value)
    if datatype in ("int", "bigint", "datetime"):
        return int(value)
    if datatype == "decimal":
        return float(value)
    return value


# names ------------------------------------------------------------------------------------------

def td_name(*parts: str) -> str:
    """`parts` joined by `_`, lower case, unsafe characters as `_` (plus a digest then)."""
    raw = "_".join(parts)
    name = _UNSAFE.sub("_", raw.lower())
    if name != raw or len(name) > MAX_NAME:
        digest = hashlib.sha1(raw.encode(), usedforsecurity=False).hexdigest()[:8]
        name = f"{name[:MAX_NAME - 9]}_{digest}"
    if not name[:1].isalpha():
        name = "t_" + name
    return _checked(name)


def _checked(name: str) -> str:
    if len(name) > MAX_NAME or not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise DomainError(f"{name!r} is not a valid TDengine name", code="invalid_identifier")
    return name


def stable_name(product_type: str, product_identifier: str, service_code: str) -> str:
    return td_name(product_type, product_identifier, safe_identifier(service_code))


def subtable_name(stable: str, device: str) -> str:
    return td_name(stable, device)


def q(name: str) -> str:
    """A checked identifier in backticks (it cannot contain one)."""
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name):
        raise DomainError(f"{name!r} is not a valid identifier", code="invalid_identifier")
    return f"`{name}`"


# connections ----------------------------------------------------------------------------------

class Connection(Protocol):
    """What the backend needs of a driver connection."""

    binds: bool

    def execute(self, sql: str) -> Any: ...

    def query(self, sql: str) -> list[tuple[Any, ...]]: ...

    def insert_bound(self, sql: str, tables: list[tuple[str, str, list[tuple[str, list[Any]]]]]
                     ) -> int: ...


_WS_COLUMNS = {"TIMESTAMP": "millis_timestamps_to_column", "INT": "ints_to_column",
               "BIGINT": "big_ints_to_column", "DOUBLE": "doubles_to_column",
               "BOOL": "bools_to_column", "NCHAR": "nchar_to_column"}


class WsConnection:
    """taos-ws-py: SQL for DDL and queries, prepared statements for every written value."""

    binds = True

    def __init__(self, conn: Any, driver: Any) -> None:
        self.conn = conn
        self.driver = driver

    def execute(self, sql: str) -> Any:
        return self.conn.execute(sql)

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in self.conn.query(sql)]

    def insert_bound(self, sql: str, tables: list[tuple[str, str, list[tuple[str, list[Any]]]]]
                     ) -> int:
        """`sql` is `INSERT INTO ? USING stable TAGS (?) (columns) VALUES (?, …)`; each table
        is (sub-table name, tag value, [(column type, values)])."""
        stmt = self.conn.statement()
        try:
            stmt.prepare(sql)
            for name, tag, columns in tables:
                stmt.set_tbname_tags(name, [self.driver.nchar_to_tag(tag)])
                stmt.bind_param([getattr(self.driver, _WS_COLUMNS[kind])(values)
                                 for kind, values in columns])
                stmt.add_batch()
            stmt.execute()
            return int(stmt.affect_rows())
        finally:
            stmt.close()


class TextConnection:
    """taospy's REST or native client: SQL text only (values rendered by `literal`)."""

    binds = False

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def execute(self, sql: str) -> Any:
        cursor = self.conn.cursor()
        try:
            return cursor.execute(sql)
        finally:
            cursor.close()

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        cursor = self.conn.cursor()
        try:
            cursor.execute(sql)
            return [tuple(row) for row in cursor.fetchall()]
        finally:
            cursor.close()

    def insert_bound(self, sql: str, tables: list[tuple[str, str, list[tuple[str, list[Any]]]]]
                     ) -> int:
        raise NotImplementedError("this driver does not bind parameters")


def connect(url: str) -> tuple[Connection, str]:
    """A connection for `TSDB_URL` and the database name it names."""
    parts = urlsplit(url)
    scheme = parts.scheme
    database = parts.path.strip("/") or "thinglinks"
    user = unquote(parts.username or "root")
    password = unquote(parts.password or "taosdata")
    host = parts.hostname or "localhost"
    if scheme in ("taosws", "ws", "wss"):
        import taosws

        ws_scheme = "wss" if scheme == "wss" else "ws"
        dsn = f"{ws_scheme}://{parts.netloc}" if parts.username else \
            f"{ws_scheme}://{host}:{parts.port or 6041}"
        return WsConnection(taosws.connect(dsn), taosws), database
    if scheme in ("taosrest", "http", "https"):
        import taosrest

        http = "https" if scheme == "https" else "http"
        conn = taosrest.connect(url=f"{http}://{host}:{parts.port or 6041}", user=user,
                                password=password, timeout=30)
        return TextConnection(conn), database
    if scheme == "taos":
        try:
            import taos
        except Exception as exc:  # taospy raises its InterfaceError when libtaos is missing
            raise ImproperlyConfigured(
                "TSDB_URL taos:// needs TDengine's client library (libtaos); use taosws:// "
                "or taosrest:// without it") from exc
        conn = taos.connect(host=host, user=user, password=password, port=parts.port or 6030)
        return TextConnection(conn), database
    raise ImproperlyConfigured(f"TSDB_URL: unknown TDengine scheme {scheme!r}")


# the backend ----------------------------------------------------------------------------------

class _Schema:
    __slots__ = ("columns", "ignored", "stables")

    def __init__(self, product: Product) -> None:
        self.stables: dict[str, str] = {}
        self.columns: dict[str, dict[str, str]] = {}
        self.ignored: set[str] = set()
        for service in product.services.prefetch_related("properties"):
            self.stables[service.code] = stable_name(product.product_type, product.identifier,
                                                     service.code)
            self.columns[service.code] = {safe_identifier(p.code): p.datatype
                                          for p in service.properties.all()
                                          if p.code not in RESERVED_COLUMNS}


class TDengineBackend(SchemaCache[_Schema]):
    name = "tdengine"

    def __init__(self, url: str, *, opener: Callable[[], tuple[Connection, str]] | None = None,
                 keep_days: int | None = None) -> None:
        self._opener = opener or (lambda: connect(url))
        self._conn: Connection | None = None
        self.database = ""
        self.keep_days = keep_days
        self._init_schema_cache(threading.RLock())
        self._ready = False

    # plumbing ---------------------------------------------------------------------------------

    @property
    def conn(self) -> Connection:
        with self._lock:
            if self._conn is None:
                self._conn, database = self._opener()
                self.database = _checked(database.lower()) if database else "thinglinks"
                self._ready = False
            if not self._ready:
                keep = f" KEEP {int(self.keep_days)}" if self.keep_days else ""
                self._conn.execute(f"CREATE DATABASE IF NOT EXISTS {q(self.database)} "
                                   f"PRECISION 'ms'{keep}")
                # Prepared statements name sub-tables without the database.
                self._conn.execute(f"USE {q(self.database)}")
                self._ready = True
            return self._conn

    def _run(self, call: Callable[[Connection], Any]) -> Any:
        """Run on the connection; a failure drops it so that the next call reconnects."""
        try:
            return call(self.conn)
        except DomainError:
            raise
        except Exception:
            with self._lock:
                self._conn = None
            raise

    def _query(self, sql: str) -> list[tuple[Any, ...]]:
        return list(self._run(lambda conn: conn.query(sql)))

    def _execute(self, sql: str) -> Any:
        return self._run(lambda conn: conn.execute(sql))

    def _table(self, name: str) -> str:
        return f"{q(self.database)}.{q(name)}"

    # schema -------------------------------------------------------------------------------------

    def ensure_schema(self, product: Product) -> None:
        schema = _Schema(product)

        def create(conn: Connection) -> None:
            for service, stable in schema.stables.items():
                columns = schema.columns[service]
                defs = "".join(f", {q(c)} {TD_TYPES[dt]}" for c, dt in columns.items())
                conn.execute(f"CREATE STABLE IF NOT EXISTS {self._table(stable)} "
                             f"(ts TIMESTAMP, received BIGINT{defs}) "
                             f"TAGS ({q(TAG)} NCHAR(64))")
                existing = {str(row[0]).lower() for row in
                            conn.query(f"DESCRIBE {self._table(stable)}")}
                for code, datatype in columns.items():
                    if code.lower() not in existing:
                        conn.execute(f"ALTER STABLE {self._table(stable)} ADD COLUMN "
                                     f"{q(code)} {TD_TYPES[datatype]}")

        self._run(create)
        with self._lock:
            self._schemas[product.identifier] = schema

    # writes -------------------------------------------------------------------------------------

    def write(self, points: Iterable[Point]) -> int:
        written = 0
        for (product, service), merged in merge_points(points).items():
            schema = self._schema(product)
            if schema is None or service not in schema.stables:
                continue
            batch = list(merged.values())
            sent = {c for p in batch for c in p.values}
            if sent - set(schema.columns[service]) - schema.ignored:
                self.forget(product)
                schema = self._schema(product)
                if schema is None or service not in schema.stables:
                    continue
                schema.ignored |= sent - set(schema.columns[service])
            types = schema.columns[service]
            stable = schema.stables[service]
            by_device: dict[str, list[Point]] = {}
            for p in sorted(batch, key=lambda p: p.ts):
                by_device.setdefault(p.device, []).append(p)
            for device, rows in by_device.items():
                # One statement per device and column set: the columns a point carries are
                # the ones it writes (a missing property keeps its stored value).
                shapes: dict[tuple[str, ...], list[Point]] = {}
                for p in rows:
                    shapes.setdefault(tuple(sorted(set(p.values) & set(types))), []).append(p)
                for columns, shaped in shapes.items():
                    written += self._insert(stable, device, types, list(columns), shaped)
        return written

    def _insert(self, stable: str, device: str, types: dict[str, str], columns: list[str],
                rows: list[Point]) -> int:
        sub = subtable_name(stable, device)
        names = ", ".join(q(n) for n in ["ts", "received", *columns])
        if self.conn.binds:
            marks = ", ".join(["?"] * (2 + len(columns)))
            sql = (f"INSERT INTO ? USING {self._table(stable)} TAGS (?) ({names}) "  # noqa: S608
                   f"VALUES ({marks})")
            values: list[tuple[str, list[Any]]] = [
                ("TIMESTAMP", [p.ts for p in rows]), ("BIGINT", [p.received for p in rows])]
            for c in columns:
                kind = TD_TYPES[types[c]].split("(")[0]
                values.append((kind, [_bindable(types[c], p.values.get(c)) for p in rows]))
            tables = [(sub, device, values)]
            return int(self._run(lambda conn: conn.insert_bound(sql, tables)) or len(rows))
        for start in range(0, len(rows), INSERT_CHUNK):
            chunk = rows[start:start + INSERT_CHUNK]
            tuples = " ".join(
                "(" + ", ".join([literal(p.ts, "timestamp"), literal(p.received, "bigint"),
                                 *(literal(p.values.get(c), types[c]) for c in columns)]) + ")"
                for p in chunk)
            sql = (f"INSERT INTO {self._table(sub)} USING {self._table(stable)} "  # noqa: S608
                   f"TAGS ({quote_text(device)}) ({names}) VALUES {tuples}")
            self._execute(sql)
        return len(rows)

    # reads --------------------------------------------------------------------------------------

    def _columns_for(self, query: SeriesQuery) -> tuple[str, dict[str, str]]:
        schema = self._schema(query.product.identifier)
        if schema is None or query.service not in schema.stables:
            raise DomainError(f"unknown service {query.service!r}", code="unknown_service")
        types = schema.columns[query.service]
        wanted = list(query.properties) or list(types)
        unknown = [p for p in wanted if p not in types]
        if unknown:
            raise DomainError(f"unknown property {unknown[0]!r} in service {query.service!r}",
                              code="unknown_property")
        return schema.stables[query.service], {p: types[p] for p in wanted}

    def _where(self, device: str, start: int, end: int) -> str:
        return (f"{q(TAG)} = {quote_text(device)} AND ts >= {literal(start, 'timestamp')} "
                f"AND ts < {literal(end, 'timestamp')}")

    def query(self, query: SeriesQuery) -> list[dict[str, Any]]:
        stable, types = self._columns_for(query)
        order = "DESC" if query.descending else "ASC"
        cursor = ""
        if query.after is not None:
            cursor = f" AND ts {'<' if query.descending else '>'} " \
                     f"{literal(query.after, 'timestamp')}"
        selected = "".join(f", {q(c)}" for c in types)
        per_device = []
        for device in query.devices:
            sql = (f"SELECT CAST(ts AS BIGINT){selected} FROM {self._table(stable)} "  # noqa: S608
                   f"WHERE {self._where(device, query.start, query.end)}{cursor} "
                   f"ORDER BY ts {order} LIMIT {literal(query.limit, 'int')}")
            rows = self._query(sql)
            per_device.append([
                {"device": device, "ts": int(r[0]),
                 **{c: _decode(types[c], v) for c, v in zip(types, r[1:])}} for r in rows])
        key = (lambda r: (-r["ts"], r["device"])) if query.descending else (
            lambda r: (r["ts"], r["device"]))
        return list(heapq.merge(*per_device, key=key))[:query.limit]

    def aggregate(self, query: SeriesQuery, interval_ms: int, function: str,
                  fill: Fill = NO_FILL, calendar: Sequence[int] = ()) -> list[dict[str, Any]]:
        stable, types = self._columns_for(query)
        check_aggregate(function, types)
        if calendar:
            return self._aggregate_calendar(query, stable, types, function, fill, calendar)
        fn = _TD_FUNCTIONS[function]
        selects = "".join(f", {fn}({q(c)})" for c in types)
        fill_sql = ""
        if fill.mode == "null":
            fill_sql = " FILL(NULL)"
        elif fill.mode == "previous":
            fill_sql = " FILL(PREV)"
        elif fill.mode == "value":
            fill_sql = " FILL(VALUE, " + ", ".join(
                literal(fill.value, "decimal") for _ in types) + ")"
        per_device = []
        for device in query.devices:
            where = self._where(device, query.start, query.end)
            sql = (f"SELECT CAST(_wstart AS BIGINT){selects} "  # noqa: S608
                   f"FROM {self._table(stable)} WHERE {where} "
                   f"INTERVAL({literal(int(interval_ms), 'int')}a){fill_sql}")
            rows = self._query(sql)
            per_device.append([
                {"device": device, "ts": int(r[0]),
                 **{c: self._value(types, function, c, v) for c, v in zip(types, r[1:])}}
                for r in rows])
        merged = list(heapq.merge(*per_device, key=lambda r: (r["ts"], r["device"])))
        return merged[:query.limit]

    @staticmethod
    def _value(types: dict[str, str], function: str, code: str, value: Any) -> Any:
        if function in ("first", "last"):
            return _decode(types[code], value)
        return plain(value, types[code], function)

    def _aggregate_calendar(self, query: SeriesQuery, stable: str, types: dict[str, str],
                            function: str, fill: Fill,
                            calendar: Sequence[int]) -> list[dict[str, Any]]:
        """Calendar buckets (a time zone's days, weeks, months): one statement per device,
        a UNION ALL of one aggregate per bucket over its boundaries computed in Python.
        TDengine's INTERVAL(1d) cuts at fixed offsets, which a DST change breaks. COUNT(*)
        tells the empty buckets, which `fill` then treats as on the SQL backend."""
        fn = _TD_FUNCTIONS[function]
        selects = "".join(f", {fn}({q(c)})" for c in types)
        per_device = []
        for device in query.devices:
            parts = []
            for low, high in itertools.pairwise(calendar):
                where = self._where(device, max(low, query.start), min(high, query.end))
                parts.append(f"SELECT {literal(low, 'bigint')}, COUNT(*){selects} "  # noqa: S608
                             f"FROM {self._table(stable)} WHERE {where}")
            rows = self._query(" UNION ALL ".join(parts))
            per_device.append([
                {"device": device, "ts": int(r[0]),
                 **{c: self._value(types, function, c, v) for c, v in zip(types, r[2:])}}
                for r in rows if r[1]])
        merged = list(heapq.merge(*per_device, key=lambda r: (r["ts"], r["device"])))
        merged = fill_buckets(merged, query.devices, list(types), list(calendar[:-1]), fill)
        return merged[:query.limit]

    def latest(self, query: SeriesQuery) -> dict[str, dict[str, dict[str, Any]]]:
        stable, types = self._columns_for(query)
        out: dict[str, dict[str, dict[str, Any]]] = {d: {} for d in query.devices}
        for device in query.devices:
            for code, datatype in types.items():
                sql = (f"SELECT CAST(LAST(ts) AS BIGINT), LAST({q(code)}) "  # noqa: S608
                       f"FROM {self._table(stable)} "
                       f"WHERE {self._where(device, query.start, query.end)} "
                       f"AND {q(code)} IS NOT NULL")
                rows = self._query(sql)
                if rows and rows[0][0] is not None:
                    out[device][code] = {"value": _decode(datatype, rows[0][1]),
                                         "ts": int(rows[0][0])}
        return out

    # retention --------------------------------------------------------------------------------

    def expire(self, product: Product, before_ms: int) -> int:
        """Per-product raw retention: `DELETE` older rows (the database's `KEEP` is the
        global bound, TDENGINE_KEEP_DAYS)."""
        self.ensure_schema(product)
        schema = self._schemas[product.identifier]
        for stable in schema.stables.values():
            sql = (f"DELETE FROM {self._table(stable)} "  # noqa: S608
                   f"WHERE ts < {literal(before_ms, 'timestamp')}")
            self._execute(sql)
        return len(schema.stables)


def _bindable(datatype: str, value: Any) -> Any:
    """A value in the Python type the statement binds for the column."""
    if value is None:
        return None
    if datatype in ("json", "enum", "string", "binary"):
        return _text(value, datatype)
    if datatype == "decimal":
        return float(value)
    if datatype in ("int", "bigint", "datetime"):
        return int(value)
    return value

