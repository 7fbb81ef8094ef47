"""The interface every time-series backend implements (SQL, TDengine).

A backend stores the accepted property values of each (product, service) keyed by
(device, ts) and answers raw range queries, aggregates by interval and latest values. What is
common to every backend lives here: identifier checking, point merging, gap filling and the
choice of a rollup.
"""

from __future__ import annotations

import hashlib
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Generic, TypeVar
from zoneinfo import ZoneInfo

from webapp.core.errors import DomainError
from webapp.products.models import Product

# Identifiers that reach SQL text are checked against this; values are always bound.
SAFE_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,62}")
MAX_IDENTIFIER = 63

AGGREGATES = ("avg", "min", "max", "sum", "count", "first", "last")
# Aggregates a rollup (min/max/sum/count per bucket) can answer.
ROLLUP_AGGREGATES = ("avg", "min", "max", "sum", "count")
NUMERIC_TYPES = ("int", "bigint", "decimal")
FILLS = ("none", "null", "previous", "value")


def safe_identifier(name: str) -> str:
    # fullmatch: `$` would also accept a trailing newline.
    if not isinstance(name, str) or not SAFE_IDENTIFIER.fullmatch(name):
        raise DomainError(f"{name!r} is not a valid identifier", code="invalid_identifier")
    return name


def derived_name(*parts: str) -> str:
    """An identifier made of safe parts; shortened with a digest when over 63 characters."""
    name = "_".join(parts)
    if len(name) > MAX_IDENTIFIER:
        digest = hashlib.sha1(name.encode(), usedforsecurity=False).hexdigest()[:10]
        name = f"{name[:MAX_IDENTIFIER - 11]}_{digest}"
    return safe_identifier(name)


@dataclass(frozen=True, slots=True)
class Point:
    """The accepted values of one service of one device at one time."""

    product: str
    service: str
    device: str
    ts: int  # epoch milliseconds (device event time when it sent one, else receive time)
    received: int  # epoch milliseconds at the edge
    values: dict[str, Any]


@dataclass(frozen=True, slots=True)
class SeriesQuery:
    product: Product
    service: str
    devices: Sequence[str]
    properties: Sequence[str]
    start: int
    end: int
    limit: int = 1000
    after: int | None = None  # cursor: the last ts of the previous page (descending: before)
    descending: bool = False
    # Rollup intervals (ms) the product keeps; aggregates over long ranges read them.
    rollups: Sequence[int] = ()


@dataclass(frozen=True, slots=True)
class Fill:
    """What an aggregate returns for an interval without data: nothing (`none`), a null,
    the previous interval's value, or a constant."""

    mode: str = "none"
    value: float | None = None

    def __post_init__(self) -> None:
        if self.mode not in FILLS:
            raise DomainError(f"unknown fill {self.mode!r}; use one of {', '.join(FILLS)}",
                              code="invalid_fill")
        if self.mode == "value" and self.value is None:
            raise DomainError("fill=value needs fill_value", code="invalid_fill")


NO_FILL = Fill()

# Aggregates over at least this range read a rollup when the product keeps one that fits.
ROLLUP_MIN_RANGE_MS = 86_400_000


def merge_points(points: Iterable[Point]) -> dict[tuple[str, str], dict[tuple[str, int], Point]]:
    """Group points by (product, service) and merge those with the same (device, ts).

    The same (device, ts) can come twice in one batch (a replay, or two messages of one
    instant with different properties): the later values win property by property, which is
    what upserting the two in order would give.
    """
    grouped: dict[tuple[str, str], dict[tuple[str, int], Point]] = {}
    for point in points:
        rows = grouped.setdefault((point.product, point.service), {})
        key = (point.device, point.ts)
        seen = rows.get(key)
        if seen is None:
            rows[key] = point
        else:
            rows[key] = Point(point.product, point.service, point.device, point.ts,
                              min(seen.received, point.received),
                              {**seen.values, **point.values})
    return grouped


# Calendar intervals: cut at local midnights of a time zone, not every N milliseconds.
CALENDAR_INTERVALS = ("1d", "1w", "1M")


def _first_of(unit: str, day: date) -> date:
    if unit == "1w":
        return day - timedelta(days=day.weekday())  # weeks start on Monday
    if unit == "1M":
        return day.replace(day=1)
    return day


def _next_of(unit: str, day: date) -> date:
    if unit == "1w":
        return day + timedelta(days=7)
    if unit == "1M":
        return (day.replace(day=28) + timedelta(days=4)).replace(day=1)
    return day + timedelta(days=1)


def _midnight_ms(day: date, zone: ZoneInfo) -> int:
    # A midnight that a DST change skips (fold=0 takes the offset before the change) maps to
    # the first instant of that local day.
    return int(datetime.combine(day, time(), tzinfo=zone).timestamp() * 1000)


def calendar_boundaries(start: int, end: int, unit: str, zone: ZoneInfo) -> list[int]:
    """The starts (epoch ms) of the calendar buckets (`1d`, `1w`, `1M`) of `zone` that cover
    [start, end), then the end of the last one. Each start is a local midnight, so a day is
    23 or 25 hours long when the clocks change."""
    if unit not in CALENDAR_INTERVALS:
        raise DomainError(f"{unit!r} is not a calendar interval", code="invalid_interval")
    day = _first_of(unit, datetime.fromtimestamp(start / 1000, tz=UTC).astimezone(zone).date())
    bounds = [_midnight_ms(day, zone)]
    while bounds[-1] < end:
        day = _next_of(unit, day)
        bounds.append(_midnight_ms(day, zone))
    return bounds


def pick_rollup(q: SeriesQuery, interval_ms: int, function: str,
                calendar: Sequence[int] = ()) -> int | None:
    """The coarsest rollup that answers this aggregate exactly, if the range is long: its
    buckets must nest in the query's, so for calendar buckets every boundary must fall on one
    of its bucket edges (1h rollups serve Shanghai's or Berlin's days, 1d rollups only UTC's)."""
    if function not in ROLLUP_AGGREGATES or q.end - q.start < ROLLUP_MIN_RANGE_MS:
        return None
    if calendar:
        fitting = [r for r in q.rollups if all(b % r == 0 for b in calendar)]
    else:
        fitting = [r for r in q.rollups if r <= interval_ms and interval_ms % r == 0]
    return max(fitting) if fitting else None


def bucket_starts(start: int, end: int, interval_ms: int,
                  calendar: Sequence[int] = ()) -> list[int]:
    """The start of every bucket that covers [start, end)."""
    if calendar:
        return list(calendar[:-1])
    return list(range(start - start % interval_ms, end, interval_ms))


def plain(value: Any, datatype: str, function: str) -> Any:
    """An aggregated value as the same Python type on every database: averages are floats,
    counts ints, and min/max/sum of integer properties ints (PostgreSQL answers some of them
    as Decimal, SQLite as float)."""
    if value is None:
        return None
    if function == "count":
        return int(value)
    if function == "avg":
        return float(value)
    if function in ("min", "max", "sum") and datatype in NUMERIC_TYPES:
        return float(value) if datatype == "decimal" else int(value)
    return value


def fill_buckets(rows: list[dict[str, Any]], devices: Sequence[str], properties: Sequence[str],
                 starts: Sequence[int], fill: Fill) -> list[dict[str, Any]]:
    """Add the empty intervals (`starts`: every bucket's start) to aggregate rows, as `fill`
    asks.

    The aggregation itself is the database's; this only places the intervals it had no rows
    for (SQL has no portable FILL clause; TDengine fills natively and does not call this).
    """
    if fill.mode == "none":
        return rows
    by_key = {(r["device"], r["ts"]): r for r in rows}
    out: list[dict[str, Any]] = []
    previous: dict[str, dict[str, Any]] = {d: dict.fromkeys(properties) for d in devices}
    for bucket in starts:
        for device in sorted(devices):
            row = by_key.get((device, bucket))
            if row is not None:
                previous[device] = {p: row.get(p) for p in properties}
                out.append(row)
                continue
            if fill.mode == "null":
                values: dict[str, Any] = dict.fromkeys(properties)
            elif fill.mode == "value":
                values = dict.fromkeys(properties, fill.value)
            else:
                values = dict(previous[device])
            out.append({"device": device, "ts": bucket, **values})
    return out


class TimeSeriesBackend(ABC):
    name: str

    @abstractmethod
    def ensure_schema(self, product: Product) -> None:
        """Create or extend the storage of every service of the product."""

    @abstractmethod
    def forget(self, product_identifier: str) -> None:
        """Drop what is cached about a product's schema (its model changed)."""

    @abstractmethod
    def forget_all(self) -> None:
        """Drop every cached schema."""

    @abstractmethod
    def write(self, points: Iterable[Point]) -> int:
        """Store points idempotently on (device, service, ts); returns how many were written.

        A rewrite of the same (device, ts) merges: properties it carries replace the stored
        ones, properties it lacks keep their stored value.
        """

    @abstractmethod
    def query(self, q: SeriesQuery) -> list[dict[str, Any]]:
        """Raw rows `{"device", "ts", <property>: value, …}` in the range, ordered by ts
        (then device), at most `q.limit`, after the cursor `q.after` when given."""

    @abstractmethod
    def aggregate(self, q: SeriesQuery, interval_ms: int, function: str,
                  fill: Fill = NO_FILL, calendar: Sequence[int] = ()) -> list[dict[str, Any]]:
        """Rows `{"device", "ts" (bucket start), <property>: aggregated value}`, computed by
        the database, ordered by bucket then device; empty buckets as `fill` asks.

        Buckets are every `interval_ms` from the epoch, or, when `calendar` is given (from
        `calendar_boundaries`), the ranges between its consecutive boundaries: those of a time
        zone's days, weeks or months are not a fixed length."""

    @abstractmethod
    def latest(self, q: SeriesQuery) -> dict[str, dict[str, dict[str, Any]]]:
        """`{device: {property: {"value", "ts"}}}`: the last non-null value of each property
        before `q.end` (and at or after `q.start`)."""

    # Thing model changes (webapp.products.actions: removing or retyping a property).

    def has_data(self, product: Product, service: str, prop: str | None = None) -> bool:
        """Whether points of the service (or values of one property) are stored. The default
        answers yes, so that a backend without the check refuses risky model changes."""
        return True

    def drop_storage(self, product: Product, service: str,
                     props: Sequence[str] | None = None) -> None:
        """Drop the stored values of some properties (`props`) or of the whole service (None),
        for an explicit model migration; `ensure_schema` recreates what the model still has."""
        raise DomainError(f"the {self.name} backend cannot drop stored data",
                          code="unsupported")

    # Housekeeping (Celery beat). Defaults do nothing for a backend that needs none.

    def prepare_ahead(self, product: Product, until_ms: int) -> int:
        """Create the storage that writes up to `until_ms` will need; returns how much."""
        return 0

    def expire(self, product: Product, before_ms: int) -> int:
        """Drop raw points older than `before_ms`; returns partitions or rows dropped."""
        return 0

    def refresh_rollups(self, product: Product, intervals: Sequence[int], now_ms: int,
                        lookback_ms: int) -> int:
        """Bring the product's rollups up to the last complete bucket before `now_ms`,
        recomputing `lookback_ms` before the previous watermark for late points."""
        return 0

    def expire_rollups(self, product: Product, intervals: Sequence[int],
                       before_ms: int) -> int:
        """Drop rollup buckets older than `before_ms`."""
        return 0


def check_aggregate(function: str, types: dict[str, str]) -> None:
    if function not in AGGREGATES:
        raise DomainError(f"unknown aggregate {function!r}", code="invalid_aggregate")
    if function in ("count", "first", "last"):
        return
    not_numeric = [c for c, dt in types.items() if dt not in NUMERIC_TYPES]
    if not_numeric:
        raise DomainError(f"{function} needs numeric properties; {not_numeric[0]!r} is not",
                          code="invalid_aggregate")


SchemaT = TypeVar("SchemaT")


class SchemaCache(TimeSeriesBackend, Generic[SchemaT]):
    """A backend that keeps each product's schema, as last ensured, in memory.

    `ensure_schema` stores into `_schemas` under `_lock`; a product not seen yet is ensured
    on first use.
    """

    _schemas: dict[str, SchemaT]
    _lock: Any  # threading.Lock or RLock

    def _init_schema_cache(self, lock: Any = None) -> None:
        self._schemas = {}
        self._lock = lock if lock is not None else threading.Lock()

    def _schema(self, product_identifier: str) -> SchemaT | None:
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
