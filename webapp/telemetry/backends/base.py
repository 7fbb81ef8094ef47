"""The interface every time-series backend implements (SQL, TDengine)."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from webapp.core.errors import DomainError
from webapp.products.models import Product

# Identifiers that reach SQL text are checked against this; values are always bound.
SAFE_IDENTIFIER = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,62}$")

AGGREGATES = ("avg", "min", "max", "sum", "count", "first", "last")
NUMERIC_TYPES = ("int", "bigint", "decimal")


def safe_identifier(name: str) -> str:
    if not SAFE_IDENTIFIER.match(name):
        raise DomainError(f"{name!r} is not a valid identifier", code="invalid_identifier")
    return name


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
        """Store points idempotently on (device, service, ts); returns how many were written."""

    @abstractmethod
    def query(self, q: SeriesQuery) -> list[dict[str, Any]]:
        """Raw rows `{"device", "ts", <property>: value, …}` in the range, ordered by ts."""

    @abstractmethod
    def aggregate(self, q: SeriesQuery, interval_ms: int, function: str) -> list[dict[str, Any]]:
        """Rows `{"device", "ts" (bucket start), <property>: aggregated value}`."""
